"""Regenerate the Python gRPC stubs in sidecar/_proto from the .proto files under proto/.

Run `python proto/generate.py` after editing a .proto; tests/test_proto_stubs.py fails when the
committed stubs differ from what this produces. protoc writes absolute imports (`from rerank.v1
import ...`); they are rewritten to the package path so the stubs live inside `sidecar`.

The files: rerank/v1/reranker.proto (this server's contract), tei/v1/tei.proto (TEI's rerank
services, answered from the same engine) and grpc/reflection/v1/reflection.proto (server
reflection v1, which grpcio-reflection does not ship).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILES = ("rerank/v1/reranker.proto", "tei/v1/tei.proto", "grpc/reflection/v1/reflection.proto")
OUT_PACKAGE = "sidecar._proto"
OUT_DIR = ROOT / "sidecar" / "_proto"


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto into `out_dir`; return the generated module paths."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(PROTO_ROOT / name) for name in PROTO_FILES),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            text = src.read_text()
            for name in PROTO_FILES:
                package = str(Path(name).parent).replace("/", ".")
                text = text.replace(f"from {package} import", f"from {OUT_PACKAGE}.{package} import")
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            written.append(dest)
    for name in PROTO_FILES:
        for pkg in (out_dir / name).parents:
            if pkg == out_dir.parent:
                break
            (pkg / "__init__.py").touch()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory (default: sidecar/_proto)")
    args = parser.parse_args()
    if args.out == OUT_DIR:
        for top in {name.split("/")[0] for name in PROTO_FILES}:
            shutil.rmtree(OUT_DIR / top, ignore_errors=True)
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path, file=sys.stderr)


if __name__ == "__main__":
    main()
