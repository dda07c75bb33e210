"""CI check of bench_latency.py: the --quick run completes, the many-connections row arrives
intact, every latency row has sane figures and ratios against its anchors, the JSON carries
them and the PNG is drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).with_name("bench_latency.py")


def test_quick_run(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (pip install -e '.[bench]')")
    out, png = tmp_path / "latency.json", tmp_path / "latency.png"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out), "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    rows = {(r["measure"], r["system"]): r for r in data["results"]}
    assert set(rows) == {
        ("pingpong", "udt"),
        ("pingpong", "TCP"),
        ("pingpong", "UDP"),
        ("connect", "udt"),
        ("connect", "TCP"),
        ("close", "udt"),
        ("close", "TCP"),
    }
    for row in rows.values():
        assert 0 < row["median_us"] <= row["p99_us"]
        assert row["samples"] > 0
        assert row["ratio_vs_tcp"] > 0
    assert rows[("pingpong", "TCP")]["ratio_vs_tcp"] == 1.0
    assert rows[("pingpong", "udt")]["ratio_vs_udp"] > 0
    assert rows[("close", "udt")]["sequential_total_s"] > 0
    for many in data["many"]:
        assert many["intact"] == many["connections"] == 50
        assert many["mib_per_s"] > 0
    assert png.stat().st_size > 1000
    assert "| pingpong | udt |" in proc.stdout and "× TCP" in proc.stdout
