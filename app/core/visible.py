"""Which characters draw something: the one rule for "this text is empty", shared by the
server (app.core.texts) and the command line (tailor_cli), so both refuse the same texts.

Standard library only: the CLI imports it without pulling in the server's settings.
"""

from __future__ import annotations

import re
import unicodedata

# Printable, non-space ASCII: the fast path of the visibility check.
_VISIBLE_ASCII = re.compile("[!-~]")
# Unicode categories that draw nothing: spaces, line/paragraph separators, controls,
# format characters (zero-width space and joiners, BOM, direction marks, soft hyphen).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs"})
# Characters that render blank although their category says otherwise: Hangul fillers and
# the braille blank (letters and symbols; spammers use them to fake non-empty text), and the
# marks that only modify a neighbour and show nothing alone: variation selectors (U+FE0F is
# in most emoji; a text of only them is what is left of a stripped emoji) and the combining
# grapheme joiner.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f"
                          + "".join(map(chr, range(0xFE00, 0xFE10)))
                          + "".join(map(chr, range(0xE0100, 0xE01F0))))


def has_visible_text(text: str) -> bool:
    """True when `text` has at least one character that draws something."""
    if text.isascii():
        return _VISIBLE_ASCII.search(text) is not None
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES and ch not in _BLANK_GLYPHS
               for ch in text)
