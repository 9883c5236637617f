#!/usr/bin/env bash
# The whole GPU part of the reranking benchmark in one command (about 3-5 minutes on one H100):
# the real Qwen3-VL-Reranker-2B shape with random weights in bf16, every workload of the GPU plan,
# results (JSON, Markdown, PNG) written to OUTDIR. Needs only torch and transformers on the GPU
# machine; the model directory (config, processor, tokenizer; no weights) is prepared beforehand
# with `rerank-sidecar make-tiny-model bench/.model-2b --shape 2b --no-weights` and carried along.
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUTDIR}"
cd "$(dirname "$0")/.."
model_dir="${BENCH_MODEL_DIR:-bench/.model-2b}"
if [ ! -f "$model_dir/config.json" ]; then
    python3 -m sidecar.cli make-tiny-model "$model_dir" --shape 2b --no-weights
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)" \
    | tee -a "$out/gpu.txt"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 bench/rerank_bench.py --plan gpu --shape 2b --model-dir "$model_dir" --max-batch-tokens 32768 --out "$out" \
    2>&1 | tee "$out/log.txt"
