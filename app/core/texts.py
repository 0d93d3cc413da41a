"""One check for every text a user sends: valid Unicode, no control characters, visible content.

Scraped and truncated feeds carry lone surrogates (a tweet cut mid-emoji: `"Flood \\ud83d"`),
NUL bytes and texts made only of zero-width spaces or a byte-order mark. None of them can
be tokenized meaningfully, so each is refused with a 422 that names the item, before any
model or database work; a text with nothing visible is refused exactly like an empty one.
"""

from __future__ import annotations

import re
import unicodedata

from app.core.errors import Invalid

# C0 and C1 control characters and DEL; tab, line feed and carriage return are ordinary
# whitespace in real texts and stay allowed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Format characters (zero-width space, joiners, BOM, soft hyphen, bidi marks, tag
# characters) render as nothing; with whitespace they make a text look empty.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp"})


class InvalidText(Invalid):
    """A text that cannot be classified or stored: 422 `invalid_text`.

    `details` is `{"field": where, "reason": one of "lone_surrogate", "control_character",
    "empty", "position": character offset or None}`.
    """

    code = "invalid_text"

    def __init__(self, where: str, message: str, *, reason: str,
                 position: int | None = None) -> None:
        super().__init__(where, message)
        self.details = {"field": where, "reason": reason, "position": position}


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES


def validate_text(text: str, where: str) -> str:
    """Return `text` unchanged if it is valid Unicode with visible content, else raise.

    Args:
        text: the text as decoded from the request (JSON strings may hold lone surrogates).
        where: the item's name for the error, e.g. "texts[3]" or "line 12".

    Raises:
        InvalidText: a lone surrogate (not valid Unicode), a control character other than
            tab/newline/carriage return (NUL included), or no visible character at all
            (empty, whitespace, zero-width characters, a BOM).
    """
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        code_point = f"U+{ord(surrogate.group()):04X}"
        raise InvalidText(where, f"not valid Unicode: lone surrogate {code_point} at character "
                          f"{surrogate.start()} (a truncated emoji?)", reason="lone_surrogate",
                          position=surrogate.start())
    control = _CONTROL.search(text)
    if control is not None:
        code_point = f"U+{ord(control.group()):04X}"
        raise InvalidText(where, f"control character {code_point} at character "
                          f"{control.start()} is not allowed in a text",
                          reason="control_character", position=control.start())
    # Short-circuits at the first visible character: the first one, for ordinary text.
    if not any(_visible(ch) for ch in text):
        raise InvalidText(where, "text must not be empty (it has no visible characters)",
                          reason="empty")
    return text
