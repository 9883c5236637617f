"""The process's log setup: one line per record on stderr, as text or as JSON (`--log-format`).

In JSON every record is one object with `time` (ISO 8601, UTC), `level`, `logger` and `message`; a request's
record (logger `sidecar.requests`) also carries its fields (face, route, dialect, documents,
tokens, stage times, total_ms, status, trace_id with --otel). Exceptions come as `exc_info`.
Nothing logs request headers, so API keys never reach the log.
"""

from __future__ import annotations

import logging
import os
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Give the root logger one stderr handler in `log_format` (replacing the one an earlier call gave it;
    handlers installed by others, such as a test harness's capture, are left in place)."""
    if log_format not in FORMATS:
        raise SystemExit(f"--log-format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        # Keep stderr machine-readable: warnings become records, and no progress bars are drawn.
        logging.captureWarnings(True)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",  # ISO 8601, UTC
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's terminal-colour copy
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, "sidecar_stderr", False)]:
        root.removeHandler(previous)
    handler.sidecar_stderr = True
    root.addHandler(handler)
    root.setLevel(level.upper())
