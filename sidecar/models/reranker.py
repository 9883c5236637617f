"""Qwen3-VL-Reranker on transformers: prepares pairs, reuses the query prefix, scores micro-batches.

Score = sigmoid(w . h) where h is the final hidden state at a pair's last token and
w = lm_head[yes] - lm_head[no], exactly as the official reference computes it.

Preparation is two stages the scheduler runs apart: `process` (media: fetch, decode, resize,
patchify; per item, on a pool) and the assembly of rows: `begin` fixes what every pair shares (the
prompt head and the prefix) from the query alone, and `extend` turns documents into rows as they
become ready, so a request's first rows can be scored while its later documents are still being
fetched. `assemble` does both for a whole request at once.

Query-prefix reuse: all pairs of a request start with the same head, "system + instruction +
query". It is forwarded once; each pair's remaining tokens attend to its cached keys and values.
Positions, truncation and visual features are those of the full sequence, so scores equal the full
computation up to float rounding. The prefixes of several requests are forwarded together.
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
from sidecar.models.features import FeatureCache
from sidecar.models.loading import cache_kwarg_name, cache_layers, new_cache
from sidecar.models.pairs import Chunk, Pair, PairBuilder, PairLimits
from sidecar.models.visual_inputs import text_model_inputs
from sidecar.models.visuals import ProcessedItem, Visual
from sidecar.prompts import RERANK_MAX_LENGTH
from sidecar.types import ItemInput, RerankInput


@dataclass(eq=False)
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
    computed_tokens: int = 0  # the prefix once, and every row's own tokens

    def per_document(self, logits: list[float], count: int) -> tuple[list[float], list[Chunk | None]]:
        """Each document's logit, the best of its rows (windows), and the window that gave it."""
        best: list[float | None] = [None] * count
        chunks: list[Chunk | None] = [None] * count
        for logit, document, chunk in zip(logits, self.documents, self.chunks):
            if best[document] is None or logit > best[document]:
                best[document], chunks[document] = logit, chunk
        return best, chunks


@dataclass
class RerankPlan:
    """One request's assembly in progress: what `begin` fixed, and the rows `extend` has built."""

    request: RerankInput
    query: ProcessedItem
    builder: PairBuilder
    head: object  # PairBuilder.start's result
    prefix_head: list[int] | None  # the pair head that continues the prefix (None: no prefix)
    prepared: PreparedRerank
    none: Prefix  # the empty prefix of rows that do not continue the request's prefix
    max_request_tokens: int | None = None
    head_positions: dict[int, torch.Tensor] = field(default_factory=dict)  # per distinct head object


class RerankerModel(QwenBackend):
    """A loaded reranker checkpoint. Preparation runs on any thread; `forward_*` only on the model thread."""

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
        self._cache_kwarg = cache_kwarg_name(self.base.language_model)

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
        cache: FeatureCache | None = None,
    ) -> PreparedRerank:
        """`process` then `assemble`: the whole preparation of one request on this thread (and `pool`)."""
        processed = self.process(request, resolver, pool, cache)
        prepared = self.assemble(request, processed, reuse_prefix, min_saved_tokens, limits, max_request_tokens)
        prepared.images = resolver.decoded
        return prepared

    def process(
        self,
        request: RerankInput,
        resolver: MediaResolver,
        pool: Executor | None = None,
        cache: FeatureCache | None = None,
    ) -> list[ProcessedItem]:
        """Resolve and process the media of the query and every document (concurrently on `pool`)."""
        return self.visual_processor.items(self.labelled(request), resolver, pool, cache)

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
        """Every row of a request whose items are all processed (`begin` and one `extend`)."""
        query, *docs = processed
        plan = self.begin(request, query, reuse_prefix, min_saved_tokens, limits, max_request_tokens)
        self.extend(plan, 0, docs)
        return plan.prepared

    def begin(
        self,
        request: RerankInput,
        query: ProcessedItem,
        reuse_prefix: bool = True,
        min_saved_tokens: int = 0,
        limits: PairLimits | None = None,
        max_request_tokens: int | None = None,
    ) -> RerankPlan:
        """Fix what every pair of the request shares, from the query alone: the prompt head and the prefix.

        The prefix is the head a text document's pair keeps; it is split off only when it saves at
        least `min_saved_tokens` forwarded tokens over the request's documents.
        """
        limits = limits or PairLimits(max_length=self.max_length)
        limits = replace(
            limits,
            truncate=request.truncate,
            direction=request.truncation_direction,
            chunk=request.long_documents == "chunk",
            max_tokens_per_doc=request.max_tokens_per_doc,
            chunk_overlap=request.chunk_overlap,
            max_chunks=min(request.max_chunks or limits.max_chunks, limits.max_chunks),  # the server's is the cap
        )
        builder = PairBuilder(self.prompt_tokenizer, limits)
        head = builder.start(query, request.instruction)
        prefix_head = builder.text_document_head(head) if reuse_prefix else None
        several = len(request.documents) > 1 or limits.chunk
        if prefix_head is not None and (
            not several or len(prefix_head) * (len(request.documents) - 1) < min_saved_tokens
        ):
            prefix_head = None
        none = Prefix([], torch.zeros(3, 0, dtype=torch.long), [])
        prefix = self._make_prefix(prefix_head, query.visuals) if prefix_head else none
        prepared = PreparedRerank(prefix, [], computed_tokens=len(prefix))
        return RerankPlan(request, query, builder, head, prefix_head, prepared, none, max_request_tokens)

    def extend(self, plan: RerankPlan, first: int, documents: list[ProcessedItem]) -> list[PairRow]:
        """Rows for `documents`, the request's documents from position `first` on; they are also
        added to `plan.prepared`. A request whose computed tokens pass `max_request_tokens` is refused."""
        labels = _labels(plan.request)
        pairs = [
            pair
            for index, document in enumerate(documents, start=first)
            for pair in plan.builder.pairs(plan.head, index, document, labels[index])
        ]
        prepared = plan.prepared
        rows = []
        for pair in pairs:
            row = self._make_row(len(prepared.rows) + len(rows), pair, plan, documents[pair.document - first])
            rows.append(row)
            prepared.computed_tokens += len(row.ids)
        limit = plan.max_request_tokens
        if limit is not None and prepared.computed_tokens > limit:
            raise SidecarError(
                Kind.TOO_LARGE,
                f"the request needs more than {limit} tokens of model input, the limit per request "
                "(--max-request-tokens); send fewer or shorter documents",
            )
        prepared.rows += rows
        prepared.documents += [p.document for p in pairs]
        prepared.chunks += [p.chunk for p in pairs]
        prepared.video_frames += sum(v.frames for d in documents for v in d.visuals)
        return rows

    def _make_prefix(self, ids: list[int], visuals: list[Visual]) -> Prefix:
        return Prefix(ids, self.positions(ids, visuals), visuals)

    def _make_row(self, index: int, pair: Pair, plan: RerankPlan, doc: ProcessedItem) -> PairRow:
        """The pair's ids after the prefix (all of them if the pair does not continue it), with their
        mRoPE positions.

        Positions are shift-invariant (each segment starts at the previous maximum + 1), so the
        document side's positions are computed alone and offset past the head's.
        """
        head, query, heads = pair.head, plan.query, plan.head_positions
        if id(head) not in heads:
            heads[id(head)] = self.positions(head, query.visuals)
        offset = int(heads[id(head)].max()) + 1 if head else 0
        if doc.visuals:
            rest = self.positions(pair.rest, doc.visuals) + offset
        else:
            rest = torch.arange(offset, offset + len(pair.rest)).expand(3, -1)
        if head is plan.prefix_head:
            return PairRow(index, pair.rest, rest, doc.visuals, plan.prepared.prefix, len(pair))
        # No prefix, or a head cut differently from the prefix (a query that fills the budget beside
        # a document with many images): the row is the whole pair.
        positions = torch.cat([heads[id(head)], rest], dim=1)
        return PairRow(index, pair.ids(), positions, query.visuals + doc.visuals, plan.none, len(pair))

    # ---- model thread ------------------------------------------------------------------------

    @torch.inference_mode()
    def forward_prefix(self, prefix: Prefix, cache: FeatureCache | None = None) -> None:
        """Compute and keep the prefix's keys and values."""
        self.forward_prefixes([prefix], cache)

    @torch.inference_mode()
    def forward_prefixes(self, prefixes: list[Prefix], cache: FeatureCache | None = None) -> None:
        """Compute and keep the keys and values of every prefix that needs them, in one forward."""
        from transformers import DynamicCache

        todo = list({id(p): p for p in prefixes if p.ids and p.kv is None}.values())
        if not todo:
            return
        ids, positions, lengths = self.padded_batch(todo)  # right-padded: causal attention keeps pads unseen
        inputs = text_model_inputs(self, ids, [v for p in todo for v in p.visuals], cache)
        out = self.base.language_model(
            position_ids=self.to_device(positions), use_cache=True, **{self._cache_kwarg: DynamicCache()}, **inputs
        )
        layers = cache_layers(getattr(out, "cache", None) or getattr(out, "past_key_values", None))
        for b, prefix in enumerate(todo):
            if len(todo) == 1:
                prefix.kv = [(k, v) for k, v in layers]
            else:
                n = lengths[b]
                prefix.kv = [(k[b : b + 1, :, :n].contiguous(), v[b : b + 1, :, :n].contiguous()) for k, v in layers]

    @torch.inference_mode()
    def forward_rows(self, rows: list[PairRow], cache: FeatureCache | None = None) -> torch.Tensor:
        """Logits (logit_yes - logit_no) for rows, possibly of different requests, in one forward."""
        order = _grouped_by_prefix(rows)
        rows = [rows[i] for i in order]
        ids, positions, lengths = self.padded_batch(rows)
        batch, width = ids.shape
        prefix_lengths = [len(r.prefix) for r in rows]
        p_max = max(prefix_lengths)
        kwargs = text_model_inputs(self, ids, [v for r in rows for v in r.visuals], cache)
        context = contextlib.nullcontext()
        if p_max and fused.prefixed_rows_supported(self.base.language_model):
            # The compiled layers attend to each prefix's keys and values directly (models/fused.py).
            context = fused.prefix_groups(_prefix_groups(rows))
            kwargs["use_cache"] = False
        elif p_max:
            kwargs[self._cache_kwarg] = self._batched_cache(rows, p_max)
            kwargs["use_cache"] = True
            # Rows are right-padded, so causal attention alone keeps pads out of real tokens' view; a
            # mask is needed only to hide the left padding of shorter prefixes.
            if len(set(prefix_lengths)) > 1:
                mask = torch.zeros((batch, p_max + width), dtype=torch.long)
                for b, (p, s) in enumerate(zip(prefix_lengths, lengths)):
                    mask[b, p_max - p : p_max + s] = 1
                kwargs["attention_mask"] = self.to_device(mask)
        with context:
            out = self.base.language_model(position_ids=self.to_device(positions), **kwargs)
        logits = (self.last_hidden(out.last_hidden_state, lengths).float() @ self.score_vector).cpu()
        restored = torch.empty_like(logits)
        restored[torch.tensor(order)] = logits
        return restored

    def _batched_cache(self, rows: list[PairRow], p_max: int):
        """One cache for the batch: each row's prefix, left-padded to the longest.

        Each distinct prefix is padded once per layer and rows pick theirs with one index_select, so
        the number of kernel launches follows the number of requests in the batch, not of rows.
        """
        prefixes = [r.prefix for r in rows]
        distinct = list({id(p): p for p in prefixes}.values())
        if len(distinct) == 1:
            return new_cache(
                [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in distinct[0].kv]
            )
        slot = {id(p): i for i, p in enumerate(distinct)}
        pick = self.to_device(torch.tensor([slot[id(p)] for p in prefixes]))
        template = next(p.kv for p in distinct if len(p))
        layers = []
        for layer, (k0, v0) in enumerate(template):
            keys = torch.cat([_left_pad(p.kv[layer][0] if len(p) else None, p_max, k0) for p in distinct])
            values = torch.cat([_left_pad(p.kv[layer][1] if len(p) else None, p_max, v0) for p in distinct])
            layers.append((keys.index_select(0, pick), values.index_select(0, pick)))
        return new_cache(layers)


def _grouped_by_prefix(rows: list[PairRow]) -> list[int]:
    """Row order with the rows of each prefix together (first appearance order, stable within)."""
    group: dict[int, int] = {}
    for row in rows:
        group.setdefault(id(row.prefix), len(group))
    return sorted(range(len(rows)), key=lambda i: group[id(rows[i].prefix)])


def _prefix_groups(rows: list[PairRow]) -> list[fused.PrefixGroup]:
    """Consecutive runs of rows continuing one prefix (rows ordered by `_grouped_by_prefix`)."""
    groups: list[fused.PrefixGroup] = []
    for b, row in enumerate(rows):
        if groups and groups[-1].prefix_id == id(row.prefix):
            groups[-1].end = b + 1
        else:
            groups.append(fused.PrefixGroup(row.prefix.kv if len(row.prefix) else None, b, b + 1, id(row.prefix)))
    return groups


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
