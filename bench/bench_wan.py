#!/usr/bin/env python3
"""Long, fat, lossy paths: udt (each controller) next to TCP bbr/cubic, SRT and UDT4, one run.

    python bench/bench_wan.py [--paths clean,loss1] [--systems udt,bbr] [--duration 20] [--runs 3]
                              [--other-runs 1] [--json FILE] [--plots DIR] [--quick]

Every path is an emulated link between network namespaces (``udt.tools.wan.WanLink``: rate,
one-way delay, 100 ms drop-tail queue, seeded loss both ways; without it, a veth pair with a tbf
rate limit and no delay or loss, said in the output).  Each system moves data memory to memory
for ``--duration`` seconds per run: ``--runs`` runs of the systems a verdict depends on (udt's
default controller or ``--judge CC``, and TCP bbr where a goal is a multiple of it),
``--other-runs`` of every other system (a figure for comparison, not a verdict); runs are
interleaved; the table gives medians with min–max, retransmissions, RTT against the base RTT,
ratios to TCP bbr and to the goal of issue 7 §3, and PASS/FAIL for the judged controller.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _wan_link import EMULATES_PATHS, LINK_BACKEND, close_links_on_sigterm, open_link  # noqa: E402
from _wan_paths import PATHS, WanPath, verdict  # noqa: E402
from _wan_systems import Flow, Skip, System, discover_systems  # noqa: E402

QUICK_PATHS = ["clean"]
QUICK_DURATION = 4.0
ANCHOR_SYSTEM = "TCP bbr"  # the yardstick of some goals: as many runs as udt's default there


def udt_default_name() -> str:
    import udt.cc

    return str(getattr(udt.cc, "DEFAULT_CC", "udt4"))


def runs_of(system: System, path: WanPath, default_system: str, args: argparse.Namespace) -> int:
    """Medians of --runs where a verdict depends on the figure (udt's default everywhere, TCP bbr
    where a goal is a multiple of it), --other-runs elsewhere: the full bench fits in about 15
    minutes on a shared 2-core machine."""
    anchor = system.name == ANCHOR_SYSTEM and (path.goal_bbr is not None or path.kind == "transfer")
    return args.runs if system.name == default_system or anchor else min(args.runs, args.other_runs)


def steady(samples: list[dict[str, Any]], key: str, after: float) -> list[float]:
    return [s[key] for s in samples if s["t"] >= after and s.get(key) is not None]


def summarize(flow: Flow, path: WanPath) -> dict[str, Any]:
    """The figures of one flow's run: Mbit/s, retransmission %, mean RTT (after the first 2 s)."""
    out: dict[str, Any] = {
        "mbit_per_s": flow.mbit_per_s,
        "bytes": flow.bytes,
        "seconds": flow.seconds,
        "retrans_pct": flow.retrans_pct(after=2.0),
        "rtt_mean_ms": None,
        "samples": flow.samples,
        "sender_samples": flow.sender_samples,
    }
    rtts = steady(flow.sender_samples, "rtt_ms", 2.0)
    if rtts:
        out["rtt_mean_ms"] = statistics.fmean(rtts)
        out["rtt_over_base"] = out["rtt_mean_ms"] / path.base_rtt_ms
    return out


def run_once(path: WanPath, system: System, duration: float, seed: int, work: Path) -> dict[str, Any]:
    """One run of ``system`` on ``path`` with a fresh link; returns the run record."""
    with open_link(path, seed=seed, senders=path.flows) as link:
        flows = system.start(link, path, duration, work)
        link.flows_started()
        for flow in flows:
            flow.wait(timeout=duration + 90)
        counters = link.counters()
        udp = link.udp_counters() if hasattr(link, "udp_counters") else {}
    return {
        "seed": seed,
        "flows": [{"label": f.label, **summarize(f, path)} for f in flows],
        "link": counters,
        # a receiving socket's overflow drops happen after the link: only the kernel counts them
        "udp_rcvbuf_errors": {side: c.get("RcvbufErrors") for side, c in udp.items()},
    }


def aggregate(record: dict[str, Any]) -> None:
    """Medians over the runs, from each run's first flow (or the flows' sum on shared paths)."""
    values = [sum(f["mbit_per_s"] for f in run["flows"]) for run in record["runs"]]
    if values:
        record["median_mbit_per_s"] = statistics.median(values)
        record["min_mbit_per_s"] = min(values)
        record["max_mbit_per_s"] = max(values)
    for key in ("retrans_pct", "rtt_mean_ms", "seconds"):
        got = [run["flows"][0][key] for run in record["runs"] if run["flows"][0].get(key) is not None]
        record[f"median_{key}"] = statistics.median(got) if got else None


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def path_table(path: WanPath, records: list[dict[str, Any]], default_system: str) -> str:
    bbr = next((r for r in records if r["system"] == "TCP bbr" and r.get("median_mbit_per_s")), None)
    completion = path.kind == "transfer"
    head = (
        "| system | "
        + ("completion s" if completion else "Mbit/s")
        + (" | min–max | retrans % | RTT / base | × TCP bbr | × goal | verdict |")
    )
    lines = [f"### {path.name}: {path.title}", "", head, "|" + "---|" * 8]
    for record in records:
        if not record["runs"]:
            lines.append(f"| {record['system']} | — | — | — | — | — | — | {record.get('note', '')} |")
            continue
        if completion:
            main_value = record["median_seconds"]
            spread_vals = [run["flows"][0]["seconds"] for run in record["runs"]]
            ratio_bbr = bbr["median_seconds"] / main_value if bbr and bbr.get("median_seconds") and main_value else None
        else:
            main_value = record["median_mbit_per_s"]
            spread_vals = [sum(f["mbit_per_s"] for f in run["flows"]) for run in record["runs"]]
            ratio_bbr = main_value / bbr["median_mbit_per_s"] if bbr else None
        rtt = record.get("median_rtt_mean_ms")
        result = verdict(path, record, bbr) if record["system"] == default_system else None
        if result is not None and not EMULATES_PATHS:
            result = dict(result, text=f"({result['text']}: tbf link, not the path)")
        record["verdict"] = result
        goal_ratio = result["goal_ratio"] if result else None
        digits = ".2f" if completion else ".1f"
        shown = fmt(main_value, digits)
        if path.flows > 1:  # each flow's median, then their sum's spread
            per_flow = [statistics.median(run["flows"][k]["mbit_per_s"] for run in record["runs"]) for k in range(2)]
            shown = " + ".join(f"{v:.1f}" for v in per_flow)
        lines.append(
            f"| {record['system']} | {shown} | "
            f"{min(spread_vals):{digits}}–{max(spread_vals):{digits}} | "
            f"{fmt(record.get('median_retrans_pct'), '.2f')} | "
            f"{fmt(rtt / path.base_rtt_ms if rtt else None, '.2f')} | {fmt(ratio_bbr, '.2f')} | "
            f"{fmt(goal_ratio, '.2f')} | {(result['text'] if result else '')} |"
        )
    lines.append("")
    judged = "udt's default" if default_system.endswith(udt_default_name()) else "the judged controller"
    lines.append(f"goal for {judged} ({default_system}): {path.goal}")
    notes = [f"- {r['system']}: {r['note']}" for r in records if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", help="comma-separated path names (default: all): " + ",".join(PATHS))
    parser.add_argument("--systems", help="comma-separated substrings of system names (default: all)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per run (default 20, the length of issue 7's own runs)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of udt's default and TCP bbr per path (default 3; median)"
    )
    parser.add_argument("--other-runs", type=int, default=1, help="runs of every other system per path (default 1)")
    parser.add_argument(
        "--judge",
        metavar="CC",
        help="udt controller the goals judge (default: udt.cc.DEFAULT_CC), e.g. a candidate for the default",
    )
    parser.add_argument("--json", metavar="FILE", help="write raw results (samples included) here")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots here (udt.tools.benchplot)")
    parser.add_argument("--quick", action="store_true", help=f"CI smoke run: path clean, 1 run of {QUICK_DURATION:g} s")
    args = parser.parse_args(argv)
    if args.quick:
        args.paths = args.paths or ",".join(QUICK_PATHS)
        args.runs, args.duration = 1, QUICK_DURATION
    names = [n.strip() for n in (args.paths or ",".join(PATHS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    args.path_names = names
    if args.runs < 1 or args.other_runs < 1 or args.duration <= 0:
        parser.error("--runs and --other-runs must be ≥ 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    close_links_on_sigterm()
    wanted = [w.strip().lower() for w in args.systems.split(",")] if args.systems else None
    systems, skipped, default_system = discover_systems(wanted)
    if args.judge:
        default_system = f"udt {args.judge}"
        if default_system not in [s.name for s in systems]:
            raise SystemExit(
                f"bench_wan: --judge {args.judge}: no such udt controller among {[s.name for s in systems]}"
            )
    paths = [PATHS[name] for name in args.path_names]
    planned = sum(
        path.duration(args.duration) * sum(runs_of(s, path, default_system, args) for s in systems if s.runs_on(path))
        for path in paths
    )
    print(
        f"# long, fat, lossy paths: {len(paths)} path(s), {args.runs} run(s) of {args.duration:g} s "
        f"({min(args.runs, args.other_runs)} of systems no goal depends on), "
        f"link {LINK_BACKEND}; about {planned * 1.25 / 60:.1f} min",
        flush=True,
    )
    for name, reason in skipped:
        print(f"  skipped {name}: {reason}", flush=True)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="udt-benchwan-", dir=os.environ.get("UDT_BENCH_DIR")) as tmp:
        work = Path(tmp)
        for path in paths:
            records = [{"system": s.name, "runs": [], "note": ""} for s in systems if s.runs_on(path)]
            active = [s for s in systems if s.runs_on(path)]
            duration = path.duration(args.duration)
            for run in range(args.runs):  # interleaved: load bursts hit every system alike
                for system, record in zip(active, records):
                    if record["note"] or run >= runs_of(system, path, default_system, args):
                        continue
                    try:
                        result = run_once(path, system, duration, seed=run + 1, work=work)
                    except Skip as exc:
                        record["note"] = f"skipped: {exc}"
                        continue
                    except Exception as exc:  # one failing system must not hide the others
                        record["note"] = f"run {run + 1} failed: {exc}".replace("\n", " ")[:300]
                        continue
                    record["runs"].append(result)
                    rate = sum(f["mbit_per_s"] for f in result["flows"])
                    print(f"  {path.name} run {run + 1}: {system.name}: {rate:.1f} Mbit/s", flush=True)
            for record in records:
                aggregate(record)
            print()
            print(path_table(path, records, default_system))
            print(flush=True)
            results.append({"path": path.name, "title": path.title, **path.describe(), "systems": records})
    elapsed = time.monotonic() - started
    print(f"# {elapsed / 60:.1f} min in all", flush=True)
    data = {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "runs": args.runs,
            "other_runs": min(args.runs, args.other_runs),
            "duration": args.duration,
            "link": LINK_BACKEND,
            "default_system": default_system,
            "skipped": [{"system": n, "reason": r} for n, r in skipped],
            "seconds": round(elapsed, 1),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "paths": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        print(f"raw results: {args.json}")
    if args.plots:
        from udt.tools import benchplot

        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        try:
            for written in benchplot.plot_wan(data, out):
                print(f"plot: {written}")
        except ImportError:
            print("plots skipped: matplotlib is needed (pip install matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
