"""The client and the connectors never load torch or transformers (users of search_and_rerank need no GPU
stack), and importing `connectors` (or its framework adapters' package) loads no framework."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "torchvision")
FRAMEWORKS = ("langchain_core", "llama_index", "haystack")


def loaded_after(imports: str, modules: tuple[str, ...]) -> str:
    code = f"import sys, {imports}\nprint(','.join(sorted(m for m in {modules!r} if m in sys.modules)))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_client_and_connectors_do_not_import_torch():
    assert loaded_after("connectors, sidecar, sidecar.client", HEAVY) == ""


def test_connectors_import_no_framework():
    assert loaded_after("connectors, connectors.frameworks, connectors.frameworks.items", FRAMEWORKS) == ""


def test_each_adapter_imports_only_its_own_framework():
    adapters = {"langchain": "langchain_core", "llamaindex": "llama_index", "haystack": "haystack"}
    for module, framework in adapters.items():
        loaded = set(loaded_after(f"connectors.frameworks.{module}", tuple(adapters.values())).split(","))
        assert loaded == {framework}, module
