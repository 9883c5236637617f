"""`POST /v1/events`: front ends record what users did with a served list (impressions, clicks, purchases).

    POST /v1/events  {"events": [{"action_name": "click", "query_id": "...", "session_id": "...",
                                  "event_attributes": {"object": {"object_id": "d3"}, "position": {"ordinal": 2}}}]}
    -> 200 {"recorded": 1}

Bodies are UBI 1.x event documents (one, or a list under "events"). The route is on with `serve --events-db FILE`:
the SQLite experiment log that the application's `search_and_rerank(experiment=...)` writes its served lists
into (`ExperimentLog(SqliteStore(FILE))`; SQLite serves several processes), so each event is checked against
the list it names: a hit or position that list did not serve, or an unknown query id, is 422 naming
`events[i]`, and nothing of the body is written. A 200 is sent only once every event is durable (batched with
concurrent requests' events into one commit). A full queue is 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sidecar.api.http_body import MalformedBody, read_json
from sidecar.api.http_guard import error_response
from sidecar.api.status import RETRY_AFTER_SECONDS
from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.log import ExperimentLog, ExperimentLogFull
from sidecar.experiments.records import UbiEvent
from sidecar.experiments.store import SqliteStore

MAX_EVENTS = 1000  # per request
WRITE_TIMEOUT_S = 30.0


class EventsRoute:
    """The route's handler over the experiment log named by `--events-db` (opened at start-up)."""

    def __init__(self, runtime, mark) -> None:
        self.runtime, self.mark = runtime, mark
        path: Path | None = runtime.settings.events_db
        self.log = ExperimentLog(SqliteStore(path)) if path is not None else None

    async def handle(self, request: Request) -> Response:
        if self.log is None:
            return self._error(
                request, 404, "not_enabled", "POST /v1/events is off: start the server with --events-db FILE"
            )
        try:
            body = await self.runtime.run(read_json(request, self.runtime.settings.max_message_bytes))
            events = parse_events(body)
            await asyncio.to_thread(lambda: self.log.log_events(events).wait(WRITE_TIMEOUT_S))
        except MalformedBody as exc:
            return self._error(request, 400, "invalid_json", str(exc))
        except ExperimentLogFull as exc:
            return self._error(request, 429, "overloaded", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except ExperimentError as exc:
            return self._error(request, 422, "validation", str(exc))
        except TimeoutError as exc:
            return self._error(request, 503, "unavailable", f"the experiment log did not confirm the write: {exc}")
        return JSONResponse({"recorded": len(events)})

    def _error(self, request: Request, status: int, code: str, message: str, headers=None) -> Response:
        self.mark(request.scope, code)
        return error_response(status, code, message, headers)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def parse_events(body: object) -> list[UbiEvent]:
    """The body's events, every one validated (ExperimentError names `events[i]` and the field)."""
    if isinstance(body, dict) and "events" in body:
        documents = body["events"]
        if not isinstance(documents, list):
            raise ExperimentError("events must be a list of UBI event objects")
    elif isinstance(body, dict):
        documents = [body]
    else:
        raise ExperimentError('the body must be a UBI event object or {"events": [...]}')
    if not documents:
        raise ExperimentError("events is empty")
    if len(documents) > MAX_EVENTS:
        raise ExperimentError(f"{len(documents)} events in one request; at most {MAX_EVENTS}")
    return [UbiEvent.from_document(doc, index=i) for i, doc in enumerate(documents)]
