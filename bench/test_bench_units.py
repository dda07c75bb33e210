"""pytest-benchmark guards of the engine's hot units, each a loop in C without the GIL
(``udt._testing.unit_benchmark``) so that a timing is the unit's, not the Python call's:

- codec: a data header and a handshake encoded and decoded (per packet);
- losslist: eight NAK ranges inserted, one retransmitted, one removed, the rest acknowledged;
- sndbuf: 64 packets of 1456 bytes copied into the send buffer and released by an ACK;
- cc: the native DAIMD's reaction to a full ACK, and to a NAK every 16th round;
- engine: two engines back to back moving 4 MB (every per-packet path, both rings' copies).

    python -m pytest bench/test_bench_units.py --benchmark-only    # timings
    python -m pytest bench/test_bench_units.py --benchmark-disable  # just check they run

Compare a change with ``--benchmark-save``/``--benchmark-compare`` on the same machine.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_benchmark")

from udt import _testing  # noqa: E402

ROUNDS = 10_000  # fixed rounds (pedantic) keep the whole file under a second in a normal run


@pytest.mark.parametrize("unit", ["codec", "losslist", "sndbuf", "cc"])
def test_unit(benchmark, unit):
    first = _testing.unit_benchmark(unit, ROUNDS)
    assert first == _testing.unit_benchmark(unit, ROUNDS)  # deterministic work
    assert benchmark.pedantic(_testing.unit_benchmark, (unit, ROUNDS), rounds=50, warmup_rounds=2) == first


def test_engine_pair(benchmark):
    result = benchmark.pedantic(_testing.engine_benchmark, (4_000_000,), rounds=20, warmup_rounds=1)
    assert result["bytes"] >= 4_000_000 and result["data_packets"] >= 4_000_000 // 1456


def test_unknown_unit_and_bad_rounds():
    with pytest.raises(ValueError, match="unknown unit"):
        _testing.unit_benchmark("nope")
    with pytest.raises(ValueError, match="rounds"):
        _testing.unit_benchmark("codec", -1)
