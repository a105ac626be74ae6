#!/usr/bin/env python3
"""Render one dashboard panel from real InfluxDB query results into a PNG.

Grafana cannot run on the development machines, so this runs a panel's InfluxQL the way
Grafana would (macros substituted, every template variable "All") and plots the series
with matplotlib, the panel's threshold bands included. docs/img/ is made with it from a
running ``make demo``:

    scripts/render_panel.py --influx-url http://127.0.0.1:PORT --db smartunit_demo \\
        --dashboard dashboards/chem-park.json --panel "Combustible gas (% LEL)" \\
        --out docs/img/panel-gas.png
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from collector.config import InfluxSettings
from collector.influx import query_sync, rows


def substitute(query: str, hours: float, interval_s: int) -> str:
    query = query.replace("$timeFilter", f"time > now() - {round(hours * 3600)}s")
    query = query.replace("$__interval", f"{interval_s}s")
    for level in ("district", "street", "community", "grid", "unit"):
        query = query.replace(f"${level}", ".*")
    return query


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--influx-url", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--dashboard", type=Path, required=True)
    parser.add_argument("--panel", required=True, help="the panel's title")
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    board = json.loads(args.dashboard.read_text())
    (panel,) = [p for p in board["panels"] if p["title"] == args.panel]
    influx = InfluxSettings(url=args.influx_url, database=args.db)
    interval_s = max(10, round(args.hours * 3600 / 300))
    figure, axes = plt.subplots(figsize=(11, 4.2), dpi=110)
    figure.patch.set_facecolor("#181b1f")
    axes.set_facecolor("#111217")
    plotted = 0
    for target in panel["targets"]:
        query = substitute(target["query"], args.hours, interval_s)
        for series in query_sync(influx, query):
            tags = series.get("tags", {})
            # matplotlib hides labels that start with "_" (the _unregistered unit)
            label_base = (" ".join(v for v in tags.values() if v) or series["name"]).lstrip("_")
            table = rows(series)
            for column in series["columns"][1:]:
                points = [(r["time"], r[column]) for r in table if r[column] is not None]
                if not points:
                    continue
                times = [datetime.fromtimestamp(t / 1000, UTC) for t, _ in points]
                label = label_base if len(series["columns"]) == 2 else f"{label_base} {column}"
                axes.plot(times, [v for _, v in points], linewidth=1.4, label=label)
                plotted += 1
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    for step in steps:
        if step["value"] is not None:
            axes.axhline(step["value"], color=step["color"], linestyle="--", linewidth=1)
            axes.annotate(
                f"{step['color']} {step['value']}",
                (1.0, step["value"]),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                color=step["color"],
            )
    axes.set_title(f"{board['title']} — {panel['title']}", color="#d8d9da", loc="left")
    axes.tick_params(colors="#9fa7b3")
    for spine in axes.spines.values():
        spine.set_color("#2c3235")
    axes.grid(color="#2c3235", linewidth=0.6)
    if plotted <= 12:
        axes.legend(loc="upper left", fontsize=8, facecolor="#181b1f", labelcolor="#d8d9da")
    figure.text(
        0.99,
        0.01,
        f"{plotted} series from InfluxDB, rendered by scripts/render_panel.py (UTC)",
        ha="right",
        color="#6e7681",
        fontsize=8,
    )
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, facecolor=figure.get_facecolor())
    print(f"{args.out}: {plotted} series")
    return 0 if plotted else 1


if __name__ == "__main__":
    sys.exit(main())
