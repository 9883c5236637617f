"""What the reranker and the embedder share: a loaded Qwen3-VL base model, its processor, positions."""

from __future__ import annotations

import hashlib

import torch

from sidecar.models.loading import rope_index
from sidecar.models.tokens import PromptTokenizer
from sidecar.models.visuals import IMAGE, VIDEO, Visual, VisualProcessor, visual_grids


class QwenBackend:
    """A loaded Qwen3-VL checkpoint: `base` is the Qwen3VLModel (vision tower + decoder, no LM head)."""

    kind = "base"
    adapter = ""  # the LoRA adapter merged into the weights, if any (reported by GetModelInfo)

    def __init__(self, name: str, base, processor, max_length: int, special_tokens_in_text: str = "plain") -> None:
        self.name = name
        self.base = base
        self.device = next(base.parameters()).device
        self.dtype = next(base.parameters()).dtype
        self.processor = processor
        self.tokenizer = processor.tokenizer
        # Prompts are encoded part by part; user text keeps special-token strings as text by default.
        self.prompt_tokenizer = PromptTokenizer(self.tokenizer, special_tokens_in_text)
        self.visual_processor = VisualProcessor(processor, reject_vision_markers=special_tokens_in_text == "reference")
        self.max_length = max_length
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        config = base.config
        self.image_token_id, self.video_token_id = config.image_token_id, config.video_token_id
        self.hidden_size = config.text_config.hidden_size

    def feature_fingerprint(self) -> str:
        """What a picture's cached features depend on besides its bytes: the checkpoint, its precision
        and the image processing (resize bounds, patching, normalisation)."""
        from sidecar.media.images import FACTOR, IMAGE_MAX_PIXELS, IMAGE_MIN_PIXELS

        processing = self.processor.image_processor.to_json_string()
        text = f"{self.name}|{self.dtype}|{IMAGE_MIN_PIXELS}|{IMAGE_MAX_PIXELS}|{FACTOR}|{processing}"
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def compile_layers(self) -> str | None:
        """Fuse and compile the decoder layers (models/fused.py) and the vision tower's blocks
        (models/fused_vision.py); None on success, else why both stay eager."""
        from sidecar.models.fused import fuse_and_verify, unfuse_decoder_layers
        from sidecar.models.fused_vision import fuse_and_verify as fuse_vision

        reason = fuse_and_verify(self.base)
        if reason is None and (reason := fuse_vision(self.base.visual)) is not None:
            unfuse_decoder_layers(self.base.language_model)
        return reason

    def uncompile_layers(self) -> None:
        """Back to transformers' own decoder layers and vision blocks."""
        from sidecar.models.fused import unfuse_decoder_layers
        from sidecar.models.fused_vision import unfuse_vision_blocks

        unfuse_decoder_layers(self.base.language_model)
        unfuse_vision_blocks(self.base.visual)

    def positions(self, ids: list[int], visuals: list[Visual]) -> torch.Tensor:
        """mRoPE positions (3, L) for an unpadded sequence whose visuals are `visuals`."""
        if not ids:
            return torch.zeros(3, 0, dtype=torch.long)
        if not visuals:
            return torch.arange(len(ids)).expand(3, -1)
        input_ids = torch.tensor([ids])
        mm_types = torch.zeros_like(input_ids)
        mm_types[input_ids == self.image_token_id] = IMAGE
        mm_types[input_ids == self.video_token_id] = VIDEO
        grids = visual_grids(visuals)
        positions = rope_index(self.base, input_ids, mm_types, grids.get("image_grid_thw"), grids.get("video_grid_thw"))
        return positions[:, 0]

    def padded_batch(self, rows) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Right-padded ids (B, S) and positions (3, B, S) of rows with `.ids` and `.positions`."""
        lengths = [len(r.ids) for r in rows]
        width = max(lengths)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((3, len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : lengths[b]] = torch.tensor(row.ids)
            positions[:, b, : lengths[b]] = row.positions
        return ids, positions, lengths

    def last_hidden(self, hidden: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Each row's final hidden state at its last real token (rows are right-padded)."""
        last = self.to_device(torch.tensor(lengths) - 1)
        return hidden[torch.arange(len(lengths), device=self.device), last]

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return tensor.contiguous().pin_memory().to(self.device, non_blocking=True)
        return tensor
