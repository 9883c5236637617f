"""Typed errors of the Elasticsearch and OpenSearch connectors.

Real nodes for what they can produce (unreachable, missing index, wrong product, bad queries);
`fake_engine`, a loopback HTTP server with canned answers, for what a local node without security
cannot (401/403) and for an Elasticsearch 8 refusing elasticsearch-py 9's `compatible-with=9`.
"""

from __future__ import annotations

import base64

import pytest

from connectors import EngineError, FieldMapping, FieldMappingError, search_and_rerank
from connectors.engine_errors import EngineAuthError, EngineUnavailableError, EngineVersionError, IndexNotFoundError
from tests.connectors.corpus import CORPUS, QUERY
from tests.connectors.engines_fixtures import ES8_REFUSES_V9, ES_401, ES_403, ES_HEADERS, EngineNode


def test_unreachable_engine_names_engine_url_and_operation(dsl, down_target):
    url = f"http://{down_target}"
    with pytest.raises(EngineUnavailableError) as caught:
        _connector(dsl.name, url)
    error = caught.value
    assert error.engine == dsl.name and error.url == url and isinstance(error, EngineError)
    assert f"cannot reach {dsl.name} at {url}" in str(error) and "refused" in str(error)
    assert "'products'" in error.operation


def test_missing_index(dsl):
    with pytest.raises(IndexNotFoundError) as caught:
        dsl.connector("no-such-index")
    assert caught.value.index == "no-such-index" and dsl.url in str(caught.value)
    assert "index 'no-such-index' does not exist" in str(caught.value)


def test_index_deleted_after_construction(dsl, sidecar):
    connector = dsl.index("short-lived", CORPUS[:2], recreate=True)
    dsl.client.indices.delete(index="short-lived")
    with pytest.raises(IndexNotFoundError, match="search on 'short-lived'"):
        search_and_rerank(connector, QUERY, mode="bm25", rerank_client=sidecar)


def test_elasticsearch_connector_refuses_an_opensearch_node(os_products, opensearch_node):
    from connectors.elasticsearch import ElasticsearchConnector

    with pytest.raises(EngineVersionError) as caught:
        ElasticsearchConnector(opensearch_node.url, "products")
    message = str(caught.value)
    assert "is OpenSearch 2.19" in message and "not Elasticsearch" in message
    assert "elasticsearch-py 9" in message and "connectors.opensearch" in message


def test_opensearch_connector_refuses_an_elasticsearch_node(es_products, elasticsearch_node):
    from connectors.opensearch import OpenSearchConnector

    with pytest.raises(EngineVersionError, match=r"is Elasticsearch 9\.\d+\.\d+, not OpenSearch"):
        OpenSearchConnector(elasticsearch_node.url, "products")


@pytest.mark.parametrize(
    "flt, message",
    [({"range": {"price": {"lt": "cheap"}}}, 'For input string: "cheap"'), ({"no_such_query": {}}, "no_such_query")],
)
def test_bad_filter_is_an_engine_error_with_the_root_cause(dsl, request, flt, message):
    products = request.getfixturevalue("es_products" if dsl.name == "elasticsearch" else "os_products")
    for mode, vector in (("bm25", None), ("dense", [0.1] * 32), ("hybrid", [0.1] * 32)):
        with pytest.raises(EngineError, match=message) as caught:
            products.search(QUERY, vector, 5, mode, flt)
        assert caught.value.engine == dsl.name and "HTTP 400" in str(caught.value)


def test_filter_must_be_query_dsl(dsl, request):
    products = request.getfixturevalue("es_products" if dsl.name == "elasticsearch" else "os_products")
    with pytest.raises(TypeError, match="query DSL clause"):
        products.search(QUERY, None, 3, "bm25", "color:red")


def test_wrong_vector_size_is_an_engine_error(dsl, request):
    products = request.getfixturevalue("es_products" if dsl.name == "elasticsearch" else "os_products")
    with pytest.raises(EngineError, match="dimension") as caught:
        products.search(None, [0.1, 0.2], 3, "dense")
    assert "search on 'products'" in str(caught.value)


def test_unknown_bm25_field_and_vector_are_named(dsl, request):
    request.getfixturevalue("es_products" if dsl.name == "elasticsearch" else "os_products")
    with pytest.raises(FieldMappingError, match="field 'title'"):
        dsl.connector("products", bm25_fields=["text", "title^2"])
    with pytest.raises(FieldMappingError, match="field 'colour'"):
        dsl.connector("products", source_fields=["colour"])


# --- credentials: a fake engine answering 401 / 403 -------------------------------------------------


@pytest.mark.parametrize("engine", ["elasticsearch", "opensearch"])
def test_missing_credentials_are_an_auth_error(fake_engine, engine):
    if engine == "elasticsearch":
        fake_engine.reply(401, ES_401, {**ES_HEADERS, "WWW-Authenticate": 'Basic realm="security"'})
    else:  # the security plugin answers 401 with a plain-text body
        fake_engine.reply(401, b"Unauthorized", {"WWW-Authenticate": 'Basic realm="OpenSearch Security"'})
    with pytest.raises(EngineAuthError) as caught:
        _connector(engine, fake_engine.url)
    error = caught.value
    assert error.status == 401 and error.url == fake_engine.url and isinstance(error, EngineError)
    assert "authentication failed" in str(error) and "basic_auth" in str(error)


@pytest.mark.parametrize("engine", ["elasticsearch", "opensearch"])
def test_insufficient_privileges_are_an_auth_error(fake_engine, engine):
    body = ES_403 if engine == "elasticsearch" else {"error": {"type": "security_exception", "reason": "no permissions for [indices:admin/mappings/get]"}, "status": 403}  # fmt: skip
    fake_engine.reply(403, body, ES_HEADERS if engine == "elasticsearch" else {})
    with pytest.raises(EngineAuthError) as caught:
        _connector(engine, fake_engine.url)
    assert caught.value.status == 403 and "not authorized" in str(caught.value)
    assert "indices:admin/mappings/get" in str(caught.value)


def test_credentials_given_with_a_url_are_sent(fake_engine):
    fake_engine.reply(401, ES_401, ES_HEADERS)
    with pytest.raises(EngineAuthError):
        _connector("elasticsearch", fake_engine.url, basic_auth=("reader", "s3cret"))
    expected = "Basic " + base64.b64encode(b"reader:s3cret").decode()
    assert fake_engine.requests[-1][2]["authorization"] == expected
    with pytest.raises(EngineAuthError):
        _connector("elasticsearch", fake_engine.url, api_key="a2V5OnNlY3JldA==")
    assert fake_engine.requests[-1][2]["authorization"] == "ApiKey a2V5OnNlY3JldA=="
    with pytest.raises(EngineAuthError):
        _connector("opensearch", fake_engine.url, basic_auth=("reader", "s3cret"))
    assert fake_engine.requests[-1][2]["authorization"] == expected


def test_an_elasticsearch_8_server_is_a_version_error(fake_engine):
    fake_engine.reply(400, ES8_REFUSES_V9, ES_HEADERS)
    with pytest.raises(EngineVersionError) as caught:
        _connector("elasticsearch", fake_engine.url)
    message = str(caught.value)
    assert "refused the client's API version" in message and "found 9" in message
    accept = fake_engine.requests[0][2]["accept"]
    assert "compatible-with=9" in accept  # what elasticsearch-py 9 sends, and an 8.x server refuses


def _connector(engine: str, url: str, **credentials):
    if engine == "elasticsearch":
        from connectors.elasticsearch import ElasticsearchConnector

        return ElasticsearchConnector(url, "products", FieldMapping(), **credentials)
    from connectors.opensearch import OpenSearchConnector

    return OpenSearchConnector(url, "products", FieldMapping(), **credentials)


@pytest.mark.parametrize("engine", ["elasticsearch", "opensearch"])
def test_a_port_held_by_something_else_fails_the_tests(fake_engine, engine):
    fake_engine.reply(200, b"not an engine")
    node = EngineNode(engine, int(fake_engine.url.rsplit(":", 1)[1]))
    with pytest.raises(pytest.fail.Exception, match=f"answers, but not as {engine}"):
        node.start()  # never a skip, and never someone else's server
    assert not node.started
