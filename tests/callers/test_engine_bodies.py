"""Engine-native rerankers, proven with their own request bytes: each test sends what the engine's
source builds (serializer, key order, escaping, headers, path) and reads the answer as that source does.

Sources (read, not copied): Elasticsearch 9.1+ `custom` inference service (`RerankParameters`,
`CustomRequest`: the template with `${query}`/`${input}` replaced by Jackson JSON) and its
`text_similarity_reranker`; Milvus 2.6 model rerankers (`internal/util/function/rerank/
{tei,vllm,cohere}_rerank_provider.go` and their clients: Go `json.Marshal` of a map, so sorted keys
and `<>&` escaped); Weaviate 1.35 `reranker-transformers` and `reranker-cohere` modules (Go structs,
field order kept); OpenSearch ML-commons 2.19 Cohere pre-process (Gson, HTML-safe escaping) and
post-process (`scores[index] = (Double) relevance_score`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.callers.conftest import DOCUMENTS, QUERY, f32, get, grpc_scores, post
from tests.conftest import same_scores

CONNECTOR = Path(__file__).resolve().parents[2] / "opensearch-plugin-config" / "connector.json"
GO_HEADERS = {"User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip"}


def go_json(value: object) -> bytes:
    """Go's encoding/json: compact, UTF-8 kept, `<`, `>`, `&` escaped as \\u003c, \\u003e, \\u0026."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def gson(value: object) -> str:
    """Gson's toJson: compact, UTF-8 kept, HTML-safe (`<`, `>`, `&`, `=`, `'` as \\u escapes)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("=", "\\u003d"), ("'", "\\u0027")):
        text = text.replace(char, escape)
    return text


def jackson(value: object) -> str:
    """Jackson's JSON (Elasticsearch XContent): compact, UTF-8 kept, only quotes, backslashes and controls escaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_the_serializer_models_are_exact():
    assert (
        go_json({"query": 'a<b>&"c"', "texts": ["é"]})
        == b'{"query":"a\\u003cb\\u003e\\u0026\\"c\\"","texts":["\xc3\xa9"]}'
    )
    assert gson(["x='y'"]) == '["x\\u003d\\u0027y\\u0027"]'
    assert jackson("a<b> é") == '"a<b> é"'


def expected_by_index(scorer) -> dict[int, float]:
    return dict(enumerate(grpc_scores(scorer, QUERY, DOCUMENTS)))


# ---- Elasticsearch: `custom` inference service (rerank task) + text_similarity_reranker -----------------


ES_REQUEST_TEMPLATE = '{"query": ${query}, "documents": ${input}}'  # the README's recipe
ES_JSON_PARSER = {"reranked_index": "$.results[*].index", "relevance_score": "$.results[*].relevance_score"}


def json_path_list(answer: object, path: str) -> list:
    """The `$.a[*].b` subset of JSONPath that the custom service's json_parser uses."""
    match = re.fullmatch(r"\$\.(\w+)\[\*\]\.(\w+)", path)
    assert match, path
    return [item[match.group(2)] for item in answer[match.group(1)]]


def test_elasticsearch_custom_service(sidecar, scorer):
    body = ES_REQUEST_TEMPLATE.replace("${query}", jackson(QUERY)).replace("${input}", jackson(DOCUMENTS)).encode()
    status, raw = post(f"{sidecar.url}/v2/rerank", body, {"Content-Type": "application/json"})
    assert status == 200, raw
    answer = json.loads(raw)
    indices = json_path_list(answer, ES_JSON_PARSER["reranked_index"])
    scores = json_path_list(answer, ES_JSON_PARSER["relevance_score"])
    assert len(indices) == len(scores) == len(DOCUMENTS)
    assert all(isinstance(i, int) for i in indices) and all(isinstance(s, float) for s in scores)
    assert {i: f32(s) for i, s in zip(indices, scores)} == same_scores(expected_by_index(scorer))


# ---- Milvus 2.6 model rerankers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"truncate": True, "truncation_direction": "Left"}],
    ids=["plain", "truncation-params"],
)
def test_milvus_tei_provider(sidecar, scorer, params):
    body = go_json({"query": QUERY, "texts": DOCUMENTS, **params})  # map: keys sorted by json.Marshal
    headers = {**GO_HEADERS, "Content-Type": "application/json", "Authorization": "Bearer milvus-key"}
    status, raw = post(f"{sidecar.url}/rerank", body, headers)
    assert status == 200, raw
    ranks = sorted(json.loads(raw), key=lambda r: r["index"])  # sort.Slice by Index, then by index into docs
    assert {r["index"]: f32(r["score"]) for r in ranks} == same_scores(expected_by_index(scorer))


@pytest.mark.parametrize("params", [{}, {"truncate_prompt_tokens": 512}], ids=["plain", "truncate-prompt-tokens"])
def test_milvus_vllm_provider(sidecar, scorer, params):
    body = go_json({"documents": DOCUMENTS, "query": QUERY, **params})
    headers = {**GO_HEADERS, "Content-Type": "application/json"}
    status, raw = post(f"{sidecar.url}/rerank", body, headers)  # Milvus replaces the endpoint's path with /rerank
    assert status == 200, raw
    results = sorted(json.loads(raw)["results"], key=lambda r: r["index"])
    scores = [0.0] * len(DOCUMENTS)
    for i, result in enumerate(results):  # by position: every document must come back
        scores[i] = f32(result["relevance_score"])
    assert dict(enumerate(scores)) == same_scores(expected_by_index(scorer))


def test_milvus_cohere_provider(sidecar, scorer):
    body = go_json({"documents": DOCUMENTS, "max_tokens_per_doc": 4096, "model": "rerank-v3.5", "query": QUERY})
    headers = {
        **GO_HEADERS,
        "accept": "application/json",
        "Content-Type": "application/json",
        "Authorization": "bearer k",
    }
    status, raw = post(f"{sidecar.url}/v2/rerank", body, headers)  # the provider's `endpoint` is the full URL
    assert status == 200, raw
    results = sorted(json.loads(raw)["results"], key=lambda r: r["index"])
    assert [f32(r["relevance_score"]) for r in results] == [expected_by_index(scorer)[i] for i in range(len(DOCUMENTS))]


# ---- Weaviate reranker modules ---------------------------------------------------------------------------


def test_weaviate_reranker_transformers(sidecar, scorer):
    assert get(f"{sidecar.url}/.well-known/ready")[0] == 200  # the module waits for this before serving
    assert get(f"{sidecar.url}/meta")[0] == 200
    # RankInput{Query, Documents, RankPropertyValue}: struct order, `property` always sent, no Content-Type.
    body = b'{"query":' + go_json(QUERY) + b',"documents":' + go_json(DOCUMENTS) + b',"property":""}'
    status, raw = post(f"{sidecar.url}/rerank", body, GO_HEADERS)
    assert status == 200, raw
    scores = [f32(s["score"]) for s in json.loads(raw)["scores"]]  # DocumentScores[i] belongs to object i
    assert dict(enumerate(scores)) == same_scores(expected_by_index(scorer))
    assert [s["document"] for s in json.loads(raw)["scores"]] == DOCUMENTS


def test_weaviate_reranker_transformers_error_is_its_string(sidecar):
    body = b'{"query":"","documents":["a"],"property":""}'
    status, raw = post(f"{sidecar.url}/rerank", body, GO_HEADERS)
    assert status == 422 and json.loads(raw)["error"] == "query has no text or image"  # RankResponse.Error


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"], ids=["weaviate-1.35", "weaviate-1.36+"])
def test_weaviate_reranker_cohere(sidecar, scorer, path):
    # RankInput{Documents, Query, Model, ReturnDocuments} to baseURL + path (X-Cohere-Baseurl or baseURL setting).
    body = (
        b'{"documents":'
        + go_json(DOCUMENTS)
        + b',"query":'
        + go_json(QUERY)
        + b',"model":"rerank-v3.5","return_documents":false}'
    )
    headers = {
        **GO_HEADERS,
        "Authorization": "Bearer k",
        "Content-Type": "application/json",
        "Request-Source": "unspecified:weaviate",
    }
    status, raw = post(f"{sidecar.url}{path}", body, headers)
    assert status == 200, raw
    scores = {r["index"]: f32(r["relevance_score"]) for r in json.loads(raw)["results"]}  # documentScores[result.Index]
    assert scores == same_scores(expected_by_index(scorer))
    status, raw = post(
        f"{sidecar.url}{path}", b'{"documents":[],"query":"","model":"m","return_documents":false}', headers
    )
    assert status == 422 and json.loads(raw)["message"] == "query has no text or image"  # cohereApiError.Message


# ---- OpenSearch ML-commons: connector.pre_process.cohere.rerank / post_process.cohere.rerank ------------------


def test_opensearch_ml_commons_cohere_functions(sidecar, scorer):
    connector = json.loads(CONNECTOR.read_text())
    template = connector["actions"][0]["request_body"]
    # The pre-process makes query (a JSON string, its quotes dropped), documents (a JSON list) and top_n.
    parameters = {"query": gson(QUERY)[1:-1], "documents": gson(DOCUMENTS), "top_n": str(len(DOCUMENTS))}
    body = template
    for name, value in parameters.items():
        body = body.replace("${parameters." + name + "}", value)
    url = connector["actions"][0]["url"].replace("${parameters.endpoint}", sidecar.url)
    status, raw = post(url, body.encode(), {"Content-Type": "application/json"})
    assert status == 200, raw
    # The post-process: scores[index] = (Double) relevance_score. json-smart reads a number of more than
    # 18 characters as BigDecimal (the cast fails) and one without '.' or an exponent as an Integer.
    numbers = re.findall(rb'"relevance_score":([-0-9.eE+]+)', raw)
    assert len(numbers) == len(DOCUMENTS) and all(len(n) <= 18 and re.search(rb"[.eE]", n) for n in numbers)
    scores = [None] * len(json.loads(raw)["results"])
    for result in json.loads(raw)["results"]:
        scores[result["index"]] = f32(result["relevance_score"])
    assert dict(enumerate(scores)) == same_scores(expected_by_index(scorer))
