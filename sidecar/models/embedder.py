"""Qwen3-VL-Embedding on transformers: last-token pooling, L2-normalised, batched under a token budget.

Reproduces the official reference: system message = instruction (a final punctuation mark added
when missing), the user message is the item's videos, images and text, generation prompt, right
padding, the final hidden state at the last real token, L2 normalisation, max length 8192.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from sidecar.errors import invalid
from sidecar.media import MediaResolver
from sidecar.models.backend import QwenBackend
from sidecar.models.visuals import Visual, expand_placeholders, stack_visuals
from sidecar.prompts import EMBED_MAX_LENGTH, embed_prompt, side_content
from sidecar.types import ItemInput


@dataclass
class EmbedRow:
    index: int
    ids: list[int]
    positions: torch.Tensor  # (3, L)
    visuals: list[Visual]
    owner: object = None  # scheduler bookkeeping


@dataclass
class PreparedEmbed:
    rows: list[EmbedRow]
    images: int = 0
    video_frames: int = 0


class EmbedderModel(QwenBackend):
    """A loaded embedding checkpoint. `prepare` runs on any thread; `forward_rows` on the model thread."""

    kind = "embedding"

    def __init__(self, name: str, base, processor, max_length: int = EMBED_MAX_LENGTH) -> None:
        super().__init__(name, base, processor, max_length)

    def prepare(
        self, inputs: tuple[ItemInput, ...], instruction: str, resolver: MediaResolver, pool: Executor | None = None
    ) -> PreparedEmbed:
        """Resolve media (concurrently on `pool` when given), build and tokenize each input's prompt, truncate
        as the reference does."""
        labelled = [(item, f"inputs[{i}]") for i, item in enumerate(inputs)]
        items = self.visual_processor.items(labelled, resolver, pool)
        texts = [
            expand_placeholders(embed_prompt(instruction, side_content(it.text, it.n_images, it.n_videos)), it.visuals)
            for it in items
        ]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        rows = []
        for index, (ids, item) in enumerate(zip(encoded, items)):
            if len(ids) > self.max_length:
                cut = ids[self.max_length :]
                if self.image_token_id in cut or self.video_token_id in cut:
                    raise invalid(f"inputs[{index}] is longer than {self.max_length} tokens inside its images/video")
                ids = ids[: self.max_length]  # the reference's plain right truncation
            rows.append(EmbedRow(index, ids, self.positions(ids, item.visuals), item.visuals))
        frames = sum(v.frames for item in items for v in item.visuals)
        return PreparedEmbed(rows, images=resolver.decoded, video_frames=frames)

    @torch.inference_mode()
    def forward_rows(self, rows: list[EmbedRow]) -> torch.Tensor:
        """L2-normalised embeddings (B, hidden) in float32, one per row."""
        ids, positions, lengths = self.padded_batch(rows)
        kwargs = {k: self.to_device(v) for k, v in stack_visuals([v for r in rows for v in r.visuals]).items()}
        # Right padding under causal attention: real tokens never attend to the pads after them.
        out = self.base(input_ids=self.to_device(ids), position_ids=self.to_device(positions), **kwargs)
        pooled = self.last_hidden(out.last_hidden_state, lengths).float()
        return torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu()


def truncate_dimensions(vector: torch.Tensor, dimensions: int) -> torch.Tensor:
    """Matryoshka truncation: the first `dimensions` values, re-normalised. 0 keeps the full vector."""
    if not dimensions or dimensions >= vector.shape[-1]:
        return vector
    return torch.nn.functional.normalize(vector[..., :dimensions], p=2, dim=-1)
