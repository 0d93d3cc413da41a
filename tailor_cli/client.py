"""A thin HTTP client for the Tailor API: where it is, the key, errors, Server-Sent Events."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_PATH = Path("~/.config/tailor/config.toml")
TIMEOUT_S = 60.0  # classify on a cold model loads it first; uploads can be large


class CliError(Exception):
    """Something the user must see: printed as `error: <message>`, exit status 1."""

    exit_code = 1

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


class UsageError(CliError):
    """The command line itself is wrong (a missing file, contradictory arguments): exit 2,
    like the parser's own usage errors."""

    exit_code = 2


def config_file(path: str | None) -> dict[str, Any]:
    """Read the TOML config (`url`, `api_key`); a missing default file is an empty config."""
    explicit = path is not None
    target = Path(path or CONFIG_PATH).expanduser()
    if not target.exists():
        if explicit:
            raise UsageError(f"config file {target} does not exist")
        return {}
    try:
        return tomllib.loads(target.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read config file {target}: {exc}") from exc


@dataclass
class Connection:
    """Where the API is and how to authenticate: flags and env first, then the config file."""

    url: str = DEFAULT_URL
    api_key: str | None = None

    @classmethod
    def resolve(cls, url: str | None, api_key: str | None, config: str | None) -> Connection:
        settings = config_file(config or os.environ.get("TAILOR_CONFIG"))
        return cls(url=(url or settings.get("url") or DEFAULT_URL).rstrip("/"),
                   api_key=api_key or settings.get("api_key") or None)


def error_message(response: httpx.Response) -> CliError:
    """The server's own error message (`{"error": {"code", "message"}}`) as a CliError."""
    try:
        err = response.json()["error"]
        return CliError(err["message"], code=err.get("code"), status=response.status_code)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:300] or response.reason_phrase
        return CliError(f"HTTP {response.status_code}: {text}", status=response.status_code)


@dataclass
class Api:
    """Calls the API; every failure becomes a CliError carrying the server's message."""

    conn: Connection
    _http: httpx.Client | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.conn.api_key}"} if self.conn.api_key \
                else {}
            self._http = httpx.Client(base_url=self.conn.url, headers=headers, timeout=TIMEOUT_S)
        return self._http

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach Tailor at {self.conn.url} ({exc}); start it with "
                           "`tailor serve` or set --url / TAILOR_URL") from exc
        if response.status_code >= 400:
            raise error_message(response)
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def events(self, path: str, last_id: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (event name, data) from a Server-Sent Events stream until the server closes."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        timeout = httpx.Timeout(TIMEOUT_S, read=None)  # the server sends keep-alives
        try:
            with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_message(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise StreamBroken(str(exc)) from exc


class StreamBroken(CliError):
    """The event stream ended without its final `end` event (network, server restart)."""


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse SSE lines into (event, data); `id:` travels in data["_sse_id"] for resuming."""
    event, data, sse_id = "message", [], None
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
