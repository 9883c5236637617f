"""The commands built on the service and its client: they use the sidecar as any application would.

Each app module offers `add_arguments(parser)` and `run(args) -> exit status`; `sidecar.cli` registers
them from `COMMANDS` and imports one only when its command runs (loading their flags imports no torch;
only finetune loads it, when it runs). The service's own modules (api, scheduler, models, media, prompts, client) never import an app.

    demo              index the bundled catalogue into Milvus Lite, show first-stage vs reranked results
    opensearch-setup  the ML-commons connector, model and rerank search pipeline for OpenSearch
    load-catalogue    index the bundled catalogue into running engines (the compose loader)
    web               the search page against running engines and a sidecar
    eval              first stage vs reranked on judged queries: metrics, significance, latency
    finetune          LoRA fine-tuning of the reranker on labelled pairs (loads torch when it runs)
    experiment        report an online experiment from its UBI log; simulate users clicking to plan one
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One `rerank-sidecar` subcommand implemented by an app module."""

    name: str
    module: str  # offers add_arguments(parser) and run(args) -> int
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("demo", "sidecar.apps.demo", "index a bundled catalogue into Milvus Lite and show first-stage vs reranked results"),
    Command("opensearch-setup", "sidecar.apps.opensearch_setup", "create/update the ML-commons connector, model and rerank search pipeline"),
    Command("load-catalogue", "sidecar.apps.loader", "index the bundled catalogue into running engines (compose loader)"),
    Command("web", "sidecar.apps.web.cli", "serve the search page against running engines and a sidecar"),
    Command("eval", "sidecar.apps.eval.cli", "measure first stage vs reranked on judged queries (nDCG, MRR, R, P@k)"),
    Command("finetune", "sidecar.apps.finetune.cli", "LoRA fine-tuning of the reranker on labelled query-document pairs"),
    Command("experiment", "sidecar.apps.experiment.cli", "report an online A/B or interleaving experiment, or simulate users"),
)  # fmt: skip
