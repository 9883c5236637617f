"""The committed gRPC stubs are exactly what proto/generate.py produces from the .proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_the_proto(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    written = generate.generate(tmp_path)
    assert written
    for path in written:
        relative = path.relative_to(tmp_path)
        committed = ROOT / "sidecar" / "_proto" / relative
        assert committed.read_text() == path.read_text(), f"{relative} is stale: run python proto/generate.py"
