"""The engine's scores equal an independent reference computation (tests/reference.py) within 1e-5."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from sidecar.media import MediaPolicy, MediaResolver
from sidecar.types import ItemInput, MediaRef, RerankInput, VideoRef
from tests.conftest import png_bytes
from tests.reference import reference_logit

IMG_A = png_bytes(200, 150, seed=10)
IMG_B = png_bytes(64, 300, seed=11)
IMG_RGBA = png_bytes(120, 120, seed=12, mode="RGBA")
FRAMES = [png_bytes(120, 90, seed=20 + i) for i in range(5)]


def pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def engine_item(text: str = "", images=(), frames=()) -> ItemInput:
    videos = (VideoRef(frames=tuple(MediaRef(data=f) for f in frames)),) if frames else ()
    return ItemInput(text=text, images=tuple(MediaRef(data=i) for i in images), videos=videos)


def reference_item(text: str = "", images=(), frames=()) -> dict:
    return {"text": text or None, "images": [pil(i) for i in images], "frames": [pil(f) for f in frames]}


CASES = {
    "text/text": (dict(text="a red bicycle"), dict(text="A bike shop sells red bicycles.")),
    "text/image": (dict(text="a red bicycle"), dict(images=[IMG_A])),
    "image/text": (dict(images=[IMG_A]), dict(text="picture of a cat")),
    "text+image/text+image": (
        dict(text="what is this", images=[IMG_B]),
        dict(text="two images", images=[IMG_A, IMG_B]),
    ),
    "chinese": (dict(text="红色自行车在哪里买"), dict(text="这家自行车店出售红色自行车。")),
    "empty document": (dict(text="anything"), dict()),
    "transparent image": (dict(text="logo"), dict(images=[IMG_RGBA], text="a logo")),
    "video frames": (dict(text="a short clip"), dict(frames=FRAMES)),
    "query video + document image": (dict(frames=FRAMES[:2], text="clip"), dict(images=[IMG_B])),
}


def engine_logits(reranker, query: dict, documents: list[dict], reuse_prefix: bool, instruction: str = ""):
    request = RerankInput(engine_item(**query), tuple(engine_item(**d) for d in documents), instruction)
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse_prefix)
    reranker.forward_prefix(prepared.prefix)
    return reranker.forward_rows(prepared.rows).tolist()


LOGIT_TOLERANCE = 1e-4  # engine vs reference, fp32; probabilities within 1e-5


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("reuse_prefix", [False, True], ids=["full", "prefix-reuse"])
@pytest.mark.parametrize("case", list(CASES))
def test_scores_match_reference(reranker, tiny_loaded, case, reuse_prefix):
    model, processor = tiny_loaded
    query, document = CASES[case]
    expected = reference_logit(model, processor, reference_item(**query), reference_item(**document))
    # Two copies of the document so that prefix reuse really splits the sequence.
    got = engine_logits(reranker, query, [document, document], reuse_prefix)
    for logit in got:
        assert abs(sigmoid(logit) - sigmoid(expected)) < 1e-5
        assert abs(logit - expected) < LOGIT_TOLERANCE


def test_custom_instruction_changes_the_prompt(reranker, tiny_loaded):
    model, processor = tiny_loaded
    query, document = CASES["text/text"]
    instruction = "Find product descriptions matching the query."
    expected = reference_logit(model, processor, reference_item(**query), reference_item(**document), instruction)
    default = reference_logit(model, processor, reference_item(**query), reference_item(**document))
    got = engine_logits(reranker, query, [document, document], True, instruction)
    assert abs(got[0] - expected) < LOGIT_TOLERANCE
    assert abs(expected - default) > 100 * LOGIT_TOLERANCE  # the instruction really reached the model


# Each rule of the reference prompt, broken on purpose: a parity check passes only if the engine
# follows the rule, because breaking it moves the score by far more than the parity tolerance.
MUTATIONS = {
    "instruction": ("text/text", {"instruction": "Find product descriptions matching the query."}),
    "system prompt": ("text/text", {"system": "Judge whether the Document is relevant to the Query."}),
    "NULL for an empty side": ("empty document", {"null": ""}),
    "media before text": ("text+image/text+image", {"text_first": True}),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_prompt_rule_moves_the_score_far_beyond_the_tolerance(reranker, tiny_loaded, mutation):
    model, processor = tiny_loaded
    case, variant = MUTATIONS[mutation]
    query, document = CASES[case]
    right = reference_logit(model, processor, reference_item(**query), reference_item(**document))
    wrong = reference_logit(model, processor, reference_item(**query), reference_item(**document), **variant)
    assert abs(right - wrong) > 100 * LOGIT_TOLERANCE, f"{mutation}: {right} vs {wrong}"
    got = engine_logits(reranker, query, [document, document], True)
    assert abs(got[0] - right) < LOGIT_TOLERANCE
