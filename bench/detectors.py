#!/usr/bin/env python3
"""Detector quality, alarm noise and speed, on the benchmark data in ../shared/bench
(see its README) and on the simulator's devices.

- NAB v1.1, the 40-file development split: the ``alert`` column as shipped (threshold
  0.5 on the 0/1 onsets) and the oracle score of the ``score`` column, for the three
  profiles, beside the published comparators, and per category. Runs the same code path
  as ``smartunit backtest`` with the defaults a user gets.
- How the defaults were chosen (bench/detector_grid.py): leave one category out (each
  fold's defaults chosen on the other categories), the cross-validated mean of every
  grid point, and the spread as each default moves.
- SKAB valve2: one chain per channel, OR-combined (an alert active on any channel),
  scored on rows from 400 on: F1 with FAR and MAR.
- Alarm noise on the product's own data (bench/detector_fleet.py): the simulator's
  normal fleet, false alerts per 1,000 device-days per family; injected anomalies
  caught, with the time to detect.
- Throughput of the default chain (detector + decider) over 10,000 series on one core.

Usage: bench/detectors.py [--shared PATH] [--no-grid] [--no-fleet]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.detector_fleet import GENERIC, fleet_injected, fleet_noise
from bench.detector_grid import report_grid, run_grid
from bench.evaluation import (
    PROFILES,
    LabelledSeries,
    OutlierMetrics,
    find_bench_data,
    load_nab,
    nab_score,
    oracle_score,
    outlier_metrics,
)
from collector.backtest import SeriesFile, run_chain
from detectors.auto import QUIET
from detectors.chain import Chain

PUBLISHED_58 = {  # full 58-file corpus, oracle threshold (../shared/bench/README.md)
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD-OSE": (69.9, 67.0, 73.2),
    "earthgecko Skyline": (58.2, 46.2, 63.9),
    "KNN-CAD": (58.0, 43.4, 64.8),
    "Relative Entropy": (54.6, 47.6, 58.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
}
REFERENCE_40 = {"Numenta HTM": (64.85, 57.36, 69.72), "CAD-OSE": (67.18, 63.30, 70.81)}
SKAB_PUBLISHED = {  # whole SKAB test set, multivariate models: F1, FAR %, MAR %
    "Conv-AE": (0.78, 13.6, 28.0),
    "MSET": (0.78, 39.7, 14.1),
    "PCA T2+Q": (0.76, 26.6, 24.9),
    "LSTM-AE": (0.74, 30.0, 25.9),
    "Isolation Forest": (0.29, 2.6, 82.9),
}
SKAB_SCORED_FROM = 400


def bench_nab(root: Path) -> tuple[list[LabelledSeries], list[SeriesFile], float]:
    corpus = load_nab(root)
    files = [
        SeriesFile(
            Path(s.name),
            [],
            s.timestamps.astype("datetime64[ms]").astype(np.int64) / 1000,
            s.values,
        )
        for s in corpus
    ]
    started = time.perf_counter()
    results = run_chain(files, Chain.from_config())
    elapsed = time.perf_counter() - started
    alerts = [r.onset.astype(np.float64) for r in results]
    scores = [r.score for r in results]
    shipped = [nab_score(corpus, alerts, p, 0.5).normalised for p in PROFILES]
    oracle = [oracle_score(corpus, scores, p).normalised for p in PROFILES]
    quiet = sum(
        int(a.sum())
        for s, a in zip(corpus, alerts, strict=True)
        if s.name.startswith("artificialNoAnomaly/")
    )
    print(
        f"NAB v1.1, {len(corpus)} files, {sum(len(s.windows) for s in corpus)} windows, "
        f"{sum(len(f.x) for f in files)} rows in {elapsed:.1f} s"
    )
    print(f"  {'':34s} {'standard':>9s} {'low FP':>8s} {'low FN':>8s}")
    print(f"  {'SmartUnit auto, alert as shipped':34s} " + " ".join(f"{v:8.2f}" for v in shipped))
    print(f"  {'SmartUnit auto, score, oracle':34s} " + " ".join(f"{v:8.2f}" for v in oracle))
    for name, values in REFERENCE_40.items():
        print(f"  {name + ', oracle (these 40)':34s} " + " ".join(f"{v:8.2f}" for v in values))
    print("  published, full 58-file corpus, oracle threshold:")
    for name, values in PUBLISHED_58.items():
        print(f"    {name:32s} " + " ".join(f"{v:8.1f}" for v in values))
    print(f"  alerts on artificialNoAnomaly files: {quiet}")
    print("  per category, alerts as shipped, standard profile:")
    for category in sorted({s.name.split("/")[0] for s in corpus}):
        mine = [i for i, s in enumerate(corpus) if s.name.startswith(category + "/")]
        part = [corpus[i] for i in mine]
        count = sum(int(alerts[i].sum()) for i in mine)
        if sum(len(s.windows) for s in part):
            value = nab_score(part, [alerts[i] for i in mine], "standard", 0.5).normalised
            print(f"    {category:24s} {value:6.2f}  ({len(part)} files, {count} alerts)")
        else:
            print(f"    {category:24s}   (no windows; {len(part)} files, {count} alerts)")
    print(
        f"nab_alert_standard={shipped[0]:.2f} nab_oracle_standard={oracle[0]:.2f} "
        f"nab_noanomaly_alerts={quiet}"
    )
    return corpus, files, shipped[0]


def _skab_file(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader)
        rows = [row for row in reader if row]
    channels = header[1:-2]
    t = np.array(
        [np.datetime64(r[0].replace(" ", "T"), "s").astype(np.int64) for r in rows],
        dtype=np.float64,
    )
    values = np.array([[float(v) for v in r[1:-2]] for r in rows])
    anomaly = np.array([float(r[-2]) > 0 for r in rows])
    return channels, t, values, anomaly


def bench_quiet(corpus: list[LabelledSeries], files: list[SeriesFile], skab: Path) -> None:
    """What the quiet setting (detectors.auto.QUIET) costs on the benchmarks."""
    results = run_chain(files, Chain.from_config(**QUIET))
    alerts = [r.onset.astype(np.float64) for r in results]
    shipped = nab_score(corpus, alerts, "standard", 0.5).normalised
    m = skab_metrics(skab, QUIET)
    print(
        f"Quiet setting ({QUIET}): NAB standard, alerts as shipped {shipped:.2f}; SKAB valve2 "
        f"F1 {m.f1:.2f} FAR {100 * m.far:.1f} % MAR {100 * m.mar:.1f} %"
    )


def skab_metrics(root: Path, params: dict[str, Any]) -> OutlierMetrics:
    truth, predicted = [], []
    for path in sorted((root / "data" / "valve2").glob("*.csv")):
        channels, t, values, anomaly = _skab_file(path)
        series = [
            SeriesFile(Path(f"{path.stem}/{c}"), [], t, values[:, i])
            for i, c in enumerate(channels)
        ]
        results = run_chain(series, Chain.from_config(**params))
        any_active = np.logical_or.reduce([r.active for r in results])
        truth.append(anomaly[SKAB_SCORED_FROM:])
        predicted.append(any_active[SKAB_SCORED_FROM:])
    return outlier_metrics(truth, predicted)


def bench_skab(root: Path) -> None:
    m = skab_metrics(root, {})
    files = len(list((root / "data" / "valve2").glob("*.csv")))
    print(
        f"SKAB valve2 ({files} files, rows from {SKAB_SCORED_FROM}), one auto chain per "
        f"channel, OR-combined:"
    )
    print(
        f"  SmartUnit auto: F1 {m.f1:.2f}  FAR {100 * m.far:.1f} %  MAR {100 * m.mar:.1f} %  "
        f"(tp {m.tp} fp {m.fp} fn {m.fn} tn {m.tn})"
    )
    print("  published (whole SKAB test set, multivariate):")
    for name, (f1, far, mar) in SKAB_PUBLISHED.items():
        print(f"    {name:18s} F1 {f1:.2f}  FAR {far:.1f} %  MAR {mar:.1f} %")
    print(f"skab_f1={m.f1:.3f} skab_far={m.far:.3f} skab_mar={m.mar:.3f}")


def bench_throughput(series: int = 10_000, rounds: int = 200) -> None:
    rng = np.random.default_rng(1)
    chain = Chain.from_config()
    ids = np.arange(series, dtype=np.int64)
    base = rng.uniform(0, 100, series)
    batches = []
    for k in range(rounds):
        t = np.full(series, 1.7e9 + 300.0 * k)
        batches.append((ids, t, base + rng.normal(0, 1, series)))
    for ids_, t, x in batches[:5]:  # warm caches and allocation
        chain.process(ids_, t, x)
    started = time.perf_counter()
    for ids_, t, x in batches[5:]:
        chain.process(ids_, t, x)
    elapsed = time.perf_counter() - started
    rate = series * (rounds - 5) / elapsed
    print(
        f"throughput: auto chain (detector + decider), {series} series, one reading per series "
        f"per batch: {rate:,.0f} readings/s on one core"
    )
    print(f"throughput_readings_per_s={rate:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    found = find_bench_data(Path(__file__).resolve().parent)
    parser.add_argument(
        "--shared",
        type=Path,
        default=found.parent if found else None,
        help="the folder holding bench/ (found beside the checkout by default)",
    )
    parser.add_argument("--no-grid", action="store_true", help="skip the parameter grid")
    parser.add_argument("--no-fleet", action="store_true", help="skip the simulator fleet")
    args = parser.parse_args()
    if args.shared is None:
        parser.error("benchmark data not found: give --shared")
    corpus, files, shipped = bench_nab(args.shared / "bench" / "nab")
    if not args.no_grid:
        figures = report_grid(run_grid(corpus, files))
        # the grid assembles chains from their parts: it must agree with the real chain
        if abs(figures["dev_defaults"] - shipped) > 1e-6:
            raise SystemExit(f"grid at the defaults {figures['dev_defaults']} != {shipped}")
        print(
            f"nab_loco_mean={figures['fold_mean']:.2f} "
            f"nab_cv_mean_defaults={figures['cv_mean_defaults']:.2f}"
        )
    bench_skab(args.shared / "bench" / "skab")
    bench_quiet(corpus, files, args.shared / "bench" / "skab")
    if not args.no_fleet:
        presets = {"families": {}, GENERIC: {}, "quiet": QUIET}
        # the presets side by side at 12x the firmware intervals (12x fewer readings); the
        # fleet at the firmware intervals, as the product runs it: bench/detector_fleet.py
        fleet_noise(interval_scale=12.0, presets=presets)
        fleet_injected(interval_scale=12.0, presets=presets)
    bench_throughput()


if __name__ == "__main__":
    main()
