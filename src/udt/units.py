"""Rates and sizes as people type them, with one meaning in every CLI and tool.

Rates are **bits** per second unless the unit spells bytes per second with a capital ``B`` and
``/s``.  Bits: ``bps kbps Mbps Gbps Tbps`` and ``bit kbit mbit gbit tbit`` (any case, ``bits``
and a trailing ``/s`` allowed: ``Mbit/s``).  Bytes: ``B/s kB/s MB/s GB/s TB/s`` (powers of 1000)
and ``KiB/s MiB/s GiB/s TiB/s`` (powers of 1024).  Forms that people read both ways are refused
with a message saying how to write either meaning: a bare number (``100``), a bare prefix
(``100M``), a size without ``/s`` (``100MB``), ``MBps`` and ``Mb/s``.  (``tc`` reads ``mbps`` as
mega*bytes*; here it is megabits, like everywhere else on a network.)

Sizes (``parse_size``): ``K M G T`` and ``KiB MiB GiB TiB`` are powers of 1024, ``KB MB GB TB``
powers of 1000, any case; a bare number is bytes.
"""

from __future__ import annotations

import re

__all__ = ["RATES_HELP", "SIZES_HELP", "parse_rate_bps", "parse_rate_bytes_per_s", "parse_size"]

RATES_HELP = (
    "rates are bits/s: 100Mbps, 100mbit, 1Gbit/s; bytes/s only as B/s: 12.5MB/s, 10MiB/s "
    "(100M, 100MB and MBps are refused as ambiguous)"
)
SIZES_HELP = "sizes: K, M, G, T and KiB... are powers of 1024 (1G = 1 GiB), KB, MB, GB, TB powers of 1000"

_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?\s*([A-Za-z/]*)\s*")
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
_BIT_UNITS = {
    prefix + suffix: scale for prefix, scale in _DECIMAL.items() for suffix in ("bps", "bit", "bits", "bit/s", "bits/s")
}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    **{prefix + "b": scale for prefix, scale in _BINARY.items()},
    **{prefix + "b": scale for prefix, scale in _DECIMAL.items() if prefix},
}


def _split(text: str, what: str, examples: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.fullmatch(text)
    if not match:
        raise ValueError(f"invalid {what} {text!r} (examples: {examples})")
    number = float(match.group(1)) * (10.0 ** int(match.group(2)) if match.group(2) else 1.0)
    return number, match.group(3)


def parse_rate_bps(text: str) -> float:
    """A rate in **bits per second**: ``"100Mbps"`` → 1e8, ``"12.5MB/s"`` → 1e8 (module doc)."""
    number, unit = _split(text, "rate", "100Mbps, 1Gbit, 12.5MB/s")
    if unit.endswith("B/s") and unit[:-3].lower() in _DECIMAL:
        bits = number * 8 * _DECIMAL[unit[:-3].lower()]
    elif unit.endswith("B/s") and unit[:-3].lower() in _BINARY:
        bits = number * 8 * _BINARY[unit[:-3].lower()]
    elif unit.lower() in _BIT_UNITS and not unit.endswith("Bps"):
        bits = number * _BIT_UNITS[unit.lower()]
    elif (prefix := _ambiguous_prefix(unit)) is not None:
        shown = prefix if prefix in ("", "k") else prefix[0].upper() + prefix[1:]
        bits_form = f"{number:g}{shown}bps for bits/s or " if prefix in _DECIMAL else ""
        raise ValueError(f"ambiguous rate {text!r}: write {bits_form}{number:g}{shown}B/s for bytes/s")
    else:
        raise ValueError(f"invalid rate {text!r} (examples: 100Mbps, 1Gbit, 12.5MB/s)")
    if not bits > 0:
        raise ValueError(f"rate {text!r} must be above 0")
    return bits


def _ambiguous_prefix(unit: str) -> str | None:
    """The SI/IEC prefix of a rate unit read both as bits and bytes (``M``, ``MB``, ``Mb/s``...)."""
    lowered = unit.lower()
    for tail in ("b/s", "bps", "b", ""):
        if lowered.endswith(tail):
            prefix = lowered[: len(lowered) - len(tail)]
            if prefix in _DECIMAL or prefix in _BINARY:
                return prefix
    return None


def parse_rate_bytes_per_s(text: str) -> int:
    """A rate in **bytes per second** (what ``UDT_MAXBW`` takes): ``"800Mbps"`` → 100_000_000."""
    value = int(parse_rate_bps(text) / 8)
    if value < 1:
        raise ValueError(f"rate {text!r} is below 1 byte/s")
    return value


def parse_size(text: str) -> int:
    """A size in bytes: ``"64M"`` → 67108864, ``"10GB"`` → 10**10, ``"4096"`` → 4096."""
    number, unit = _split(text, "size", "4096, 64M, 1G, 10GB")
    if unit.lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r} (examples: 4096, 64M, 1G, 10GB)")
    return int(number * _SIZE_UNITS[unit.lower()])
