"""The media-string convention: its parser, the image-string rules, and both end to end."""

from __future__ import annotations

import base64
import json

import pytest

from sidecar.api.dialects.cohere import parse_rerank
from sidecar.api.dialects.items import media_ref, parse_media_string
from sidecar.api.dialects.tei import parse_tei
from sidecar.errors import Kind, SidecarError
from sidecar.types import ItemInput, MediaRef
from tests.api.conftest import IMAGE, IMAGE_BASE64, IMAGE_DATA_URI
from tests.api.test_http_rerank import QUERY, f32, same

# ---- parse_media_string ----------------------------------------------------------------------

STAYS_TEXT = [
    "a red bicycle",
    "https://cdn.example.com/bike.jpg",  # a URL is text unless wrapped
    "red.png",
    "image: red.png",  # a YAML-ish line is text (docker-compose files are full of them)
    "services:\n  web:\n    image: nginx:latest\n",
    '{"text": "only text"}',  # no image key: text
    '{"image": "red.png", "caption": "x"}',  # an unknown key: text
    '["red.png"]',
    "{not json}",
    '{"image": "red.png"} trailing words',
    "",
]


@pytest.mark.parametrize("value", STAYS_TEXT)
def test_other_strings_stay_text(value):
    assert parse_media_string(value, "documents[0]") == ItemInput(text=value)


def test_media_string_with_one_image():
    value = '  {"text": "A red bicycle", "image": "https://cdn.example.com/bike.jpg"}\n'
    assert parse_media_string(value, "documents[0]") == ItemInput(
        text="A red bicycle", images=(MediaRef(uri="https://cdn.example.com/bike.jpg"),)
    )


def test_media_string_with_images_and_no_text():
    value = json.dumps({"images": ["red.png", IMAGE_DATA_URI, IMAGE_BASE64]})
    assert parse_media_string(value, "documents[0]") == ItemInput(
        images=(MediaRef(uri="red.png"), MediaRef(uri=IMAGE_DATA_URI), MediaRef(data=IMAGE))
    )


def test_recognition_can_be_turned_off():
    value = json.dumps({"text": "t", "image": "red.png"})
    assert parse_media_string(value, "documents[0]", enabled=False) == ItemInput(text=value)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"image": 5}, "documents[2] (media string).image must be a string, not a number"),
        ({"image": "  "}, "documents[2] (media string).image is empty"),
        ({"images": "red.png"}, "documents[2] (media string).images must be an array, not a string"),
        ({"images": ["red.png", None]}, "documents[2] (media string).images[1] must be a string, not null"),
        ({"text": ["a"], "image": "red.png"}, "documents[2] (media string).text must be a string, not an array"),
        ({"image": "a.png", "images": ["b.png"]}, "documents[2] (media string) has both image and images; use one"),
    ],
)
def test_a_recognised_media_string_with_bad_parts_is_an_error(obj, message):
    with pytest.raises(SidecarError) as caught:
        parse_media_string(json.dumps(obj), "documents[2]")
    assert caught.value.kind is Kind.VALIDATION and caught.value.message == message


# ---- image strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://cdn.example.com/a.jpg", MediaRef(uri="https://cdn.example.com/a.jpg")),
        ("HTTP://cdn.example.com/a.jpg", MediaRef(uri="HTTP://cdn.example.com/a.jpg")),
        (IMAGE_DATA_URI, MediaRef(uri=IMAGE_DATA_URI)),
        ("file://nested/blue.png", MediaRef(uri="file://nested/blue.png")),
        (IMAGE_BASE64, MediaRef(data=IMAGE)),
        ("\n".join(IMAGE_BASE64[i : i + 76] for i in range(0, len(IMAGE_BASE64), 76)), MediaRef(data=IMAGE)),
        (base64.urlsafe_b64encode(IMAGE).decode().rstrip("="), MediaRef(data=IMAGE)),
        ("nested/blue.png", MediaRef(uri="nested/blue.png")),
        ("abcdABCD1234wxyz", MediaRef(uri="abcdABCD1234wxyz")),  # valid base64, but not an image: a path
        (base64.b64encode(b"just some text, not an image").decode(), None),
    ],
)
def test_image_strings(value, expected):
    expected = expected or MediaRef(uri=value)
    assert media_ref(value, "documents[0].image") == expected


# ---- dialect parsers ------------------------------------------------------------------------------


def test_return_documents_default_follows_the_route():
    cohere = parse_rerank({"query": "q", "documents": ["a", {"text": "b"}]}, 8)
    jina = parse_rerank({"query": "q", "documents": ["a", {"image": "red.png"}]}, 8, api_version="1")
    explicit = parse_rerank({"query": {"text": "q"}, "documents": ["a"], "return_documents": False}, 8, "1")
    assert (cohere.return_documents, jina.return_documents, explicit.return_documents) == (False, True, False)


def test_media_strings_apply_to_queries_and_tei_texts():
    value = json.dumps({"text": "t", "image": "red.png"})
    parsed = parse_tei({"query": value, "texts": [value, "plain"]}, 8)
    expected = ItemInput(text="t", images=(MediaRef(uri="red.png"),))
    assert parsed.input.query == expected and parsed.input.documents == (expected, ItemInput(text="plain"))
    assert parsed.echoes == (value, "plain")  # return_text gives back what was sent


# ---- end to end ---------------------------------------------------------------------------------------


async def test_media_strings_score_as_grpc_images(http, grpc_client):
    documents = [
        json.dumps({"text": "A red bicycle", "image": IMAGE_DATA_URI}),
        json.dumps({"images": ["red.png", "nested/blue.png"]}),
        "A red bicycle",
    ]
    expected = await grpc_client.rerank(
        QUERY,
        [
            {"text": "A red bicycle", "images": [IMAGE_DATA_URI]},
            {"images": ["red.png", "nested/blue.png"]},
            "A red bicycle",
        ],
    )
    want = {r.index: r.score for r in expected.results}
    cohere = await http.post("/v2/rerank", {"query": QUERY, "documents": documents, "return_documents": True})
    assert {r["index"]: f32(r["relevance_score"]) for r in cohere.json["results"]} == same(want)
    assert {r["index"]: r["document"]["text"] for r in cohere.json["results"]} == dict(enumerate(documents))
    tei = await http.post("/rerank", {"query": QUERY, "texts": documents})
    assert {r["index"]: f32(r["score"]) for r in tei.json} == same(want)


async def test_media_string_query_scores_as_grpc_image_query(http, grpc_client):
    query = json.dumps({"text": "what is this", "image": "red.png"})
    expected = await grpc_client.rerank({"text": "what is this", "images": ["red.png"]}, ["a bicycle", "a cat"])
    reply = await http.post("/rerank", {"query": query, "texts": ["a bicycle", "a cat"]})
    assert {r["index"]: f32(r["score"]) for r in reply.json} == same({r.index: r.score for r in expected.results})


async def test_plain_and_disabled_strings_score_as_text(http, grpc_client):
    media_string = json.dumps({"text": "t", "image": "red.png"})
    # A loopback URL would be refused if it were fetched: scoring it shows it is read as text.
    documents = ["http://127.0.0.1:9/bike.png", media_string]
    expected = await grpc_client.rerank(QUERY, documents)  # gRPC: strings are always text
    reply = await http.post("/v2/rerank", {"query": QUERY, "documents": documents, "media_in_strings": False})
    assert {r["index"]: f32(r["relevance_score"]) for r in reply.json["results"]} == same(
        {r.index: r.score for r in expected.results}
    )
    enabled = await http.post("/v2/rerank", {"query": QUERY, "documents": documents})
    assert enabled.json["results"] != reply.json["results"]


async def test_an_unusable_reference_in_a_media_string_names_the_document(http):
    documents = ["fine", json.dumps({"text": "t", "image": "../secret.png"})]
    reply = await http.post("/v2/rerank", {"query": QUERY, "documents": documents})
    assert reply.status == 422
    error = reply.error()
    assert error["code"] == "validation" and error["message"].startswith("documents[1].images[0]: ")
    assert "outside the media root" in error["message"]
