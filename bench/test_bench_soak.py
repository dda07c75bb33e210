"""CI check of bench_soak.py: the --quick soak (18 s under a 50k/s flood, clients direct and
through loss, some killed) loses nothing and leaves no thread, fd or memory growth."""

from __future__ import annotations

import pytest

from udt.tools.flood import raw_sockets_available

_REASON = raw_sockets_available()


@pytest.mark.slow
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_quick_soak_loses_nothing_and_grows_nothing(run_bench):
    r, stdout = run_bench("bench_soak.py")
    assert r["ok"] and r["mismatches"] == 0 and r["failures"] == []
    assert r["direct_ok"] > 0 and r["lossy_ok"] > 0 and r["killed"] > 0 and r["relay_lost"] > 0
    assert r["flood_rate"] > 40_000
    assert r["threads"][1] <= r["threads"][0] and r["fds"][1] <= r["fds"][0]
    assert not any(r["grew"].values())
    assert "nothing lost, nothing grew" in stdout
