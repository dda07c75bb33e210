"""CI check of bench_aio.py: the --quick run (50 connections each way) completes, every
connection's data arrives intact, the client's threads stay few (the worker pool), and the JSON
carries the figures the table shows."""

from __future__ import annotations


def test_quick_run_all_intact(run_bench):
    data, stdout = run_bench("bench_aio.py", "--size", "256K")
    results = {r["system"]: r for r in data["results"]}
    assert set(results) == {"udt.aio", "asyncio TCP"}
    for r in results.values():
        assert r["intact"] == r["connections"] == 50
        assert 0 < r["p50_s"] <= r["p90_s"] <= r["max_s"]
        assert r["mib_per_s"] > 0
    # 50 client ports, served by the process-wide worker pool: threads O(cores), not O(ports)
    assert results["udt.aio"]["peak_threads"] <= 2 + 2 * 64
    assert results["udt.aio"]["peak_threads"] < 50
    assert "udt.aio" in stdout and "ratio" in stdout
