"""CI check of bench_flood.py: the --quick run floods the sink at 50k datagrams/s, every client
connects and arrives sha256-intact, and the JSON and the table carry the figures."""

from __future__ import annotations

import pytest

from udt.tools.flood import raw_sockets_available

_REASON = raw_sockets_available()


@pytest.mark.slow
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_quick_run_all_intact(run_bench):
    data, stdout = run_bench("bench_flood.py", "--size", "64K")
    (run,) = data["runs"]
    assert run["intact"] == run["clients"] == 3 + 2 * 12
    assert run["flood_rate"] > 40_000 and run["flood_sent"] > 0
    assert run["reply_bytes"] <= run["request_bytes"] and run["replies"] > 0
    assert run["invalid_cookie"] > 0 and run["accepted"] == run["clients"]
    assert run["ratio"] > 0 and 0 <= run["cpu_share"] <= 2
    assert "ratio flood/unloaded" in stdout and "amplification" in stdout
