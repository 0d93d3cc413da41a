"""The command line's side of the client (the HTTP client itself is `tailor.Client`): the
errors it prints with their exit status, and the connection as its flags resolve it."""

from __future__ import annotations

from typing import Any

from tailor import Client, TailorError
from tailor import Connection as _Connection
from tailor.connection import CONFIG_PATH, DEFAULT_URL, config_file
from tailor.transport import parse_sse

__all__ = ["CONFIG_PATH", "DEFAULT_URL", "CliError", "Client", "Connection", "UsageError",
           "client_for", "config_file", "parse_sse"]


class CliError(TailorError):
    """Something the user must see: printed as `error: <message>`, exit status 1. Raised by
    the command line itself (input files, arguments); the server's errors arrive as
    TailorError and are printed the same way."""

    exit_code = 1

    def __init__(self, message: str, code: str | None = None, status: int | None = None,
                 details: Any = None) -> None:
        super().__init__(status, code or "", message, details)


class UsageError(CliError):
    """The command line itself is wrong (a missing file, contradictory arguments): exit 2,
    like the parser's own usage errors."""

    exit_code = 2


class Connection(_Connection):
    """tailor.Connection whose config-file problems are command-line errors."""

    @classmethod
    def resolve(cls, url: str | None = None, api_key: str | None = None,
                config: str | None = None) -> Connection:
        try:
            return super().resolve(url, api_key, config)  # type: ignore[return-value]
        except TailorError as exc:
            error = UsageError if exc.code == "config_not_found" else CliError
            raise error(exc.message) from exc


def client_for(url: str | None, api_key: str | None, config: str | None) -> Client:
    """A Client for the command's flags (flags, then TAILOR_* variables, then the file)."""
    connection = Connection.resolve(url, api_key, config)
    return Client(connection.url, connection.api_key, config=config)
