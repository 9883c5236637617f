"""`rerank-sidecar experiment`: read an online experiment's log (`report`), or simulate users to plan one (`simulate`).

    rerank-sidecar experiment report --store sqlite:experiments.db --experiment rerank-v1 --out report/
    rerank-sidecar experiment report --opensearch http://127.0.0.1:9200 --experiment rerank-v1 --out report/
    rerank-sidecar experiment simulate --sidecar 127.0.0.1:50051 --beir ./judged --run bm25.run \\
        --store sqlite:sim.db --sessions 2000 --click-model pbm --out sim/

The log is UBI-shaped (`sidecar.experiments.records`): the embedded SQLite file, or the engine's own indexes
(OpenSearch's ubi_queries / ubi_events; collections of the same shape in the other engines, `connectors.ubi`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from sidecar.apps.eval.cli import load_judged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `experiment` subcommand and its two verbs."""
    parser.description = "Report an online experiment from its UBI log, or simulate users clicking to plan one."
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{report,simulate}")
    report = verbs.add_parser("report", help="which arm won, how sure, and how many more queries are needed")
    _store_arguments(report)
    report.add_argument("--experiment", required=True, help="the experiment's name (as given to Experiment)")
    _report_arguments(report)
    simulate = verbs.add_parser("simulate", help="simulated users with a click model on a judged set")
    _store_arguments(simulate)
    simulate.add_argument("--experiment", default="simulated", help="experiment name in the log (default: simulated)")
    data = simulate.add_argument_group("judged queries and first stage (as `eval` reads them)")
    data.add_argument("--beir", type=Path, metavar="DIR", help="BEIR dataset: queries.jsonl, corpus.jsonl, qrels/")
    data.add_argument("--split", default="test", help="--beir: the qrels split (default: test)")
    data.add_argument("--queries", type=Path, help="queries: JSONL or TSV")
    data.add_argument("--qrels", type=Path, help="judgements: TREC qrels or a BEIR qrels TSV")
    data.add_argument("--corpus", type=Path, help="documents: JSONL or TSV")
    data.add_argument("--max-queries", type=int, help="use only the first N judged queries")
    data.add_argument("--run", type=Path, required=True, help="the first stage's TREC run file (the first_stage arm)")
    data.add_argument("--depth", type=int, default=100, help="candidates per query, all reranked (default: 100)")
    data.add_argument("--image-dir", type=Path, help="send relative image references under DIR inline")
    arms = simulate.add_argument_group("experiment")
    arms.add_argument("--sidecar", required=True, help="the reranking sidecar's gRPC target (the reranked arm)")
    arms.add_argument("--instruction", help="reranker instruction (default: the model's)")
    arms.add_argument("--design", choices=["interleave", "ab"], default="interleave", help="default: interleave")
    arms.add_argument("--method", choices=["team_draft", "balanced"], default="team_draft", help="default: team_draft")
    arms.add_argument("--control", action="store_true",
                      help="an A/A test: two identical reranked arms (a sound setup finds no difference)")  # fmt: skip
    arms.add_argument("--top-n", type=int, default=10, help="hits shown per query (default: 10)")
    users = simulate.add_argument_group("simulated users")
    users.add_argument("--sessions", type=int, default=1000, help="queries served (default: 1000)")
    users.add_argument("--click-model", choices=["pbm", "cascade"], default="pbm", help="default: pbm")
    users.add_argument("--eta", type=float, default=1.0, help="pbm: examination 1/rank^eta (default: 1.0)")
    users.add_argument("--noise", type=float, default=0.05, help="click probability of a non-relevant hit (0.05)")
    users.add_argument("--stop", type=float, default=0.7, help="cascade: probability to stop after a click (0.7)")
    users.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _report_arguments(simulate)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("the log")
    where.add_argument("--store", help="the embedded log: sqlite:PATH (or a file path)")
    where.add_argument("--opensearch", metavar="URL", help="OpenSearch with the UBI indexes ubi_queries/ubi_events")
    for engine in ("elasticsearch", "qdrant", "milvus", "weaviate", "solr"):
        where.add_argument(f"--{engine}", metavar="URL", help=f"{engine}'s ubi_queries/ubi_events collections"
                           + (" (also a local path)" if engine in ("qdrant", "milvus") else ""))  # fmt: skip


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("report")
    out.add_argument("--out", type=Path, help="write results.md, results.json and plot.png here")
    out.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    out.add_argument("--effect", type=float, default=0.05,
                     help="win-rate advantage to plan for, above one half (default: 0.05)")  # fmt: skip
    out.add_argument("--power", type=float, default=0.8, help="power for the queries-needed estimate (default: 0.8)")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def open_store(args: argparse.Namespace) -> Any:
    """The one store the flags name."""
    from sidecar.apps.loader import ENGINES, open_client

    chosen = [name for name in ("store", *ENGINES) if getattr(args, name)]
    if len(chosen) != 1:
        raise ValueError(f"give exactly one of --store sqlite:PATH, --{' URL, --'.join(ENGINES)} URL")
    if args.store:
        from sidecar.experiments.store import open_store as open_embedded

        return open_embedded(args.store)
    from connectors.ubi import store_for

    return store_for(chosen[0], open_client(chosen[0], getattr(args, chosen[0])))


def _missing_extras() -> str | None:
    missing = [m for m in ("scipy", "matplotlib", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        return f"`experiment` needs {', '.join(missing)}: pip install 'rerank-sidecar[eval]'"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar experiment`; returns the exit status."""
    from connectors.errors import ConnectorError
    from sidecar.apps.eval.first_stage import FirstStageError
    from sidecar.apps.eval.judgements import JudgementsError
    from sidecar.apps.eval.runfile import RunFileError
    from sidecar.apps.eval.runner import EvalError
    from sidecar.experiments.errors import ExperimentError

    problem = _missing_extras()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        store = open_store(args)
        try:
            if args.verb == "simulate":
                _simulate(args, store)
            return _report(args, store)
        finally:
            store.close()
    except (ExperimentError, EvalError, JudgementsError, RunFileError, FirstStageError, ConnectorError,
            ValueError) as exc:  # fmt: skip
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def _report(args: argparse.Namespace, store: Any) -> int:
    from sidecar.apps.experiment.report import build_report, markdown, write_outputs

    report = build_report(store, args.experiment, alpha=args.alpha, effect=args.effect, power=args.power,
                          progress=args.progress)  # fmt: skip
    print(markdown(report), end="")
    if args.out:
        write_outputs(args.out, report)
        print(f"report in {args.out}/ (results.md, results.json, plot.png)", file=sys.stderr)
    return 0


def _simulate(args: argparse.Namespace, store: Any) -> None:
    from sidecar.apps.eval.first_stage import RunFileStage, inline_images
    from sidecar.apps.eval.runfile import read_run
    from sidecar.apps.experiment.simulate import ClickModel, simulate
    from sidecar.client import RerankerClient
    from sidecar.experiments.log import ExperimentLog

    if args.sessions < 1 or args.top_n < 1:
        raise ValueError("--sessions and --top-n must be at least 1")
    judged = load_judged(args)
    if not judged.corpus:
        raise ValueError("simulate needs the corpus (--beir DIR or --corpus FILE) for the run's documents")
    stage = RunFileStage(args.run.stem, read_run(args.run), judged.corpus, args.depth,
                         inline_images(args.image_dir) if args.image_dir else None)  # fmt: skip
    grades = [g for qrels in judged.qrels.values() for g in qrels.values()]
    model = ClickModel(args.click_model, eta=args.eta, noise=args.noise, stop=args.stop, max_grade=max(1, *grades))
    log = ExperimentLog(store)
    with RerankerClient(args.sidecar, timeout=120, retries=3) as client:
        counts = simulate(judged, stage, client, log, experiment=args.experiment, design=args.design,
                          method=args.method, control=args.control, sessions=args.sessions, top_n=args.top_n,
                          click_model=model, seed=args.seed, progress=args.progress,
                          instruction=args.instruction)  # fmt: skip
    log.flush()
    print(f"simulated {counts['sessions']} sessions, {counts['clicks']} clicks into {store.name}", file=sys.stderr)
