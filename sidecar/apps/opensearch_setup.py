"""`rerank-sidecar opensearch-setup`: make OpenSearch rerank search hits with this sidecar.

Applies the JSON in `opensearch-plugin-config/` (see its README.md for the same steps as curl)
with plain HTTP calls, idempotently:

1. an ML-commons HTTP connector to the sidecar's Cohere-compatible `/v2/rerank`, using
   ML-commons' `connector.pre_process.cohere.rerank` / `connector.post_process.cohere.rerank`
   (one similarity per document, in input order); the sidecar URL is the connector parameter
   `endpoint`, used as `${parameters.endpoint}/v2/rerank`; the sidecar's API key is the
   connector's `credential.api_key` (stored encrypted by ML-commons), sent as
   `Authorization: Bearer ${credential.api_key}`;
2. a model group, and a remote model (`function_name: remote`) on that connector, deployed;
3. a search pipeline whose `rerank` response processor (`ml_opensearch`) calls that model with the
   `document_fields` of each hit.

Objects are found by name. Re-running with the same arguments changes nothing. ML-commons never
returns a stored credential, so the connector carries the key's fingerprint (the first 16 hex
digits of its SHA-256) in the parameter `api_key_fingerprint`, by which a changed key is seen. A
changed sidecar URL or key (or connector JSON) updates the existing connector in place: ML-commons 2.19 refuses to update
a connector while a deployed model uses it, so the model is undeployed, the connector updated
(`PUT _plugins/_ml/connectors/<id>`) and the model deployed again; model id and pipeline stay.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.apps.sidecar_flags import add_key_argument

CONFIG_DIR = Path(__file__).resolve().parents[2] / "opensearch-plugin-config"
ML = "/_plugins/_ml"
TRUSTED_SETTING = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP_SETTING = "plugins.ml_commons.connector.private_ip_enabled"


class SetupError(Exception):
    """A failure with a message an operator can act on."""


@dataclass
class SetupResult:
    """What the setup found or made, and what it changed (empty when nothing)."""

    connector_id: str
    model_group_id: str
    model_id: str
    pipeline: str
    changes: list[str] = field(default_factory=list)


class OpenSearchHttp:
    """Minimal JSON-over-HTTP client (urllib): basic auth, optional unverified TLS."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context: ssl.SSLContext | None = None
        if insecure:
            self.context = ssl.create_default_context()
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON body or text); raises SetupError only when OpenSearch is unreachable."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SetupError(f"cannot reach OpenSearch at {self.url}: {reason}") from None
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None, what: str = "") -> Any:
        """The JSON body of a 2xx answer; any other status is a SetupError naming `what`."""
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise SetupError(explain(status, answer, what or f"{method} {path}"))
        return answer


def explain(status: int, answer: Any, what: str) -> str:
    """An operator-facing message for a refused ML-commons call."""
    text = json.dumps(answer) if not isinstance(answer, str) else answer
    if status in (401, 403):
        return f"{what}: OpenSearch answered {status} (check --username/--password and the user's ML roles): {text}"
    if "trusted connector endpoint regex" in text:
        return (
            f"{what}: OpenSearch refuses the sidecar URL: it matches no regex of the cluster setting "
            f"{TRUSTED_SETTING}. Add one, e.g. PUT _cluster/settings "
            f'{{"persistent": {{"{TRUSTED_SETTING}": ["^http://127\\\\.0\\\\.0\\\\.1:[0-9]+(/.*)?$"]}}}} '
            f"(keep the existing entries in the list). OpenSearch said: {text}"
        )
    if "private ip" in text.lower() or "private_ip" in text.lower():
        return f"{what}: OpenSearch refuses a private/loopback sidecar address; set {PRIVATE_IP_SETTING}: true. {text}"
    if "no handler found" in text.lower():
        return f"{what}: ML-commons does not answer ({status}); install the opensearch-ml plugin. {text}"
    return f"{what}: OpenSearch answered {status}: {text}"


def load_config(config_dir: Path = CONFIG_DIR) -> dict[str, dict[str, Any]]:
    """The four JSON bodies: connector, model-group, model, search-pipeline."""
    names = ("connector", "model-group", "model", "search-pipeline")
    try:
        return {name: json.loads((config_dir / f"{name}.json").read_text()) for name in names}
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read the plugin config in {config_dir}: {exc}") from None


def desired_bodies(
    config: dict[str, dict[str, Any]],
    sidecar_url: str,
    model_name: str,
    document_fields: list[str],
    api_key: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The config with this run's names, sidecar URL, API key and document fields filled in."""
    bodies = copy.deepcopy(config)
    bodies["connector"]["name"] = f"{model_name}-connector"
    parameters = bodies["connector"].setdefault("parameters", {})
    parameters["endpoint"] = sidecar_url.rstrip("/")
    if api_key:
        bodies["connector"]["credential"] = {"api_key": api_key}
        parameters["api_key_fingerprint"] = key_fingerprint(api_key)
    bodies["model-group"]["name"] = f"{model_name}-group"
    bodies["model"]["name"] = model_name
    for processor in bodies["search-pipeline"]["response_processors"]:
        if "rerank" in processor:
            processor["rerank"]["context"]["document_fields"] = list(document_fields)
    return bodies


def key_fingerprint(api_key: str) -> str:
    """What the connector keeps to tell a changed key: 16 hex digits of its SHA-256, never the key."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def matches(existing: Any, desired: Any) -> bool:
    """Whether `existing` has every key/value of `desired` (dicts recursively, lists item by item)."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(matches(existing.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(desired)
            and all(matches(e, d) for e, d in zip(existing, desired, strict=True))
        )
    return existing == desired


def comparable(connector: dict[str, Any]) -> dict[str, Any]:
    """A connector body as ML-commons returns it: no credential (stored encrypted), action types upper-case."""
    body = {k: copy.deepcopy(v) for k, v in connector.items() if k != "credential"}
    for action in body.get("actions", []):
        action["action_type"] = str(action.get("action_type", "")).upper()
    return body


def search_by_name(client: OpenSearchHttp, kind: str, name: str) -> list[dict[str, Any]]:
    """Hits ({_id, _source}) of an ML-commons `_search` by exact name; none when its index is absent."""
    body = {"query": {"term": {"name.keyword": name}}, "size": 100}
    status, answer = client.request("POST", f"{ML}/{kind}/_search", body)
    if status == 404 and "index_not_found" in json.dumps(answer):
        return []
    if status >= 300:
        raise SetupError(explain(status, answer, f"searching ML-commons {kind}"))
    return list(answer.get("hits", {}).get("hits", []))


def check_cluster(client: OpenSearchHttp) -> None:
    """OpenSearch answers, and has ML-commons and neural-search (the rerank processor)."""
    info = client.call("GET", "/", what="GET /")
    if not isinstance(info, dict) or info.get("version", {}).get("distribution") != "opensearch":
        raise SetupError(f"{client.url} does not answer as OpenSearch: {info}")
    plugins = {row.get("component") for row in client.call("GET", "/_cat/plugins?format=json", what="listing plugins")}
    if "opensearch-ml" not in plugins:
        raise SetupError(
            f"ML-commons (plugin opensearch-ml) is not installed on {client.url}; installed: {sorted(plugins)}"
        )
    if "opensearch-neural-search" not in plugins:
        raise SetupError(
            f"neural-search (the rerank processor) is not installed on {client.url}; installed: {sorted(plugins)}"
        )


def wait_model_state(client: OpenSearchHttp, model_id: str, wanted: set[str], timeout: float = 120.0) -> str:
    """Poll the model until its state is in `wanted`; the state reached."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = str(client.call("GET", f"{ML}/models/{model_id}", what="reading the model").get("model_state", ""))
        if state in wanted:
            return state
        if state == "DEPLOY_FAILED" and "DEPLOYED" in wanted:
            break
        time.sleep(0.5)
    raise SetupError(f"model {model_id} is {state or 'in no state'} after {timeout:.0f}s, expected {sorted(wanted)}")


def deploy(client: OpenSearchHttp, model_id: str) -> None:
    client.call("POST", f"{ML}/models/{model_id}/_deploy", what="deploying the model")
    wait_model_state(client, model_id, {"DEPLOYED"})


def undeploy(client: OpenSearchHttp, model_id: str) -> None:
    client.call("POST", f"{ML}/models/{model_id}/_undeploy", what="undeploying the model")
    wait_model_state(client, model_id, {"UNDEPLOYED", "REGISTERED", "DEPLOY_FAILED"})


def ensure_connector(client: OpenSearchHttp, body: dict[str, Any], result: SetupResult) -> list[str]:
    """Create or update the connector; the ids of models that must be redeployed after an update."""
    hits = search_by_name(client, "connectors", body["name"])
    if not hits:
        answer = client.call("POST", f"{ML}/connectors/_create", body, what="creating the connector")
        result.connector_id = answer["connector_id"]
        result.changes.append(f"created connector {result.connector_id}")
        return []
    if len(hits) > 1:
        ids = [hit["_id"] for hit in hits]
        raise SetupError(f"{len(hits)} connectors are named {body['name']!r} ({ids}); delete all but one")
    result.connector_id = hits[0]["_id"]
    existing = client.call("GET", f"{ML}/connectors/{result.connector_id}", what="reading the connector")
    if matches(existing, comparable(body)):
        return []
    users = [hit["_id"] for hit in search_models(client, result.connector_id)]
    deployed = [m for m in users if client.call("GET", f"{ML}/models/{m}").get("model_state") == "DEPLOYED"]
    for model_id in deployed:  # 2.19: "models are still using this connector, please undeploy the models first"
        undeploy(client, model_id)
    update = {k: v for k, v in body.items() if k != "name"}
    try:
        client.call("PUT", f"{ML}/connectors/{result.connector_id}", update, what="updating the connector")
    except SetupError:
        for model_id in deployed:  # leave serving as it was
            deploy(client, model_id)
        raise
    result.changes.append(f"updated connector {result.connector_id} (endpoint {body['parameters']['endpoint']})")
    return deployed


def search_models(client: OpenSearchHttp, connector_id: str) -> list[dict[str, Any]]:
    """The models registered on `connector_id` (the field is dynamically mapped text: match, then filter)."""
    body = {"query": {"match": {"connector_id": connector_id}}, "size": 100}
    status, answer = client.request("POST", f"{ML}/models/_search", body)
    if status >= 300:
        raise SetupError(explain(status, answer, "searching the models on the connector"))
    hits = answer.get("hits", {}).get("hits", [])
    return [h for h in hits if h["_source"].get("connector_id") == connector_id and "chunk_number" not in h["_source"]]


def ensure_model(client: OpenSearchHttp, bodies: dict[str, dict[str, Any]], result: SetupResult) -> None:
    """Find or create the model group and the model on the connector."""
    group = bodies["model-group"]
    groups = search_by_name(client, "model_groups", group["name"])
    if groups:
        result.model_group_id = groups[0]["_id"]
    else:
        answer = client.call("POST", f"{ML}/model_groups/_register", group, what="registering the model group")
        result.model_group_id = answer["model_group_id"]
        result.changes.append(f"created model group {result.model_group_id}")
    model = dict(bodies["model"], model_group_id=result.model_group_id, connector_id=result.connector_id)
    models = [h for h in search_by_name(client, "models", model["name"]) if "chunk_number" not in h["_source"]]
    mine = [h for h in models if h["_source"].get("connector_id") == result.connector_id]
    if mine:
        result.model_id = mine[0]["_id"]
    elif models:
        other = models[0]["_source"].get("connector_id")
        raise SetupError(
            f"model {model['name']!r} ({models[0]['_id']}) uses connector {other}, not {result.connector_id}; "
            "delete it (undeploy first) or pass another --model-name"
        )
    else:
        answer = client.call("POST", f"{ML}/models/_register", model, what="registering the model")
        result.model_id = answer["model_id"]
        result.changes.append(f"registered model {result.model_id}")


def ensure_pipeline(client: OpenSearchHttp, name: str, body: dict[str, Any], result: SetupResult) -> None:
    """Create or replace the search pipeline when it differs from `body`."""
    status, existing = client.request("GET", f"/_search/pipeline/{urllib.parse.quote(name)}")
    if status < 300 and isinstance(existing, dict) and existing.get(name) == body:
        return
    client.call("PUT", f"/_search/pipeline/{urllib.parse.quote(name)}", body, what="writing the search pipeline")
    result.changes.append(f"{'updated' if status < 300 else 'created'} search pipeline {name}")


def check_model(client: OpenSearchHttp, model_id: str) -> float:
    """One predict through the connector: the sidecar answers from OpenSearch's side too."""
    body = {"parameters": {"query": "connectivity check", "documents": ["connectivity check"], "top_n": 1}}
    status, answer = client.request("POST", f"{ML}/models/{model_id}/_predict", body)
    if status >= 300:
        raise SetupError(explain(status, answer, "a test prediction through the connector (is the sidecar up?)"))
    return float(answer["inference_results"][0]["output"][0]["data"][0])


def setup(
    opensearch: str,
    sidecar_url: str,
    pipeline: str = "rerank-sidecar",
    document_fields: list[str] | None = None,
    model_name: str = "rerank-sidecar",
    username: str | None = None,
    password: str | None = None,
    insecure: bool = False,
    check: bool = True,
    config_dir: Path = CONFIG_DIR,
    api_key: str | None = None,
) -> SetupResult:
    """Apply connector, model group, model (deployed) and pipeline; see the module docstring."""
    client = OpenSearchHttp(opensearch, username, password, insecure)
    check_cluster(client)
    config = load_config(config_dir)
    bodies = desired_bodies(config, sidecar_url, model_name, document_fields or ["content"], api_key)
    result = SetupResult("", "", "", pipeline)
    redeploy = ensure_connector(client, bodies["connector"], result)
    ensure_model(client, bodies, result)
    state = client.call("GET", f"{ML}/models/{result.model_id}", what="reading the model").get("model_state")
    if state != "DEPLOYED":
        deploy(client, result.model_id)
        if result.model_id not in redeploy:
            result.changes.append(f"deployed model {result.model_id}")
    for model_id in redeploy:
        if model_id != result.model_id:
            deploy(client, model_id)
    for processor in bodies["search-pipeline"]["response_processors"]:
        if "rerank" in processor:
            processor["rerank"]["ml_opensearch"]["model_id"] = result.model_id
    ensure_pipeline(client, pipeline, bodies["search-pipeline"], result)
    if check:
        check_model(client, result.model_id)
    return result


def add_arguments(parser: Any) -> None:
    """The `opensearch-setup` flags (argparse)."""
    parser.add_argument("--opensearch", required=True, help="OpenSearch URL, e.g. http://127.0.0.1:9200")
    parser.add_argument("--sidecar-url", required=True, help="the sidecar's HTTP face as OpenSearch reaches it")
    add_key_argument(parser)
    parser.add_argument("--pipeline", default="rerank-sidecar", help="search pipeline name (default: rerank-sidecar)")
    parser.add_argument(
        "--document-fields",
        default="content",
        help="comma-separated fields sent as each document; they are concatenated without a separator, so "
        "keep a media JSON string in one field (default: content)",
    )
    parser.add_argument("--model-name", default="rerank-sidecar", help="model name; also names connector and group")
    parser.add_argument("--username", help="basic-auth user (security plugin)")
    parser.add_argument("--password", help="basic-auth password")
    parser.add_argument("--insecure", action="store_true", help="do not verify OpenSearch's TLS certificate")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the test prediction")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help=f"JSON bodies (default: {CONFIG_DIR})")


def run(args: Any) -> int:
    """The subcommand: print ids and changes; exit status 1 with the message on SetupError."""
    fields = [f.strip() for f in args.document_fields.split(",") if f.strip()]
    try:
        result = setup(
            args.opensearch, args.sidecar_url, args.pipeline, fields, args.model_name,
            args.username, args.password, args.insecure, args.check, args.config_dir, args.sidecar_api_key,
        )  # fmt: skip
    except SetupError as exc:
        print(f"opensearch-setup failed: {exc}", file=sys.stderr)
        return 1
    for change in result.changes or ["nothing changed"]:
        print(change)
    print(f"connector_id: {result.connector_id}")
    print(f"model_id: {result.model_id}")
    print(f"pipeline: {result.pipeline}")
    return 0
