"""CI check of bench_transfer.py: a --quick run of udt's two rows and raw UDP completes, both udt
transfers are sha256-verified (the script raises otherwise), and the table and the JSON carry
the rate and the CPU seconds per GB of each run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).with_name("bench_transfer.py")


@pytest.mark.slow
def test_quick_run_reports_rate_and_cpu(tmp_path):
    out = tmp_path / "transfer.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--size",
            "16M",
            "--only",
            "udt udt-send,udt memory,raw udp",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "UDT_BENCH_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["system"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {
        "udt udt-send → udt-recv",
        "udt memory mode (--mem)",
        "udt udt-send → udt-recv, --mss auto",
        "udt memory mode (--mem), --mss auto",
        "raw UDP, Python sendto/recvfrom_into",
    }
    for r in results.values():
        assert not r["note"], r["note"]
        assert len(r["mb_per_s"]) == len(r["cpu_s_per_gb"]) == 1
        assert r["median_mb_per_s"] > 0 and r["median_cpu_s_per_gb"] > 0
    assert "CPU s/GB" in proc.stdout and "CPU × udt" in proc.stdout
