"""The stateless listener under attack, with a fake clock: every spoofed handshake the flood
tool sends is answered with no more bytes than it carried or dropped, forged and replayed
cookies never open a connection, cookies expire after a bounded window and are bound to the
peer's family, address and port, and absurd MSS / flow-window / ISN values never get through."""

from __future__ import annotations

import ipaddress
import random

import pytest

from udt import _testing
from udt.tools.flood.packets import KINDS, flood_packets, handshake

V = _testing.LISTENER_VERDICTS
ST = _testing.STATES
KEY = b"0123456789abcdef"
CLIENT = ("10.0.0.1", 5000)
SLICE = 60_000_000
MAGIC = 0x55445458


def _peer(address: int, port: int) -> tuple[str, int]:
    return str(ipaddress.IPv4Address(address)), port


def _cookie(lst, peer, now, **kw) -> int:
    _, reply, _ = lst.handle(_testing.encode_handshake(isn=7, req_type=1, socket_id=99, **kw), peer, now)
    return _testing.decode_packet(reply)["handshake"]["cookie"]


def _conclusion(cookie: int, **kw) -> bytes:
    kw.setdefault("isn", 7)
    return _testing.encode_handshake(req_type=-1, socket_id=99, cookie=cookie, **kw)


def test_flood_datagrams_are_answered_request_sized_or_dropped():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    mix = {k: 1.0 for k in KINDS}
    packets = flood_packets(5000, mix, seed=7, cookie=_cookie(lst, CLIENT, 0))
    replies = 0
    for i, (address, port, payload) in enumerate(packets):
        verdict, reply, req = lst.handle(payload, _peer(address, port), 1000 + i)
        assert verdict != V["ACCEPT"] and req is None
        if reply is not None:
            replies += 1
            assert len(reply) <= len(payload)
    assert replies == lst.inductions - 1 > 1000  # every induction, nothing else
    assert lst.accepted == 0 and lst.rejected == 0  # no conclusion got past the cookie
    assert lst.invalid["cookie"] > 1000


@pytest.mark.parametrize("trailer", [False, True])
@pytest.mark.parametrize("cookie", [0, MAGIC])
def test_induction_answer_never_larger_than_the_induction(trailer, cookie):
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    request = handshake(1, cookie, 99, trailer=trailer)
    verdict, reply, _ = lst.handle(request, CLIENT, 0)
    assert verdict == V["REPLY"] and len(reply) == 64 <= len(request)
    # a udt client's offer is answered with the mark in header word 1 (UDT4/SRT echo 0 there)
    assert _testing.decode_packet(reply)["info"] == (MAGIC if cookie == MAGIC else 0)


def test_rejection_answer_never_larger_than_the_conclusion():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    for kw in ({"version": 5}, {"sock_type": 2}, {"mss": 0}, {"mss": -1}):
        request = _conclusion(_cookie(lst, CLIENT, 0), **kw)
        verdict, reply, _ = lst.handle(request, CLIENT, 10)
        assert verdict == V["REPLY"] and len(reply) <= len(request)
        assert _testing.decode_packet(reply)["handshake"]["req_type"] == 1002


def test_cookie_is_bound_to_address_port_and_family():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    conclusion = _conclusion(_cookie(lst, CLIENT, 0))
    for other in (("10.0.0.1", 5001), ("10.0.0.2", 5000), ("::ffff:10.0.0.1", 5000), ("10.0.1.1", 5000)):
        assert lst.handle(conclusion, other, 10)[0] == V["DROP"]
    assert lst.invalid["cookie"] == 4
    assert lst.handle(conclusion, CLIENT, 10)[0] == V["ACCEPT"]


@pytest.mark.parametrize("issued", [0, SLICE - 1, SLICE // 2])
def test_cookie_lives_between_one_and_two_slices(issued):
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    conclusion = _conclusion(_cookie(lst, CLIENT, issued))
    end_of_next_slice = (issued // SLICE + 2) * SLICE
    assert end_of_next_slice - issued >= SLICE  # never shorter than one slice...
    assert end_of_next_slice - issued <= 2 * SLICE  # ...never longer than two
    assert lst.handle(conclusion, CLIENT, end_of_next_slice - 1)[0] == V["ACCEPT"]
    assert lst.handle(conclusion, CLIENT, end_of_next_slice)[0] == V["DROP"]
    assert lst.handle(conclusion, CLIENT, end_of_next_slice + 10 * SLICE)[0] == V["DROP"]


def test_forged_cookies_never_accepted():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    real = _cookie(lst, CLIENT, 0)
    rng = random.Random(3)
    forged = [c for c in (rng.randrange(1 << 32) for _ in range(20000)) if c != real]
    forged += [0, 1, MAGIC, real ^ 1, real ^ 0x80000000, (real + 1) & 0xFFFFFFFF]
    for i, cookie in enumerate(forged):
        assert lst.handle(_conclusion(cookie), CLIENT, 10 + i)[0] == V["DROP"]
    assert lst.accepted == 0 and lst.invalid["cookie"] == len(forged)


def test_replayed_cookie_only_from_its_own_address_while_valid():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    conclusion = _conclusion(_cookie(lst, CLIENT, 0))
    # a replay from the same address is the same request again (the multiplexer maps it to the
    # connection it made by peer address and socket ID); from anywhere else, or late, a drop
    assert lst.handle(conclusion, CLIENT, 10)[0] == V["ACCEPT"]
    assert lst.handle(conclusion, CLIENT, 20)[0] == V["ACCEPT"]
    for i in range(1000):
        assert lst.handle(conclusion, (f"127.{i % 200}.{i // 200}.9", 5000), 30)[0] == V["DROP"]
    assert lst.handle(conclusion, CLIENT, 2 * SLICE)[0] == V["DROP"]


@pytest.mark.parametrize(
    "field, value, verdict",
    [
        ("isn", -1, "DROP"),
        ("isn", -(1 << 31), "DROP"),
        ("mss", 0, "REPLY"),  # 1002
        ("mss", 75, "REPLY"),
        ("mss", -1, "REPLY"),
        ("mss", (1 << 31) - 1, "ACCEPT"),  # clamped to ours
        ("ffs", (1 << 31) - 1, "ACCEPT"),  # a window, never an allocation
        ("ffs", -1, "ACCEPT"),
        ("ffs", 0, "ACCEPT"),
        ("version", -1, "REPLY"),
        ("sock_type", 1 << 30, "REPLY"),
    ],
)
def test_absurd_values_with_a_valid_cookie(field, value, verdict):
    lst = _testing.ListenerShim(KEY, 1, 1400, 8192, 0)
    request = _conclusion(_cookie(lst, CLIENT, 0), **{field: value})
    got, reply, req = lst.handle(request, CLIENT, 10)
    assert got == V[verdict]
    if reply is not None:
        assert len(reply) <= len(request)
    if req is not None:
        assert 76 <= req.mss <= 1400
        server = _testing.Endpoint(5, now=10)
        response = server.accept(req, 10)
        assert len(response) <= len(request) and server.state == ST["CONNECTED"]
        assert server.flow_window >= 2  # a nonsense window falls back to the minimum


def test_absurd_inductions_answered_request_sized_and_no_state():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    rng = random.Random(5)
    for i in range(3000):
        kw = {
            "version": rng.choice([4, 0, -1, 1 << 30]),
            "sock_type": rng.choice([1, 2, 0, -5]),
            "isn": rng.randrange(1 << 31),
            "mss": rng.randrange(-(1 << 31), 1 << 31),
            "ffs": rng.randrange(-(1 << 31), 1 << 31),
        }
        request = _testing.encode_handshake(req_type=1, socket_id=rng.randrange(1, 1 << 31), **kw)
        verdict, reply, _ = lst.handle(request, (f"127.1.{i % 250}.{i // 250 + 1}", 1024 + i), i)
        assert verdict == V["REPLY"] and len(reply) == len(request)
    assert lst.accepted == lst.rejected == 0
    # the same request at the same slice gets the same answer: nothing was remembered
    assert _cookie(lst, CLIENT, 5) == _cookie(_testing.ListenerShim(KEY, 1, 1500, 8192, 0), CLIENT, 5)
