"""Real udt connections on loopback through the impairment relay (udt.tools.impair, in its own
process): every scenario moves 50 MB, compares sha256 end to end, and checks from the relay's
counters that the impairment really happened and from perfmon that udt recovered from it.

The kernel has no netem; this relay is how these tests make a bad network.  Throughput is
printed (``-s``) but never asserted: speed lives in bench/.
"""

from __future__ import annotations

import threading
import time

import pytest

import udt
import udt.cc
from pattern_io import pattern_message_sizes, receive_pattern, send_pattern
from udt.tools.impair import GilbertElliott, Impairment, Relay

pytestmark = pytest.mark.slow

LOCALHOST = "127.0.0.1"
NBYTES = 50_000_000
MESSAGE = 65_536  # message size of the SOCK_DGRAM scenario

SCENARIOS = {
    "loss_1pct": (Impairment(loss=0.01), Impairment(loss=0.01)),
    "loss_5pct": (Impairment(loss=0.05), Impairment(loss=0.05)),
    "loss_20pct": (Impairment(loss=0.20), Impairment(loss=0.20)),
    "bursty_loss": (
        Impairment(burst=GilbertElliott.from_loss(0.05, 8)),
        Impairment(burst=GilbertElliott.from_loss(0.01, 4)),
    ),
    "reordering": (Impairment(reorder=0.05, reorder_distance=4), Impairment(reorder=0.02)),
    "duplication": (Impairment(duplicate=0.05), Impairment(duplicate=0.05)),
    "all_on_a_20ms_path": (
        Impairment(
            delay=0.010, jitter=0.002, loss=0.02, reorder=0.02, duplicate=0.02, burst=GilbertElliott.from_loss(0.01, 4)
        ),
        Impairment(delay=0.010, loss=0.02, duplicate=0.02),
    ),
}


def _send(sock, kind: int, result: dict) -> None:
    try:
        result["sha256"] = send_pattern(sock, kind == udt.SOCK_DGRAM, NBYTES, msg_size=MESSAGE, seed=11)
        deadline = time.monotonic() + 240
        while sock.getsockopt(udt.UDT_SNDDATA) and time.monotonic() < deadline:
            time.sleep(0.01)  # everything acknowledged: the counters are final
        result["perfmon"] = sock.perfmon()
        sock.close()
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        result["error"] = exc


def transfer_through(
    a_to_b: Impairment, b_to_a: Impairment, kind: int = udt.SOCK_STREAM, seed: int = 5, cc: str = udt.cc.DEFAULT_CC
):
    """Move NBYTES from a client to a server through the relay; returns what both ends saw."""
    server = udt.create_server((LOCALHOST, 0), type=kind)
    try:
        server.settimeout(30)
        with Relay(server.getsockname(), a_to_b=a_to_b, b_to_a=b_to_a, seed=seed, process=True) as relay:
            started = time.monotonic()
            # a fixed MSS: loopback's 64 KiB MTU would let discovery cut the packet count 45-fold,
            # and these scenarios are about many packets meeting the impairment (as on a WAN)
            options = {udt.UDT_CC: cc, udt.UDT_MSS: 1500}
            client = udt.create_connection(relay.address, timeout=20, type=kind, options=options)
            client.settimeout(240)
            conn, _ = server.accept()
            sent: dict = {}
            sender = threading.Thread(target=_send, args=(client, kind, sent), name="udt-test-sender")
            sender.start()
            try:
                with conn:
                    conn.settimeout(240)
                    total, digest, sizes = receive_pattern(conn, kind == udt.SOCK_DGRAM)
                    received = conn.perfmon()
            finally:
                sender.join(300)
                client.close()
            elapsed = time.monotonic() - started
            stats = relay.stats()
    finally:
        server.close()
    assert "error" not in sent, sent.get("error")
    print(f"\n{total / elapsed / 1e6:.1f} MB/s over {elapsed:.1f} s; relay a->b {stats.a_to_b}")
    return total, digest, sizes, sent, received, stats


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stream_survives_the_impairment_byte_identical(name):
    a_to_b, b_to_a = SCENARIOS[name]
    total, digest, _, sent, received, stats = transfer_through(a_to_b, b_to_a)
    assert total == NBYTES and digest == sent["sha256"]
    forward = stats.a_to_b
    if a_to_b.loss or a_to_b.burst:
        lost = forward.dropped_loss
        assert lost > (0.5 * a_to_b.loss * forward.received if a_to_b.loss else 100)
        assert sent["perfmon"]["pkt_retrans_total"] >= 0.5 * lost  # loss was repaired
        assert received["pkt_rcv_loss_total"] > 0
    if a_to_b.reorder:
        assert forward.reordered > 0.5 * a_to_b.reorder * forward.received
    if a_to_b.duplicate:
        assert forward.duplicated > 0.5 * a_to_b.duplicate * forward.received
        assert received["pkt_duplicate_total"] > 0  # seen, and dropped
    assert received["invalid_total"] == 0  # impairment is not garbage: nothing invalid


@pytest.mark.slow
def test_bbr_through_random_loss_is_byte_identical():
    """bbr as the sender through 3 % loss and 10 ms each way: every loss repaired, and repaired
    about once (a model that read the loss as a congestion collapse would time out instead)."""
    link = Impairment(delay=0.010, loss=0.03)
    total, digest, _, sent, _, stats = transfer_through(link, link, cc="bbr")
    assert total == NBYTES and digest == sent["sha256"]
    lost = stats.a_to_b.dropped_loss
    assert 0.5 * lost <= sent["perfmon"]["pkt_retrans_total"] < 3 * lost


def test_message_mode_keeps_boundaries_through_loss():
    total, digest, sizes, sent, _, stats = transfer_through(
        Impairment(loss=0.05, reorder=0.02), Impairment(loss=0.05), kind=udt.SOCK_DGRAM
    )
    assert total == NBYTES and digest == sent["sha256"]
    assert sizes == pattern_message_sizes(NBYTES, MESSAGE) and stats.a_to_b.dropped_loss > 0
