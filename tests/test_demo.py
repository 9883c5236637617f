"""`rerank-sidecar demo`: the bundled catalogue, and the demo end to end with tiny random models, offline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from sidecar.apps.demo_data import DATA_DIR, load_catalogue

REPO = Path(__file__).resolve().parents[1]
LICENCES = ("CC0-1.0", "CC-BY-2.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "GPL-2.0-or-later", "Public domain")
LICENCES += ("No known copyright restrictions",)
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def test_catalogue_loads_decodes_and_is_licensed() -> None:
    catalogue = load_catalogue()
    pictures = catalogue.items + catalogue.held_out
    assert 24 <= len(catalogue.items) <= 40
    assert len({p.id for p in pictures}) == len(pictures)
    attribution = (DATA_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in attribution.splitlines() if line.startswith("| `")}
    for picture in pictures:
        assert picture.title and picture.description and picture.category and picture.author, picture.id
        assert picture.licence.startswith(LICENCES), (picture.id, picture.licence)
        assert picture.source["package"] and picture.source["version"], picture.id
        with Image.open(picture.path) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB" and max(image.size) <= 384, picture.id
        assert picture.licence in rows[picture.file] and picture.source["version"] in rows[picture.file]
    on_disk = {p.relative_to(DATA_DIR).as_posix() for p in DATA_DIR.glob("*/*.jpg")}
    assert on_disk == {p.file for p in pictures} == set(rows), "every picture is catalogued and attributed"
    assert sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file()) < 5 * 1024 * 1024
    for query in catalogue.queries:
        assert query.text or (query.image and query.image.is_file())


def test_demo_process_imports_no_torch() -> None:
    """The demo reaches the models only through the sidecar process: its own side stays torch-free."""
    code = (
        "import sys, sidecar.cli, sidecar.apps.demo, connectors.milvus, pymilvus\n"
        "sidecar.cli.build_parser()\n"
        "print(','.join(m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules))\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """The demo's tiny models, built once (the first-run path) and reused by both runs below."""
    from sidecar.apps.embedded import ensure_tiny_models

    cache = tmp_path_factory.mktemp("demo-tiny")
    reranker, embedding = ensure_tiny_models(cache)
    assert (reranker / "model.safetensors").is_file() and (embedding / "model.safetensors").is_file()
    return cache


def demo_command(cache: Path) -> list[str]:
    return [sys.executable, "-m", "sidecar.cli", "demo", "--tiny", "--cache-dir", str(cache)]


def test_demo_tiny_end_to_end(tiny_cache: Path) -> None:
    run = subprocess.run(demo_command(tiny_cache), capture_output=True, text=True, env=OFFLINE, cwd=REPO, timeout=300)
    out = run.stdout
    assert run.returncode == 0, f"stdout:\n{out}\nstderr:\n{run.stderr}"
    assert f"reusing tiny random models in {tiny_cache}" in out
    assert f"models: reranker = {tiny_cache / 'reranker'}\n        embedding = {tiny_cache / 'embedding'}" in out
    assert "RANDOM weights" in out and "meaningless" in out
    queries = load_catalogue().queries
    blocks = re.split(r"\nQuery (?=\d+/)", out)[1:]
    assert len(blocks) == len(queries)
    for number, (block, query) in enumerate(zip(blocks, queries), start=1):
        lines = block.splitlines()
        assert lines[0].startswith(f"{number}/{len(queries)}")
        assert query.describe() in lines[0]
        header, rows = lines[1], [line for line in lines[2:] if "│" in line]
        assert "first stage" in header and "score" in header and "reranked" in header and "rerank" in header
        assert len(rows) == 5
        for rank, row in enumerate(rows, start=1):
            left, right = row.split("│")[1:]
            assert row.split("│")[0].strip() == str(rank)
            assert re.search(r"\d\.\d{4}$", left.strip()), row  # first-stage score
            assert re.search(r"\d\.\d{4}\s+(=|[▲▼^v]\d+)", right), row  # rerank score and rank change
        assert re.search(
            r"timings: embed \d+ ms · search \d+ ms · rerank 10 \d+ ms \(in the sidecar: preprocess", block
        )
    assert "Per-stage timings" in out
    for stage in ("sidecar start + model load", "catalogue embedding", "first-stage search", "rerank"):
        assert re.search(rf"\n  {re.escape(stage)} +\d+ ", out), stage
    assert "sidecar stopped (exit status 0)" in run.stderr
    assert not Path(re.search(r"Milvus Lite at (\S+)/demo\.db", out).group(1)).exists()


def test_demo_ctrl_c_stops_the_sidecar(tiny_cache: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) mid-run: exit 130, sidecar drained, index removed."""
    stderr = (tmp_path / "stderr.txt").open("w")
    demo = subprocess.Popen(
        demo_command(tiny_cache), stdout=subprocess.PIPE, stderr=stderr, text=True, env=OFFLINE, cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    seen = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("Query 2/"):
                os.killpg(demo.pid, signal.SIGINT)
                break
        assert demo.wait(timeout=60) == 130, "".join(seen) + (tmp_path / "stderr.txt").read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
        stderr.close()
    out, err = "".join(seen), (tmp_path / "stderr.txt").read_text()
    pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    workdir = Path(re.search(r"Milvus Lite at (\S+)/demo\.db", out).group(1))
    assert "interrupted" in err and "sidecar stopped (exit status 0)" in err, err
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the sidecar outlived the demo"
    assert not workdir.exists(), "the temporary Milvus Lite index was not removed"
