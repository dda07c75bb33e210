"""CI check of bench_crypto.py: the --quick run moves every byte with and without a
passphrase, and the JSON carries the figures the table shows (in benchplot's shape)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).with_name("bench_crypto.py")


def test_quick_run_reports_both_rows_and_the_ratio(tmp_path):
    out = tmp_path / "crypto.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    results = {r["system"]: r for r in data["results"]}
    assert set(results) == {"udt plaintext", "udt encrypted"}
    for r in results.values():
        assert len(r["mb_per_s"]) == 1 and r["mb_per_s"][0] > 0
    assert results["udt encrypted"]["connect_ms"][0] > 0
    assert data["ratio"] == results["udt encrypted"]["median_mb_per_s"] / results["udt plaintext"]["median_mb_per_s"]
    assert "encrypted / plaintext" in proc.stdout
