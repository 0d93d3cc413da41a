"""Request bodies as streams: a blocking file for a worker thread, read only as far as it is
parsed, and small slices for parsers that run on the event loop."""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio.from_thread
import anyio.lowlevel


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


async def sliced(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Re-cut a body stream into pieces of at most `size` bytes, yielding to the event loop
    after each. A server hands a slow reader everything it buffered as one chunk (megabytes),
    and a parser that runs on the event loop (multipart) would hold the loop for all of it."""
    async for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start:start + size]
            await anyio.lowlevel.checkpoint()
