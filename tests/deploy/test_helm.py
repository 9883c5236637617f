"""The Helm chart (deploy/helm/rerank-sidecar) with a real `helm` (tests/tools/helm.sh builds it from the Go
module proxy): `helm lint`, `helm template` with the default and the full values (tests/deploy/values-full.yaml),
every rendered object valid against the Kubernetes 1.33 schemas (kubernetes-validate, strict), and the
ServiceMonitor against the prometheus-operator CRD's models (cloudcoil.models.prometheus_operator, generated
from the CRDs' schemas) with nothing unknown to them. The container's arguments parse with the real CLI, so
the chart can only pass flags that `serve` has.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidecar.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "rerank-sidecar"
FULL = Path(__file__).with_name("values-full.yaml")
KUBERNETES = "1.33.0"


@pytest.fixture(scope="module")
def helm() -> str:
    """The helm binary (built once into ~/.cache/rerank-sidecar/tools; a build failure fails the tests)."""
    done = subprocess.run(
        ["bash", str(REPO / "tests" / "tools" / "helm.sh")], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, f"cannot build helm:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


def template(helm: str, *options: str) -> subprocess.CompletedProcess:
    command = [helm, "template", "search", str(CHART), "--namespace", "search", "--kube-version", KUBERNETES]
    return subprocess.run([*command, *options], capture_output=True, text=True, timeout=120)


def render(helm: str, *options: str) -> list[dict[str, Any]]:
    done = template(helm, *options)
    assert done.returncode == 0, done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def render_error(helm: str, *options: str) -> str:
    done = template(helm, *options)
    assert done.returncode != 0
    return done.stderr


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    return kinds


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objects)["Deployment"]
    (sidecar,) = deployment["spec"]["template"]["spec"]["containers"]
    return sidecar


def validate(objects: list[dict[str, Any]]) -> None:
    """Core kinds against Kubernetes' schemas (strict: no unknown field); the ServiceMonitor against its CRD."""
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            validate_service_monitor(obj)
        else:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def validate_service_monitor(obj: dict[str, Any]) -> None:
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    model = monitoring.ServiceMonitor.model_validate(obj)  # types, patterns, required fields
    assert model.model_dump(by_alias=True, exclude_none=True) == obj, "fields unknown to the ServiceMonitor CRD"


def test_lint(helm):
    for options in ([], ["-f", str(FULL)], ["--set", "tls.enabled=true,tls.secretName=tls"]):
        done = subprocess.run([helm, "lint", "--strict", str(CHART), *options], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_default_values_render_valid_objects(helm):
    objects = render(helm)
    validate(objects)
    kinds = by_kind(objects)
    assert sorted(kinds) == ["Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    sidecar = container(objects)
    assert sidecar["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert sidecar["readinessProbe"]["grpc"] == {"port": 50051}  # plaintext: the gRPC health service
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http", "scheme": "HTTP"}
    services = {s["metadata"]["name"]: s["spec"] for s in kinds["Service"]}
    assert services["search-rerank-sidecar-grpc"]["clusterIP"] == "None"
    assert [p["name"] for p in services["search-rerank-sidecar"]["ports"]] == ["grpc", "http", "metrics"]
    assert kinds["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1


def test_full_values_render_valid_objects(helm):
    objects = render(helm, "-f", str(FULL))
    validate(objects)
    kinds = by_kind(objects)
    assert sorted(kinds) == [
        "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount",
        "ServiceMonitor",
    ]  # fmt: skip
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "rerank_sidecar_queue_pairs"
    assert "replicas" not in kinds["Deployment"][0]["spec"]  # the HPA owns the count
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for s in kinds["Service"] for p in s["spec"]["ports"]}
    (secret,) = kinds["Secret"]
    assert secret["stringData"]["api-keys"].split() == ["key-one-0123456789abcdef", "key-two-fedcba9876543210"]
    sidecar = container(objects)
    assert "exec" in sidecar["readinessProbe"] and "tcpSocket" in sidecar["livenessProbe"]  # mutual TLS


@pytest.mark.parametrize("values", [[], ["-f", str(FULL)], ["--set", "tls.enabled=true,tls.secretName=t,http=true"]])
def test_the_container_arguments_parse_with_the_real_cli(helm, values):
    sidecar = container(render(helm, *values))
    args = build_parser().parse_args(sidecar["args"])
    assert args.command == "serve" and args.host == "0.0.0.0"
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    for flag in ("api_key_file", "tls_cert", "tls_key", "tls_client_ca"):  # every file flag points into a mount
        if (path := getattr(args, flag)) is not None:
            assert any(str(path).startswith(mount + "/") for mount in mounts.values()), (flag, path, mounts)


def test_security_context_matches_the_image(helm):
    uid = re.search(r"useradd --uid (\d+)", (REPO / "Dockerfile").read_text()).group(1)
    objects = render(helm)
    pod = by_kind(objects)["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    context = container(objects)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert {"/tmp", "/models"} <= writable


def test_tls_probes_speak_https(helm):
    sidecar = container(render(helm, "--set", "tls.enabled=true,tls.secretName=rerank-tls"))
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http", "scheme": "HTTPS"}
    assert sidecar["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("tls.enabled=true", "tls.enabled needs tls.secretName"),
        ("apiKey.enabled=true", "apiKey.enabled needs apiKey.existingSecret or apiKey.keys"),
        ("serviceMonitor.enabled=true,ports.metrics=null", "serviceMonitor.enabled needs ports.metrics"),
        (
            "tls.enabled=true,tls.secretName=t,tls.clientAuth=true,ports.metrics=null",
            "tls.clientAuth needs ports.metrics",
        ),
    ],
)
def test_incomplete_values_fail_with_a_message(helm, options, message):
    assert message in render_error(helm, "--set", options)
