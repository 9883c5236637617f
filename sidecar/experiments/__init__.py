"""Online experiments: A/B tests and interleaving, logged as User Behavior Insights (UBI 1.x) records.

Engine-neutral and torch-free, so the connectors, the HTTP face and the apps share it:

    records      UbiQuery / UbiEvent: the UBI 1.x query and event records, validated
    store        EventStore (the interface every log store implements) and SqliteStore, the embedded default
    log          ExperimentLog: batched writes off the request path; a Receipt says when a record is durable
    assignment   A/B: a stable hash of a user or session id and a salt picks an arm (sticky, weighted)
    interleaving team-draft, balanced and multileaved merges of several arms' rankings, and click credit
    attribution  the log read back per experiment: per-query outcomes (interleaving) and per-arm metrics (A/B)
    stats        sign / binomial test, bootstrap intervals, the queries still needed for an effect (power)

`connectors.experiment` runs experiments inside `search_and_rerank()`; engine-backed stores live in
`connectors.ubi`; `rerank-sidecar experiment report|simulate` reads the log.
"""
