"""The shared connector scenarios, run on every engine: Qdrant, Milvus Lite, Elasticsearch, OpenSearch, Weaviate, Solr.

The scenarios are the `scenario_*` functions of test_search_and_rerank.py, test_failures.py and
test_experiments.py
(written there beside the tests they share helpers with, and collected only here), run with this
module's `products`: the same corpus indexed by each engine's helper. The scenarios are written
once; an engine joins the suite by adding its fixture to PRODUCTS. The field-mapping scenarios
below use `build`, a per-engine factory of connectors over that corpus.
"""

from __future__ import annotations

import inspect

import pytest

from connectors import FieldMapping, FieldMappingError
from tests.connectors import test_experiments, test_failures, test_search_and_rerank
from tests.connectors.engines_fixtures import connector_factories

PRODUCTS = {
    "qdrant": "qdrant_products",
    "milvus-lite": "milvus_products",
    "elasticsearch": "es_products",
    "opensearch": "os_products",
    "weaviate": "weaviate_products",
    "solr": "solr_products",
}


@pytest.fixture(params=list(PRODUCTS))
def products(request):
    """The corpus indexed in each engine, as a connector (dense, bm25 and hybrid)."""
    return request.getfixturevalue(PRODUCTS[request.param])


@pytest.fixture(params=list(PRODUCTS))
def build(request):
    """Per engine: `build(mapping, **options)` -> a connector on the corpus collection "products"."""
    return connector_factories(request)[request.param]


def _scenarios() -> dict:
    found: dict = {}
    for module in (test_search_and_rerank, test_failures, test_experiments):
        for name, function in vars(module).items():
            if name.startswith("scenario_"):
                test = "test_" + name.removeprefix("scenario_")
                assert test not in found, f"scenario {name} is defined twice"
                assert "products" in inspect.signature(function).parameters, f"{name} does not take products"
                found[test] = function
    return found


globals().update(_scenarios())


# --- field mappings validated against the collection (every engine) ------------------------------


@pytest.mark.parametrize(
    "mapping, named",
    [
        (FieldMapping(text_fields=("text", "title")), "field 'title'"),
        (FieldMapping(text_template="{name}: {text}"), "field 'name'"),
        (FieldMapping(image_fields=("picture",)), "field 'picture'"),
        (FieldMapping(id_field="sku"), "field 'sku'"),
        (FieldMapping(dense_vector="clip"), "'clip'"),
        (FieldMapping(sparse_vector="splade"), "'splade'"),
    ],
)
def test_missing_fields_are_named(build, mapping, named):
    with pytest.raises(FieldMappingError) as caught:
        build(mapping)
    assert named in str(caught.value) and "products" in str(caught.value)
    assert "available:" in str(caught.value)


def test_a_valid_custom_mapping_is_accepted(build):
    connector = build(FieldMapping(text_template="{text} ({color}, {price} EUR)", image_fields="image"))
    hit = connector.search("hose", None, 1, "bm25")[0]
    assert hit.text == "green garden hose (green, 35 EUR)"
