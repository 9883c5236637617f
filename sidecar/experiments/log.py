"""`ExperimentLog`: records go to the store in batches on a background thread, off the request path.

    log = ExperimentLog(SqliteStore("experiments.db"))
    receipt = log.log_query(query)          # returns at once
    receipt.wait()                          # returns once the record is durable (raises if the write failed)
    record_event(log, "click", query_id, object_id="d3", position=2).wait()

Contract (implemented here; the HTTP face and the apps rely on it):
- `log_query(q)` / `log_events(events)` validate first (unknown query id, a hit or position the query did not
  serve, a duplicate query id, malformed fields: `ExperimentError`, nothing queued), then queue and return a
  `Receipt`. Queries still queued count as known, so an event may follow its query at once.
- the writer thread takes everything queued (up to `batch_size` records) and writes it with one
  `store.write` call; every receipt of that batch completes together (group commit). A failed write fails
  those receipts with the store's error; nothing acknowledged is ever dropped.
- `max_pending` bounds the queue: past it `log_*` raises `ExperimentLogFull` instead of growing memory.
- `flush(timeout)` waits for everything queued so far; `close()` flushes and stops the thread.
"""
