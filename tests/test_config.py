"""The typed configuration the socket layer hands to the multiplexer (udt.config)."""

from __future__ import annotations

import dataclasses

import pytest

import udt
from udt.config import ConnectionConfiguration
from udt.options import OPTION_SPECS, SocketOption, defaults


def test_defaults_come_from_the_option_table():
    mirrored = [f for f in dataclasses.fields(ConnectionConfiguration) if "option" in f.metadata]
    assert len(mirrored) == len(dataclasses.fields(ConnectionConfiguration)) - 1  # all but message_mode
    for f in mirrored:
        assert f.default == OPTION_SPECS[f.metadata["option"]].default, f.name


def test_from_options_reads_every_field_and_is_frozen():
    options = defaults()
    options[SocketOption.UDT_MSS] = 9000
    options[SocketOption.UDT_MAXBW] = 12_500_000
    config = ConnectionConfiguration.from_options(options, message_mode=True)
    assert config.mss == 9000 and config.max_bandwidth == 12_500_000 and config.message_mode
    assert config == dataclasses.replace(
        ConnectionConfiguration(), mss=9000, max_bandwidth=12_500_000, message_mode=True
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mss = 1500  # type: ignore[misc]


def test_socket_hands_its_options_over():
    with udt.socket(udt.AF_INET, udt.SOCK_DGRAM) as s:
        s.setsockopt(udt.UDT_FC, 1000)
        config = s._engine_config()
    assert isinstance(config, ConnectionConfiguration)
    assert config.flow_window == 1000 and config.message_mode


def test_mss_limits_are_one_fact_for_the_cli_and_the_socket():
    """``udt-send --mss`` and ``setsockopt(UDT_MSS)`` accept and refuse the same values."""
    from udt.cli._common import parse_mss
    from udt.options import MAX_MSS, MIN_MSS

    assert parse_mss(str(MIN_MSS)) == MIN_MSS
    assert parse_mss(str(MAX_MSS)) == MAX_MSS
    with udt.socket() as s:
        s.setsockopt(udt.UDT_MSS, MAX_MSS)
        s.setsockopt(udt.UDT_MSS, MIN_MSS)
        for bad in (MIN_MSS - 1, MAX_MSS + 1):
            with pytest.raises(ValueError):
                parse_mss(str(bad))
            with pytest.raises(udt.InvalidParameterError):
                s.setsockopt(udt.UDT_MSS, bad)
