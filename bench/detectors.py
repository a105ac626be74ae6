#!/usr/bin/env python3
"""Detector quality and speed, on the benchmark data in ../shared/bench (see its README).

- NAB v1.1, the 40-file dev split: the ``alert`` column as shipped (threshold 0.5 on the
  0/1 onsets, nothing tuned on the data) and the oracle score of the ``score`` column, for
  the three profiles, beside the published comparators. Runs the same code path as
  ``smartunit backtest`` with the defaults a user gets.
- SKAB valve2: one chain per channel, OR-combined (an alert active on any channel),
  scored on rows from 400 on: F1 with FAR and MAR.
- Throughput of the default chain (detector + decider) over 10,000 series on one core.

Usage: bench/detectors.py [--shared PATH]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.backtest import SeriesFile, run_chain
from detectors.chain import Chain
from detectors.evaluation import PROFILES, load_nab, nab_score, oracle_score, outlier_metrics

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


def bench_nab(root: Path) -> None:
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
    print(
        f"nab_alert_standard={shipped[0]:.2f} nab_oracle_standard={oracle[0]:.2f} "
        f"nab_noanomaly_alerts={quiet}"
    )


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


def bench_skab(root: Path) -> None:
    truth, predicted = [], []
    for path in sorted((root / "data" / "valve2").glob("*.csv")):
        channels, t, values, anomaly = _skab_file(path)
        series = [
            SeriesFile(Path(f"{path.stem}/{c}"), [], t, values[:, i])
            for i, c in enumerate(channels)
        ]
        results = run_chain(series, Chain.from_config())
        any_active = np.logical_or.reduce([r.active for r in results])
        truth.append(anomaly[SKAB_SCORED_FROM:])
        predicted.append(any_active[SKAB_SCORED_FROM:])
    m = outlier_metrics(truth, predicted)
    print(
        f"SKAB valve2 ({len(truth)} files, rows from {SKAB_SCORED_FROM}), one auto chain per "
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
    default_shared = Path(__file__).resolve().parent.parent.parent / "shared"
    parser.add_argument("--shared", type=Path, default=default_shared)
    args = parser.parse_args()
    bench_nab(args.shared / "bench" / "nab")
    bench_skab(args.shared / "bench" / "skab")
    bench_throughput()


if __name__ == "__main__":
    main()
