"""CI check of bench_soak.py: the --quick soak (18 s under a 50k/s flood, clients direct and
through loss, some killed) loses nothing and leaves no thread, fd or memory growth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from udt.tools.flood import raw_sockets_available

BENCH = Path(__file__).with_name("bench_soak.py")
_REASON = raw_sockets_available()


@pytest.mark.slow
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_quick_soak_loses_nothing_and_grows_nothing(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["ok"] and r["mismatches"] == 0 and r["failures"] == []
    assert r["direct_ok"] > 0 and r["lossy_ok"] > 0 and r["killed"] > 0 and r["relay_lost"] > 0
    assert r["flood_rate"] > 40_000
    assert r["threads"][1] <= r["threads"][0] and r["fds"][1] <= r["fds"][0]
    assert not any(r["grew"].values())
    assert "nothing lost, nothing grew" in proc.stdout
