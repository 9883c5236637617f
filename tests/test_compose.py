"""docker-compose.yml and Dockerfile agree with the project, and the compose loader's code path works.

- The compose file is validated by a real compose implementation that needs no Docker engine:
  Debian's `docker-compose` (1.29, `apt-get install -y docker-compose`); its resolved `config` output
  is what the checks read. A missing binary FAILS (tests/run.sh installs it).
- Engine images carry the versions tests/engines/*.sh test; ports are bound to 127.0.0.1; long-running
  services have health checks; every `rerank-sidecar` command a service runs parses with the real CLI.
- The loader's arguments are taken from the compose file, the service host names swapped for engines
  started here (real OpenSearch and Elasticsearch nodes, Qdrant local mode, Milvus Lite) and a real
  sidecar subprocess with tiny models, and `rerank-sidecar load-catalogue` must fill all six (real
  Weaviate and Solr servers too).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.apps.demo_data import DATA_DIR, load_catalogue
from sidecar.cli import build_parser
from tests.connectors.conftest import sidecar_server  # noqa: F401 - fixture (its embedding model comes from tests/conftest.py)
from tests.connectors.engines_fixtures import elasticsearch_node, opensearch_node  # noqa: F401 - fixtures
from tests.connectors.server_engines import solr_node, weaviate_node  # noqa: F401 - fixtures (by name)

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENGINE_SCRIPTS = REPO / "tests" / "engines"
OUR_IMAGE = re.compile(r"^rerank-sidecar:")


def compose_config(profiles: str = "") -> dict[str, Any]:
    """`docker-compose config` (the resolved model) for the given COMPOSE_PROFILES."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose")
    env = dict(os.environ, COMPOSE_PROFILES=profiles)
    done = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, env=env, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def script_default(script: str, variable: str) -> str:
    """The default version a tests/engines script uses, e.g. ES_VERSION="${ELASTICSEARCH_VERSION:-9.5.4}"."""
    text = (ENGINE_SCRIPTS / script).read_text()
    match = re.search(rf'^{variable}="\$\{{\w+:-([^}}]+)\}}"', text, re.MULTILINE)
    assert match, f"no {variable} default in tests/engines/{script}"
    return match.group(1)


def command_argvs(service: dict[str, Any]) -> list[list[str]]:
    """The `rerank-sidecar` argument vectors (without the program name) a service of our image runs."""
    command = service.get("command") or []
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        parts = re.split(r"\s*&&\s*", argv[2])
        return [shlex.split(p)[1:] for p in parts if shlex.split(p)[0] == "rerank-sidecar"]
    return [argv]  # the image's ENTRYPOINT is rerank-sidecar


def test_compose_file_parses_for_each_profile() -> None:
    for profiles in ("", "cpu", "gpu"):
        assert compose_config(profiles)["services"]


def test_engine_versions_match_the_test_scripts(config) -> None:
    images = {name: s["image"] for name, s in config["services"].items()}
    es_version = script_default("elasticsearch.sh", "ES_VERSION")
    os_version = script_default("opensearch.sh", "OS_VERSION")
    assert images["elasticsearch"] == f"docker.elastic.co/elasticsearch/elasticsearch:{es_version}"
    assert images["opensearch"] == f"opensearchproject/opensearch:{os_version}"
    assert (
        images["weaviate"] == f"cr.weaviate.io/semitechnologies/weaviate:{script_default('weaviate.sh', 'WV_VERSION')}"
    )
    assert images["solr"] == f"solr:{script_default('solr.sh', 'SOLR_V')}"
    assert re.fullmatch(r"milvusdb/milvus:v2\.\d+\.\d+", images["milvus"]), images["milvus"]
    assert re.fullmatch(r"qdrant/qdrant:v1\.\d+\.\d+", images["qdrant"]), images["qdrant"]
    # The compose file says which Milvus server CI tests (tests/engines/milvus.sh) next to its own choice.
    assert f"tests {script_default('milvus.sh', 'MV_VERSION')}" in COMPOSE_FILE.read_text()


def test_ports_are_bound_to_loopback(config) -> None:
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_health_checks_and_start_order(config) -> None:
    services = config["services"]
    for name, service in services.items():
        if name != "loader":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    ready = " ".join(services["sidecar"]["healthcheck"]["test"])
    assert "/ready" in ready and ":8080" in ready
    assert services["loader"].get("restart") == "no"
    for engine in ("elasticsearch", "opensearch", "qdrant", "milvus", "weaviate", "solr"):
        assert services["loader"]["depends_on"][engine]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["loader"]["condition"] == "service_completed_successfully"
    assert {v.split(":")[0] for v in services["sidecar"]["volumes"]} == {"models"}
    assert services["sidecar"]["environment"]["HF_HOME"] == "/models"


def test_gpu_reservation_and_cpu_profile(config) -> None:
    gpu, cpu = config["services"]["sidecar"], config["services"]["sidecar-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu and "sidecar" in cpu["networks"]["default"]["aliases"]
    assert all(config["services"][name].get("mem_limit") for name in config["services"])


def test_every_rerank_sidecar_command_parses_with_the_cli(config) -> None:
    parser, seen = build_parser(), set()
    for name, service in config["services"].items():
        if not OUR_IMAGE.match(service.get("image", "")):
            continue
        for argv in command_argvs(service):
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"service {name}: `rerank-sidecar {shlex.join(argv)}` does not parse")
            seen.add(args.command)
            if args.command in ("serve", "web"):
                assert args.host == "0.0.0.0", f"{name} must bind all interfaces inside its container"
    assert seen == {"serve", "load-catalogue", "opensearch-setup", "web"}


def test_dockerfile_matches_the_compose_file(config) -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")  # one line per instruction
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.MULTILINE | re.IGNORECASE))
    for service in config["services"].values():
        if "build" in service:
            assert service["build"].get("target") in stages
    cuda = re.search(r"^ARG CUDA_IMAGE=(nvidia/cuda:\S+-runtime-\S+)", text, re.MULTILINE)
    assert cuda and "FROM ${CUDA_IMAGE} AS base-gpu" in text, "the GPU base must be a CUDA runtime image"
    assert re.search(r'^ENTRYPOINT \["rerank-sidecar"\]', text, re.MULTILINE)
    assert re.search(r"^USER (?!root|0)\S+", text, re.MULTILINE), "the image must run as a non-root user"
    assert re.search(r"^HEALTHCHECK .*CMD .*127\.0\.0\.1:8080/ready", text, re.MULTILINE)
    assert "HF_HOME=/models" in text


def loader_argv(config: dict[str, Any], swap: dict[str, str]) -> list[str]:
    """The loader service's `load-catalogue` arguments, each compose URL replaced through `swap`."""
    (argv,) = [a for a in command_argvs(config["services"]["loader"]) if a[0] == "load-catalogue"]
    return [swap.get(a, a) for a in argv]


def test_loader_fills_all_six_engines(config, sidecar_server, elasticsearch_node, opensearch_node, request, tmp_path) -> None:  # noqa: F811  # fmt: skip
    from pymilvus import MilvusClient
    from qdrant_client import QdrantClient

    from sidecar.cli import main

    weaviate_server, solr_server = request.getfixturevalue("weaviate_node"), request.getfixturevalue("solr_node")
    argv = loader_argv(config, {})
    urls = dict(zip(argv[1::2], argv[2::2]))  # flag -> value, as compose passes them
    swap = {
        urls["--sidecar"]: sidecar_server.target,
        urls["--elasticsearch"]: elasticsearch_node.url,
        urls["--opensearch"]: opensearch_node.url,
        urls["--qdrant"]: str(tmp_path / "qdrant"),
        urls["--milvus"]: str(tmp_path / "milvus.db"),
        urls["--weaviate"]: weaviate_server.url,
        urls["--weaviate-grpc-port"]: str(weaviate_server.port + 1),
        urls["--solr"]: solr_server.url,
    }
    argv = [*loader_argv(config, swap), "--wait-timeout", "120"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0

    items = {item.id for item in load_catalogue().items}
    collection = build_parser().parse_args(argv).collection
    from connectors.elasticsearch import connect as es_connect
    from connectors.opensearch import connect as os_connect

    for client in (es_connect(elasticsearch_node.url), os_connect(opensearch_node.url)):
        hits = client.search(index=collection, body={"size": 100, "query": {"match_all": {}}})["hits"]["hits"]
        assert {h["_source"]["doc_id"] for h in hits} == items
        assert all(h["_source"]["image"].startswith("images/") for h in hits)
        client.close()
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    points, _ = qdrant.scroll(collection, limit=100, with_vectors=True)
    assert {p.payload["doc_id"] for p in points} == items and all(p.vector for p in points)
    qdrant.close()
    milvus = MilvusClient(str(tmp_path / "milvus.db"))
    rows = milvus.query(collection, filter="", output_fields=["id", "title"], limit=100)
    assert {str(r["id"]) for r in rows} == items
    milvus.close()
    from connectors.weaviate import connect as weaviate_connect

    weaviate = weaviate_connect(weaviate_server.url, grpc_port=weaviate_server.port + 1)
    catalogue = weaviate.collections.get(collection)
    assert {o.properties["doc_id"] for o in catalogue.query.fetch_objects(limit=100).objects} == items
    reranker = catalogue.config.get().reranker_config  # Weaviate's own rerank= calls the sidecar
    assert reranker.reranker == "reranker-cohere" and reranker.model["baseURL"] == urls["--weaviate-reranker-url"]
    weaviate.close()
    import urllib.request

    with urllib.request.urlopen(
        f"{solr_server.url}/{collection}/select?q=*:*&rows=100&fl=doc_id,image&wt=json"
    ) as answer:
        docs = json.load(answer)["response"]["docs"]
    assert {d["doc_id"] for d in docs} == items and all(d["image"][0].startswith("images/") for d in docs)

    # The `web` service's command, on the same swapped addresses: every engine answers a text and an image query.
    from sidecar.apps.web.app import run_search
    from sidecar.apps.web.cli import stack_backend

    (web_argv,) = command_argvs(config["services"]["web"])
    backend = stack_backend(build_parser().parse_args([swap.get(a, a) for a in web_argv]))
    assert set(backend.connectors) == {"elasticsearch", "opensearch", "qdrant", "milvus", "weaviate", "solr"}
    image = base64.b64encode((DATA_DIR / "queries" / "dahlia.jpg").read_bytes()).decode()
    for engine in backend.connectors:
        for body in ({"text": "a cat with green eyes", "mode": "hybrid"}, {"image": image, "mode": "dense"}):
            result = run_search(backend, {"engine": engine, "top_k": 12, "show": 5, **body})
            assert len(result["first_stage"]) == len(result["reranked"]) == 5, (engine, body.get("mode"))
            assert all(row["image"].startswith("/media/images/") for row in result["reranked"])
            assert {"search", "rerank", "total"} <= set(result["timings_ms"])
    backend.client.close()
