"""The one check every text goes through (dataset rows, eval sets, /classify): a text is usable
when it is valid Unicode, has a visible character, holds no NUL and fits the length limit.

Policy (README, "Inputs"): nothing is rewritten. A text that fails gets a 422 `invalid_text`
naming the item; a text that passes is stored and classified exactly as sent, control
characters, byte-order marks and all (they are content: a vertical tab or U+2028 is not a
line break, and a BOM inside a text is kept). Only NUL is refused, because PostgreSQL text
cannot hold it and no feed means it.
"""

from __future__ import annotations

import re

from app.core.config import get_settings
from app.core.errors import InvalidText
from app.core.visible import has_visible_text

NUL = "\x00"
# Lone halves of a UTF-16 surrogate pair: what `"\ud83d"` in JSON decodes to when a tweet was
# cut mid-emoji. Python strings can hold them; UTF-8 (the database, the tokenizer) cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")

__all__ = ["NUL", "check_name", "check_utf8_head", "decode_utf8", "has_visible_text",
           "lone_surrogate", "refuse_nul", "validate_text"]


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text`, or None when it is valid Unicode."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def refuse_nul(text: str, where: str) -> None:
    """Raise InvalidText (reason `nul`) naming `where` when `text` holds a NUL: the one
    message for NUL wherever it is sent (a text, a name, any string of a JSON body)."""
    if NUL in text:
        raise InvalidText(where, f"NUL character at position {text.index(NUL)} is not allowed",
                          reason="nul")


def check_name(value: str) -> str:
    """`value` if it can name something a person picks from a list (a dataset, a column, an
    API key); ValueError saying why not. Unlike texts, names are one line: no control
    characters at all, and they must show something."""
    if lone_surrogate(value) is not None:
        raise ValueError("not valid Unicode (a lone surrogate)")
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise ValueError("control characters (NUL, newlines, tabs) are not allowed")
    if not has_visible_text(value):
        raise ValueError("must have a visible character")
    return value


def validate_text(text: str, where: str, *, max_chars: int | None = None) -> str:
    """Return `text` unchanged when it is usable; raise InvalidText naming `where` otherwise.

    Args:
        text: the text as decoded from the request or file.
        where: the item's name in the error, e.g. "texts[3]" or "line 7.text".
        max_chars: the limit in characters (code points); default TAILOR_MAX_TEXT_CHARS.

    Raises:
        InvalidText (422, code `invalid_text`, details {"field": where, "reason": r}) with r
        one of `not_a_string`, `empty` (also whitespace, control or format characters only),
        `lone_surrogate`, `nul`, `too_long`.
    """
    if not isinstance(text, str):
        raise InvalidText(where, f"must be a string, not {type(text).__name__}",
                          reason="not_a_string")
    limit = get_settings().max_text_chars if max_chars is None else max_chars
    if len(text) > limit:
        raise InvalidText(where, f"{len(text)} characters exceed the limit of {limit}",
                          reason="too_long")
    bad = lone_surrogate(text)
    if bad is not None:
        raise InvalidText(where, f"not valid Unicode: a lone surrogate U+{ord(text[bad]):04X} at "
                                 f"character {bad} (a truncated emoji?)", reason="lone_surrogate")
    refuse_nul(text, where)
    if not has_visible_text(text):
        raise InvalidText(where, "text is empty (no visible characters)", reason="empty")
    return text


def check_utf8_head(head: bytes, where: str) -> None:
    """Refuse a file whose first bytes show it is UTF-16 (with or without a BOM)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidText(where, "the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
                                 "save it as UTF-8", reason="encoding")
    sample = head[:200]
    if len(sample) >= 4 and max(sample[0::2].count(0), sample[1::2].count(0)) > len(sample) // 4:
        raise InvalidText(where, "the bytes look like UTF-16 without a byte-order mark (every "
                                 "other byte is NUL); save the file as UTF-8", reason="encoding")


def decode_utf8(data: bytes, where: str) -> str:
    """Decode `data` as strict UTF-8 (a leading BOM is dropped); 422 naming `where` otherwise.

    The message says what the bytes look like instead (UTF-16, Latin-1) so the user knows
    how to re-save the file.
    """
    check_utf8_head(data, where)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidText(where, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
                                 f"{exc.start} ({exc.reason}); Latin-1 or another legacy "
                                 "encoding? save the file as UTF-8", reason="encoding") from exc
