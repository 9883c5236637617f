"""Qwen3-VL-Reranker on transformers: prepares pairs, reuses the query prefix, scores micro-batches.

Score = sigmoid(w . h) where h is the final hidden state at a pair's last token and
w = lm_head[yes] - lm_head[no], exactly as the official reference computes it.

Query-prefix reuse: all pairs of a request share "system + instruction + query". The longest common
token prefix of the request's pairs is forwarded once; each pair's remaining tokens attend to its
cached keys and values. Positions, truncation and visual features are those of the full sequence,
so scores equal the full computation up to float rounding.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from sidecar.media import MediaResolver
from sidecar.models import fused
from sidecar.models.backend import QwenBackend
from sidecar.models.loading import cache_kwarg_name, cache_layers, new_cache
from sidecar.models.visuals import (
    ProcessedItem,
    Visual,
    expand_placeholders,
    stack_visuals,
)
from sidecar.prompts import (
    RERANK_MAX_LENGTH,
    rerank_document_suffix,
    rerank_query_prefix,
    side_content,
    truncate_rerank_pair,
)
from sidecar.types import RerankInput


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
    stats: dict = field(default_factory=dict)


class RerankerModel(QwenBackend):
    """A loaded reranker checkpoint. `prepare` runs on any thread; `forward_*` only on the model thread."""

    kind = "reranker"

    def __init__(self, name: str, model, processor, max_length: int = RERANK_MAX_LENGTH) -> None:
        super().__init__(name, model.model, processor, max_length)
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
    ) -> PreparedRerank:
        """Resolve media (concurrently on `pool` when given), build and tokenize every pair, split off the prefix.

        The prefix is split off only when it saves at least `min_saved_tokens` forwarded tokens.
        """
        labelled = [(request.query, "query")] + [(doc, f"documents[{i}]") for i, doc in enumerate(request.documents)]
        query, *docs = self.visual_processor.items(labelled, resolver, pool)
        head = rerank_query_prefix(request.instruction, side_content(query.text, query.n_images, query.n_videos))
        texts = [
            expand_placeholders(
                head + rerank_document_suffix(side_content(d.text, d.n_images, d.n_videos)), query.visuals + d.visuals
            )
            for d in docs
        ]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        sequences = [truncate_rerank_pair(ids, self.max_length, self.special_ids) for ids in encoded]
        n_query_blocks = sum(v.placeholder.count("<|vision_start|>") for v in query.visuals)
        shared = self._shared_length(sequences, n_query_blocks) if reuse_prefix and len(sequences) > 1 else 0
        if shared * (len(sequences) - 1) < min_saved_tokens:
            shared = 0
        prefix = self._make_prefix(sequences[0][:shared] if shared else [], query.visuals if shared else [])
        rows = [self._make_row(i, seq, prefix, query, d) for i, (seq, d) in enumerate(zip(sequences, docs))]
        frames = sum(v.frames for item in [query, *docs] for v in item.visuals)
        return PreparedRerank(prefix, rows, images=resolver.decoded, video_frames=frames)

    def _shared_length(self, sequences: list[list[int]], n_query_blocks: int) -> int:
        """Longest common prefix, ending before the documents' first vision block and the last token.

        Document visuals share token ids but not content, so they never enter the prefix.
        """
        first = sequences[0]
        limit = min(len(s) for s in sequences) - 1
        length = 0
        while length < limit and all(s[length] == first[length] for s in sequences):
            length += 1
        blocks_seen = 0
        for index in range(length):
            if first[index] == self.vision_start_id:
                blocks_seen += 1
                if blocks_seen > n_query_blocks:
                    return index
        return length

    def _make_prefix(self, ids: list[int], visuals: list[Visual]) -> Prefix:
        return Prefix(ids, self.positions(ids, visuals), visuals)

    def _make_row(
        self, index: int, seq: list[int], prefix: Prefix, query: ProcessedItem, doc: ProcessedItem
    ) -> PairRow:
        p = len(prefix)
        suffix = seq[p:]
        if p and not doc.visuals:
            start = int(prefix.positions[0, -1]) + 1
            positions = torch.arange(start, start + len(suffix)).expand(3, -1)
        else:
            positions = self.positions(seq, query.visuals + doc.visuals)[:, p:]
        visuals = doc.visuals if p else query.visuals + doc.visuals
        return PairRow(index, suffix, positions, visuals, prefix, len(seq))

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


def _left_pad(tensor: torch.Tensor | None, length: int, like: torch.Tensor) -> torch.Tensor:
    """(1, heads, P, dim) -> (1, heads, length, dim), zeros on the left; None gives all zeros."""
    if tensor is not None and tensor.shape[2] == length:
        return tensor
    padded = like.new_zeros((1, like.shape[1], length, like.shape[3]))
    if tensor is not None:
        padded[:, :, length - tensor.shape[2] :] = tensor
    return padded
