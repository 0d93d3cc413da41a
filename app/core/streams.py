"""A request body as a blocking file for a worker thread, read only as far as it is parsed."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import anyio.from_thread


class RequestBodyFile(io.RawIOBase):
    """Raw binary stream over an ASGI body, for code running in `anyio.to_thread.run_sync`.

    Each read fetches the next chunk from the event loop (`anyio.from_thread.run`), so a
    parser that stops early (row limit, first bad row) leaves the rest of the body unread,
    and the body is never held in memory whole. Errors of the body stream (413 from the body
    limit, a client disconnect) surface in the reading thread as raised.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
