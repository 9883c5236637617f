"""The Grafana dashboard (deploy/grafana/rerank-sidecar.json) and the docker-compose `monitoring` profile.

Every query of the dashboard parses as PromQL (promql-parser, the Rust parser's bindings), and every series it
reads is exported by a live `rerank-sidecar serve` after known traffic (a keyed server: auth failures count
too). The compose profile is resolved by a real compose implementation (docker-compose config) and its
Prometheus scrapes, Grafana datasource and dashboard provisioning point at each other and at files that exist.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import promql_parser
import pytest
import yaml

from sidecar.client import RerankerClient
from tests.api.conftest import _exchange
from tests.conftest import ServerProcess, free_port, png_bytes
from tests.test_compose import compose_config

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "rerank-sidecar.json"
SERIES = re.compile(r"\b(?:rerank_sidecar|process)_[a-z_]+\b")
# Exported only by a process that uses CUDA (the metrics contract); a CPU-only test server cannot show it.
CUDA_ONLY = {"rerank_sidecar_device_memory_bytes"}
KEY = "dashboard-key-5f4e3d2c1b0a"


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by values Prometheus would receive."""
    return expr.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")


def test_every_query_parses_as_promql():
    exprs = queries()
    assert len(exprs) >= 20
    for expr in exprs:
        promql_parser.parse(as_promql(expr))  # raises on a syntax error


def test_the_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert names == {"datasource", "job", "instance"}
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("latency", "pairs", "queue", "batch fill", "errors", "media"):
        assert topic in titles, topic


@pytest.fixture(scope="module")
def scraped(tiny_model_dir, tmp_path_factory) -> set[str]:
    """Sample names of a live keyed server's /metrics after rerank traffic on both faces and a refused key."""
    from prometheus_client.parser import text_string_to_metric_families

    root = tmp_path_factory.mktemp("dashboard")
    (root / "keys").write_text(KEY + "\n")
    port = free_port()
    args = ["--model", str(tiny_model_dir), "--http-port", str(port), "--api-key-file", str(root / "keys")]
    with ServerProcess(args, root / "server.log") as server:
        image = "data:image/png;base64," + base64.b64encode(png_bytes(64, 48, seed=7)).decode()
        body = json.dumps({"query": "red", "documents": [{"text": "a red square", "image": image}, "blue"]}).encode()
        for key in (KEY, "wrong"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/rerank", data=body,
                headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
            )  # fmt: skip
            assert _exchange(request).status == (200 if key == KEY else 401)
        with RerankerClient(server.target, api_key=KEY, timeout=60) as client:
            client.rerank("red", ["a red square", "blue"])
        with RerankerClient(server.target, api_key="wrong", timeout=60, retries=0) as client:
            with pytest.raises(grpc.RpcError):
                client.model_info()
        text = _exchange(urllib.request.Request(f"http://127.0.0.1:{port}/metrics")).raw.decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_series_the_dashboard_reads_is_exported(scraped):
    used = {name for expr in queries() for name in SERIES.findall(expr)}
    assert "rerank_sidecar_queue_pairs" in used and "rerank_sidecar_request_duration_seconds_bucket" in used
    missing = sorted(used - scraped - CUDA_ONLY)
    assert not missing, f"the dashboard reads series no server exports: {missing}"


# ---- the docker-compose `monitoring` profile -------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring() -> dict[str, Any]:
    return compose_config("cpu,monitoring")["services"]


def mounted(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository file, for the service's bind mounts."""
    binds = {}
    for volume in service["volumes"]:
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        if source.startswith(("/", ".")):
            binds[target] = Path(source) if source.startswith("/") else REPO / source
    return binds


def test_the_profile_adds_prometheus_and_grafana_on_loopback(monitoring):
    assert {"prometheus", "grafana"} <= set(monitoring)
    for name in ("prometheus", "grafana"):
        assert monitoring[name]["profiles"] == ["monitoring"]  # started only with --profile monitoring
        for port in monitoring[name]["ports"]:
            assert (port["host_ip"] if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1"
        assert all(path.exists() for path in mounted(monitoring[name]).values()), mounted(monitoring[name])


def test_prometheus_scrapes_the_sidecars_http_port(monitoring):
    config_path = mounted(monitoring["prometheus"])["/etc/prometheus/prometheus.yml"]
    (job,) = yaml.safe_load(config_path.read_text())["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    sidecar = monitoring["sidecar-cpu"]
    assert host in sidecar["networks"]["default"]["aliases"]
    assert (
        f"--http-port {port}" in " ".join(sidecar["command"])
        if isinstance(sidecar["command"], list)
        else (f"--http-port {port}" in sidecar["command"])
    )
    assert job["metrics_path"] == "/metrics"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(monitoring):
    binds = mounted(monitoring["grafana"])
    provisioning = binds["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert any(re.search(r":9090(/tcp)?$", str(port)) for port in monitoring["prometheus"]["ports"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "rerank-sidecar.yml").read_text())["providers"]
    dashboards = [target for target, path in binds.items() if path == DASHBOARD]
    assert dashboards and Path(dashboards[0]).parent == Path(provider["options"]["path"])
