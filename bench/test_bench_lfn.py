"""bench_lfn.py's reading of the udt sender's samples: which limit a slow interval hit."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_lfn  # noqa: E402

PAYLOAD = 1456


def sample(t: float, sent: int, **fields: float) -> dict[str, float]:
    """A sender sample at 80,000 packets/s pacing with 20,000 packets unsent, nothing limiting."""
    base = {
        "t": t,
        "sent": sent,
        "period_us": 12.5,
        "cwnd": 40_000,
        "flow_window": 64_000,
        "flight": 10_000,
        "snd_data": 30_000 * PAYLOAD,
        "snd_buf_avail": 30_000 * PAYLOAD,
        "cpu_wait_s": 0.0,
    }
    base.update(fields)
    return base


def test_an_interval_at_the_pacing_rate_is_not_slow():
    assert bench_lfn.slow_reason(sample(1.0, 0), sample(1.5, 40_000)) is None


def test_each_limit_is_named():
    slow = 5_000  # 10,000 packets/s against 80,000 paced
    cases = {
        "flow window": {"flight": 60_000},
        "cwnd": {"flight": 39_000},
        "send buffer": {
            "flight": 64_000,
            "flow_window": 80_000,
            "cwnd": 80_000,
            "snd_data": 64_500 * PAYLOAD,
            "snd_buf_avail": 100 * PAYLOAD,
        },
        "writer": {"snd_data": 10_500 * PAYLOAD},
        "cpu": {"cpu_wait_s": 0.4},
        "other": {},
    }
    for reason, fields in cases.items():
        assert bench_lfn.slow_reason(sample(1.0, 0), sample(1.5, slow, **fields)) == reason, reason


def test_intervals_are_counted_after_the_ramp_only():
    samples = [sample(t / 2, int(40_000 * t)) for t in range(8)]  # at the pacing rate
    samples[5]["sent"] = samples[4]["sent"]  # 2.0 -> 2.5 s: nothing sent, before the ramp ends
    samples[7]["sent"] = samples[6]["sent"] + 1  # 3.0 -> 3.5 s: next to nothing
    assert bench_lfn.slow_intervals(samples, after_t=2.5) == {"intervals": 2, "other": 1}
