"""Secrets this process was configured with never reach job errors or log lines."""

from __future__ import annotations

import logging

import pytest

from app.core.db import reset_caches
from app.core.secrets import MASK, RedactSecrets, redact


@pytest.fixture
def configured(monkeypatch):
    monkeypatch.setenv("TAILOR_OPENAI_API_KEY", "sk-openai-9a8b7c")
    monkeypatch.setenv("TAILOR_API_KEYS", "boot-admin-key-1:admin,reader-key-22:classify")
    monkeypatch.setenv("TAILOR_DATABASE_URL", "postgresql+psycopg://u:db-pass-333@h/db")
    reset_caches()
    yield
    reset_caches()


@pytest.mark.parametrize("text, secret", [
    ("server said: Incorrect API key provided: sk-openai-9a8b7c", "sk-openai-9a8b7c"),
    ("Authorization: Bearer reader-key-22", "reader-key-22"),
    ("could not connect to postgresql://u:db-pass-333@h/db", "db-pass-333"),
    ("a stored key tlr_AbCdEf0123456789xyz leaked", "tlr_AbCdEf0123456789xyz"),
    ("header was bearer some-unknown-token", "some-unknown-token"),
])
def test_redact_masks_configured_and_recognisable_secrets(configured, text, secret):
    out = redact(text)
    assert secret not in out and MASK in out


def test_redact_leaves_ordinary_text_alone(configured):
    assert redact("job failed: teacher_error (401)") == "job failed: teacher_error (401)"


def test_log_lines_and_tracebacks_are_masked(configured):
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tailor.test-secrets")
    logger.addHandler(handler)
    try:
        logger.warning("calling with %s", "sk-openai-9a8b7c")
        try:
            raise RuntimeError("401 for key boot-admin-key-1")
        except RuntimeError:
            logger.exception("crashed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(lines)
    assert "sk-openai-9a8b7c" not in text and "boot-admin-key-1" not in text
    assert "RuntimeError" in text and "calling with [redacted]" in text


@pytest.mark.parametrize("index_url, hf_token, text, secret", [
    ("https://ci:idx-pass-4444@pkgs.example/simple", "", "pip: 401 from "
     "https://ci:idx-pass-4444@pkgs.example/simple/pkg/", "idx-pass-4444"),
    ("https://idx-token-55555@pkgs.example/simple", "", "Looking in indexes: "
     "https://idx-token-55555@pkgs.example/simple", "idx-token-55555"),
    ("", "hf_tok_666666", "401 Client Error for url (token hf_tok_666666)", "hf_tok_666666"),
])
def test_index_and_hub_credentials_are_masked(monkeypatch, index_url, hf_token, text, secret):
    monkeypatch.setenv("TAILOR_PYPI_INDEX_URL", index_url)
    monkeypatch.setenv("HF_TOKEN", hf_token)
    reset_caches()
    try:
        out = redact(text)
    finally:
        reset_caches()
    assert secret not in out and MASK in out
