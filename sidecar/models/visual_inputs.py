"""Visual features into the text model's inputs, on the model thread.

transformers' Qwen3-VL forward runs the vision tower on every picture it is handed. The engine
assembles the text model's inputs itself instead: a visual whose features are known (a feature
cache hit, or a picture an earlier forward computed) uses them; the vision tower runs once over the
batch's other pictures, and what it computes is kept in the feature cache (models/features.py). The
features replace the embeddings of the image and video tokens in sequence order, and the deepstack
features go to the text model with the mask of those tokens: the arithmetic of transformers' own
forward. The text model takes `inputs_embeds`, `visual_pos_masks` and `deepstack_visual_embeds` in
transformers 4.57 and 5.x alike; only the vision tower's return type differs between them.
"""

from __future__ import annotations

import torch

from sidecar.models.features import CachedPicture, FeatureCache, VisionFeatures
from sidecar.models.visuals import Visual


def vision_tower(base, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The merged embeddings (tokens, hidden) and the per-layer deepstack features of pictures whose
    patches are concatenated in `pixel_values` (each picture attends only to itself)."""
    visual = base.visual
    out = visual(pixel_values.type(visual.dtype), grid_thw=grid_thw)
    if hasattr(out, "pooler_output"):  # transformers 5: the merged tokens are the pooler output
        return out.pooler_output, list(out.deepstack_features)
    merged, deepstack = out  # transformers 4.57: (merged, deepstack features)
    return merged, list(deepstack)


def visual_features(backend, visuals: list[Visual], cache: FeatureCache | None) -> list[VisionFeatures]:
    """Each visual's features on the model's device, computing those not known yet in one tower call."""
    pending: dict[object, list[Visual]] = {}  # pictures to compute, by cache key (one computation per key)
    for visual in visuals:
        if visual.cached is None and visual.key is not None and cache is not None:
            visual.cached = cache.peek(visual.key)  # computed by a forward since its request was prepared
        if visual.cached is None:
            pending.setdefault(visual.key or id(visual), []).append(visual)
    if pending:
        firsts = [group[0] for group in pending.values()]
        pixels = torch.cat([v.pixel_values for v in firsts])
        grids = torch.stack([v.grid_thw for v in firsts])
        merged, deepstack = vision_tower(backend.base, backend.to_device(pixels), backend.to_device(grids))
        sizes = [int(v.grid_thw.prod()) // backend.visual_processor.merge for v in firsts]
        per_layer = [layer.split(sizes) for layer in deepstack]
        for i, (first, embeds) in enumerate(zip(firsts, merged.split(sizes))):
            features = VisionFeatures(embeds, tuple(layer[i] for layer in per_layer))
            if cache is not None and first.key is not None:
                # Copies, not views: a view would keep the whole batch's output alive, unaccounted for.
                features = VisionFeatures(embeds.clone(), tuple(t.clone() for t in features.deepstack))
                entry = cache.put(first.key, first.grid_thw, features)
            else:
                entry = CachedPicture("", first.grid_thw, sizes[i], features)
            for visual in pending[first.key or id(first)]:
                visual.cached, visual.pixel_values = entry, None  # a later window of the document reuses it
    if cache is None:
        return [visual.cached.features for visual in visuals]
    return [cache.on_device(visual.cached) for visual in visuals]


def text_model_inputs(backend, ids: torch.Tensor, visuals: list[Visual], cache: FeatureCache | None) -> dict:
    """Keyword arguments for the text model: the embeddings of `ids` (B, S, on the CPU) with the
    features of `visuals` (in sequence order) in place of their tokens, and the deepstack inputs."""
    embeds = backend.base.get_input_embeddings()(backend.to_device(ids))
    if not visuals:
        return {"inputs_embeds": embeds}
    features = visual_features(backend, visuals, cache)
    mask = (ids == backend.image_token_id) | (ids == backend.video_token_id)
    tokens = sum(f.embeds.shape[0] for f in features)
    if int(mask.sum()) != tokens:  # checked on the CPU copy of the ids: no device synchronisation
        raise ValueError(f"{int(mask.sum())} vision tokens in the batch but {tokens} visual features")
    mask = backend.to_device(mask)
    merged = torch.cat([f.embeds for f in features]).to(embeds.dtype)
    deepstack = [torch.cat([f.deepstack[layer] for f in features]) for layer in range(len(features[0].deepstack))]
    return {
        "inputs_embeds": embeds.masked_scatter(mask[..., None], merged),
        "visual_pos_masks": mask,
        "deepstack_visual_embeds": deepstack,
    }
