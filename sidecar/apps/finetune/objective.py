"""The trained quantity is the served one: the reranker's logit w . h, with gradients.

Pairs are built by `RerankerModel.prepare` itself (prompt, instruction, truncation, image and video
preprocessing), without the shared-prefix split, so each row is a whole pair; `pair_logits` runs them
through the base model as one right-padded batch and reads each row's last real token, as the
serving forward does for rows without a cached prefix. The LoRA layers live inside that base model,
so the gradient reaches them; lm_head is not trained, so w stays the served yes-minus-no row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sidecar.apps.eval.judgements import Item
from sidecar.media import MediaResolver
from sidecar.models.reranker import PairRow, RerankerModel
from sidecar.models.visuals import stack_visuals
from sidecar.types import ItemInput, MediaRef, RerankInput


def item_input(item: Item) -> ItemInput:
    """A query or document as the engine receives it from the API (images as references)."""
    return ItemInput(text=item.text, images=tuple(MediaRef(uri=ref) for ref in item.images))


def prepare_pairs(
    reranker: RerankerModel, resolver: MediaResolver, query: Item, documents: Sequence[Item], instruction: str
) -> list[PairRow]:
    """One row per (query, document), built exactly as the server builds them."""
    request = RerankInput(item_input(query), tuple(item_input(d) for d in documents), instruction)
    return reranker.prepare(request, resolver, reuse_prefix=False).rows


def pair_logits(reranker: RerankerModel, rows: Sequence[PairRow]) -> torch.Tensor:
    """logit_yes - logit_no per row (float32), differentiable in the model's trainable weights."""
    ids, positions, lengths = reranker.padded_batch(rows)
    visuals = stack_visuals([v for row in rows for v in row.visuals])
    out = reranker.base(
        input_ids=reranker.to_device(ids),
        position_ids=reranker.to_device(positions),
        **{name: reranker.to_device(value) for name, value in visuals.items()},
    )
    return reranker.last_hidden(out.last_hidden_state, lengths).float() @ reranker.score_vector


def listwise_loss(logits: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Mean softmax cross-entropy over groups of consecutive logits, each group's first one the positive."""
    losses = [
        F.cross_entropy(group[None, :], group.new_zeros(1, dtype=torch.long)) for group in logits.split(list(sizes))
    ]
    return torch.stack(losses).mean()


def pointwise_loss(logits: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """Mean binary cross-entropy of sigmoid(logit) against relevant (label > 0) or not."""
    targets = torch.tensor([1.0 if label > 0 else 0.0 for label in labels], device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets)
