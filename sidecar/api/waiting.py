"""Awaiting a request's work while watching for a reason to give up on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from sidecar.errors import SidecarError

T = TypeVar("T")


async def unless(work: Awaitable[T], interrupt: Awaitable[object], error: SidecarError) -> T:
    """`work`'s result, unless `interrupt` completes first: then `work` is cancelled and `error` raised.

    Used for a client that disconnects (HTTP) and for the end of the drain time (both faces). If
    the awaiting coroutine is itself cancelled, `work` is cancelled with it.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(interrupt)
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise error
