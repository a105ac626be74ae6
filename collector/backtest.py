"""``smartunit backtest``: what would the detectors have raised on these series?

Reads ``timestamp,value`` CSV files (one file or a directory of them), streams every row
in order through the same detection chain the service runs (no look-ahead; files are
independent series processed side by side), and writes for each input file
``OUT/<same relative path>`` with columns ``timestamp,value,score,alert,active,note``:
the score in [0, 1], ``alert`` 1 on the row that raises an alert, ``active`` 1 while it
is open. Line endings are LF.

Real files are untidy, and each row is treated as the service treats a reading: a row
not newer than the newest judged one of its file (``late``, or ``duplicate`` with the
same time) is kept but not judged, as the collector stores late readings without
judging them; a blank value (``blank``) is no reading. Such rows appear in the output
with their note, an empty score and the alert state of the moment. A row whose time or
value cannot be read (``rejected: ...``) is reported with its row number and the rest of
the file goes on; a file that cannot be read at all (its header, its encoding) fails,
and the other files go on.

With a rules file, each file goes through the rules of its quantity instead — the file's
name without ``.csv`` (``lel_pct.csv``), or ``--quantity`` — and the results gain a
``colour`` column: what these rules would have raised. A file named after no quantity
the rules or the protocol know fails (its rules would raise nothing, which would look
like a clean bill of health).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from collector.admission import PROTOCOL_QUANTITIES
from collector.errors import ConfigError
from collector.rules import RuleBook
from detectors.chain import Chain, ChainOutput, interleave
from detectors.levels import COLOURS

CHUNK_ROWS = 50_000
SHOWN_PROBLEMS = 10  # rejected rows named per file; the rest are counted


class FileError(ConfigError):
    """One input file cannot be used; the others go on."""


@dataclass(frozen=True)
class SeriesFile:
    relative: Path
    stamps: list[str]
    t: np.ndarray  # epoch seconds; NaN where the row's time could not be read
    x: np.ndarray  # NaN where there is no value
    # Per row: "" (judged), "late", "duplicate", "blank" or "rejected: <reason>".
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "row N: reason"

    @property
    def judged(self) -> np.ndarray:
        """Rows that go through the detectors, as the service would judge them."""
        if not self.notes:
            return np.ones(len(self.x), dtype=bool)
        return np.array([note == "" for note in self.notes], dtype=bool)


def _epoch(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are read as UTC
    return moment.timestamp()


def read_series(path: Path, relative: Path) -> SeriesFile:
    """A file's rows, each with its note; FileError when the file cannot be read."""
    stamps: list[str] = []
    t: list[float] = []
    x: list[float] = []
    notes: list[str] = []
    problems: list[str] = []
    newest = -math.inf
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
                raise FileError(f"{path}: the header must be timestamp,value")
            for number, row in enumerate(reader, start=2):
                if not row or not any(cell.strip() for cell in row):
                    continue
                stamp = row[0]
                note, moment, value = _read_row(row)
                if note.startswith("rejected"):
                    problems.append(f"row {number}: {note[len('rejected: ') :]}")
                elif note == "" and moment <= newest:
                    note = "duplicate" if moment == newest else "late"
                if note == "":
                    newest = moment
                stamps.append(stamp)
                t.append(moment)
                x.append(value)
                notes.append(note)
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise FileError(f"{path}: not a CSV file ({exc})") from None
    return SeriesFile(
        relative,
        stamps,
        np.array(t, dtype=np.float64),
        np.array(x, dtype=np.float64),
        notes,
        problems,
    )


def _read_row(row: list[str]) -> tuple[str, float, float]:
    """(note, time, value) of one data row; the note is "" for a row to judge."""
    nan = float("nan")
    try:
        moment = _epoch(row[0])
    except (ValueError, OverflowError):
        return f"rejected: timestamp {row[0].strip()[:40]!r} is no time", nan, nan
    if not math.isfinite(moment):
        return f"rejected: timestamp {row[0].strip()[:40]!r} is no time", nan, nan
    text = row[1].strip() if len(row) > 1 else ""
    if not text:
        return "blank", moment, nan
    try:
        value = float(text)
    except ValueError:
        return f"rejected: value {text[:40]!r} is not a number", moment, nan
    if not math.isfinite(value):
        return f"rejected: value {text[:40]!r} is not a finite number", moment, nan
    return "", moment, value


def discover(source: Path) -> list[tuple[Path, Path]]:
    if source.is_file():
        return [(source, Path(source.name))]
    if not source.is_dir():
        raise ConfigError(f"no such file or directory: {source}")
    files = sorted(p for p in source.rglob("*.csv") if p.is_file())
    if not files:
        raise ConfigError(f"no .csv files under {source}")
    return [(p, p.relative_to(source)) for p in files]


def run_chain(
    series: Sequence[SeriesFile],
    chain: Chain,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[ChainOutput]:
    """Stream all series through one chain, row by row across series, in chunks.

    Only judged rows reach the chain; every other row gets score 0, no alert and the
    alert state of the row before it."""
    judged = [s.judged for s in series]
    sid, row = interleave([int(j.sum()) for j in judged])
    t = (
        np.concatenate([s.t[j] for s, j in zip(series, judged, strict=True)])
        if series
        else np.empty(0)
    )
    x = (
        np.concatenate([s.x[j] for s, j in zip(series, judged, strict=True)])
        if series
        else np.empty(0)
    )
    lengths = [int(j.sum()) for j in judged]
    offsets = np.cumsum([0, *lengths])[:-1]
    flat = offsets[sid] + row
    score = np.zeros(len(flat))
    onset = np.zeros(len(flat), dtype=bool)
    active = np.zeros(len(flat), dtype=bool)
    cleared = np.zeros(len(flat), dtype=bool)
    for start in range(0, len(flat), CHUNK_ROWS):
        part = flat[start : start + CHUNK_ROWS]
        out = chain.process(sid[start : start + CHUNK_ROWS], t[part], x[part])
        score[part], onset[part], active[part] = out.score, out.onset, out.active
        cleared[part] = out.cleared
        if progress is not None:
            progress(len(part))
    results = []
    for o, n, mask in zip(offsets, lengths, judged, strict=True):
        results.append(
            _spread(
                mask,
                ChainOutput(
                    score[o : o + n], onset[o : o + n], active[o : o + n], cleared[o : o + n]
                ),
            )
        )
    return results


def _spread(judged: np.ndarray, out: ChainOutput) -> ChainOutput:
    """Outputs of the judged rows placed on every row of the file."""
    if judged.all():
        return out
    n = len(judged)
    score, onset, cleared = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    score[judged], onset[judged], cleared[judged] = out.score, out.onset, out.cleared
    # an unjudged row shows the alert state of the judged row before it
    before = np.cumsum(judged) - 1
    active = np.where(
        before >= 0, out.active[np.maximum(before, 0)] if len(out.active) else False, False
    )
    return ChainOutput(score, onset, active.astype(bool), cleared)


@dataclass(frozen=True)
class RuleOutput:
    score: np.ndarray
    level: np.ndarray  # 0 green .. 4 red
    judged: np.ndarray  # rows the rules saw

    def as_chain_output(self) -> ChainOutput:
        active = self.level > 0
        before = np.concatenate(([False], active[:-1]))
        # an unjudged row only repeats the colour before it: it raises and clears nothing
        return ChainOutput(
            self.score, active & ~before & self.judged, active, before & ~active & self.judged
        )


def known_quantities(book: RuleBook) -> frozenset[str]:
    """Quantities a rule names (not ``*``) or the protocol defines."""
    return PROTOCOL_QUANTITIES | {rule.quantity for rule in book.rules if rule.quantity != "*"}


def rule_quantity(item: SeriesFile, book: RuleBook, quantity: str | None) -> str:
    """The quantity a file's rows are; FileError for a file named after none."""
    if quantity is not None:
        return quantity
    name = item.relative.stem
    if name not in known_quantities(book):
        raise FileError(
            f"{item.relative}: {name!r} is no quantity the rules or the protocol know, so no "
            "rule of its quantity would watch it; name the file after its quantity "
            "(lel_pct.csv) or give --quantity"
        )
    return name


def run_rules(
    series: Sequence[SeriesFile],
    book: RuleBook,
    *,
    quantity: str | None = None,
    capacity: float | None = None,
) -> list[RuleOutput]:
    """Every file through the rules of its quantity (its file name, or ``quantity``)."""
    outputs = []
    for item in series:
        judged = item.judged
        t, x = item.t[judged], item.x[judged]
        score = np.zeros(len(x))
        level = np.zeros(len(x), dtype=np.int64)
        ids = np.zeros(len(x), dtype=np.int64)
        for spec in book.rules_for_quantity(rule_quantity(item, book, quantity)):
            detector = spec.build()
            if "capacity" in detector.context_fields:
                if capacity is None:
                    raise ConfigError(f"rule {spec.name!r} needs --capacity")
                detector.set_context([0], capacity=[capacity])
            decider = detector.decider()
            rule_score = detector.score(ids, t, x)
            np.maximum(score, rule_score, out=score)
            np.maximum(level, decider.decide(ids, t, rule_score).level, out=level)
        # unjudged rows: no score, the colour of the judged row before them
        before = np.cumsum(judged) - 1
        full_level = np.where(before >= 0, level[np.maximum(before, 0)] if len(level) else 0, 0)
        full_score = np.zeros(len(item.x))
        full_score[judged] = score
        outputs.append(RuleOutput(full_score, full_level.astype(np.int64), judged))
    return outputs


def write_result(
    out_dir: Path, series: SeriesFile, result: ChainOutput, level: np.ndarray | None = None
) -> Path:
    """The results of one file (LF line endings); with rules (``level``), a ``colour``
    column too."""
    target = out_dir / series.relative
    target.parent.mkdir(parents=True, exist_ok=True)
    notes = series.notes or [""] * len(series.x)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        header = ["timestamp", "value", "score", "alert", "active", "note"]
        writer.writerow(header if level is None else [*header, "colour"])
        columns = zip(
            series.stamps, series.x, result.score, result.onset, result.active, notes, strict=True
        )
        for row, (stamp, value, s, a, act, note) in enumerate(columns):
            shown = "" if math.isnan(value) else repr(float(value))
            line = [stamp, shown, "" if note else f"{s:.6f}", int(a), int(act), note]
            if level is not None:
                line.append(COLOURS[int(level[row])])
            writer.writerow(line)
    return target


@dataclass
class BacktestSummary:
    files: int = 0  # written
    rows: int = 0
    alerts: int = 0
    unjudged: dict[str, int] = field(default_factory=dict)  # note -> rows (late, ...)
    failed: list[str] = field(default_factory=list)  # one message per file that failed
    problems: list[str] = field(default_factory=list)  # "file: row N: reason"

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems


def backtest(
    source: Path,
    out_dir: Path,
    chain: Chain,
    *,
    rules: RuleBook | None = None,
    quantity: str | None = None,
    capacity: float | None = None,
    show_progress: bool = True,
) -> BacktestSummary:
    """Run files through ``chain`` (or, given ``rules``, through the rules) and write
    results; a file that fails is reported in the summary and the others go on."""
    summary = BacktestSummary()
    if rules is not None and quantity is not None and quantity not in known_quantities(rules):
        raise ConfigError(f"--quantity {quantity!r} is no quantity the rules or the protocol know")
    files: list[SeriesFile] = []
    for path, relative in discover(source):
        try:
            item = read_series(path, relative)
            if rules is not None:
                rule_quantity(item, rules, quantity)
        except FileError as exc:
            summary.failed.append(str(exc))
            continue
        files.append(item)
        shown = item.problems[:SHOWN_PROBLEMS]
        summary.problems += [f"{relative}: {problem}" for problem in shown]
        if len(item.problems) > len(shown):
            more = len(item.problems) - len(shown)
            summary.problems.append(f"{relative}: {more} more rejected row(s)")
        for note in item.notes:
            if note:
                key = "rejected" if note.startswith("rejected") else note
                summary.unjudged[key] = summary.unjudged.get(key, 0) + 1
    if not files:  # no file could be read: the input as a whole is unusable (exit 2)
        raise ConfigError("\n".join(summary.failed))
    total = sum(len(f.x) for f in files)
    levels: list[np.ndarray | None] = [None] * len(files)
    if rules is not None:
        rule_outputs = run_rules(files, rules, quantity=quantity, capacity=capacity)
        results = [r.as_chain_output() for r in rule_outputs]
        levels = [r.level for r in rule_outputs]
    else:
        bar = _ProgressBar(total) if show_progress and total >= 10_000 else None
        results = run_chain(files, chain, progress=bar.advance if bar else None)
        if bar:
            bar.close()
    for series, result, level in zip(files, results, levels, strict=True):
        write_result(out_dir, series, result, level)
        summary.alerts += int(result.onset.sum())
    summary.files, summary.rows = len(files), total
    return summary


class _ProgressBar:
    """A one-line progress bar on stderr, for long inputs."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def advance(self, rows: int) -> None:
        self.done += rows
        filled = int(30 * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} rows")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
