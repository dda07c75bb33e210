"""CI check of bench_aio.py: the --quick run (50 connections each way) completes, every
connection's data arrives intact, the client's threads stay few (the worker pool), and the JSON
carries the figures the table shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).with_name("bench_aio.py")


def test_quick_run_all_intact(tmp_path):
    out = tmp_path / "aio.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--size", "256K", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["system"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"udt.aio", "asyncio TCP"}
    for r in results.values():
        assert r["intact"] == r["connections"] == 50
        assert 0 < r["p50_s"] <= r["p90_s"] <= r["max_s"]
        assert r["mib_per_s"] > 0
    # 50 client ports, served by the process-wide worker pool: threads O(cores), not O(ports)
    assert results["udt.aio"]["peak_threads"] <= 2 + 2 * 64
    assert results["udt.aio"]["peak_threads"] < 50
    assert "udt.aio" in proc.stdout and "ratio" in proc.stdout
