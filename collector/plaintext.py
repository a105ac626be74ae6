"""What people's names and notes may contain when they go into the audit trail.

A name is shown in one line next to what it did: no control characters and no format
characters (Unicode Cc, Cf), which include the bidirectional overrides that make "evil
\u202egnp.exe" read as "evilexe.png", and zero-width characters that make two names look
alike. Free text (a note, a reason) keeps tabs and line breaks, and loses the other
control characters and the bidirectional controls; other format characters, such as the
zero-width joiner inside an emoji, stay.
"""

from __future__ import annotations

import unicodedata

_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f"  # marks
    "\u202a\u202b\u202c\u202d\u202e"  # embeddings and overrides
    "\u2066\u2067\u2068\u2069"  # isolates
)
_LINE_WHITESPACE = frozenset("\t\n\r")


def _unfit_in_name(char: str) -> bool:
    return unicodedata.category(char) in {"Cc", "Cf"}


def _unfit_in_text(char: str) -> bool:
    if char in _BIDI_CONTROLS:
        return True
    return unicodedata.category(char) == "Cc" and char not in _LINE_WHITESPACE


def check_name(name: str) -> str:
    """The name unchanged; ValueError naming the first character it may not contain."""
    for char in name:
        if _unfit_in_name(char):
            raise ValueError(f"control or format character U+{ord(char):04X} not allowed")
    return name


def check_text(text: str) -> str:
    """The text unchanged; ValueError naming the first character it may not contain."""
    for char in text:
        if _unfit_in_text(char):
            raise ValueError(f"control character U+{ord(char):04X} not allowed")
    return text


def clean_name(name: str) -> str:
    """The name without the characters it may not contain."""
    return "".join(c for c in name if not _unfit_in_name(c))


def clean_text(text: str) -> str:
    """The text without the characters it may not contain."""
    return "".join(c for c in text if not _unfit_in_text(c))
