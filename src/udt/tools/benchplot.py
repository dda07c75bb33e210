#!/usr/bin/env python3
"""Bar chart of a bench_transfer.py result: median throughput per system with the run spread.

    python bench/bench_transfer.py --json results.json
    python -m udt.tools.benchplot results.json -o throughput.png [--log]
    python -m udt.tools.benchplot wan.json -o plots/        # bench_wan.py: one PNG per path + bars
    python -m udt.tools.benchplot latency.json -o latency.png  # bench_latency.py: µs per row

Bars are medians (MB/s), grouped by kind (file transfer, memory to memory) and coloured with udt
highlighted; the whisker spans min–max of the runs and each run is a dot.  Skipped systems appear
as a labelled empty slot so a missing peer is visible, not silently absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("paths"), list):
        return data  # bench_wan.py's result: drawn by plot_wan
    if isinstance(data, dict) and isinstance(data.get("many"), list):
        return data  # bench_latency.py's result: drawn by plot_latency
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{path} is not a bench_transfer.py or bench_wan.py --json result")
    for row in data["results"]:
        for key in ("system", "kind", "mb_per_s"):
            if key not in row:
                raise ValueError(f"{path}: result without {key!r}: {row}")
    return data


def plot(data: dict[str, Any], output: Path, *, log_scale: bool = False, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    rows = sorted(data["results"], key=lambda r: (r["kind"] != "file", r["kind"]))
    labels, medians, lows, highs, colours = [], [], [], [], []
    for row in rows:
        runs = row["mb_per_s"]
        labels.append(f"{row['system']}\n({row['kind']})")
        if runs:
            median = statistics.median(runs)
            medians.append(median)
            lows.append(median - min(runs))
            highs.append(max(runs) - median)
        else:
            medians.append(0.0)
            lows.append(0.0)
            highs.append(0.0)
        colours.append(
            "#d62728" if row["system"].startswith("udt ") else "#1f77b4" if row["kind"] == "file" else "#7f7f7f"
        )
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.8))
    positions = list(range(len(rows)))[::-1]
    ax.barh(
        positions, medians, color=colours, xerr=[lows, highs], capsize=4, error_kw={"elinewidth": 1, "ecolor": "black"}
    )
    for pos, row, median in zip(positions, rows, medians):
        for value in row["mb_per_s"]:
            ax.plot(value, pos, "o", color="black", markersize=3, zorder=3)
        if row["mb_per_s"]:
            ax.annotate(f"{median:.0f} MB/s", (median, pos), xytext=(6, -10), textcoords="offset points", fontsize=8)
        else:
            reason = row.get("note") or "no result"
            ax.annotate(
                reason[:90], (0.01, pos), xycoords=("axes fraction", "data"), va="center", fontsize=8, color="#555555"
            )
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("throughput, MB/s (median; whisker min–max; dots: runs)")
    if log_scale:
        ax.set_xscale("log")
    meta = data.get("meta", {})
    ax.set_title(
        title
        or (
            f"loopback bulk transfer — {meta.get('size_text', '?')} files, "
            f"{meta.get('seconds', '?')} s timed runs, {meta.get('runs', '?')} runs, "
            f"MSS {meta.get('mss', '?')} ({meta.get('date', '')})"
        ),
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def plot_wan(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """bench_wan.py's result: per path, throughput and RTT over time of every flow (first run),
    then one chart of bars per path and system (median Mbit/s, whisker min–max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for path in data["paths"]:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
        for record in path["systems"]:
            if not record["runs"]:
                continue
            for flow in record["runs"][0]["flows"]:
                samples = flow["samples"]
                times = [(a["t"] + b["t"]) / 2 for a, b in zip(samples, samples[1:]) if b["t"] > a["t"]]
                rates = [
                    (b["bytes"] - a["bytes"]) * 8 / (b["t"] - a["t"]) / 1e6
                    for a, b in zip(samples, samples[1:])
                    if b["t"] > a["t"]
                ]
                style = "-" if flow["label"].startswith("udt") else "--"
                top.plot(times, rates, style, label=flow["label"], linewidth=1)
                rtt = [(s["t"], s["rtt_ms"]) for s in flow.get("sender_samples", []) if s.get("rtt_ms")]
                if rtt:
                    bottom.plot(*zip(*rtt), style, label=flow["label"], linewidth=1)
        top.axhline(path["rate_mbit"], color="grey", linewidth=0.8, linestyle=":")
        bottom.axhline(path["rtt_ms"], color="grey", linewidth=0.8, linestyle=":")
        top.set_ylabel("Mbit/s (receiver)")
        bottom.set_ylabel("RTT, ms (sender)")
        bottom.set_xlabel("seconds (first run)")
        top.set_title(f"{path['path']}: {path['title']} ({data['meta'].get('date', '')})", fontsize=9)
        top.legend(fontsize=7, loc="lower right")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        target = out_dir / f"wan-{path['path']}.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    systems = list(dict.fromkeys(r["system"] for p in data["paths"] for r in p["systems"]))  # bench order
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(data["paths"]) * len(systems) / 3), 4.5))
    width = 0.8 / max(len(systems), 1)
    for k, system in enumerate(systems):
        xs: list[float] = []
        ys: list[float] = []
        errs: list[list[float]] = [[], []]
        for i, path in enumerate(data["paths"]):
            record = next((r for r in path["systems"] if r["system"] == system), None)
            if record is None or record.get("median_mbit_per_s") is None:
                continue
            xs.append(i + k * width)
            ys.append(record["median_mbit_per_s"])
            errs[0].append(record["median_mbit_per_s"] - record["min_mbit_per_s"])
            errs[1].append(record["max_mbit_per_s"] - record["median_mbit_per_s"])
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=system)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(data["paths"]))])
    ax.set_xticklabels([p["path"] for p in data["paths"]], fontsize=8)
    ax.set_ylabel("Mbit/s (median; whisker min–max)")
    meta = data["meta"]
    ax.set_title(f"long, fat, lossy paths — {meta['runs']} runs of {meta['duration']:g} s ({meta['date']})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    target = out_dir / "wan-bars.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    written.append(target)
    return written


def plot_bars(rows: list[tuple[str, list[float]]], output: Path, *, xlabel: str, title: str) -> None:
    """Horizontal bars of named samples (bench_flood.py, bench_soak.py): the median, a whisker
    from p1 to p99 and every sample as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.6))
    positions = list(range(len(rows)))[::-1]
    for pos, (_label, values) in zip(positions, rows):
        if not values:
            continue
        ordered = sorted(values)
        median = statistics.median(ordered)
        low = ordered[int(0.01 * (len(ordered) - 1))]
        high = ordered[int(round(0.99 * (len(ordered) - 1)))]
        ax.barh(
            pos,
            median,
            color="#d62728" if pos == positions[-1] else "#1f77b4",
            xerr=[[median - low], [high - median]],
            capsize=4,
        )
        ax.plot(ordered, [pos] * len(ordered), "o", color="black", markersize=2, alpha=0.5, zorder=3)
        ax.annotate(f"{median:.2f}", (median, pos), xytext=(6, -12), textcoords="offset points", fontsize=8)
    ax.set_yticks(positions)
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def plot_latency(data: dict[str, Any], output: Path) -> None:
    """bench_latency.py's rows as horizontal bars on a log axis: the median of each (measure,
    system), a whisker out to its p99, a dot per run's median, udt in red, goals as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.8))
    positions = list(range(len(rows)))[::-1]
    medians = [r["median_us"] for r in rows]
    upper = [max(0.0, r["p99_us"] - r["median_us"]) for r in rows]
    colours = ["#d62728" if r["system"] == "udt" else "#7f7f7f" for r in rows]
    ax.barh(positions, medians, color=colours, xerr=[[0.0] * len(rows), upper], capsize=3)
    goals = data.get("meta", {}).get("goals_us", {})
    for pos, row in zip(positions, rows):
        for value in row["run_medians_us"]:
            ax.plot(value, pos, "o", color="black", markersize=3, zorder=3)
        ax.annotate(
            f"{row['median_us']:.0f} µs",
            (row["median_us"], pos),
            xytext=(6, -10),
            textcoords="offset points",
            fontsize=8,
        )
        goal = goals.get(f"{row['measure']}_median")
        if goal and row["system"] == "udt":
            ax.plot(goal, pos, "|", color="green", markersize=18, markeredgewidth=2, zorder=4)
    ax.set_yticks(positions)
    ax.set_yticklabels([f"{r['measure']}: {r['system']}" for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("µs (median; whisker to p99; dots: run medians; green tick: goal)")
    meta = data.get("meta", {})
    ax.set_title(f"loopback latency — {meta.get('runs', '?')} runs ({meta.get('date', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="JSON written by bench/bench_transfer.py or bench_wan.py --json")
    parser.add_argument(
        "-o", "--output", type=Path, help="PNG to write (default: results with .png); for bench_wan.py, a directory"
    )
    parser.add_argument("--log", action="store_true", help="logarithmic throughput axis (TCP dwarfs the rest)")
    parser.add_argument("--title", help="chart title")
    args = parser.parse_args(argv)
    try:
        data = load(args.results)
    except (OSError, ValueError) as exc:
        print(f"benchplot: {exc}", file=sys.stderr)
        return 1
    output = args.output or args.results.with_suffix(".png")
    try:
        if "paths" in data:
            output = args.output or args.results.parent
            output.mkdir(parents=True, exist_ok=True)
            for written in plot_wan(data, output):
                print(written)
            return 0
        if "many" in data:
            plot_latency(data, output)
            print(output)
            return 0
        plot(data, output, log_scale=args.log, title=args.title)
    except ImportError:
        print("benchplot: matplotlib is needed (pip install matplotlib)", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
