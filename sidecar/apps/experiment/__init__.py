"""`rerank-sidecar experiment report|simulate`: read an experiment's UBI log and say which ranking won."""
