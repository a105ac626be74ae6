"""Property: whatever the validators let through comes back from a real InfluxDB unchanged."""

from __future__ import annotations

import itertools

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from collector.config import InfluxSettings
from collector.influx import query_sync, quote_ident, rows
from collector.lineprotocol import check_string_field, check_tag_text, encode_line
from fieldtools.localservices import InfluxDB

# Any Unicode the validators accept (no surrogates, control characters or, in tags and
# keys, backslashes), weighted towards characters line protocol and InfluxQL treat
# specially. What they refuse is covered by test_unwritable_tag_text_is_refused_not_mangled.
SPECIALS = st.sampled_from([*" ,=\"'#/:;{}[]$*.-_", "姑", "苏", "é", "🚦", "\u00a0"])
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), SPECIALS
    ),
    min_size=1,
    max_size=30,
)
STRING_VALUE = st.text(
    alphabet=st.one_of(
        st.characters(
            blacklist_categories=["Cs"],
            blacklist_characters=[chr(c) for c in range(0x20) if c != 9] + ["\x7f"],
        ),
        st.sampled_from(['"', "\\", "\t", " ", ","]),
    ),
    max_size=40,
)
_points = itertools.count()


@pytest.fixture(scope="module")
def roundtrip_db(influxdb: InfluxDB) -> InfluxSettings:
    influx = InfluxSettings(url=influxdb.url, database="roundtrip")
    query_sync(influx, "CREATE DATABASE roundtrip")
    return influx


def _write(influx: InfluxSettings, line: str) -> httpx.Response:
    return httpx.post(
        f"{influx.url}/write",
        params={"db": influx.database, "precision": "ms"},
        content=line.encode(),
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tag_key=TEXT,
    tag_value=TEXT,
    field_key=TEXT,
    string_value=STRING_VALUE,
    number=st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False)
    ),
)
def test_tags_and_fields_roundtrip(
    roundtrip_db: InfluxSettings,
    tag_key: str,
    tag_value: str,
    field_key: str,
    string_value: str,
    number: int | float,
) -> None:
    for text in (tag_key, tag_value, field_key):
        assert check_tag_text(text) is None or len(text.encode()) > 512
    assert check_string_field(string_value) is None
    # Keys InfluxDB reserves or that would collide with each other.
    assume(len({tag_key, field_key, field_key + "_s"}) == 3)
    assume("time" not in {tag_key, field_key, field_key + "_s"})

    n = next(_points)
    measurement = f"rt {n}, odd=name"  # each example its own measurement: no type conflicts
    fields = {field_key: number, field_key + "_s": string_value}
    line = encode_line(measurement, {tag_key: tag_value}, fields, 1_700_000_000_000 + n)
    response = _write(roundtrip_db, line)
    assert response.status_code == 204, (line, response.text)

    series = query_sync(roundtrip_db, f"SELECT * FROM {quote_ident(measurement)} GROUP BY *")
    assert len(series) == 1
    assert series[0]["name"] == measurement
    assert series[0]["tags"] == {tag_key: tag_value}
    (row,) = rows(series[0])
    assert row["time"] == 1_700_000_000_000 + n
    assert row[field_key + "_s"] == string_value
    stored = row[field_key]
    if isinstance(number, float):
        # InfluxDB's JSON prints large floats without an exponent (so they parse as int):
        # the stored double is the same.
        assert float(stored) == number
    else:
        assert stored == number


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=10))
def test_unwritable_tag_text_is_refused_not_mangled(text: str) -> None:
    """Text the encoder cannot represent (backslash, control characters) is refused."""
    problem = check_tag_text(text)
    if any(c == "\\" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        assert problem is not None
    else:
        assert problem is None


def test_a_multi_line_note_is_stored_not_lost(roundtrip_db: InfluxSettings) -> None:
    note = 'valve closed\nhall B evacuated\r\n"all clear"'
    response = _write(roundtrip_db, encode_line("notes", {"k": "v"}, {"note": note}, 1))
    assert response.status_code == 204, response.text
    (row,) = rows(query_sync(roundtrip_db, 'SELECT "note" FROM "notes"')[0])
    assert row["note"] == 'valve closed hall B evacuated  "all clear"'
