"""Qwen3-VL-Reranker on transformers: prepares pairs, reuses the query prefix, scores micro-batches.

Score = sigmoid(w . h) where h is the final hidden state at a pair's last token and
w = lm_head[yes] - lm_head[no], exactly as the official reference computes it.

Preparation is two stages the scheduler runs apart: `process` (media: fetch, decode, resize,
patchify; per item, on a pool) and `assemble` (the pairs' token ids from `models.pairs`, the shared
prefix, each row's ids and positions).

Query-prefix reuse: all pairs of a request share "system + instruction + query". The longest common
token prefix of the request's pairs is forwarded once; each pair's remaining tokens attend to its
cached keys and values. Positions, truncation and visual features are those of the full sequence,
so scores equal the full computation up to float rounding.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace

import torch

from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaResolver
from sidecar.models import fused
from sidecar.models.backend import QwenBackend
from sidecar.models.loading import cache_kwarg_name, cache_layers, new_cache
from sidecar.models.pairs import Chunk, Pair, PairBuilder, PairLimits
from sidecar.models.visuals import ProcessedItem, Visual, stack_visuals
from sidecar.prompts import RERANK_MAX_LENGTH
from sidecar.types import ItemInput, RerankInput


@dataclass
class Prefix:
    """The shared start of a request's pairs; `kv` is filled by the model thread."""

    ids: list[int]
    positions: torch.Tensor  # (3, P)
    visuals: list[Visual]
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PairRow:
    """One query-document pair, as the tokens left after its request's prefix."""

    index: int
    ids: list[int]
    positions: torch.Tensor  # (3, S)
    visuals: list[Visual]
    prefix: Prefix
    total_tokens: int
    owner: object = None  # scheduler bookkeeping


@dataclass
class PreparedRerank:
    prefix: Prefix
    rows: list[PairRow]
    images: int = 0
    video_frames: int = 0
    documents: list[int] = field(default_factory=list)  # per row: the document it scores
    chunks: list[Chunk | None] = field(default_factory=list)  # per row: its window, when chunking

    def per_document(self, logits: list[float], count: int) -> tuple[list[float], list[Chunk | None]]:
        """Each document's logit, the best of its rows (windows), and the window that gave it."""
        best: list[float | None] = [None] * count
        chunks: list[Chunk | None] = [None] * count
        for logit, document, chunk in zip(logits, self.documents, self.chunks):
            if best[document] is None or logit > best[document]:
                best[document], chunks[document] = logit, chunk
        return best, chunks


class RerankerModel(QwenBackend):
    """A loaded reranker checkpoint. `prepare` runs on any thread; `forward_*` only on the model thread."""

    kind = "reranker"

    def __init__(
        self,
        name: str,
        model,
        processor,
        max_length: int = RERANK_MAX_LENGTH,
        special_tokens_in_text: str = "plain",
    ) -> None:
        super().__init__(name, model.model, processor, max_length, special_tokens_in_text)
        vocab = self.tokenizer.get_vocab()
        weight = model.lm_head.weight.data
        self.score_vector = (weight[vocab["yes"]] - weight[vocab["no"]]).float()
        self.vision_start_id = model.config.vision_start_token_id
        self._cache_kwarg = cache_kwarg_name(self.base)

    # ---- preparation (CPU) -------------------------------------------------------------------

    def prepare(
        self,
        request: RerankInput,
        resolver: MediaResolver,
        reuse_prefix: bool = True,
        min_saved_tokens: int = 0,
        pool: Executor | None = None,
        limits: PairLimits | None = None,
        max_request_tokens: int | None = None,
    ) -> PreparedRerank:
        """`process` then `assemble`: the whole preparation of one request on this thread (and `pool`)."""
        processed = self.process(request, resolver, pool)
        prepared = self.assemble(request, processed, reuse_prefix, min_saved_tokens, limits, max_request_tokens)
        prepared.images = resolver.decoded
        return prepared

    def process(
        self, request: RerankInput, resolver: MediaResolver, pool: Executor | None = None
    ) -> list[ProcessedItem]:
        """Resolve and process the media of the query and every document (concurrently on `pool`)."""
        return self.visual_processor.items(self.labelled(request), resolver, pool)

    @staticmethod
    def labelled(request: RerankInput) -> list[tuple[ItemInput, str]]:
        """The query and each document with the name errors give it (`documents[3]`, or TEI's `texts[3]`)."""
        return [(request.query, "query")] + [(d, label) for d, label in zip(request.documents, _labels(request))]

    def assemble(
        self,
        request: RerankInput,
        processed: list[ProcessedItem],
        reuse_prefix: bool = True,
        min_saved_tokens: int = 0,
        limits: PairLimits | None = None,
        max_request_tokens: int | None = None,
    ) -> PreparedRerank:
        """Build, truncate and cap every pair, split off the shared prefix, and lay out the rows.

        The prefix is split off only when it saves at least `min_saved_tokens` forwarded tokens. A
        request whose computed tokens exceed `max_request_tokens` is refused before any row is built.
        """
        query, *docs = processed
        limits = replace(
            limits or PairLimits(max_length=self.max_length),
            truncate=request.truncate,
            direction=request.truncation_direction,
            chunk=request.long_documents == "chunk",
            max_tokens_per_doc=request.max_tokens_per_doc,
            chunk_overlap=request.chunk_overlap,
        )
        pairs = PairBuilder(self.prompt_tokenizer, limits).build(query, docs, request.instruction, _labels(request))
        shared = self._shared_length(pairs, query) if reuse_prefix and len(pairs) > 1 else 0
        if shared * (len(pairs) - 1) < min_saved_tokens:
            shared = 0
        computed = shared + sum(len(pair) - shared for pair in pairs)
        if max_request_tokens is not None and computed > max_request_tokens:
            raise SidecarError(
                Kind.TOO_LARGE,
                f"the request needs {computed} tokens of model input, over the limit of {max_request_tokens} per "
                "request (--max-request-tokens); send fewer or shorter documents",
            )
        first = pairs[0]
        prefix_ids = first.ids()[:shared] if shared > len(first.head) else first.head[:shared]
        prefix = self._make_prefix(prefix_ids, query.visuals if shared else [])
        heads: dict[int, torch.Tensor] = {}  # positions of each distinct head object
        rows = [self._make_row(i, pair, prefix, query, docs[pair.document], heads) for i, pair in enumerate(pairs)]
        frames = sum(v.frames for item in processed for v in item.visuals)
        documents, chunks = [p.document for p in pairs], [p.chunk for p in pairs]
        return PreparedRerank(prefix, rows, video_frames=frames, documents=documents, chunks=chunks)

    def _shared_length(self, pairs: list[Pair], query: ProcessedItem) -> int:
        """Longest common prefix of the pairs, ending before any document's vision block and each
        pair's last token (document visuals share token ids but not content)."""
        first = pairs[0]
        if all(pair.head is first.head for pair in pairs):
            limit = min(len(pair.rest) for pair in pairs) - 1
            length = 0
            while (
                length < limit
                and first.rest[length] != self.vision_start_id
                and all(pair.rest[length] == first.rest[length] for pair in pairs)
            ):
                length += 1
            return len(first.head) + length
        # Heads cut differently (a query that fills the budget): compare whole sequences.
        sequences = [pair.ids() for pair in pairs]
        limit = min(len(s) for s in sequences) - 1
        n_query_blocks = sum(v.placeholder.count("<|vision_start|>") for v in query.visuals)
        length = blocks = 0
        while length < limit and all(s[length] == sequences[0][length] for s in sequences):
            if sequences[0][length] == self.vision_start_id:
                blocks += 1
                if blocks > n_query_blocks:
                    break
            length += 1
        return length

    def _make_prefix(self, ids: list[int], visuals: list[Visual]) -> Prefix:
        return Prefix(ids, self.positions(ids, visuals), visuals)

    def _make_row(
        self,
        index: int,
        pair: Pair,
        prefix: Prefix,
        query: ProcessedItem,
        doc: ProcessedItem,
        heads: dict[int, torch.Tensor],
    ) -> PairRow:
        """The pair's ids after the prefix, with their mRoPE positions.

        Positions are shift-invariant (each segment starts at the previous maximum + 1), so the
        document side's positions are computed alone and offset past the head's.
        """
        p, head = len(prefix), pair.head
        if 0 < p < len(head):  # heads cut differently, prefix inside them: lay the whole pair out (rare)
            ids = pair.ids()
            positions = self.positions(ids, query.visuals + doc.visuals)[:, p:]
            return PairRow(index, ids[p:], positions, doc.visuals, prefix, len(pair))
        if id(head) not in heads:
            heads[id(head)] = self.positions(head, query.visuals)
        offset = int(heads[id(head)].max()) + 1 if head else 0
        if doc.visuals:
            rest = self.positions(pair.rest, doc.visuals) + offset
        else:
            rest = torch.arange(offset, offset + len(pair.rest)).expand(3, -1)
        if p == 0:  # no shared prefix: the row is the whole pair
            positions = torch.cat([heads[id(head)], rest], dim=1)
            return PairRow(index, pair.ids(), positions, query.visuals + doc.visuals, prefix, len(pair))
        cut = p - len(head)
        return PairRow(index, pair.rest[cut:], rest[:, cut:], doc.visuals, prefix, len(pair))

    # ---- model thread ------------------------------------------------------------------------

    @torch.inference_mode()
    def forward_prefix(self, prefix: Prefix) -> None:
        """Compute and keep the prefix's keys and values."""
        if not prefix.ids or prefix.kv is not None:
            return
        from transformers import DynamicCache

        inputs = {k: self.to_device(v) for k, v in stack_visuals(prefix.visuals).items()}
        out = self.base(
            input_ids=self.to_device(torch.tensor([prefix.ids])),
            position_ids=self.to_device(prefix.positions[:, None, :]),
            use_cache=True,
            **{self._cache_kwarg: DynamicCache()},
            **inputs,
        )
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        prefix.kv = [(k, v) for k, v in cache_layers(cache)]

    @torch.inference_mode()
    def forward_rows(self, rows: list[PairRow]) -> torch.Tensor:
        """Logits (logit_yes - logit_no) for rows, possibly of different requests, in one forward."""
        ids, positions, lengths = self.padded_batch(rows)
        batch, width = ids.shape
        prefix_lengths = [len(r.prefix) for r in rows]
        p_max = max(prefix_lengths)
        kwargs = {k: self.to_device(v) for k, v in stack_visuals([v for r in rows for v in r.visuals]).items()}
        shared = rows[0].prefix if all(r.prefix is rows[0].prefix for r in rows) else None
        context = contextlib.nullcontext()
        if (
            p_max
            and shared is not None
            and fused.prefixed_rows_supported(self.base.language_model, batch, width, p_max)
        ):
            # The compiled layers attend to the prefix's keys and values directly (models/fused.py).
            context = fused.shared_prefix(shared.kv)
            kwargs["use_cache"] = False
        elif p_max:
            kwargs[self._cache_kwarg] = self._batched_cache(rows, p_max, shared)
            kwargs["use_cache"] = True
            # Rows are right-padded, so causal attention alone keeps pads out of real tokens' view; a
            # mask is needed only to hide the left padding of shorter prefixes.
            if len(set(prefix_lengths)) > 1:
                mask = torch.zeros((batch, p_max + width), dtype=torch.long)
                for b, (p, s) in enumerate(zip(prefix_lengths, lengths)):
                    mask[b, p_max - p : p_max + s] = 1
                kwargs["attention_mask"] = self.to_device(mask)
        with context:
            out = self.base(input_ids=self.to_device(ids), position_ids=self.to_device(positions), **kwargs)
        return (self.last_hidden(out.last_hidden_state, lengths).float() @ self.score_vector).cpu()

    def _batched_cache(self, rows: list[PairRow], p_max: int, shared: Prefix | None):
        """One cache for the batch: each row's prefix, left-padded to the longest (`shared`: the
        one prefix every row continues, if there is one).

        Each distinct prefix is padded once per layer and rows pick theirs with one index_select, so
        the number of kernel launches follows the number of requests in the batch, not of rows.
        """
        if shared is not None:
            return new_cache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in shared.kv])
        prefixes = [r.prefix for r in rows]
        distinct = list({id(p): p for p in prefixes}.values())
        slot = {id(p): i for i, p in enumerate(distinct)}
        pick = self.to_device(torch.tensor([slot[id(p)] for p in prefixes]))
        template = next(p.kv for p in distinct if len(p))
        layers = []
        for layer, (k0, v0) in enumerate(template):
            keys = torch.cat([_left_pad(p.kv[layer][0] if len(p) else None, p_max, k0) for p in distinct])
            values = torch.cat([_left_pad(p.kv[layer][1] if len(p) else None, p_max, v0) for p in distinct])
            layers.append((keys.index_select(0, pick), values.index_select(0, pick)))
        return new_cache(layers)


def _labels(request: RerankInput) -> list[str]:
    """How errors name each document: `documents[3]`, or the caller's own field (`texts[3]` for TEI)."""
    return [f"{request.documents_field}[{i}]" for i in range(len(request.documents))]


def _left_pad(tensor: torch.Tensor | None, length: int, like: torch.Tensor) -> torch.Tensor:
    """(1, heads, P, dim) -> (1, heads, length, dim), zeros on the left; None gives all zeros."""
    if tensor is not None and tensor.shape[2] == length:
        return tensor
    padded = like.new_zeros((1, like.shape[1], length, like.shape[3]))
    if tensor is not None:
        padded[:, :, length - tensor.shape[2] :] = tensor
    return padded
