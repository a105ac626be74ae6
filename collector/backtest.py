"""``smartunit backtest``: what would the detectors have raised on these series?

Reads ``timestamp,value`` CSV files (one file or a directory of them), streams every row
in order through the same detection chain the service runs (no look-ahead; files are
independent series processed side by side), and writes for each input file
``OUT/<same relative path>`` with columns ``timestamp,value,score,alert,active``: the
score in [0, 1], ``alert`` 1 on the row that raises an alert, ``active`` 1 while it is open.

With a rules file, each file goes through the rules of its quantity instead — the file's
name without ``.csv`` (``lel_pct.csv``), or ``--quantity`` — and the results gain a
``colour`` column: what these rules would have raised.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from collector.errors import ConfigError
from collector.rules import RuleBook
from detectors.chain import Chain, ChainOutput, interleave
from detectors.levels import COLOURS, LevelDecider
from detectors.rules.capacity import CapacityRule

CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class SeriesFile:
    relative: Path
    stamps: list[str]
    t: np.ndarray  # epoch seconds
    x: np.ndarray


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
    stamps: list[str] = []
    t: list[float] = []
    x: list[float] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
            raise ConfigError(f"{path}: the header must be timestamp,value")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                moment = _epoch(row[0])
                value = float(row[1]) if row[1].strip() else float("nan")
            except (ValueError, IndexError) as exc:
                raise ConfigError(f"{path}:{number}: {exc}") from None
            stamps.append(row[0])
            t.append(moment)
            x.append(value)
    times = np.array(t, dtype=np.float64)
    if len(times) > 1 and np.any(np.diff(times) < 0):
        raise ConfigError(f"{path}: rows must be in time order")
    return SeriesFile(relative, stamps, times, np.array(x, dtype=np.float64))


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
    """Stream all series through one chain, row by row across series, in chunks."""
    sid, row = interleave([len(s.x) for s in series])
    t = np.concatenate([s.t for s in series]) if series else np.empty(0)
    x = np.concatenate([s.x for s in series]) if series else np.empty(0)
    offsets = np.cumsum([0] + [len(s.x) for s in series])[:-1]
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
    return [
        ChainOutput(score[o : o + n], onset[o : o + n], active[o : o + n], cleared[o : o + n])
        for o, n in zip(offsets, (len(s.x) for s in series), strict=True)
    ]


@dataclass(frozen=True)
class RuleOutput:
    score: np.ndarray
    level: np.ndarray  # 0 green .. 4 red

    def as_chain_output(self) -> ChainOutput:
        active = self.level > 0
        before = np.concatenate(([False], active[:-1]))
        return ChainOutput(self.score, active & ~before, active, before & ~active)


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
        out = RuleOutput(np.zeros(len(item.x)), np.zeros(len(item.x), dtype=np.int64))
        ids = np.zeros(len(item.x), dtype=np.int64)
        for spec in book.rules_for_quantity(quantity or item.relative.stem):
            detector = spec.build()
            if isinstance(detector, CapacityRule):
                if capacity is None:
                    raise ConfigError(f"rule {spec.name!r} needs --capacity")
                detector.set_capacity([0], [capacity])
            decider = getattr(detector, "decider", LevelDecider)()
            score = detector.score(ids, item.t, item.x)
            np.maximum(out.score, score, out=out.score)
            np.maximum(out.level, decider.decide(ids, item.t, score).level, out=out.level)
        outputs.append(out)
    return outputs


def write_result(
    out_dir: Path, series: SeriesFile, result: ChainOutput, level: np.ndarray | None = None
) -> Path:
    """The results of one file; with rules (``level``), a ``colour`` column too."""
    target = out_dir / series.relative
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = ["timestamp", "value", "score", "alert", "active"]
        writer.writerow(header if level is None else [*header, "colour"])
        columns = zip(
            series.stamps, series.x, result.score, result.onset, result.active, strict=True
        )
        for row, (stamp, value, s, a, act) in enumerate(columns):
            line = [stamp, repr(float(value)), f"{s:.6f}", int(a), int(act)]
            if level is not None:
                line.append(COLOURS[int(level[row])])
            writer.writerow(line)
    return target


def backtest(
    source: Path,
    out_dir: Path,
    chain: Chain,
    *,
    rules: RuleBook | None = None,
    quantity: str | None = None,
    capacity: float | None = None,
    show_progress: bool = True,
) -> dict[str, int]:
    """Run files through ``chain`` (or, given ``rules``, through the rules) and write results."""
    files = [read_series(path, rel) for path, rel in discover(source)]
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
    alerts = 0
    for series, result, level in zip(files, results, levels, strict=True):
        write_result(out_dir, series, result, level)
        alerts += int(result.onset.sum())
    return {"files": len(files), "rows": total, "alerts": alerts}


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
