"""Property-based fuzzing of the HTTP face from its own OpenAPI document (Schemathesis, against a live server).

Every generated request, valid or not, must get a 2xx or a 4xx that the document lists, in our error body,
with a 422's message naming a field; never a 5xx. The server must answer health afterwards. Bounded:
`EXAMPLES` per operation and positive + negative generation, well under a minute on two cores.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.api.http_app import OPERATIONS

EXAMPLES = 20
LEADING_FIELD = re.compile(r"^(the request body|[A-Za-z_]\w*)")


@pytest.fixture(scope="module")
def http_api(fuzzed_server):
    base = f"http://127.0.0.1:{fuzzed_server.http_port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    schema.config.update(base_url=base)
    return schema


CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
)
# Routes without parameters or a body have no invalid form: negative generation is for the POSTs.
CASES = [
    (op.path, op.method, mode)
    for op in OPERATIONS
    for mode in GenerationMode
    if op.dialects or mode.value == "positive"
]


@pytest.mark.parametrize("path, method, mode", CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
def test_every_generated_request_gets_a_documented_2xx_or_4xx(http_api, path, method, mode):
    operation = http_api[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def exchange(case) -> None:
        response = case.call(timeout=60)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            error = json.loads(response.content)["error"]
            assert error["code"] and error["message"], response.content
            if response.status_code == 422:  # the message starts with the field it is about
                named = LEADING_FIELD.match(error["message"])
                fields = {*case.body} if isinstance(case.body, dict) else set()
                assert named and named.group(1) in {"the request body", *fields, "query", "documents", "texts"}, error

    exchange()


def test_the_server_answers_health_after_the_fuzzing(fuzzed_server):
    for path in ("/health", "/ready"):
        with urllib.request.urlopen(f"http://127.0.0.1:{fuzzed_server.http_port}{path}", timeout=10) as response:
            assert response.status == 200
    assert fuzzed_server.process.poll() is None
    assert "Exception in ASGI application" not in fuzzed_server.log() and "Traceback" not in fuzzed_server.log()
