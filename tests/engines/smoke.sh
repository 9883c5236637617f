#!/usr/bin/env bash
# Quick checks that the running test engines do what the test suite relies on.
# Start them first (tests/engines/all.sh start). Leaves no indices or collections behind.
#   OpenSearch:    plugins knn/ml/neural-search/job-scheduler loaded; knn_vector index with
#                  engine lucene; painless; ML connector to http://127.0.0.1:8080 accepted.
#   Elasticsearch: GET / (client info/ping); dense_vector kNN search.
#   Milvus:        create collection with a FLOAT_VECTOR field, insert, search (needs pymilvus).
#
# Usage: tests/engines/smoke.sh [opensearch] [elasticsearch] [milvus]   (default: all three)
#
# Environment: OPENSEARCH_PORT, ELASTICSEARCH_PORT, MILVUS_PORT as for the engine scripts;
#   SMOKE_PYTHON  a Python with pymilvus installed (default python3; the Milvus check is
#                 skipped when it cannot import pymilvus).
set -euo pipefail

OS_URL="http://127.0.0.1:${OPENSEARCH_PORT:-9200}"
ES_URL="http://127.0.0.1:${ELASTICSEARCH_PORT:-9201}"
MV_URI="http://127.0.0.1:${MILVUS_PORT:-19531}"
PY="${SMOKE_PYTHON:-python3}"
IDX="smoke-$$"
passed=0
failed=0

check() { # check NAME COMMAND...
    local name="$1"
    shift
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/     /'
    fi
}

# curl_json METHOD URL [BODY] -> response body; fails on HTTP >= 400
curl_json() {
    curl -fsS --max-time 30 -X "$1" -H 'Content-Type: application/json' "$2" ${3:+-d "$3"}
}

expect() { # expect PATTERN COMMAND... : run and grep its output
    local pattern="$1"
    shift
    local out
    out="$("$@")" || { echo "$out"; return 1; }
    grep -qE "$pattern" <<<"$out" || { echo "no match for /$pattern/ in: $out"; return 1; }
}

smoke_opensearch() {
    local p
    for p in opensearch-knn opensearch-ml opensearch-neural-search opensearch-job-scheduler; do
        check "opensearch plugin $p" expect "$p" curl_json GET "$OS_URL/_cat/plugins"
    done
    check "opensearch knn_vector index (lucene)" curl_json PUT "$OS_URL/$IDX" \
        '{"settings":{"index.knn":true},"mappings":{"properties":{"v":{"type":"knn_vector","dimension":2,
          "method":{"name":"hnsw","engine":"lucene","space_type":"cosinesimil"}}}}}'
    check "opensearch index docs" curl_json POST "$OS_URL/$IDX/_doc/1?refresh=true" '{"v":[1,0]}'
    check "opensearch knn query" expect '"_id":"1"' curl_json POST "$OS_URL/$IDX/_search" \
        '{"query":{"knn":{"v":{"vector":[1,0.1],"k":1}}}}'
    check "opensearch painless" expect '"x":\[2\]' curl_json POST "$OS_URL/$IDX/_search" \
        '{"script_fields":{"x":{"script":{"source":"params.a + 1","params":{"a":1}}}}}'
    check "opensearch index is green" expect '"status":"green"' \
        curl_json GET "$OS_URL/_cluster/health/$IDX?wait_for_status=green&timeout=10s"
    curl -fsS -X DELETE "$OS_URL/$IDX" >/dev/null || true
    local connector
    # shellcheck disable=SC2016 # ${parameters.query} is ML-commons' template syntax
    connector='{"name":"smoke","version":"1","protocol":"http","parameters":{},"credential":{"api_key":"x"},
      "actions":[{"action_type":"predict","method":"POST","url":"http://127.0.0.1:8080/v1/rerank",
      "request_body":"{\"query\":\"${parameters.query}\"}"}]}'
    if out="$(curl_json POST "$OS_URL/_plugins/_ml/connectors/_create" "$connector" 2>&1)" \
        && [[ "$out" =~ \"connector_id\":\"([^\"]+)\" ]]; then
        passed=$((passed + 1))
        echo "ok   opensearch ML connector to http://127.0.0.1:8080"
        curl -fsS -X DELETE "$OS_URL/_plugins/_ml/connectors/${BASH_REMATCH[1]}" >/dev/null || true
    else
        failed=$((failed + 1))
        echo "FAIL opensearch ML connector to http://127.0.0.1:8080"
        echo "     $out"
    fi
}

smoke_elasticsearch() {
    check "elasticsearch GET /" expect '"number":"9\.' curl_json GET "$ES_URL/"
    check "elasticsearch HEAD /" curl -fsS -I "$ES_URL/"
    check "elasticsearch dense_vector index" curl_json PUT "$ES_URL/$IDX" \
        '{"settings":{"number_of_replicas":0},"mappings":{"properties":{"v":{"type":"dense_vector","dims":2,"similarity":"cosine"}}}}'
    check "elasticsearch index docs" curl_json POST "$ES_URL/$IDX/_doc/1?refresh=true" '{"v":[1,0]}'
    check "elasticsearch knn search" expect '"_id":"1"' curl_json POST "$ES_URL/$IDX/_search" \
        '{"knn":{"field":"v","query_vector":[1,0.1],"k":1,"num_candidates":10}}'
    curl -fsS -X DELETE "$ES_URL/$IDX" >/dev/null || true
}

smoke_milvus() {
    if ! "$PY" -c 'import pymilvus' 2>/dev/null; then
        echo "skip milvus ($PY cannot import pymilvus; set SMOKE_PYTHON)"
        return 0
    fi
    check "milvus collection/insert/search" "$PY" - "$MV_URI" "smoke_$$" <<'EOF'
import sys
from pymilvus import DataType, MilvusClient

uri, name = sys.argv[1], sys.argv[2]
client = MilvusClient(uri=uri)
schema = MilvusClient.create_schema(auto_id=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
index = client.prepare_index_params()
index.add_index(field_name="v", index_type="FLAT", metric_type="COSINE")
# Strong: a 2.3 server's default (Bounded) hides rows inserted a moment ago.
client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
try:
    client.insert(name, [{"id": 1, "v": [1.0, 0.0]}, {"id": 2, "v": [0.0, 1.0]}])
    hits = client.search(name, data=[[1.0, 0.1]], limit=1, anns_field="v")
    assert hits[0][0]["id"] == 1, hits
finally:
    client.drop_collection(name)
EOF
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(opensearch elasticsearch milvus)
for t in "${targets[@]}"; do "smoke_$t"; done
echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
