"""Where the API is and which key to send: arguments, then TAILOR_* variables, then the
config file (TOML with `url` and `api_key`). The command line resolves it the same way."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor.errors import TailorError

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_PATH = Path("~/.config/tailor/config.toml")


def config_file(path: str | None) -> dict[str, Any]:
    """Read the TOML config; a missing default file is an empty config.

    Raises:
        TailorError: `config_not_found` when an explicitly named file is missing,
            `config_unreadable` when a file exists but is not readable TOML.
    """
    explicit = path is not None
    target = Path(path or CONFIG_PATH).expanduser()
    if not target.exists():
        if explicit:
            raise TailorError(None, "config_not_found", f"config file {target} does not exist")
        return {}
    try:
        return tomllib.loads(target.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TailorError(None, "config_unreadable",
                          f"cannot read config file {target}: {exc}") from exc


@dataclass
class Connection:
    """The API's base URL (no trailing slash) and the API key sent as a Bearer token."""

    url: str = DEFAULT_URL
    api_key: str | None = None

    @classmethod
    def resolve(cls, url: str | None = None, api_key: str | None = None,
                config: str | None = None) -> Connection:
        """Each setting from the first that gives it: the argument, TAILOR_URL /
        TAILOR_API_KEY, the config file (`config`, else TAILOR_CONFIG, else
        ~/.config/tailor/config.toml), the default (http://127.0.0.1:8000, no key).

        Raises:
            TailorError: see config_file.
        """
        settings = config_file(config or os.environ.get("TAILOR_CONFIG") or None)
        url = url or os.environ.get("TAILOR_URL") or settings.get("url") or DEFAULT_URL
        api_key = api_key or os.environ.get("TAILOR_API_KEY") or settings.get("api_key")
        return cls(url=str(url).rstrip("/"), api_key=api_key or None)
