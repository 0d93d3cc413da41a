"""HTTP under the client: one httpx.Client, the Bearer key, errors as TailorError, and
Server-Sent Events parsed into (event name, data) pairs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tailor.connection import Connection
from tailor.errors import TailorError

# Classify on a cold model loads the model first, and uploads can be large.
DEFAULT_TIMEOUT_S = 60.0
# Of a body that is not the JSON error document, this much is quoted in the message.
QUOTED_BODY_CHARS = 300
DOWNLOAD_CHUNK = 1 << 20


def error_from(response: httpx.Response) -> TailorError:
    """The server's `{"error": {"code", "message", "details"}}` as a TailorError; any other
    error body (a proxy's HTML page) is quoted, with code `http_<status>`."""
    try:
        err = response.json()["error"]
        return TailorError(response.status_code, str(err["code"]), str(err["message"]),
                           err.get("details"))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:QUOTED_BODY_CHARS] or response.reason_phrase
        return TailorError(response.status_code, f"http_{response.status_code}",
                           f"HTTP {response.status_code}: {text}")


class StreamLost(TailorError):
    """An event stream ended without its final `end` event (network, server restart)."""


class Transport:
    """Sends requests to one Tailor; every failure is raised as a TailorError.

    Args:
        connection: base URL and API key.
        timeout: seconds to connect, and to wait for each read, per request.
    """

    def __init__(self, connection: Connection, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.connection = connection
        headers = {"Authorization": f"Bearer {connection.api_key}"} if connection.api_key \
            else {}
        self.http = httpx.Client(base_url=connection.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def unreachable(self, exc: httpx.TransportError) -> TailorError:
        if isinstance(exc, httpx.TimeoutException):
            return TailorError(None, "timeout", f"Tailor at {self.connection.url} did not "
                               f"answer in time ({type(exc).__name__})")
        return TailorError(None, "connection_error",
                           f"cannot reach Tailor at {self.connection.url} ({exc}); start it "
                           "with `tailor serve` or set the URL (--url, TAILOR_URL)")

    def request(self, method: str, path: str, *, read_timeout: float | None = None,
                **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body (None for an empty one, e.g. 204).

        Args:
            read_timeout: seconds to wait for the answer instead of the client's timeout,
                for routes that answer only when their work is done (an evaluation).

        Raises:
            TailorError: the server's error for a status >= 400; `connection_error` or
                `timeout` when no answer came; `invalid_response` for a body that is not JSON.
        """
        if read_timeout is not None:
            kwargs["timeout"] = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        if response.status_code >= 400:
            raise error_from(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise TailorError(response.status_code, "invalid_response",
                              f"{method} {path} answered something that is not JSON") from exc

    def text(self, path: str, **kwargs: Any) -> str:
        """GET a text body (a markdown card)."""
        try:
            response = self.http.get(path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response.text

    def download(self, path: str, target: Path, **kwargs: Any) -> Path:
        """Stream a GET body into `target`: written to a temporary file beside it and renamed
        into place only once complete, so `target` is never left half-written."""
        target = Path(target)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                       dir=target.parent if str(target.parent) else ".")
        except OSError as exc:  # a folder that is missing or not writable
            raise TailorError(None, "file_unwritable",
                              f"cannot write {target}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as sink, self.http.stream("GET", path, **kwargs) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from(resp)
                for chunk in resp.iter_bytes(DOWNLOAD_CHUNK):
                    sink.write(chunk)
            os.replace(tmp, target)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        except OSError as exc:  # disk full, target is a folder, ...
            raise TailorError(None, "file_unwritable",
                              f"cannot write {target}: {exc.strerror}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def events(self, path: str, last_id: str | None = None, read_timeout: float | None = None
               ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (event name, data) from a Server-Sent Events stream until the server closes
        it; `last_id` resumes after that event (Last-Event-ID).

        Raises:
            TailorError: the server's error before the stream starts (e.g. 404).
            StreamLost: the connection broke, or no byte came for `read_timeout` seconds
                (the server sends a keep-alive every 15 s).
        """
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        timeout = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
        try:
            with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise StreamLost(None, "stream_lost", f"the event stream broke ({exc})") from exc


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse SSE lines into (event, data); `id:` travels in data["_sse_id"] for resuming."""
    event, sse_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                payload = json.loads("\n".join(data))
                if sse_id is not None and isinstance(payload, dict):
                    payload["_sse_id"] = sse_id
                yield event, payload
            event, data, sse_id = "message", [], None
        elif line.startswith(":"):
            continue  # a keep-alive comment
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                sse_id = value
