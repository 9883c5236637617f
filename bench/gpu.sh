#!/usr/bin/env bash
# The GPU part of the reranking benchmark: the real Qwen3-VL-Reranker-2B shape with random weights in
# bf16, compiled layers, results (JSON, Markdown, PNG, profile) written to OUTDIR. Needs only torch and
# transformers on the GPU machine; the model directory (config, processor, tokenizer; no weights) is
# prepared beforehand with `rerank-sidecar make-tiny-model bench/.model-2b --shape 2b --no-weights`
# and carried along.
#
#   bench/gpu.sh OUTDIR            # everything (about 10 minutes on one H100-class GPU)
#   bench/gpu.sh OUTDIR bench      # the GPU plan: text K=100/10/1000, 8 concurrent K=10 and K=1000, image
#                                  # documents K=100 and K=200 with a cold and a warm feature cache; MFU each
#   bench/gpu.sh OUTDIR images     # the image-document rows alone (K=100, K=200; cold and warm) + their profile
#   bench/gpu.sh OUTDIR profile    # where a K=100 image-document request spends its GPU time
# Each part stays under 10 minutes, so each can be one command on a machine lent by the minute.
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUTDIR [all|bench|images|profile]}"
part="${2:-all}"
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
common=(--shape 2b --model-dir "$model_dir")
if [ "$part" = all ] || [ "$part" = bench ]; then
    python3 bench/rerank_bench.py --plan gpu "${common[@]}" --max-batch-tokens 32768 --out "$out" \
        2>&1 | tee "$out/log.txt"
fi
if [ "$part" = images ]; then
    python3 bench/rerank_bench.py --plan gpu-images "${common[@]}" --max-batch-tokens 32768 --skip-memory \
        --out "$out/images" 2>&1 | tee "$out/images-log.txt"
fi
if [ "$part" = all ] || [ "$part" = images ] || [ "$part" = profile ]; then
    python3 bench/profile_images.py "${common[@]}" --max-batch-tokens 32768 --out "$out" 2>&1 | tee "$out/profile-log.txt"
fi
