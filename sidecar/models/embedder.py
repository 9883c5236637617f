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
from sidecar.models.features import FeatureCache
from sidecar.models.visual_inputs import text_model_inputs
from sidecar.models.visuals import ProcessedItem, Visual
from sidecar.prompts import EMBED_MAX_LENGTH, embed_prompt, side
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

    def __init__(
        self, name: str, base, processor, max_length: int = EMBED_MAX_LENGTH, special_tokens_in_text: str = "plain"
    ) -> None:
        super().__init__(name, base, processor, max_length, special_tokens_in_text)

    def prepare(
        self, inputs: tuple[ItemInput, ...], instruction: str, resolver: MediaResolver, pool: Executor | None = None
    ) -> PreparedEmbed:
        """`process` then `assemble` on this thread (media concurrently on `pool` when given)."""
        prepared = self.assemble(self.process(inputs, resolver, pool), instruction)
        prepared.images = resolver.decoded
        return prepared

    def process(
        self, inputs: tuple[ItemInput, ...], resolver: MediaResolver, pool: Executor | None = None
    ) -> list[ProcessedItem]:
        """Resolve and process every input's media."""
        return self.visual_processor.items([(item, f"inputs[{i}]") for i, item in enumerate(inputs)], resolver, pool)

    def assemble(self, items: list[ProcessedItem], instruction: str, first: int = 0) -> PreparedEmbed:
        """Each input's prompt as token ids, cut at the maximum length as the reference cuts it (plain right
        truncation; an input whose images or video would be cut is refused). An empty input is "NULL".
        `first` is the request position of `items[0]` (inputs may be assembled a slice at a time)."""
        rows = [self._row(index, item, instruction) for index, item in enumerate(items, start=first)]
        frames = sum(v.frames for item in items for v in item.visuals)
        return PreparedEmbed(rows, video_frames=frames)

    def _row(self, index: int, item: ProcessedItem, instruction: str) -> EmbedRow:
        tok = self.prompt_tokenizer
        ids: list[int] = []
        runs = tok.runs(tok.parts(embed_prompt(instruction, side(item.text, [v.placeholder for v in item.visuals]))))
        for position, run in enumerate(runs):
            if len(ids) > self.max_length:  # everything from here on is cut
                if any(r.special in (self.image_token_id, self.video_token_id) for r in runs[position:]):
                    ids.append(self.image_token_id)  # reported below as a cut inside the visuals
                break
            if run.special is not None:
                ids.append(run.special)
            else:
                ids += tok.encode_head(run.text, self.max_length - len(ids) + 1)[0]
        if len(ids) > self.max_length:
            cut = ids[self.max_length :]
            if self.image_token_id in cut or self.video_token_id in cut:
                raise invalid(f"inputs[{index}] is longer than {self.max_length} tokens inside its images/video")
            ids = ids[: self.max_length]  # the reference's plain right truncation
        return EmbedRow(index, ids, self.positions(ids, item.visuals), item.visuals)

    @torch.inference_mode()
    def forward_rows(self, rows: list[EmbedRow], cache: FeatureCache | None = None) -> torch.Tensor:
        """L2-normalised embeddings (B, hidden) in float32, one per row."""
        ids, positions, lengths = self.padded_batch(rows)
        inputs = text_model_inputs(self, ids, [v for r in rows for v in r.visuals], cache)
        # Right padding under causal attention: real tokens never attend to the pads after them.
        out = self.base.language_model(position_ids=self.to_device(positions), **inputs)
        pooled = self.last_hidden(out.last_hidden_state, lengths).float()
        return torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu()


def truncate_dimensions(vector: torch.Tensor, dimensions: int) -> torch.Tensor:
    """Matryoshka truncation: the first `dimensions` values, re-normalised. 0 keeps the full vector."""
    if not dimensions or dimensions >= vector.shape[-1]:
        return vector
    return torch.nn.functional.normalize(vector[..., :dimensions], p=2, dim=-1)
