"""CI check of bench_crypto.py: the --quick run moves every byte with and without a
passphrase, and the JSON carries the figures the table shows (in benchplot's shape)."""

from __future__ import annotations


def test_quick_run_reports_both_rows_and_the_ratio(run_bench):
    data, stdout = run_bench("bench_crypto.py")
    results = {r["system"]: r for r in data["results"]}
    assert set(results) == {"udt plaintext", "udt encrypted"}
    for r in results.values():
        assert len(r["mb_per_s"]) == 1 and r["mb_per_s"][0] > 0
    assert results["udt encrypted"]["connect_ms"][0] > 0
    assert data["ratio"] == results["udt encrypted"]["median_mb_per_s"] / results["udt plaintext"]["median_mb_per_s"]
    assert "encrypted / plaintext" in stdout
