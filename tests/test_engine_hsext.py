"""The handshake extension (protocol.md §11) and the half-close it negotiates, with the fake
clock: udt<->udt, udt facing a plain UDT4/SRT peer in both roles, rendezvous, garbage
trailers, and shutdown(SHUT_WR) semantics including a lost EOF."""

from __future__ import annotations

import pytest

from engine_harness import LinkProfile, Net, connected_pair, transfer
from udt import _testing

ST = _testing.STATES
EV = _testing.EVENTS
V = _testing.LISTENER_VERDICTS
HALF = _testing.CAPS["HALF_CLOSE"]
KEY = b"0123456789abcdef"
CLIENT = ("10.0.0.1", 5000)
SERVER = ("10.0.0.2", 9000)
MAGIC = 0x55445458  # "UDTX": the induction cookie a udt client offers with
ERR_BROKEN = -2001
ERR_INVALID_OPERATION = -5000


def _handshakes(net):
    return [
        (src, _testing.decode_packet(d))
        for _, src, _, d in net.sent_log
        if _testing.decode_packet(d)["control"] and _testing.decode_packet(d)["type"] == 0
    ]


def test_udt_pair_negotiates_half_close():
    net = Net()
    net.sent_log = []
    net, c, s = connected_pair(net, client_addr=CLIENT, server_addr=SERVER)
    hs = _handshakes(net)[:4]
    induction, answer, conclusion, response = (p for _, p in hs)
    # the offer rides in the induction's cookie (UDT4 listeners overwrite it and need 48 bytes)
    assert induction["length"] == 64 and induction["handshake"]["cookie"] == MAGIC
    assert induction["handshake"]["ext"] == (0, 0)
    # the answer is request-sized (no amplification): its mark is header word 1, not a trailer
    assert answer["length"] == 64 and answer["info"] == MAGIC and answer["handshake"]["ext"] == (0, 0)
    for p in (conclusion, response):
        assert p["length"] == 80 and p["handshake"]["ext"] == (1, _testing.CAPS["LOCAL"])
    assert c.caps == s.caps == HALF


def test_plain_client_gets_plain_48_byte_handshakes():
    """A UDT4/SRT client (cookie 0 in its induction, no trailer) never sees the extension."""
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    induction = _testing.encode_handshake(isn=7, req_type=1, socket_id=99)
    verdict, reply, _ = lst.handle(induction, CLIENT, 0)
    assert verdict == V["REPLY"] and len(reply) == 64 and _testing.decode_packet(reply)["info"] == 0
    cookie = _testing.decode_packet(reply)["handshake"]["cookie"]
    conclusion = _testing.encode_handshake(isn=7, req_type=-1, socket_id=99, cookie=cookie)
    verdict, _, req = lst.handle(conclusion, CLIENT, 10)
    assert verdict == V["ACCEPT"]
    s = _testing.Endpoint(5, now=10)
    response = s.accept(req, 10)
    assert len(response) == 64 and s.caps == 0 and s.state == ST["CONNECTED"]
    assert s.shutdown_write(20) == ERR_INVALID_OPERATION  # the socket layer closes instead


def test_udt_client_facing_plain_listener_sends_plain_conclusion():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0, isn=500)
    induction = c.next_datagram(0)
    assert len(induction) == 64
    # a UDT4 listener's answer: 48 bytes, its own cookie
    c.receive(_testing.encode_handshake(isn=500, req_type=1, socket_id=1, cookie=4242, dst=c.socket_id), 10)
    conclusion = c.next_datagram(10)
    assert len(conclusion) == 64 and _testing.decode_packet(conclusion)["handshake"]["cookie"] == 4242
    ev = c.receive(_testing.encode_handshake(isn=500, req_type=-1, socket_id=77, dst=c.socket_id), 20)
    assert ev & EV["CONNECTED"] and c.caps == 0
    assert c.shutdown_write(30) == ERR_INVALID_OPERATION


def test_listener_answers_offer_only_from_a_udt_client():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    offer = _testing.encode_handshake(isn=7, req_type=1, socket_id=99, cookie=MAGIC)
    _, reply, _ = lst.handle(offer, CLIENT, 0)
    assert len(reply) == len(offer) == 64 and _testing.decode_packet(reply)["info"] == MAGIC
    cookie = _testing.decode_packet(reply)["handshake"]["cookie"]
    assert cookie != MAGIC
    conclusion = _testing.encode_handshake(isn=7, req_type=-1, socket_id=99, cookie=cookie)
    _, _, req = lst.handle(conclusion + _testing.encode_hsext(HALF | 0x80), CLIENT, 10)
    s = _testing.Endpoint(5, now=10)
    response = s.accept(req, 10)
    # unknown capability bits are not negotiated
    assert len(response) == 80 and s.peer_caps == HALF | 0x80 and s.caps == HALF


@pytest.mark.parametrize(
    "trailer, verdict",
    [
        (b"\x55\x44\x54\x58\x01\x00\x00\x10", "DROP"),  # TLV bytes beyond the datagram
        (b"\x55\x44\x54\x58\x01\x00\x00\x04\x00\x01\x00\x08", "DROP"),  # TLV longer than the area
        (b"\x55\x44\x54\x58\x01\x00\x00\x08\x00\x01\x00\x02\x00\x00\x00\x00", "DROP"),  # caps not 4 B
        (b"\x55\x44\x54\x58\x00\x00\x00\x00", "DROP"),  # version 0
        (b"\x55\x44\x54\x58\x01\x00\x00\x08\x00\x09\x00\x03\x01\x02\x03\x00", "ACCEPT"),  # unknown TLV
        (b"\x00" * 16, "ACCEPT"),  # not ours: ignored, a plain peer
    ],
)
def test_listener_validates_trailers(trailer, verdict):
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    _, reply, _ = lst.handle(_testing.encode_handshake(isn=7, req_type=1, socket_id=99), CLIENT, 0)
    cookie = _testing.decode_packet(reply)["handshake"]["cookie"]
    conclusion = _testing.encode_handshake(isn=7, req_type=-1, socket_id=99, cookie=cookie)
    got, _, req = lst.handle(conclusion + trailer, CLIENT, 10)
    assert got == V[verdict]
    if verdict == "DROP":
        assert lst.invalid["handshake"] == 1
    else:
        s = _testing.Endpoint(5, now=10)
        s.accept(req, 10)
        assert s.caps == 0


def test_malformed_trailer_in_response_is_dropped_by_client():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0, isn=500)
    c.next_datagram(0)
    bad = _testing.encode_hsext(HALF)[:-2]
    c.receive(_testing.encode_handshake(isn=500, req_type=1, socket_id=1, cookie=9, dst=c.socket_id) + bad, 10)
    assert c.hs_req_type == 1 and c.stats(10)["invalid_handshake"] == 1


def test_rendezvous_pair_negotiates():
    net = Net()
    a = net.endpoint(("10.0.0.1", 7000), ("10.0.0.2", 7000), rendezvous=True)
    b = net.endpoint(("10.0.0.2", 7000), ("10.0.0.1", 7000), rendezvous=True)
    net.connect(a)
    net.connect(b)
    assert net.run(2_000_000, lambda: a.state == b.state == ST["CONNECTED"])
    assert a.caps == b.caps == HALF


def test_rendezvous_with_plain_peer_stays_plain():
    a = _testing.Endpoint(1, now=0, rendezvous=True)
    a.connect(("10.0.0.2", 7000), 0)
    assert len(a.next_datagram(0)) == 80  # UDT4 rendezvous peers read 48 bytes of it
    a.receive(_testing.encode_handshake(req_type=0, socket_id=5, isn=300), 10)
    a.next_datagram(10)
    ev = a.receive(_testing.encode_handshake(req_type=-1, socket_id=5, isn=300), 20)
    assert ev & EV["CONNECTED"] and a.caps == 0


# ---- half-close ---------------------------------------------------------------------------
def _read_all(net, ep, until_eof=True, timeout_us=5_000_000):
    got = bytearray()
    done = False

    def pump():
        nonlocal done
        while True:
            r = ep.read(1 << 20, net.now)
            if r == b"":
                done = True
                return True
            if isinstance(r, int):
                return not until_eof and bool(got)
            got.extend(r)

    net.run(timeout_us, pump)
    return bytes(got), done


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_half_close_request_response(loss):
    net = Net(seed=7, profile=LinkProfile(loss=loss, delay_us=5000))
    net, c, s = connected_pair(net)
    request = bytes(range(256)) * 400
    assert c.write(request, net.now) == len(request)
    assert c.shutdown_write(net.now) == 0
    assert c.write(b"late", net.now) == ERR_BROKEN  # the socket layer raises BrokenPipeError
    got, eof = _read_all(net, s)
    assert got == request and eof and s.peer_eof
    assert s.state == c.state == ST["CONNECTED"]
    # the half-closed side keeps receiving; the other side may keep sending
    reply = b"reply:" + bytes(50_000)
    assert transfer(net, s, c, reply) == reply
    assert net.run(5_000_000, lambda: c.eof_acked)
    assert s.read(10, net.now) == b""  # EOF stays EOF
    # full close afterwards: the half-closed side reads EOF too
    s.close(net.now)
    net.run(2_000_000, lambda: c.peer_shutdown)
    assert c.read(10, net.now) == b"" and c.peer_shutdown


def test_eof_waits_for_acknowledged_data_and_is_confirmed():
    net = Net(seed=3, profile=LinkProfile(delay_us=20_000))
    net.sent_log = []
    net, c, s = connected_pair(net)
    payload = bytes(100_000)
    c.write(payload, net.now)
    c.shutdown_write(net.now)
    eofs = []

    def eof_sent():
        eofs[:] = [
            (t, p["info"])
            for t, src, _, d in net.sent_log
            if (p := _testing.decode_packet(d))["control"] and p["type"] == 0x7FFF and p["ext_type"] == 0x5501
        ]
        return bool(eofs)

    net.run(5_000_000, eof_sent)
    assert eofs and eofs[0][1] == c.snd_next_seq and c.pending_send_bytes == 0
    got, eof = _read_all(net, s)
    assert got == payload and eof
    assert net.run(1_000_000, lambda: c.eof_acked)
    assert s.stats(net.now)["invalid_state"] == 0 and s.stats(net.now)["invalid_control_type"] == 0


def test_eof_before_missing_data_is_not_confirmed():
    net, c, s = connected_pair()
    eof = _testing.encode_control(0x7FFF, c.snd_next_seq + 5, s.socket_id)
    # ext type goes in word 0's low 16 bits
    eof = bytes([eof[0], eof[1], 0x55, 0x01]) + eof[4:]
    assert s.receive(eof, net.now) == 0 and not s.peer_eof
    assert s.receive(bytes([eof[0], eof[1], 0x55, 0x01]) + (c.snd_next_seq).to_bytes(4, "big") + eof[8:], net.now)
    assert s.peer_eof


def test_eof_subtype_is_not_interpreted_without_negotiation():
    plain = _testing.Endpoint(9, now=0)
    plain.connect(SERVER, 0, isn=1)
    plain.next_datagram(0)
    plain.receive(_testing.encode_handshake(isn=1, req_type=1, socket_id=1, cookie=4, dst=9), 1)
    plain.next_datagram(1)
    plain.receive(_testing.encode_handshake(isn=1, req_type=-1, socket_id=77, dst=9), 2)
    eof = bytes([0xFF, 0xFF, 0x55, 0x01]) + (1).to_bytes(4, "big") + bytes(4) + (9).to_bytes(4, "big") + bytes(4)
    plain.receive(eof, 3)
    assert plain.caps == 0 and not plain.peer_eof


def test_lost_eof_and_lost_confirmation_are_repaired():
    net, c, s = connected_pair(Net(profile=LinkProfile(delay_us=10_000)))
    sent = {0x5501: [], 0x5502: []}
    real = net.transmit

    def lossy(src, dst, data):
        p = _testing.decode_packet(data)
        if p["control"] and p["type"] == 0x7FFF and p["ext_type"] in sent:
            sent[p["ext_type"]].append(net.now)
            if len(sent[p["ext_type"]]) <= (2 if p["ext_type"] == 0x5501 else 1):
                return  # the first two EOFs and the first confirmation are lost
        real(src, dst, data)

    net.transmit = lossy
    c.write(b"x" * 5000, net.now)
    assert c.shutdown_write(net.now) == 0
    assert net.run(5_000_000, lambda: c.eof_acked)
    eofs = sent[0x5501]
    assert len(eofs) == 4 and len(sent[0x5502]) == 2 and s.peer_eof
    assert all(b - a >= c.rtt_us for a, b in zip(eofs, eofs[1:]))  # paced by the RTT, not a flood
    assert s.read(10_000, net.now) == b"x" * 5000 and s.read(10, net.now) == b""
