"""`rerank-sidecar finetune`: LoRA fine-tuning of the reranker on labelled pairs (see `sidecar.apps.finetune.cli`).

data         training JSONL -> query groups; the held-out split, also written as an eval judged set
objective    the score as serving computes it, with gradients; pointwise and listwise losses
checkpoints  adapter + optimizer + scheduler + random state, saved and restored
trainer      the loop: micro-batches, accumulation, schedule, held-out metrics per epoch
"""
