"""Small asyncio helpers shared by the background loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable


async def first(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` is done; cancel and reap the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
