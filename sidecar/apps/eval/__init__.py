"""`rerank-sidecar eval`: first stage vs reranked on judged queries (see `sidecar.apps.eval.cli`).

judgements   queries, qrels and corpus files (TREC, BEIR, TSV)
runfile      TREC run files, read and written
metrics      nDCG, MRR, recall and precision at k (ir-measures) and the paired t-test (SciPy)
first_stage  engine collections and run files as first stages
runner       the loop over first stages and queries, with a journal to resume from
report       results JSON, Markdown table, run files, plot; comparing earlier evaluations
"""
