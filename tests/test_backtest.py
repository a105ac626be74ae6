"""`smartunit backtest` and the decider behind it."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from detectors.decide import AlertDecider


def write_series(path: Path, values: np.ndarray, step_s: int = 300) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    start = np.datetime64("2026-01-01T00:00:00")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for i, v in enumerate(values):
            stamp = str(start + np.timedelta64(i * step_s, "s")).replace("T", " ")
            writer.writerow([stamp, v])


def run_backtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "backtest", *args], capture_output=True, text=True
    )


def test_backtest_writes_scores_and_alerts_per_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    quiet = 50 + np.sin(np.arange(2000) / 288 * 2 * np.pi) * 10 + rng.normal(0, 1, 2000)
    spiky = quiet.copy()
    spiky[1500] = 400.0
    write_series(tmp_path / "in" / "quiet.csv", quiet)
    write_series(tmp_path / "in" / "sub" / "spiky.csv", spiky)
    done = run_backtest(str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "2 file(s), 4000 rows" in done.stdout

    with (tmp_path / "out" / "sub" / "spiky.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "value", "score", "alert", "active", "note"]
    assert len(rows) == 2000
    assert rows[0]["timestamp"] == "2026-01-01 00:00:00"
    assert rows[1500]["alert"] == "1"
    assert float(rows[1500]["score"]) >= 0.5
    assert sum(int(r["alert"]) for r in rows) == 1
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    with (tmp_path / "out" / "quiet.csv").open() as handle:
        assert sum(int(r["alert"]) for r in csv.DictReader(handle)) == 0


def test_backtest_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,reading\n1,2\n")
    done = run_backtest(str(bad), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "timestamp,value" in done.stderr
    done = run_backtest(str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    done = run_backtest(str(bad), "--out", str(tmp_path / "o"), "--detector", "nope")
    assert done.returncode == 2
    assert "unknown detector" in done.stderr


def test_decider_opens_once_and_clears_after_quiet_readings() -> None:
    decider = AlertDecider(on=0.5, off=0.3, clear_after=3)
    scores = np.array([0.1, 0.6, 0.4, 0.7, 0.2, 0.2, 0.35, 0.2, 0.2, 0.2, 0.9])
    sid = np.zeros(len(scores), dtype=np.int64)
    decision = decider.decide(sid, np.arange(len(scores)), scores)
    assert decision.onset.astype(int).tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    # 0.4 and 0.35 stay above `off`: the alert holds; three readings below it clear it
    assert decision.active.astype(int).tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1]
    assert decision.cleared.astype(int).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]


PRESETS = Path(__file__).resolve().parent.parent / "config" / "rules.presets.toml"


def test_backtest_with_rules_shows_what_they_would_have_raised(tmp_path: Path) -> None:
    lel = np.array([2.0] * 20 + [30.0] * 5 + [60.0] * 5 + [2.0] * 10)  # every 10 s
    write_series(tmp_path / "in" / "lel_pct.csv", lel, step_s=10)
    done = run_backtest(
        str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--rules", str(PRESETS)
    )
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out" / "lel_pct.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    colours = [r["colour"] for r in rows]
    assert colours[:20] == ["green"] * 20
    assert "orange" in colours[20:25]  # level 1 after its 5 s
    assert "red" in colours[25:30]
    assert colours[-1] == "green"
    assert sum(int(r["alert"]) for r in rows) == 1  # one warning, its colour rising and falling


def test_a_preset_is_overridden_for_one_unit(tmp_path: Path) -> None:
    from collector.rules import RuleBook

    site = tmp_path / "site.toml"
    site.write_text(
        '[[rules]]\nname = "combustible-gas"\nfamily = "chem"\nquantity = "lel_pct"\n'
        'detector = "threshold"\nunits = ["tank-farm"]\n'
        "params = { levels = { orange = 10.0, red = 20.0 } }\n"
        '[[rules]]\nname = "chem-stuck-sensor"\nfamily = "chem"\nquantity = "*"\n'
        'detector = "flatline"\nunits = ["tank-farm"]\nenabled = false\n'
    )
    book = RuleBook.load([PRESETS, site])
    here = book.rules_for("chem", "lel_pct", "tank-farm", "gas-7")
    elsewhere = book.rules_for("chem", "lel_pct", "other-unit", "gas-8")
    by_name = {r.name: r for r in here}
    assert by_name["combustible-gas"].params["levels"] == {"orange": 10.0, "red": 20.0}
    assert "chem-stuck-sensor" not in by_name
    assert {r.name: r for r in elsewhere}["combustible-gas"].params["levels"] == {
        "orange": 25.0,
        "red": 50.0,
    }
    assert "chem-stuck-sensor" in {r.name for r in elsewhere}


def test_rule_choice_does_not_depend_on_what_was_asked_before(tmp_path: Path) -> None:
    """The rule book remembers its answers per (family, quantity): never across units."""
    from collector.rules import RuleBook

    site = tmp_path / "site.toml"
    site.write_text(
        '[[rules]]\nname = "combustible-gas"\nfamily = "chem"\nquantity = "lel_pct"\n'
        'detector = "threshold"\ndevices = ["gas-7"]\n'
        "params = { levels = { orange = 10.0, red = 20.0 } }\n"
    )
    questions = [
        ("chem", "lel_pct", "u1", "gas-8"),
        ("chem", "lel_pct", "u1", "gas-7"),
        ("camera", "people", "u1", "cam-1"),
        ("camera", "people", "u2", "cam-2"),
        ("chem", "lel_pct", "u2", "gas-9"),
    ]
    fresh = [RuleBook.load([PRESETS, site]).rules_for(*q) for q in questions]
    book = RuleBook.load([PRESETS, site])
    for _ in range(2):
        asked = [book.rules_for(*q) for q in questions]
        assert asked == fresh
        for answer in asked:
            answer.clear()  # callers own what they get
    gas_7 = {rule.name: rule for rule in fresh[1]}["combustible-gas"]
    assert gas_7.params["levels"]["orange"] == 10.0 and fresh[0] != fresh[1]


def test_untidy_rows_are_kept_and_marked_as_the_service_would_treat_them(tmp_path: Path) -> None:
    """A late row, a repeated stamp and a blank value do not abort a file: each row is in
    the output, marked, and only rows the service would judge are judged."""
    rng = np.random.default_rng(4)
    values = 50 + rng.normal(0, 1, 1200)
    values[1000] = 400.0
    write_series(tmp_path / "in" / "clean.csv", values)
    lines = (tmp_path / "in" / "clean.csv").read_text().splitlines()
    untidy = [
        *lines[:501],
        lines[300],
        lines[501],
        lines[501],
        "2026-01-02 18:00:00,",
        *lines[502:],
    ]
    (tmp_path / "in" / "untidy.csv").write_text("\n".join(untidy) + "\n")

    done = run_backtest(str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "not judged: 1 blank, 1 duplicate, 1 late" in done.stdout
    raw = (tmp_path / "out" / "untidy.csv").read_bytes()
    assert b"\r" not in raw  # LF line endings
    with (tmp_path / "out" / "untidy.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(untidy) - 1  # every input row
    assert [r["note"] for r in rows[500:504]] == ["late", "", "duplicate", "blank"]
    assert rows[500]["score"] == "" and rows[503]["value"] == ""
    with (tmp_path / "out" / "clean.csv").open() as handle:
        clean = list(csv.DictReader(handle))
    judged = [r for r in rows if r["note"] == ""]
    # the judged rows are the clean file's rows: same scores, same alerts
    assert [r["score"] for r in judged] == [r["score"] for r in clean]
    assert [r["alert"] for r in judged] == [r["alert"] for r in clean]
    assert sum(int(r["alert"]) for r in judged) >= 1


def test_a_bad_file_is_reported_with_row_numbers_and_the_others_go_on(tmp_path: Path) -> None:
    write_series(tmp_path / "in" / "a_good.csv", np.arange(100.0))
    (tmp_path / "in" / "b_rows.csv").write_text(
        "timestamp,value\n2026-01-01 00:00:00,1\nyesterday,2\n2026-01-01 00:10:00,abc\n"
        "2026-01-01 00:15:00,4\n"
    )
    (tmp_path / "in" / "c_header.csv").write_text("time,reading\n1,2\n")
    done = run_backtest(str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 1
    assert "b_rows.csv: row 3: timestamp 'yesterday' is no time" in done.stderr
    assert "b_rows.csv: row 4: value 'abc' is not a number" in done.stderr
    assert "c_header.csv: the header must be timestamp,value" in done.stderr
    assert (tmp_path / "out" / "a_good.csv").exists()
    with (tmp_path / "out" / "b_rows.csv").open() as handle:
        notes = [r["note"] for r in csv.DictReader(handle)]
    assert notes[0] == "" and notes[1].startswith("rejected") and notes[3] == ""
    assert not (tmp_path / "out" / "c_header.csv").exists()


def test_rules_on_a_file_named_after_no_quantity_are_an_error(tmp_path: Path) -> None:
    """No rule of an unknown quantity would fire: that must not read as a clean result."""
    lel = np.array([2.0] * 20 + [60.0] * 10)
    write_series(tmp_path / "in" / "sensor7.csv", lel, step_s=10)
    done = run_backtest(
        str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--rules", str(PRESETS)
    )
    assert done.returncode != 0
    assert "'sensor7' is no quantity" in done.stderr and "--quantity" in done.stderr
    done = run_backtest(
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--rules",
        str(PRESETS),
        "--quantity",
        "lel_pct",
    )
    assert done.returncode == 0, done.stderr
    assert "1 alert(s)" in done.stdout
    done = run_backtest(
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "o"),
        "--rules",
        str(PRESETS),
        "--quantity",
        "lel",
    )
    assert done.returncode == 2 and "'lel' is no quantity" in done.stderr
