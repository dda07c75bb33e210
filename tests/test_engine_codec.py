"""The engine's wire format: every byte-level example of protocol.md §10, the peer-IP quirk, packet
validation (packet_peek), sequence arithmetic, loss lists, SipHash, and real UDT4 captures."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine_harness import invalid_counts
from udt import _core, _testing

ST = _testing.STATES
EV = _testing.EVENTS
DATA_DIR = Path(__file__).parent / "data" / "udt4"


def words(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " ").replace(" ", ""))


ISN = 0x74697164
CLIENT_ID = 0x27555D6A
SERVER_ID = 0x21E40ACE
COOKIE = 0x252008B0
LOCALHOST_QUIRK = "0100007f 00000000 00000000 00000000"
HS_INDUCTION = words(
    "80000000 00000000 00000000 00000000 | 00000004 00000001 74697164 000005dc "
    "00002000 00000001 27555d6a 00000000 " + LOCALHOST_QUIRK
)
HS_INDUCTION_REPLY = words(
    "80000000 00000000 00000000 27555d6a | 00000004 00000001 74697164 "
    "000005dc 00002000 00000001 27555d6a 252008b0 " + LOCALHOST_QUIRK
)
HS_CONCLUSION = words(
    "80000000 00000000 00000000 00000000 | 00000004 00000001 74697164 000005dc "
    "00002000 ffffffff 27555d6a 252008b0 " + LOCALHOST_QUIRK
)
HS_CONCLUSION_REPLY = words(
    "80000000 00000000 00000000 27555d6a | 00000004 00000001 74697164 "
    "000005dc 00002000 ffffffff 21e40ace 252008b0 " + LOCALHOST_QUIRK
)


def handshaken_client(now: int = 0):
    """A client driven through protocol.md §10's four handshake packets."""
    c = _testing.Endpoint(CLIENT_ID, now=now, rcv_buf=8192)
    c.connect(("127.0.0.1", 9000), now, isn=ISN)
    first = c.next_datagram(now)
    c.receive(HS_INDUCTION_REPLY, now)
    third = c.next_datagram(now)
    ev = c.receive(HS_CONCLUSION_REPLY, now)
    return c, first, third, ev


def test_client_handshake_bytes_match_udt4_exactly():
    c, first, third, ev = handshaken_client()
    # UDT4's bytes but for the cookie word, where udt offers its extension (protocol.md §11)
    assert first[44:48] == b"UDTX" and first[:44] + bytes(4) + first[48:] == HS_INDUCTION
    assert third == HS_CONCLUSION
    assert ev & EV["CONNECTED"]
    assert c.state == ST["CONNECTED"]
    assert c.peer_socket_id == SERVER_ID
    assert c.peer_ip == bytes([127, 0, 0, 1]) + bytes(12)


def test_handshake_encode_decode_examples():
    for raw in (HS_INDUCTION, HS_INDUCTION_REPLY, HS_CONCLUSION, HS_CONCLUSION_REPLY):
        d = _testing.decode_packet(raw)
        hs = d["handshake"]
        assert d["control"] and d["type"] == 0 and d["length"] == 64
        assert hs["peer_ip"] == bytes([127, 0, 0, 1]) + bytes(12)
        again = _testing.encode_handshake(
            version=hs["version"],
            sock_type=hs["sock_type"],
            isn=hs["isn"],
            mss=hs["mss"],
            ffs=hs["flight_flag_size"],
            req_type=hs["req_type"],
            socket_id=hs["socket_id"],
            cookie=hs["cookie"],
            peer_ip=hs["peer_ip"],
            dst=d["dst"],
        )
        assert again == raw
    reply = _testing.decode_packet(HS_CONCLUSION_REPLY)["handshake"]
    assert reply["req_type"] == -1 and reply["isn"] == ISN and reply["socket_id"] == SERVER_ID
    assert reply["cookie"] == COOKIE and reply["mss"] == 1500 and reply["flight_flag_size"] == 8192


def test_peer_ip_quirk_ipv6_groups_reversed():
    addr = bytes(range(0xA0, 0xB0))
    raw = _testing.encode_handshake(peer_ip=addr)
    cif_ip = raw[16 + 32 :]
    assert cif_ip == bytes(
        [0xA3, 0xA2, 0xA1, 0xA0, 0xA7, 0xA6, 0xA5, 0xA4, 0xAB, 0xAA, 0xA9, 0xA8, 0xAF, 0xAE, 0xAD, 0xAC]
    )
    assert _testing.decode_packet(raw)["handshake"]["peer_ip"] == addr


def test_ipv6_client_sends_reversed_peer_ip():
    c = _testing.Endpoint(5, now=0)
    c.connect(("2001:db8::1", 9000), 0, isn=1)
    hs = c.next_datagram(0)
    assert hs[16 + 32 : 16 + 36] == bytes([0x00, 0x00, 0xB8, 0x0D][::-1])[::-1] or True
    import socket

    packed = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert _testing.decode_packet(hs)["handshake"]["peer_ip"] == packed
    assert hs[48:52] == packed[3::-1]


def test_server_conclusion_reply_matches_udt4_layout():
    """The server's answer: req -1, the client's ISN, our socket ID, the client's IP (quirk)."""
    req = _testing.request_from_conclusion(HS_CONCLUSION, ("127.0.0.1", 40000))
    s = _testing.Endpoint(SERVER_ID, now=0, rcv_buf=8192)
    reply = s.accept(req, 0)
    assert reply == HS_CONCLUSION_REPLY
    assert s.state == ST["CONNECTED"]


def _connected_server(now: int = 0):
    req = _testing.request_from_conclusion(HS_CONCLUSION, ("127.0.0.1", 40000))
    # a fixed 8192-packet receive buffer (no autotuning), as in protocol.md §10's examples
    s = _testing.Endpoint(SERVER_ID, now=now, rcv_buf=8192, buf_initial=8192)
    s.accept(req, now)
    return s


def test_data_packet_example():
    c, *_ = handshaken_client()
    assert c.write(b"x" * 3000, 0) == 3000
    d = c.next_datagram(123)
    assert len(d) == 1472
    assert d[:8] == words("74697164 80000001")
    assert int.from_bytes(d[8:12], "big") == 123
    assert int.from_bytes(d[12:16], "big") == SERVER_ID
    header, payload = c.next_datagram_zc(124)
    assert header[:8] == words("74697165 00000001") and len(payload) == 1456
    third = c.next_datagram(125)
    assert third[4:8] == words("40000001") and len(third) == 16 + 3000 - 2 * 1456


def test_full_ack_example_bytes():
    """16 packets, arrival gaps of 14 µs (rate 71429/s) and a 1000 µs packet pair (1000/s)."""
    s = _connected_server()
    t = 100
    for i in range(16):
        seq = ISN + i
        if i:
            t += 1000 if (seq & 0xF) == 1 else 14
        assert s.receive(_testing.encode_data(seq, 2 if i == 0 else 0, False, 1, t, SERVER_ID, b"p" * 1456), t) >= 0
    s.on_timer(10_000)
    ack = s.next_datagram(10_000)
    assert ack == words("80020000 00000001 00000000 27555d6a | 74697174 000186a0 0000c350 00001fef 00011705 000003e8")


def test_ack2_light_ack_nak_keepalive_examples():
    c, *_ = handshaken_client()
    full = words("80020000 00000001 00000000 27555d6a | 74697164 000186a0 0000c350 00001fef 00011705 000003e8")
    c.receive(full, 1000)
    assert c.next_datagram(1000) == words("80060000 00000001 00000000 21e40ace | 00000000")
    light = words("80020000 00000000 00000000 27555d6a | 74697164")
    d = _testing.decode_packet(light)
    assert d["type"] == 2 and d["info"] == 0 and d["cif"] == [ISN]
    nak = words("80030000 00000000 00000000 27555d6a | 74697933")
    assert _testing.decode_packet(nak)["cif"] == [0x74697933]
    keep = words("80010000 00000000 00000000 27555d6a | 00000000")
    assert _testing.encode_control(1, 0, CLIENT_ID) == keep
    # the engine sends exactly this keep-alive when idle: wait for the EXP timer
    t = c.next_timer()
    while t >= 0 and t < 2_000_000:
        c.on_timer(t)
        d = c.next_datagram(t)
        if d is not None and _testing.decode_packet(d)["type"] == 1:
            assert d == words("80010000 00000000 00000000 21e40ace | 00000000")
            break
        t = c.next_timer()
    else:
        pytest.fail("no keep-alive")


def test_engine_nak_single_loss_bytes():
    s = _connected_server()
    s.receive(_testing.encode_data(ISN, 3, False, 1, 0, SERVER_ID, b"a"), 10)
    s.receive(_testing.encode_data(ISN + 2, 3, False, 3, 0, SERVER_ID, b"c"), 20)
    out = []
    while (d := s.next_datagram(20)) is not None:
        out.append(d)
    naks = [d for d in out if _testing.decode_packet(d)["type"] == 3]
    assert naks == [words("80030000 00000000 00000000 27555d6a | 74697165")]


def test_engine_nak_range_encoding():
    s = _connected_server()
    s.receive(_testing.encode_data(ISN, 3, False, 1, 0, SERVER_ID, b"a"), 10)
    s.receive(_testing.encode_data(ISN + 5, 3, False, 6, 0, SERVER_ID, b"f"), 20)
    out = [d for d in iter(lambda: s.next_datagram(20), None)]
    naks = [_testing.decode_packet(d) for d in out if _testing.decode_packet(d)["type"] == 3]
    assert naks[0]["cif"] == [(ISN + 1) | 0x80000000, ISN + 4]
    assert naks[0]["length"] == 24


# ---- packet_peek validation ----
@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"", "too_short"),
        (b"\x80" + bytes(14), "too_short"),
        (bytes(16), "data_length"),
        (words("80090000 00000000 00000000 00000000 00000000"), "control_type"),
        (words("80000000 00000000 00000000 00000000") + bytes(40), "handshake"),
        (words("80000000 00000000 00000000 00000000") + bytes(48 + 257), "handshake"),
    ],
)
def test_peek_rejects(raw, reason):
    with pytest.raises(ValueError, match=reason):
        _testing.peek(raw)


def test_peek_describes():
    assert _testing.peek(HS_CONCLUSION) == {
        "dst_id": 0,
        "kind": 0,
        "seq": 0,
        "hs_req_type": -1,
        "hs_socket_id": CLIENT_ID,
        "hs_sock_type": 1,
    }
    d = _testing.peek(_testing.encode_data(77, 3, True, 1, 0, 9, b"z"))
    assert d["kind"] == -1 and d["seq"] == 77 and d["dst_id"] == 9
    assert _testing.peek(_testing.encode_control(0x7FFF, 0, 4))["kind"] == 0x7FFF


# ---- arithmetic ----
def test_sequence_arithmetic_wraps():
    top = 0x7FFFFFFF
    assert _testing.py_seq_add(top, 1) == 0
    assert _testing.py_seq_add(0, -1) == top
    assert _testing.py_seq_cmp(0, top) > 0 and _testing.py_seq_cmp(top, 0) < 0
    assert _testing.py_seq_off(top - 2, 3) == 6
    assert _testing.py_seq_off(3, top - 2) == -6
    assert _testing.py_seq_cmp(5, 5) == 0


def test_msgno_wraps_below_2_pow_26():
    assert _testing.py_msgno_inc(1) == 2
    assert _testing.py_msgno_inc((1 << 26) - 1) == 1


def test_siphash_reference_vector():
    key = bytes(range(16))
    # SipHash-2-4 paper, Appendix A: 15-byte message 00..0e
    assert _testing.py_siphash24(key, bytes(range(15))) == 0xA129CA6149BE45E5
    assert _testing.py_siphash24(key, b"") == 0x726FDB47DD0E0E31


def test_loss_list_against_a_set_model():
    top = 0x7FFFFFFF
    for trial in range(150):
        r = random.Random(trial)
        base = r.choice([0, 1000, top - 50, top - 5])
        ll = _testing.LossListShim(64)
        model: set[int] = set()
        for _ in range(150):
            k = r.random()
            a = (base + r.randint(0, 120)) & top
            n = r.randint(0, 6)
            b = (a + n) & top
            span = {(a + i) & top for i in range(n + 1)}
            if k < 0.4:
                added = ll.insert(a, b)
                if added == -1:
                    continue
                assert added == len(span - model)
                model |= span
            elif k < 0.6:
                assert ll.remove(a) == (a in model)
                model.discard(a)
            elif k < 0.75:
                assert ll.remove_range(a, b) == len(span & model)
                model -= span
            elif k < 0.85:
                ll.remove_before(a)
                model = {x for x in model if _testing.py_seq_cmp(x, a) >= 0}
            else:
                p = ll.pop_first()
                if model:
                    m = min(model, key=lambda x: _testing.py_seq_off(base, x))
                    assert p == m
                    model.discard(m)
                else:
                    assert p == -1
            got: set[int] = set()
            for f, last in ll.ranges():
                got |= {(f + i) & top for i in range(_testing.py_seq_off(f, last) + 1)}
            assert got == model and ll.length == len(model)
            ranges = ll.ranges()
            for (_f1, l1), (f2, _l2) in zip(ranges, ranges[1:]):
                assert _testing.py_seq_off(l1, f2) >= 2  # compressed: never adjacent


# ---- real UDT4 captures ----
FIXTURES = sorted(DATA_DIR.glob("*.json")) if DATA_DIR.exists() else []


@pytest.mark.skipif(not FIXTURES, reason="no UDT4 captures in tests/data/udt4")
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_udt4_capture_decodes(path):
    fixture = json.loads(path.read_text())
    handshakes = {"c2s": [], "s2c": []}
    for entry in fixture["datagrams"]:
        raw = bytes.fromhex(entry["hex"])
        info = _testing.peek(raw)  # every UDT4 datagram passes validation
        d = _testing.decode_packet(raw)
        assert d["length"] == entry["len"]
        if not d["control"]:
            assert len(raw) <= fixture["mss"] - 28
        elif d["type"] == 0:
            handshakes[entry["dir"]].append(d["handshake"])
            assert info["hs_req_type"] == d["handshake"]["req_type"]
        elif d["type"] in (1, 5, 6):
            assert d["length"] == 20
        elif d["type"] == 2:
            assert d["length"] in (20, 32, 40)
    if fixture["scenario"].startswith("cs_") and fixture["scenario"] != "cs_rejected":
        client_isn = handshakes["c2s"][0]["isn"]
        final = [h for h in handshakes["s2c"] if h["req_type"] == -1]
        assert final and final[0]["isn"] == client_isn
        assert final[0]["peer_ip"][:4] == bytes([127, 0, 0, 1])
    if fixture["scenario"] == "cs_rejected":
        assert any(h["req_type"] == 1002 for h in handshakes["s2c"])


@pytest.mark.skipif(not (DATA_DIR / "cs_stream_nak.json").exists(), reason="no capture")
def test_udt4_capture_replayed_into_our_receiver():
    """Our engine, as the server, accepts UDT4's conclusion and every captured client data
    packet without a single invalid count; the gaps of the capture (the fixture keeps only
    some packets) are NAKed, and only sequences that really are missing."""
    fixture = json.loads((DATA_DIR / "cs_stream_nak.json").read_text())
    c2s = [(e, bytes.fromhex(e["hex"])) for e in fixture["datagrams"] if e["dir"] == "c2s"]
    conclusion = next(
        raw for e, raw in c2s if _testing.peek(raw)["kind"] == 0 and _testing.peek(raw)["hs_req_type"] == -1
    )
    req = _testing.request_from_conclusion(conclusion, tuple(fixture["endpoints"]["client"]))
    s = _testing.Endpoint(0x1234, now=0)
    reply = s.accept(req, 0)
    assert _testing.decode_packet(reply)["handshake"]["isn"] == req.isn
    now = 0
    delivered: set[int] = set()
    for e, raw in c2s:
        d = _testing.decode_packet(raw)
        if e.get("dropped") or d["control"]:
            continue
        now += 10
        raw = raw[:12] + (0x1234).to_bytes(4, "big") + raw[16:]
        s.receive(raw, now)
        delivered.add(d["seq"])
        while (out := s.next_datagram(now)) is not None:
            p = _testing.decode_packet(out)
            if p["type"] == 3:
                cif, i = p["cif"], 0
                while i < len(cif):
                    first = cif[i] & 0x7FFFFFFF
                    last = cif[i + 1] if cif[i] & 0x80000000 else first
                    i += 2 if cif[i] & 0x80000000 else 1
                    assert not set(range(first, last + 1)) & delivered
    st = s.stats(now)
    assert invalid_counts(st) == {k: 0 for k in _core.INVALID_REASONS}
    assert st["pkt_recv_total"] == len(delivered) and st["pkt_sent_nak_total"] >= 1


def test_loss_list_front_removal_and_compaction():
    ll = _testing.LossListShim(4)
    for a in (10, 20, 30, 40):
        assert ll.insert(a, a + 1) == 2
    assert ll.insert(50, 50) == -1  # full
    assert ll.pop_first() == 10 and ll.pop_first() == 11  # range 10-11 gone from the front
    ll.remove_before(25)  # 20-21 gone too, in O(1)
    assert ll.ranges() == [(30, 31), (40, 41)]
    assert ll.insert(50, 50) == 1 and ll.insert(60, 61) == 2  # compacts to make room
    assert ll.ranges() == [(30, 31), (40, 41), (50, 50), (60, 61)]
    assert ll.remove_range(30, 45) == 4
    assert ll.ranges() == [(50, 50), (60, 61)] and ll.length == 3
    assert ll.insert(0x7FFFFFFF, 0x7FFFFFFF) == 1  # just before 0 in sequence order
    assert ll.ranges()[0] == (0x7FFFFFFF, 0x7FFFFFFF) and ll.pop_first() == 0x7FFFFFFF


@pytest.mark.skipif(not (DATA_DIR / "rendezvous_stream.json").exists(), reason="no capture")
def test_udt4_rendezvous_capture_replayed_into_our_engine():
    """We play UDT4's side B: side A's real requests (0, then -1) connect us, and A's data
    packets are accepted and readable in order."""
    fixture = json.loads((DATA_DIR / "rendezvous_stream.json").read_text())
    entries = [(e, bytes.fromhex(e["hex"])) for e in fixture["datagrams"]]
    side_b = next(
        _testing.decode_packet(raw)["handshake"]
        for e, raw in entries
        if e["dir"] == "s2c" and _testing.decode_packet(raw)["control"] and _testing.decode_packet(raw)["type"] == 0
    )
    b = _testing.Endpoint(side_b["socket_id"], now=0, rendezvous=True)
    b.connect(tuple(fixture["endpoints"]["client"]), 0)
    b.next_datagram(0)
    now = 0
    payloads = {}
    for e, raw in entries:
        if e["dir"] != "c2s" or e.get("dropped"):
            continue
        d = _testing.decode_packet(raw)
        if d["control"] and d["type"] not in (0, 1):
            continue
        now += 100
        b.receive(raw, now)
        while b.next_datagram(now) is not None:
            pass
        if not d["control"]:
            payloads[d["seq"]] = d["payload"]
    assert b.state == ST["CONNECTED"]
    a_isn = next(_testing.decode_packet(raw)["handshake"]["isn"] for e, raw in entries if e["dir"] == "c2s")
    assert b.peer_isn == a_isn
    expected = bytearray()
    seq = a_isn
    while seq in payloads:
        expected += payloads[seq]
        seq += 1
    assert len(expected) >= 3 * 1456
    assert b.read(len(expected), now) == bytes(expected)
    assert invalid_counts(b.stats(now)) == {k: 0 for k in _core.INVALID_REASONS}


@pytest.mark.skipif(not (DATA_DIR / "cs_dgram_messages.json").exists(), reason="no capture")
def test_udt4_messages_replayed_keep_their_boundaries():
    fixture = json.loads((DATA_DIR / "cs_dgram_messages.json").read_text())
    c2s = [(e, bytes.fromhex(e["hex"])) for e in fixture["datagrams"] if e["dir"] == "c2s"]
    conclusion = next(
        raw for e, raw in c2s if _testing.peek(raw)["kind"] == 0 and _testing.peek(raw)["hs_req_type"] == -1
    )
    req = _testing.request_from_conclusion(conclusion, tuple(fixture["endpoints"]["client"]))
    assert req.sock_type == 2
    s = _testing.Endpoint(0x4321, now=0, sock_type=2)
    s.accept(req, 0)
    now = 0
    for e, raw in c2s:
        d = _testing.decode_packet(raw)
        if d["control"] or e.get("dropped"):
            continue
        now += 10
        s.receive(raw[:12] + (0x4321).to_bytes(4, "big") + raw[16:], now)
    messages = []
    while not isinstance(r := s.read_message(1 << 16, now), int):
        messages.append(r)
    assert len(messages) == 21
    assert all(full == 4000 and not truncated and len(m) == 4000 for m, full, truncated in messages[:-1])
    assert messages[-1][1] == 1000  # the final solo message
    assert invalid_counts(s.stats(now)) == {k: 0 for k in _core.INVALID_REASONS}


def test_invalid_reasons_match_the_c_enum():
    """udt._core.INVALID_REASONS is indexed by the C enum InvalidReason: same count, same names."""
    assert len(_core.INVALID_REASONS) == _testing.INVALID_REASON_TOTAL == len(_testing.INVALID_ENUM)
    for c_name, value in _testing.INVALID_ENUM.items():
        assert _core.INVALID_REASONS[value] == c_name.removeprefix("INVALID_").lower()


def test_stats_dict_has_the_public_perfmon_keys():
    """The one stats table (_core.stats_dict) gives the keys socket.perfmon() documents."""
    st = _testing.Endpoint(1).stats(0)
    for key in (
        "pkt_sent_total",
        "pkt_duplicate_total",
        "pkt_late_total",
        "invalid_total",
        "mbps_bandwidth",
        "byte_avail_rcv_buf",
    ):
        assert key in st
    assert {k for k in st if k.startswith("invalid_")} == (
        {"invalid_" + r for r in _core.INVALID_REASONS} | {"invalid_total"}
    )
    assert st["invalid_total"] == 0


def test_production_engine_carries_no_test_shim():
    """The shim lives in udt._testing; udt._core exports only what production code uses."""
    for name in ("Endpoint", "ListenerShim", "LossListShim", "decode_packet", "engine_benchmark"):
        assert not hasattr(_core, name) and hasattr(_testing, name)
