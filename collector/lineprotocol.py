"""InfluxDB line protocol: escaping and encoding, the only way text reaches ``/write``.

Escaping follows the parser that InfluxDB 1.x, 2.x and 3.x share:
measurement names escape comma and space; tag keys, tag values and field keys escape
comma, equals sign and space; string field values escape double quote and backslash.
Some strings cannot be written at all: a newline ends a line whatever is escaped, and
1.x reads a backslash in a tag or key as an escape of whatever follows it (so a value
ending in a backslash swallows the separator). ``check_tag_text`` refuses those, and the
registry and protocol validators call it, so such text is rejected with a reason before
it ever reaches the encoder. In string field values (notes, actors) the encoder turns
control characters into spaces instead, so any text an operator types can be stored.
``tests/test_lineprotocol_roundtrip.py`` proves the rest round-trips through a real
server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_FIELD_ESCAPES = str.maketrans(
    {'"': r"\"", "\\": "\\\\", **{chr(c): " " for c in range(0x20) if c != 0x09}, "\x7f": " "}
)

# Control characters (C0, DEL, C1) end lines or confuse the parser; a backslash cannot be
# escaped in tags and keys by InfluxDB 1.x.
_UNWRITABLE_TAG_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_UNWRITABLE_STRING_FIELD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

FieldValue = int | float | bool | str


def check_tag_text(text: str) -> str | None:
    """Why ``text`` cannot be a tag key, tag value or field key, or None if it can."""
    if not text:
        return "must not be empty"
    match = _UNWRITABLE_TAG_TEXT.search(text)
    if match:
        return f"must not contain {match.group()!r} (control characters and backslashes)"
    if len(text.encode()) > 512:
        return "must be at most 512 bytes long"
    return None


def check_string_field(text: str) -> str | None:
    """Why ``text`` cannot be a string field value, or None if it can."""
    match = _UNWRITABLE_STRING_FIELD.search(text)
    if match:
        return f"must not contain {match.group()!r} (control characters)"
    return None


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """Escape a tag key, a tag value or a field key."""
    return text.translate(_KEY_ESCAPES)


def encode_tags(tags: Mapping[str, str]) -> str:
    """``k1=v1,k2=v2`` in key order (the order InfluxDB stores them in); empty values skipped."""
    return ",".join(
        f"{escape_key(key)}={escape_key(value)}" for key, value in sorted(tags.items()) if value
    )


def encode_field_value(value: FieldValue) -> str:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be stored: only finite numbers can")
        return repr(value)
    # Control characters (a newline in an operator's note) cannot travel in line protocol:
    # they become spaces, so any text can be stored.
    return '"' + value.translate(_STRING_FIELD_ESCAPES) + '"'


def encode_fields(fields: Mapping[str, FieldValue]) -> str:
    return ",".join(f"{escape_key(key)}={encode_field_value(v)}" for key, v in fields.items())


def encode_line(
    measurement: str,
    tags: str | Mapping[str, str],
    fields: Mapping[str, FieldValue],
    timestamp: int | None = None,
) -> str:
    """One line of line protocol; ``tags`` may be pre-encoded with ``encode_tags``."""
    if not fields:
        raise ValueError("a point needs at least one field")
    tag_text = tags if isinstance(tags, str) else encode_tags(tags)
    head = escape_measurement(measurement)
    if tag_text:
        head = f"{head},{tag_text}"
    line = f"{head} {encode_fields(fields)}"
    if timestamp is not None:
        line = f"{line} {timestamp}"
    return line
