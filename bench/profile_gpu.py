"""Where a K=100 rerank spends its GPU time, and how far bf16 prefix reuse drifts from fp32.

    python bench/profile_gpu.py OUTDIR [MODEL_DIR]

Writes profile.txt (top kernels/ops by CUDA time for one prepared K=100 text request, prefix
reuse on and off, with transformers' eager decoder layers and with the compiled ones) and
parity.json (logit differences: prefix reuse vs batched, each in bf16 against the same
computation in fp32, on the same random weights).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads  # noqa: E402
from sidecar.media import MediaPolicy, MediaResolver  # noqa: E402
from sidecar.models import fused  # noqa: E402
from sidecar.models.loading import load_pretrained  # noqa: E402
from sidecar.models.reranker import RerankerModel  # noqa: E402
from sidecar.types import RerankInput  # noqa: E402


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def logits(reranker, request, reuse):
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse)
    reranker.forward_prefix(prepared.prefix)
    return reranker.forward_rows(prepared.rows)


def main() -> None:
    out = Path(sys.argv[1])
    model_dir = sys.argv[2] if len(sys.argv) > 2 else "bench/.model-2b"
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(os.environ.get("BENCH_DEVICE", "cuda"))
    torch.manual_seed(0)
    model, processor = load_pretrained(model_dir, device, torch.float32)
    fp32 = RerankerModel("fp32", model, processor)
    text = RerankInput(workloads.text_query(), workloads.text_documents(fp32.tokenizer, 30))
    image = RerankInput(workloads.image_query(), workloads.text_documents(fp32.tokenizer, 30))
    truth = {
        name: (logits(fp32, req, False), logits(fp32, req, True)) for name, req in (("text", text), ("image", image))
    }
    model = model.to(torch.bfloat16)
    bf16 = RerankerModel("bf16", model, processor)
    report = {}
    for name, req in (("text", text), ("image", image)):
        full32, reuse32 = truth[name]
        full16, reuse16 = logits(bf16, req, False), logits(bf16, req, True)
        report[name] = {
            "fp32 reuse vs full max |dlogit|": float((full32 - reuse32).abs().max()),
            "bf16 full vs fp32 max |dlogit|": float((full16 - full32).abs().max()),
            "bf16 reuse vs fp32 max |dlogit|": float((reuse16 - full32).abs().max()),
            "bf16 reuse vs bf16 full max |dlogit|": float((reuse16 - full16).abs().max()),
            "fp32 logit std across documents": float(full32.std()),
        }
    (out / "parity.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2), flush=True)

    request = RerankInput(workloads.text_query(), workloads.text_documents(bf16.tokenizer, 100))
    reason = bf16.compile_layers()
    lines = [f"compiled decoder layers: {reason or 'yes'}"]
    for compiled, reuse in ((False, False), (False, True), (True, False), (True, True)):
        if compiled and reason is not None:
            continue
        fused.set_enabled(compiled)
        for _ in range(3):
            logits(bf16, request, reuse)
        sync(device)
        start = time.perf_counter()
        prepared = bf16.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse)
        prep_ms = (time.perf_counter() - start) * 1000
        sync(device)
        start = time.perf_counter()
        bf16.forward_prefix(prepared.prefix)
        sync(device)
        prefix_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        bf16.forward_rows(prepared.rows)
        sync(device)
        rows_ms = (time.perf_counter() - start) * 1000
        lines.append(
            f"compiled={compiled} reuse={reuse}: prepare {prep_ms:.1f} ms, prefix forward {prefix_ms:.1f} ms, "
            f"rows forward {rows_ms:.1f} ms ({len(prepared.rows)} rows, prefix {len(prepared.prefix)})"
        )
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        ) as prof:
            prepared = bf16.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse)
            bf16.forward_prefix(prepared.prefix)
            bf16.forward_rows(prepared.rows)
            sync(device)
        lines.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
        lines.append(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60))
    (out / "profile.txt").write_text("\n".join(lines))
    print("\n".join(line for line in lines if "\n" not in line), flush=True)


if __name__ == "__main__":
    main()
