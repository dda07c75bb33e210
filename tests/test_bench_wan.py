"""bench/bench_wan.py works: its quick mode runs every installed system through the emulated link
and writes the JSON (and plots) it promises.  How fast anything is, is not checked here."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from netns import require_netns

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def paths_module():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_wan_paths")
    finally:
        sys.path.remove(str(BENCH))


def _samples(rate_mbit: float, seconds: float) -> list[dict[str, float]]:
    step = 0.25
    return [{"t": i * step, "bytes": int(rate_mbit * 1e6 / 8 * i * step)} for i in range(int(seconds / step) + 1)]


def test_window_rate_and_verdicts(paths_module):
    """The goal checks read the samples right: a flow at 190 of 200 Mbit/s passes the clean
    path's rate goal, one at 100 fails it, and an unequal pair fails the fairness goal."""
    wan = paths_module
    assert wan.window_mbit(_samples(190, 10), 2, 10) == pytest.approx(190, rel=0.01)
    clean = wan.PATHS["clean"]
    good = {"median_mbit_per_s": 190.0, "median_retrans_pct": 0.2, "median_rtt_mean_ms": 110.0, "runs": [{}]}
    assert wan.verdict(clean, good, None)["pass"]
    slow = dict(good, median_mbit_per_s=100.0)
    result = wan.verdict(clean, slow, None)
    assert not result["pass"] and "100 ≥ 180" in result["text"]
    pair = wan.PATHS["fair2"]
    run = {"flows": [{"samples": _samples(150, 20)}, {"samples": _samples(40, 20)}]}
    unfair = {"median_mbit_per_s": 190.0, "runs": [run]}
    assert not wan.verdict(pair, unfair, None)["pass"]
    assert unfair["shares_mbit"][0] == [pytest.approx(150, rel=0.02), pytest.approx(40, rel=0.02)]
    bbr = {"median_mbit_per_s": 100.0}
    loss = wan.PATHS["loss1"]
    assert wan.verdict(loss, dict(good, median_mbit_per_s=165.0), bbr)["pass"]
    assert not wan.verdict(loss, dict(good, median_mbit_per_s=150.0), bbr)["pass"]  # under 160 Mbit/s
    assert not wan.verdict(loss, dict(good, median_mbit_per_s=170.0), {"median_mbit_per_s": 150.0})["pass"]


def test_runs_go_where_a_verdict_needs_them(paths_module):
    """The trimmed schedule: medians of --runs for the judged controller on every path and for TCP
    bbr where a goal is a multiple of it; one run of everything else; the full bench about 15 min."""
    bench = importlib.import_module("bench_wan")
    args = bench.parse_args([])
    judged, tcp, other = (SimpleNamespace(name=n) for n in ("udt bbr", "TCP bbr", "TCP cubic"))
    paths = paths_module.PATHS
    assert bench.runs_of(judged, paths["clean"], "udt bbr", args) == 3
    assert bench.runs_of(tcp, paths["loss1"], "udt bbr", args) == 3  # ≥ 1.4 × TCP bbr
    assert bench.runs_of(tcp, paths["transfer10m"], "udt bbr", args) == 3
    assert bench.runs_of(tcp, paths["clean"], "udt bbr", args) == 1
    assert bench.runs_of(other, paths["loss1"], "udt bbr", args) == 1
    assert bench.runs_of(other, paths["loss1"], "udt bbr", bench.parse_args(["--runs", "1", "--other-runs", "2"])) == 1


@pytest.mark.slow
@pytest.mark.netns
def test_quick_mode_moves_data(tmp_path):
    require_netns()
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 not installed (the TCP baselines need it)")
    out = tmp_path / "wan.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_wan.py"), "--quick", "--json", str(out), "--plots", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [p["path"] for p in data["paths"]] == ["clean"]
    records = {r["system"]: r for r in data["paths"][0]["systems"]}
    skipped = {s["system"] for s in data["meta"]["skipped"]}
    default = data["meta"]["default_system"]
    assert default in records
    for name in ("TCP bbr", "TCP cubic", "SRT file mode", "UDT4 (udt4py)"):
        assert name in records or name in skipped, f"{name} neither run nor reported skipped"
    for name, record in records.items():
        assert record["runs"] or record["note"], f"{name}: no run and no reason"
    udt_run = records[default]["runs"]
    assert udt_run and not records[default]["note"], records[default]["note"]
    flow = udt_run[0]["flows"][0]
    assert flow["bytes"] > 1_000_000 and flow["mbit_per_s"] > 0
    assert flow["sender_samples"] and flow["samples"][-1]["bytes"] > 0
    assert "| system |" in proc.stdout and "### clean" in proc.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "wan-clean.png").stat().st_size > 0 and (tmp_path / "wan-bars.png").stat().st_size > 0
