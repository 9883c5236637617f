"""Weaviate and Solr beyond the shared scenarios: typed errors, and each engine's own rerank calling the sidecar.

- Weaviate's `rerank=` query option, with the `reranker-cohere` module pointed at the sidecar's HTTP
  face (`connectors.weaviate.sidecar_reranker`), returns the sidecar's order and scores, for text
  and for JSON media strings (text plus image).
- Solr's `rq={!sidecar ...}` (the plugin in solr-plugin/, installed by tests/engines/solr.sh) does
  the same inside Solr, and fails or keeps the first-pass order when the sidecar is down.
The expected scores come from the same sidecar, asked directly with the body the engine sends.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from connectors import Document, EngineError, FieldMapping
from connectors.engine_errors import EngineUnavailableError, IndexNotFoundError
from tests.conftest import ServerProcess, free_port, same_scores

QUERY = "red shoes"
DOCS = [
    Document(0, "red running shoes with a light sole", image="red.png"),
    Document(1, "blue suede shoes", image="nested/blue.png"),
    Document(2, "red wool hat"),
    Document(3, "black leather shoes for the office"),
    Document(4, "red red red sneakers red", image=["red.png", "nested/blue.png"]),
]


def media_string(doc: Document) -> str:
    """What a user stores to rerank with images through an engine that sends strings."""
    return json.dumps({"text": doc.text, "images": doc.images()}) if doc.images() else doc.text


@pytest.fixture(scope="module")
def http_sidecar(tiny_model_dir, media_root, tmp_path_factory):
    """The sidecar with its HTTP face on a fixed loopback port (what an engine is configured with)."""
    port = free_port()
    args = ["--model", str(tiny_model_dir), "--media-root", str(media_root), "--http-port", str(port)]
    with ServerProcess(args, tmp_path_factory.mktemp("logs") / "native-rerank-sidecar.log"):
        yield f"http://127.0.0.1:{port}"


def cohere_scores(sidecar_url: str, documents: list[str], **extra) -> list[float]:
    """Relevance scores in input order from the sidecar's /v2/rerank."""
    body = json.dumps({"query": QUERY, "documents": documents, **extra}).encode()
    request = urllib.request.Request(sidecar_url + "/v2/rerank", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        results = json.load(response)["results"]
    scores = [0.0] * len(documents)
    for r in results:
        scores[r["index"]] = r["relevance_score"]
    return scores


# --- typed errors ------------------------------------------------------------------------------------


def test_unreachable_weaviate_names_the_url(down_target):
    from connectors.weaviate import WeaviateConnector

    url = f"http://{down_target}"
    with pytest.raises(EngineUnavailableError) as caught:
        WeaviateConnector(url, "products", grpc_port=free_port())
    assert caught.value.engine == "weaviate" and caught.value.url == url and url in str(caught.value)


def test_unreachable_solr_names_the_url(down_target):
    from connectors.solr import SolrConnector

    url = f"http://{down_target}/solr"
    with pytest.raises(EngineUnavailableError) as caught:
        SolrConnector(url, "products")
    assert caught.value.engine == "solr" and caught.value.url == url and "'products'" in caught.value.operation


def test_missing_collections(weaviate_client, solr_url):
    from connectors.solr import SolrConnector
    from connectors.weaviate import WeaviateConnector

    with pytest.raises(IndexNotFoundError, match="'nosuch' does not exist"):
        WeaviateConnector(weaviate_client, "nosuch")
    with pytest.raises(IndexNotFoundError, match="'nosuch' does not exist"):
        SolrConnector(solr_url, "nosuch")


def test_bad_filters(weaviate_products, solr_products):
    with pytest.raises(TypeError, match="weaviate.classes.query.Filter"):
        weaviate_products.search(QUERY, None, 3, "bm25", {"color": "red"})
    with pytest.raises(TypeError, match="filter query string"):
        solr_products.search(QUERY, None, 3, "bm25", {"color": "red"})
    with pytest.raises(EngineError, match="HTTP 400") as caught:
        solr_products.search(QUERY, None, 3, "bm25", "price:[cheap TO *]")
    assert caught.value.engine == "solr"


def test_sparse_vector_is_not_used(weaviate_client, solr_url, weaviate_products, solr_products):
    from connectors.solr import SolrConnector
    from connectors.weaviate import WeaviateConnector

    with pytest.raises(ValueError, match="sparse_vector is not used"):
        WeaviateConnector(weaviate_client, "products", FieldMapping(sparse_vector="text"))
    with pytest.raises(ValueError, match="sparse_vector is not used"):
        SolrConnector(solr_url, "products", FieldMapping(sparse_vector="text"))


# --- Weaviate's own rerank through the sidecar ---------------------------------------------------------


@pytest.fixture(scope="module")
def weaviate_reranking(weaviate_node, http_sidecar):
    """A collection whose reranker module is the sidecar, holding DOCS as text and as media strings."""
    import weaviate

    from connectors.weaviate import index_documents, sidecar_reranker

    client = weaviate.connect_to_local(
        port=weaviate_node.port, grpc_port=weaviate_node.port + 1, headers={"X-Cohere-Api-Key": "no-key-needed"}
    )
    stored = [Document(d.id, media_string(d)) for d in DOCS]
    index_documents(
        client, "NativeRerank", stored, reranker=sidecar_reranker(http_sidecar), recreate=True, progress=False
    )
    yield client.collections.get("NativeRerank")
    client.close()


def test_weaviate_rerank_option_returns_the_sidecars_order_and_scores(weaviate_reranking, http_sidecar):
    from weaviate.classes.query import MetadataQuery, Rerank

    response = weaviate_reranking.query.bm25(
        "shoes red", limit=10, rerank=Rerank(prop="text", query=QUERY), return_metadata=MetadataQuery(score=True)
    )
    texts = [o.properties["text"] for o in response.objects]
    assert len(texts) == 5  # every document has "red" or "shoes"
    expected = cohere_scores(http_sidecar, texts)
    got = [o.metadata.rerank_score for o in response.objects]
    assert got == pytest.approx(expected, abs=1e-6)
    assert got == sorted(got, reverse=True)  # Weaviate orders by the sidecar's scores


def test_weaviate_rerank_sends_media_strings_the_sidecar_scores_with_images(weaviate_reranking, http_sidecar):
    from weaviate.classes.query import MetadataQuery, Rerank

    response = weaviate_reranking.query.bm25(
        "shoes red", limit=10, rerank=Rerank(prop="text", query=QUERY), return_metadata=MetadataQuery(score=True)
    )
    by_text = {o.properties["text"]: o.metadata.rerank_score for o in response.objects}
    media = [media_string(d) for d in DOCS if d.images()]
    with_images = cohere_scores(http_sidecar, media)
    as_plain_text = cohere_scores(http_sidecar, media, media_in_strings=False)
    for text, score, plain in zip(media, with_images, as_plain_text):
        assert by_text[text] == same_scores(score)
        assert abs(score - plain) > 1e-6  # the images were scored, not the JSON text


# --- Solr's rerank query through the sidecar plugin -------------------------------------------------------

PLUGIN = "dev.reranksidecar.solr.SidecarRerankQParserPlugin"


def solr_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def solr_reranking(solr_url, http_sidecar):
    """A core holding DOCS, with the sidecar query parser registered (and one pointed at a dead sidecar)."""
    from connectors.solr import index_documents

    index_documents(solr_url, "native_rerank", DOCS, recreate=True, progress=False)
    core = f"{solr_url}/native_rerank"
    dead = f"http://127.0.0.1:{free_port()}"
    for name, target in (("sidecar", http_sidecar), ("sidecar_down", dead)):
        command = "update-queryparser" if name in str(solr_json(f"{core}/config/queryParser")) else "add-queryparser"
        spec = {"name": name, "class": PLUGIN, "url": target, "imageField": "image", "timeoutMs": 20000}
        solr_json(f"{core}/config", {command: spec})
    return core


def solr_select(core: str, rq: str) -> dict:
    params = {"q": QUERY, "defType": "edismax", "qf": "text", "fl": "id,score,text,image", "rows": "10", "rq": rq}
    return solr_json(f"{core}/select?{urllib.parse.urlencode(params)}")["response"]


def test_solr_rerank_query_returns_the_sidecars_order_and_scores(solr_reranking, http_sidecar):
    first_pass = solr_json(f"{solr_reranking}/select?q=red%20shoes&defType=edismax&qf=text&fl=id&rows=10")
    docs = solr_select(solr_reranking, "{!sidecar reRankDocs=10}")["docs"]
    assert {d["id"] for d in docs} == {d["id"] for d in first_pass["response"]["docs"]}
    by_id = {str(d.id): d for d in DOCS}
    expected = dict(
        zip([d["id"] for d in docs], cohere_scores(http_sidecar, [media_string(by_id[d["id"]]) for d in docs]))
    )
    assert [d["score"] for d in docs] == same_scores([expected[d["id"]] for d in docs])
    assert [d["id"] for d in docs] == sorted(expected, key=lambda i: -expected[i])


def test_solr_rerank_with_the_sidecar_down(solr_reranking):
    first_pass = solr_json(f"{solr_reranking}/select?q=red%20shoes&defType=edismax&qf=text&fl=id&rows=10")
    kept = solr_select(solr_reranking, "{!sidecar_down reRankDocs=10 onError=keep}")["docs"]
    assert [d["id"] for d in kept] == [d["id"] for d in first_pass["response"]["docs"]]
    with pytest.raises(urllib.error.HTTPError) as caught:
        solr_select(solr_reranking, "{!sidecar_down reRankDocs=10}")
    message = json.loads(caught.value.read())["error"]["msg"]  # Solr's rerank collector answers 400
    assert (
        caught.value.code == 400 and "sidecar rerank failed: cannot reach the sidecar at http://127.0.0.1:" in message
    )
