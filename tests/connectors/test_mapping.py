"""Field mapping, query parsing and the client-side BM25 encoder: pure functions, no servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import FieldMapping, Query, parse_query
from connectors.sparse import Bm25Encoder, token_id, tokenize


def test_mapping_defaults_and_single_strings():
    mapping = FieldMapping(text_fields="title", image_fields="picture")
    assert mapping.text_fields == ("title",) and mapping.image_fields == ("picture",)
    assert FieldMapping().text_fields == ("text",) and FieldMapping().image_fields == ()


def test_text_joins_fields_and_skips_empty_ones():
    mapping = FieldMapping(text_fields=("title", "body", "tags"))
    assert mapping.text_of({"title": "Red shoes", "body": "", "tags": ["run", "sport"]}) == "Red shoes\nrun sport"


def test_text_template_formats_missing_fields_as_empty():
    mapping = FieldMapping(text_template="{title} ({brand}) {price}")
    assert mapping.text_of({"title": "Shoes", "price": 60}) == "Shoes () 60"
    assert mapping.stored_fields() == ["title", "brand", "price"]  # the template replaces text_fields


def test_images_accept_one_reference_or_a_list_and_skip_empty_values():
    mapping = FieldMapping(image_fields=("cover", "gallery"))
    assert mapping.images_of({"cover": "a.png", "gallery": ["b.png", "", None, "c.png"]}) == ["a.png", "b.png", "c.png"]
    assert mapping.images_of({"cover": None}) == []


def test_image_uri_rewrites_references():
    mapping = FieldMapping(image_fields="key", image_uri=lambda key: f"https://cdn.example.com/{key}")
    assert mapping.image_uris(["a.png"]) == ["https://cdn.example.com/a.png"]


def test_mapping_needs_something_to_send():
    with pytest.raises(ValueError, match="needs text_fields"):
        FieldMapping(text_fields=())


@pytest.mark.parametrize(
    "query, expected",
    [
        ("red shoes", Query(text="red shoes")),
        ("https://example.com/a.png", Query(images=("https://example.com/a.png",))),
        ("file://red.png", Query(images=("file://red.png",))),
        ("data:image/png;base64,AAAA", Query(images=("data:image/png;base64,AAAA",))),
        ("see https://example.com/a.png", Query(text="see https://example.com/a.png")),
        (b"\x89PNG", Query(images=(b"\x89PNG",))),
        (Path("a.png"), Query(images=(Path("a.png"),))),
        ({"text": "red", "images": "red.png"}, Query(text="red", images=("red.png",))),
        ({"text": "red", "images": ["a.png", b"x"]}, Query(text="red", images=("a.png", b"x"))),
    ],
)
def test_parse_query(query, expected):
    assert parse_query(query) == expected


@pytest.mark.parametrize("query", ["", "   ", {"text": ""}, {}])
def test_empty_query_is_refused(query):
    with pytest.raises(ValueError, match="empty"):
        parse_query(query)


def test_unknown_query_keys_are_refused():
    with pytest.raises(ValueError, match="unknown query keys"):
        parse_query({"txt": "red"})


def test_bm25_tokens_are_stable_and_case_insensitive():
    assert tokenize("Red, RED shoes!") == ["red", "red", "shoes"]
    # BLAKE2b-based: the same ids in every process (Python's hash() would change per run)
    assert (token_id("red"), token_id("shoes")) == (1800449990, 635868414)


def test_bm25_document_weights_saturate_and_normalise_length():
    encoder = Bm25Encoder(avg_len=4.0)
    indices, values = encoder.encode_document("red red red shoes")
    weights = dict(zip(indices, values))
    assert weights[token_id("red")] > weights[token_id("shoes")]
    assert weights[token_id("red")] < 3 * weights[token_id("shoes")]  # term frequency saturates (k1)
    short = dict(zip(*encoder.encode_document("shoes")))[token_id("shoes")]
    long = dict(zip(*encoder.encode_document("shoes and many other words")))[token_id("shoes")]
    assert short > long  # longer documents weigh each term less (b)


def test_bm25_query_weights_one_per_distinct_token():
    indices, values = Bm25Encoder().encode_query("red red shoes")
    assert indices == [token_id("red"), token_id("shoes")] and values == [1.0, 1.0]


def test_bm25_fit_uses_the_corpus_average_length():
    assert Bm25Encoder.fit(["a b", "a b c d"]).avg_len == 3.0
