"""Hypothesis fuzz: random and mutated datagrams (ACK, NAK, handshake, data, …) fed to
connected, connecting and listening engines never crash them; whatever fails validation is
counted as invalid and leaves no trace (the connection still moves data byte-exact)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_harness import LinkProfile, Net, connected_pair, invalid_counts, transfer
from udt import _testing

ST = _testing.STATES
SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _templates() -> list[bytes]:
    """Real datagrams of every kind, recorded from a lossy transfer and a message exchange."""
    out: list[bytes] = []
    for sock_type in (1, 2):
        net = Net(seed=3, profile=LinkProfile(loss=0.05, delay_us=2000))
        net.sent_log = []
        net, c, s = connected_pair(
            net, client_options={"sock_type": sock_type}, server_options={"sock_type": sock_type}
        )
        if sock_type == 2:
            c.write(b"m" * 5000, net.now, ttl_us=1)
            net.run(200_000)
        else:
            transfer(net, c, s, bytes(200_000))
        c.close(net.now)
        net.run(1_000_000)
        seen = {}
        for _, _, _, d in net.sent_log:
            p = _testing.decode_packet(d)
            key = (p["control"], p.get("type"), p["length"])
            seen.setdefault(key, d)
        out += list(seen.values())
    out.append(_testing.encode_control(7, 3, 0, [5, 9]))
    out.append(_testing.encode_control(0x7FFF, 0, 0, [1, 2, 3]))
    out.append(_testing.encode_control(8, 4000, 0))
    return out


TEMPLATES = _templates()


def _fresh(sock_type=1):
    net, c, s = connected_pair(
        Net(seed=9), client_options={"sock_type": sock_type}, server_options={"sock_type": sock_type}
    )
    c.write(bytes(range(256)) * 20, net.now)
    net.run(50_000)
    return net, c, s


def _retarget(d: bytes, dst: int) -> bytes:
    return d[:12] + dst.to_bytes(4, "big") + d[16:] if len(d) >= 16 else d


def _invalid_total(ep, now):
    return sum(invalid_counts(ep.stats(now)).values())


def _still_works(net, c, s):
    s.read(1 << 20, net.now)
    data = random.Random(1).randbytes(300_000)
    got = transfer(net, c, s, data, timeout_us=30_000_000)
    assert got == data


mutation = st.tuples(st.integers(0, 2000), st.integers(0, 255))


@SETTINGS
@given(
    template=st.sampled_from(TEMPLATES),
    flips=st.lists(mutation, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 80)),
    tail=st.binary(max_size=40),
    to_client=st.booleans(),
)
def test_mutated_datagrams(template, flips, cut, tail, to_client):
    net, c, s = _fresh()
    target = c if to_client else s
    d = bytearray(_retarget(template, target.socket_id))
    for pos, val in flips:
        if d:
            d[pos % len(d)] = val
    if cut is not None:
        d = d[:cut]
    d += tail
    d = bytes(d)
    before = _invalid_total(target, net.now)
    ev = target.receive(d, net.now)
    assert ev >= 0
    after = _invalid_total(target, net.now)
    try:
        _testing.peek(d)
        structurally_valid = True
    except ValueError:
        structurally_valid = False
    if not structurally_valid:
        assert after == before + 1
    # the engine keeps answering every call
    target.next_datagram(net.now)
    target.next_timer()
    target.stats(net.now)
    if after > before and c.state == s.state == ST["CONNECTED"]:
        _still_works(net, c, s)  # a dropped datagram left no trace


@SETTINGS
@given(blob=st.binary(max_size=120))
def test_random_bytes_everywhere(blob):
    net, c, s = _fresh(sock_type=2)
    for ep in (c, s):
        ep.receive(blob, net.now)
        ep.receive(_retarget(blob, ep.socket_id), net.now)
    lst = _testing.ListenerShim(b"k" * 16, 1, 1500, 8192, 0)
    verdict, reply, req = lst.handle(blob, ("10.0.0.1", 5000), 0)
    if reply is not None:
        assert len(reply) <= len(blob)
    connecting = _testing.Endpoint(5, now=0, rendezvous=bool(blob[:1] == b"\x01"))
    connecting.connect(("10.0.0.2", 9000), 0)
    connecting.receive(blob, 10)
    connecting.next_datagram(10)
    assert connecting.state in (ST["CONNECTING"], ST["CONNECTED"], ST["CLOSED"])


@SETTINGS
@given(
    words=st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=20),
    kind=st.sampled_from([2, 3, 6, 7]),
    info=st.integers(0, 0xFFFFFFFF),
)
def test_structured_control_fuzz(words, kind, info):
    """Well-formed headers with arbitrary CIF words: ACK beyond sent, inverted NAK ranges,
    unknown ACK2 numbers, bad drop requests — all validated before anything changes."""
    net, c, s = _fresh(sock_type=2)
    for ep in (c, s):
        una, nxt = ep.snd_una, ep.snd_next_seq
        before = _invalid_total(ep, net.now)
        ep.receive(_testing.encode_control(kind, info, ep.socket_id, words), net.now)
        if _invalid_total(ep, net.now) > before:
            assert (ep.snd_una, ep.snd_next_seq) == (una, nxt)
    if c.state == s.state == ST["CONNECTED"]:
        got = []
        c.write(b"after", net.now)
        net.run(
            2_000_000,
            lambda: (
                not isinstance(r := s.read_message(100, net.now), int)
                and not got.append(r[0])
                and b"after" in got
                or b"after" in got
            ),
        )
        assert b"after" in got


@SETTINGS
@given(
    fields=st.fixed_dictionaries(
        {
            "version": st.integers(-5, 10),
            "sock_type": st.integers(-1, 4),
            "isn": st.integers(-(2**31), 2**31 - 1),
            "mss": st.integers(-10, 70000),
            "ffs": st.integers(-10, 2**20),
            "req_type": st.sampled_from([1, 0, -1, -2, 1002, 7]),
            "socket_id": st.integers(0, 2**32 - 1),
            "cookie": st.integers(0, 2**32 - 1),
        }
    )
)
def test_handshake_field_fuzz(fields):
    lst = _testing.ListenerShim(b"k" * 16, 1, 1500, 8192, 0)
    hs = _testing.encode_handshake(**fields)
    verdict, reply, req = lst.handle(hs, ("10.0.0.1", 5000), 0)
    if reply is not None:
        assert len(reply) == 64
    if req is not None:
        assert req.mss >= 76 and req.sock_type == 1
        s = _testing.Endpoint(7, now=0)
        r = s.accept(req, 0)
        assert isinstance(r, (bytes, int))
    c = _testing.Endpoint(3, now=0)
    c.connect(("10.0.0.2", 9000), 0)
    c.next_datagram(0)
    c.receive(hs, 5)
    assert c.state in (ST["CONNECTING"], ST["CONNECTED"], ST["CLOSED"])
    if c.state == ST["CONNECTED"]:
        assert 76 <= c.mss <= 1500
