"""Keep secrets out of what Tailor writes: job errors, events and log lines.

The secrets are the ones this process was configured with: TAILOR_OPENAI_API_KEY (sent by the
worker to an OpenAI-compatible teacher), HF_TOKEN, the keys of TAILOR_API_KEYS,
TAILOR_WEBHOOK_SECRET, passwords inside TAILOR_DATABASE_URL / TAILOR_BROKER_URL, and the
credentials of TAILOR_PYPI_INDEX_URL.
Stored API keys are only known by their sha256, so they are caught by their `tlr_` prefix;
any `Bearer` credential is caught by its scheme.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit

from app.core.config import get_settings

MASK = "[redacted]"
# Stored keys are minted as tlr_<token_urlsafe>; a Bearer header value is a credential whatever
# it looks like. Both are matched even when the exact value is unknown to this process.
PATTERNS = re.compile(r"\btlr_[A-Za-z0-9_\-]{8,}|(?i:\bbearer\s+)[^\s'\",]+")
# Keys the worker holds in its environment: the OpenAI-compatible teacher's, and the hub's
# (huggingface_hub reads these for hf:// models; its errors may quote what it sent).
TOKEN_VARIABLES = ("TAILOR_OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MIN_SECRET_CHARS = 4  # masking shorter strings would mangle ordinary words, not hide secrets


def configured_secrets() -> list[str]:
    """The secret strings this process knows, longest first (so no partial mask remains)."""
    settings = get_settings()
    found = [os.environ.get(name, "") for name in TOKEN_VARIABLES]
    found += [item.strip().partition(":")[0] for item in settings.api_keys.split(",")]
    found.append(settings.webhook_secret)
    # https://TOKEN@index/simple: a private index's token is often its URL's user name.
    for url, user_is_secret in ((settings.database_url, False), (settings.broker_url, False),
                                (settings.pypi_index_url, True)):
        try:
            parts = urlsplit(url)
            found.append(parts.password or (parts.username if user_is_secret else "") or "")
        except ValueError:
            continue
    return sorted({s for s in found if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every configured secret, stored-key-shaped token and Bearer value masked."""
    for secret in configured_secrets():
        text = text.replace(secret, MASK)
    return PATTERNS.sub(MASK, text)


class RedactSecrets(logging.Filter):
    """A handler filter that masks secrets in the rendered message and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add RedactSecrets to every handler of `logger` (default: the root logger), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
