"""`rerank-sidecar eval`: does reranking help on your judged queries, by how much, at what latency?

    rerank-sidecar eval --sidecar 127.0.0.1:50051 --beir ./scifact --qdrant ./qdrant --collection scifact \\
        --id-field doc_id --mode bm25 --mode dense --out eval/base
    rerank-sidecar eval --sidecar 127.0.0.1:50051 --beir ./scifact --run bm25.run --out eval/base
    rerank-sidecar eval --compare eval/base eval/finetuned

The first stage is an engine collection (one or more modes) or TREC run files; the reranking goes
through the sidecar with `connectors.search_and_rerank`. Results land in `--out`: results.md (the
table, also printed), results.json, plot.png, and runs/<first stage>.<first-stage|reranked>.run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sidecar.apps.loader import ENGINES, WEAVIATE_GRPC_PORT

DEFAULT_KS = "1,3,5,10,20,100"


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError("every k must be at least 1")
    return ks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `eval` subcommand's flags."""
    parser.description = (
        "Measure first stage vs reranked (nDCG, MRR, recall, precision at k, paired t-test, latency) on judged "
        "queries, or compare earlier evaluations with --compare."
    )
    data = parser.add_argument_group("judged queries")
    data.add_argument(
        "--beir", type=Path, metavar="DIR", help="BEIR dataset: queries.jsonl, corpus.jsonl, qrels/SPLIT.tsv"
    )
    data.add_argument("--split", default="test", help="--beir: the qrels split (default: test)")
    data.add_argument("--queries", type=Path, help="queries: JSONL {_id, text, images} or TSV qid<TAB>text")
    data.add_argument("--qrels", type=Path, help="judgements: TREC qrels or a BEIR qrels TSV")
    data.add_argument(
        "--corpus", type=Path, help="documents for --run candidates: JSONL {_id, title, text, images} or TSV"
    )
    data.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    first = parser.add_argument_group("first stage: TREC run files, or one engine collection")
    first.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="candidates from a TREC run file (repeatable; each is one first stage, named by its file)",
    )
    for engine in ENGINES:
        first.add_argument(f"--{engine}", metavar="URL", help=f"{engine} URL (Qdrant/Milvus also a local path)")
    first.add_argument("--weaviate-grpc-port", type=int, default=WEAVIATE_GRPC_PORT,
                       help=f"Weaviate's gRPC port (default: {WEAVIATE_GRPC_PORT})")  # fmt: skip
    first.add_argument("--collection", help="index/collection name in the engine")
    first.add_argument(
        "--mode",
        action="append",
        choices=["bm25", "dense", "hybrid"],
        help="first-stage mode (repeatable; default: every mode the collection supports)",
    )
    first.add_argument(
        "--text-field", action="append", help="stored text field(s) sent to the reranker (default: text)"
    )
    first.add_argument("--image-field", action="append", default=[], help="stored image reference field(s)")
    first.add_argument("--id-field", help="stored field holding the judged document id (default: the engine's id)")
    first.add_argument("--depth", type=int, default=100, help="candidates per query, all reranked (default: 100)")
    rerank = parser.add_argument_group("reranking")
    rerank.add_argument("--sidecar", help="the sidecar's gRPC target, host:port (it also embeds dense queries)")
    rerank.add_argument("--instruction", help="reranker instruction (default: the model's)")
    rerank.add_argument(
        "--image-dir",
        type=Path,
        help="send relative image references found under DIR inline (else the sidecar resolves them)",
    )
    rerank.add_argument("--timeout", type=float, default=120.0, help="seconds per sidecar call (default: 120)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="output directory; rerunning into it resumes an interrupted evaluation")
    out.add_argument("--label", help="this evaluation's name in tables (default: the served model)")
    out.add_argument("--k", type=_ks, default=_ks(DEFAULT_KS), help=f"cut-offs computed (default: {DEFAULT_KS})")
    out.add_argument("--table-k", type=int, default=10, help="the cut-off the table shows (default: 10)")
    out.add_argument(
        "--overwrite", action="store_true", help="discard an earlier evaluation in --out instead of resuming"
    )
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                        help="compare earlier evaluations (their --out directories) in one table; the first is the baseline")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar eval`; returns the exit status."""
    from connectors.errors import ConnectorError
    from sidecar.apps.eval.first_stage import FirstStageError
    from sidecar.apps.eval.judgements import JudgementsError
    from sidecar.apps.eval.runfile import RunFileError
    from sidecar.apps.eval.runner import EvalError

    try:
        if args.compare:
            return compare_runs(args)
        return evaluate(args)
    except (EvalError, JudgementsError, RunFileError, FirstStageError, ConnectorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def compare_runs(args: argparse.Namespace) -> int:
    """`eval --compare DIR...`: print (and with --out, write) one table over earlier evaluations."""
    import json

    from sidecar.apps.eval.report import RESULTS, compare
    from sidecar.apps.eval.runner import EvalError

    runs = []
    for directory in args.compare:
        path = directory / RESULTS if directory.is_dir() else directory
        if not path.is_file():
            raise EvalError(f"--compare {directory}: no {RESULTS} there (run eval with --out {directory} first)")
        results = json.loads(path.read_text())
        runs.append((results.get("label") or directory.name, results))
    if len({label for label, _ in runs}) < len(runs):
        runs = [(f"{label} ({directory})", results) for (label, results), directory in zip(runs, args.compare)]
    table = compare(runs, args.table_k)
    print(table, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(table)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation described by the flags and write its outputs."""
    from sidecar.apps.eval.report import markdown, summarise, write_outputs
    from sidecar.apps.eval.runner import EvalError, Journal
    from sidecar.apps.eval.runner import evaluate as run_queries
    from sidecar.client import RerankerClient

    if not args.sidecar or not args.out:
        raise EvalError("give --sidecar (the reranking sidecar) and --out (where results go)")
    judged = load_judged(args)
    with RerankerClient(args.sidecar, timeout=args.timeout, retries=3) as client:
        model = served_model(client)
        stages, about = build_stages(args, judged, client)
        fingerprint = {**about, "model": model, "depth": args.depth, "instruction": args.instruction or ""}
        journal = Journal(args.out, fingerprint, overwrite=args.overwrite)
        outcomes = run_queries(stages, judged, client, journal, instruction=args.instruction, progress=args.progress)
    label = args.label or model["name"] + (" + " + Path(model["adapter"]).name if model["adapter"] else "")
    results = summarise(judged.qrels, outcomes, args.k, label=label, model=model, depth=args.depth)
    write_outputs(args.out, results, outcomes, args.table_k)
    print(markdown(results, args.table_k), end="")
    print(f"results in {args.out}/ (results.md, results.json, plot.png, runs/)", file=sys.stderr)
    return 0


def load_judged(args: argparse.Namespace):
    """The judged set named by --beir or --queries/--qrels/--corpus (rewriting images with --image-dir)."""
    from dataclasses import replace

    from sidecar.apps.eval.first_stage import inline_images
    from sidecar.apps.eval.judgements import beir_paths, load_judged_set
    from sidecar.apps.eval.runner import EvalError

    queries, qrels, corpus = args.queries, args.qrels, args.corpus
    if args.beir:
        beir = beir_paths(args.beir, args.split)
        queries, qrels = queries or beir[0], qrels or beir[1]
        corpus = corpus or (beir[2] if args.run else None)
    if not queries or not qrels:
        raise EvalError("give --beir DIR, or --queries and --qrels")
    judged = load_judged_set(queries, qrels, corpus)
    if args.max_queries:
        judged.queries = dict(list(judged.queries.items())[: args.max_queries])
        judged.qrels = {qid: judged.qrels[qid] for qid in judged.queries}
    if args.image_dir:
        rewrite = inline_images(args.image_dir)
        judged.queries = {q: replace(i, images=tuple(map(rewrite, i.images))) for q, i in judged.queries.items()}
    return judged


def served_model(client: Any) -> dict[str, str]:
    """The reranker the sidecar serves (name and adapter), which the evaluation is tied to."""
    info = client.model_info()
    reranker = next((m for m in info.models if m.kind == "reranker"), None)
    if reranker is None:
        from sidecar.apps.eval.runner import EvalError

        raise EvalError(f"the sidecar at {client.target} serves no reranker")
    return {"name": reranker.name, "adapter": reranker.adapter}


def build_stages(args: argparse.Namespace, judged, client: Any) -> tuple[list[Any], dict[str, Any]]:
    """The first stages the flags name, and what identifies them in the resume fingerprint."""
    from sidecar.apps.eval.first_stage import EngineStage, RunFileStage, inline_images
    from sidecar.apps.eval.runfile import read_run
    from sidecar.apps.eval.runner import EvalError

    engines = {name: getattr(args, name) for name in ENGINES if getattr(args, name)}
    if bool(engines) == bool(args.run) or len(engines) > 1:
        raise EvalError(f"give either --run FILE (repeatable) or one engine (--{', --'.join(ENGINES)})")
    image_uri = inline_images(args.image_dir) if args.image_dir else None
    inputs = {"queries": sorted(judged.queries), "image_dir": str(args.image_dir or "")}
    if args.run:
        if not judged.corpus:
            raise EvalError("--run needs the documents' text: give --corpus (or --beir with corpus.jsonl)")
        names = [path.stem for path in args.run]
        if len(set(names)) < len(names):
            raise EvalError(f"run files need distinct names; got {', '.join(names)}")
        stages = [RunFileStage(p.stem, read_run(p), judged.corpus, args.depth, image_uri) for p in args.run]
        return stages, {**inputs, "runs": [_file_identity(p) for p in args.run]}
    if not args.collection:
        raise EvalError("an engine first stage needs --collection")
    ((engine, location),) = engines.items()
    connector = engine_connector(args, engine, location, image_uri)
    modes = args.mode or [m for m in ("bm25", "dense", "hybrid") if m in connector.supported_modes]
    stages = [EngineStage(connector, mode, args.depth, client) for mode in dict.fromkeys(modes)]
    mapping = {"text": args.text_field or ["text"], "images": args.image_field, "id": args.id_field or ""}
    return stages, {**inputs, "engine": [engine, location, args.collection], "modes": modes, "mapping": mapping}


def engine_connector(args: argparse.Namespace, engine: str, location: str, image_uri) -> Any:
    """A connector on the named collection, reading the mapped fields."""
    from connectors import FieldMapping
    from sidecar.apps.loader import open_client
    from sidecar.apps.web.cli import make_connector

    mapping = FieldMapping(
        id_field=args.id_field,
        text_fields=tuple(args.text_field or ["text"]),
        image_fields=tuple(args.image_field),
        image_uri=image_uri,
    )
    client = open_client(engine, location, args.weaviate_grpc_port)
    return make_connector(engine, client, args.collection, mapping, None)


def _file_identity(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
