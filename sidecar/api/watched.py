"""Files re-read when they change on disk: the API key file and the TLS files (a Kubernetes Secret update
swaps the mounted files; cert-manager renews certificates). Checked every `WATCH_SECONDS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

WATCH_SECONDS = 10.0


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells that the file (after symlinks) changed: modification time, size, inode; None if absent."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


async def watch_files(paths: Sequence[Path], on_change: Callable[[], None], interval: float = WATCH_SECONDS) -> None:
    """Call `on_change` each time any of `paths` changes (or appears, or goes away); runs until cancelled."""
    seen = [file_stamp(path) for path in paths]
    while True:
        await asyncio.sleep(interval)
        if (stamps := [file_stamp(path) for path in paths]) != seen:
            seen = stamps
            on_change()
