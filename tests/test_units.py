"""One parser for rates and sizes (udt.units), one meaning in every CLI and tool."""

from __future__ import annotations

import pytest

from udt.units import parse_rate_bps, parse_rate_bytes_per_s, parse_size


@pytest.mark.parametrize(
    "text,bits",
    [
        ("100Mbps", 100e6),
        ("100mbps", 100e6),
        ("100MBPS", 100e6),
        ("100mbit", 100e6),
        ("100Mbit/s", 100e6),
        ("1gbit", 1e9),
        ("1Gbps", 1e9),
        ("500kbit", 500e3),
        ("64kbps", 64e3),
        ("9600bps", 9600),
        ("1e3bit", 1000),
        ("100 Mbps", 100e6),
        ("2bits/s", 2),
        ("12.5MB/s", 100e6),
        ("1kB/s", 8000),
        ("1KB/s", 8000),
        ("10B/s", 80),
        ("1MiB/s", 8 << 20),
        ("1GB/s", 8e9),
    ],
)
def test_rates(text, bits):
    assert parse_rate_bps(text) == pytest.approx(bits)


def test_the_8x_trap_is_gone():
    """tc reads 100mbps as megabytes/s; udt-send's --max-bw read it as megabits. Now both do."""
    assert parse_rate_bps("100mbps") == parse_rate_bps("100mbit") == 100e6
    assert parse_rate_bytes_per_s("100mbps") == parse_rate_bytes_per_s("12.5MB/s") == 12_500_000


@pytest.mark.parametrize("text", ["100", "100M", "100m", "100MB", "100mb", "100MBps", "100Mb/s", "100MiB", "0.1"])
def test_ambiguous_rates_are_refused_with_both_spellings(text):
    with pytest.raises(ValueError, match="ambiguous") as raised:
        parse_rate_bps(text)
    assert "B/s" in str(raised.value)


@pytest.mark.parametrize("text", ["", "fast", "10X", "-5Mbps", "0bps", "1 0Mbps", "Mbps"])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError):
        parse_rate_bps(text)


def test_bytes_per_second_for_udt_maxbw():
    assert parse_rate_bytes_per_s("800Mbit") == 100_000_000
    with pytest.raises(ValueError, match="below 1 byte/s"):
        parse_rate_bytes_per_s("4bps")


@pytest.mark.parametrize(
    "text,size",
    [
        ("4096", 4096),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("10GB", 10 * 10**9),
        ("1.5K", 1536),
        ("256KB", 256_000),
        ("1mib", 1 << 20),
        ("4000B", 4000),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1K", "10X", "1Mbps"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)
