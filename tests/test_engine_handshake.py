"""Connection setup with a fake clock: client/server through the stateless listener, rendezvous,
MSS negotiation, rejection, cookies, retries and timeouts, duplicates."""

from __future__ import annotations

import pytest

from engine_harness import LinkProfile, Net, connected_pair
from udt import _testing

ST = _testing.STATES
EV = _testing.EVENTS
V = _testing.LISTENER_VERDICTS
KEY = b"0123456789abcdef"
CLIENT = ("10.0.0.1", 5000)
SERVER = ("10.0.0.2", 9000)


def drain(ep, now):
    out = []
    while (d := ep.next_datagram(now)) is not None:
        out.append(d)
    return out


def test_client_server_four_way_handshake():
    net = Net()
    net.sent_log = []
    net, c, s = connected_pair(net, client_addr=CLIENT, server_addr=SERVER, isn=12345)
    hs = [(src, _testing.decode_packet(d)) for _, src, _, d in net.sent_log]
    kinds = [(src == CLIENT, p["handshake"]["req_type"], p["dst"]) for src, p in hs[:4]]
    assert kinds == [(True, 1, 0), (False, 1, c.socket_id), (True, -1, 0), (False, -1, c.socket_id)]
    induction_reply, conclusion, final = hs[1][1]["handshake"], hs[2][1]["handshake"], hs[3][1]["handshake"]
    assert induction_reply["cookie"] != 0 and conclusion["cookie"] == induction_reply["cookie"]
    assert final["isn"] == 12345 and final["socket_id"] == s.socket_id
    assert final["peer_ip"][:4] == bytes([10, 0, 0, 1])  # the client's address
    assert c.peer_ip[:4] == bytes([10, 0, 0, 1])
    assert s.peer_socket_id == c.socket_id and c.peer_socket_id == s.socket_id
    assert s.isn == c.isn == 12345 and s.peer_isn == 12345
    # 48-byte CIFs; the induction answer is never larger than the induction (no amplification),
    # udt<->udt adds the extension trailer to the conclusion and its answer (test_engine_hsext)
    assert [len(d) for _, _, _, d in net.sent_log[:4]] == [64, 64, 80, 80]


def test_listener_is_stateless_and_answers_with_same_size():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    req = _testing.encode_handshake(isn=7, req_type=1, socket_id=99, peer_ip=bytes([10, 0, 0, 2]) + bytes(12))
    verdict, reply, r = lst.handle(req, CLIENT, 0)
    assert verdict == V["REPLY"] and len(reply) == len(req) and r is None
    verdict2, reply2, _ = lst.handle(req, CLIENT, 1000)
    assert reply2 == reply  # same slice, same cookie, nothing remembered
    assert lst.inductions == 2


def test_cookie_depends_on_address_and_key():
    a = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    b = _testing.ListenerShim(b"another key 16 b", 1, 1500, 8192, 0)
    req = _testing.encode_handshake(isn=7, req_type=1, socket_id=99)

    def cookie(lst, peer):
        return _testing.decode_packet(lst.handle(req, peer, 0)[1])["handshake"]["cookie"]

    assert cookie(a, CLIENT) != cookie(a, ("10.0.0.1", 5001))
    assert cookie(a, CLIENT) != cookie(a, ("10.0.0.3", 5000))
    assert cookie(a, CLIENT) != cookie(b, CLIENT)


def _conclusion_for(lst, peer, now, **kw):
    req = _testing.encode_handshake(isn=7, req_type=1, socket_id=99, **kw)
    cookie = _testing.decode_packet(lst.handle(req, peer, now)[1])["handshake"]["cookie"]
    return _testing.encode_handshake(isn=7, req_type=-1, socket_id=99, cookie=cookie, **kw)


def test_cookie_accepted_for_current_and_previous_slice_only():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0, slice_us=1_000_000)
    conclusion = _conclusion_for(lst, CLIENT, 100)
    assert lst.handle(conclusion, CLIENT, 500_000)[0] == V["ACCEPT"]
    assert lst.handle(conclusion, CLIENT, 1_500_000)[0] == V["ACCEPT"]  # previous slice
    assert lst.handle(conclusion, CLIENT, 2_100_000)[0] == V["DROP"]  # too old
    assert lst.invalid["cookie"] == 1


def test_cookie_from_wrong_address_is_dropped():
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    conclusion = _conclusion_for(lst, CLIENT, 0)
    verdict, reply, req = lst.handle(conclusion, ("10.0.0.66", 5000), 10)
    assert verdict == V["DROP"] and reply is None and req is None
    assert lst.invalid["cookie"] == 1


def test_conclusion_fills_accept_request():
    lst = _testing.ListenerShim(KEY, 1, 1400, 8192, 0)
    conclusion = _conclusion_for(lst, CLIENT, 0, mss=9000, ffs=777, peer_ip=bytes([10, 0, 0, 2]) + bytes(12))
    verdict, reply, req = lst.handle(conclusion, CLIENT, 10)
    assert verdict == V["ACCEPT"] and reply is None
    assert (req.peer_socket_id, req.isn, req.mss, req.peer_flight_flag_size, req.sock_type) == (99, 7, 1400, 777, 1)
    assert req.self_ip[:4] == bytes([10, 0, 0, 2])


@pytest.mark.parametrize("field,value", [("version", 5), ("sock_type", 2)])
def test_version_or_type_mismatch_rejected_1002(field, value):
    net = Net()
    net.listen(SERVER, sock_type=1)
    kwargs = {"sock_type": 2} if field == "sock_type" else {}
    c = net.endpoint(CLIENT, SERVER, **kwargs)
    if field == "version":
        # a client that speaks another version: hand-made conclusion through the listener
        lst = net.hosts[SERVER].listener
        conclusion = _conclusion_for(lst, CLIENT, 0, version=5)
        verdict, reply, _ = lst.handle(conclusion, CLIENT, 0)
        assert verdict == V["REPLY"] and _testing.decode_packet(reply)["handshake"]["req_type"] == 1002
        assert len(reply) == len(conclusion)
        return
    net.connect(c)
    net.run(5_000_000, lambda: c.state != ST["CONNECTING"])
    assert c.state == ST["CLOSED"] and c.error == 1002
    assert net.events[id(c)] & EV["CONNECT_FAILED"]


def test_full_backlog_rejected_1002():
    net = Net()
    net.listen(SERVER, backlog=0)
    c = net.endpoint(CLIENT, SERVER)
    net.connect(c)
    net.run(5_000_000, lambda: c.state != ST["CONNECTING"])
    assert c.error == 1002


@pytest.mark.parametrize("req_type", [1002, 1000, 1004, 1016])
def test_any_refusal_request_type_fails_the_connect(req_type):
    """UDT4 refuses with 1002; SRT with 1000 + its reason (1004 when a STREAM socket speaks the
    UDT4 handshake to it). All of them end the connect at once as a rejection."""
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0, isn=500)
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    _, reply, _ = lst.handle(c.next_datagram(0), CLIENT, 0)
    c.receive(reply, 10)
    conclusion = _testing.decode_packet(c.next_datagram(10))["handshake"]
    refusal = _testing.encode_handshake(
        isn=conclusion["isn"], req_type=req_type, socket_id=conclusion["socket_id"], dst=c.socket_id
    )
    ev = c.receive(refusal, 20)
    assert ev & EV["CONNECT_FAILED"] and c.state == ST["CLOSED"]
    assert c.error == 1002 and c.reject_req_type == req_type


def test_request_types_below_1000_are_not_refusals():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0, isn=500)
    c.next_datagram(0)
    odd = _testing.encode_handshake(isn=500, req_type=999, socket_id=77, dst=c.socket_id)
    assert not c.receive(odd, 20) & EV["CONNECT_FAILED"]
    assert c.state == ST["CONNECTING"] and c.reject_req_type == 0


def test_mss_negotiated_to_the_minimum():
    net, c, s = connected_pair(client_options={"mss": 9000}, server_options={"mss": 1500})
    assert c.mss == s.mss == 1500 and c.payload_size == 1456
    net, c, s = connected_pair(client_options={"mss": 1400}, server_options={"mss": 9000})
    assert c.mss == s.mss == 1400
    data = bytes(range(256)) * 40
    from engine_harness import transfer

    assert transfer(net, c, s, data) == data
    assert s.stats(net.now)["pkt_recv_total"] == -(-len(data) // (1400 - 44))


def test_retries_every_250ms_and_gives_up_after_3s():
    c = _testing.Endpoint(1, now=0)
    c.connect(("10.0.0.9", 1), 0)
    sent = []
    now = 0
    ev = 0
    while c.state == ST["CONNECTING"]:
        sent += [now for _ in drain(c, now)]
        t = min(x for x in (c.next_timer(), c.next_send_time(now)) if x >= 0)
        now = max(t, now + 1)
        ev |= c.on_timer(now)
    assert sent == list(range(0, 3_000_000, 250_000))
    assert now == 3_000_000 and c.error == 1001 and ev & EV["CONNECT_FAILED"]
    assert c.state == ST["CLOSED"]


def test_rendezvous_gives_up_after_30s():
    c = _testing.Endpoint(1, now=0, rendezvous=True)
    c.connect(("10.0.0.9", 1), 0)
    now = 0
    count = 0
    while c.state == ST["CONNECTING"]:
        count += len(drain(c, now))
        now = max(c.next_timer(), now + 1)
        c.on_timer(now)
    assert now == 30_000_000 and c.error == 1001 and count == 120


def test_request_resent_at_once_after_a_response():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0)
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    induction = c.next_datagram(0)
    assert c.next_datagram(100) is None
    _, reply, _ = lst.handle(induction, CLIENT, 100)
    c.receive(reply, 100_000)
    assert c.next_send_time(100_000) == 100_000
    conclusion = c.next_datagram(100_000)
    assert _testing.decode_packet(conclusion)["handshake"]["req_type"] == -1


def test_security_check_wrong_isn_fails_1004():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0, isn=500)
    lst = _testing.ListenerShim(KEY, 1, 1500, 8192, 0)
    _, reply, _ = lst.handle(c.next_datagram(0), CLIENT, 0)
    c.receive(reply, 10)
    c.next_datagram(10)
    forged = _testing.encode_handshake(isn=501, req_type=-1, socket_id=77, dst=1)
    ev = c.receive(forged, 20)
    assert ev & EV["CONNECT_FAILED"] and c.error == 1004


def test_duplicate_conclusion_answered_with_stored_response():
    net = Net(profile=LinkProfile(delay_us=1000))
    net, c, s = connected_pair(net, client_addr=CLIENT, server_addr=SERVER)
    lst = net.hosts[SERVER].listener
    stored = None
    conclusion = _testing.encode_handshake(isn=c.isn, req_type=-1, socket_id=c.socket_id, cookie=c.hs_cookie)
    # the multiplexer routes it to the existing connection by (peer address, peer socket ID)
    assert s.receive(conclusion, net.now) & EV["WANT_TRANSMIT"]
    stored = s.next_datagram(net.now)
    again = _testing.decode_packet(stored)["handshake"]
    assert again["req_type"] == -1 and again["socket_id"] == s.socket_id and again["isn"] == c.isn
    # the stored answer keeps the extension trailer the udt client was answered with
    assert len(stored) == len(conclusion) + 16 and stored[64:68] == b"UDTX"
    assert lst.accepted == 1


def test_handshake_survives_loss():
    net = Net(seed=5, profile=LinkProfile(loss=0.5, delay_us=2000))
    net, c, s = connected_pair(net, timeout_us=3_000_000)
    assert c.state == s.state == ST["CONNECTED"]


def _rendezvous(net, a_addr=("10.0.0.1", 7000), b_addr=("10.0.0.2", 7000), **kw):
    a = net.endpoint(a_addr, b_addr, rendezvous=True, **kw)
    b = net.endpoint(b_addr, a_addr, rendezvous=True, **kw)
    return a, b


def test_rendezvous_three_way():
    net = Net()
    net.sent_log = []
    a, b = _rendezvous(net)
    net.connect(a)
    net.connect(b)
    assert net.run(2_000_000, lambda: a.state == b.state == ST["CONNECTED"])
    reqs = [
        _testing.decode_packet(d)["handshake"]["req_type"]
        for _, _, _, d in net.sent_log
        if _testing.decode_packet(d)["control"] and _testing.decode_packet(d)["type"] == 0
    ]
    assert reqs[:2] == [0, 0] and -1 in reqs
    assert a.peer_socket_id == b.socket_id and b.peer_socket_id == a.socket_id
    assert a.peer_isn == b.isn and b.peer_isn == a.isn
    from engine_harness import transfer

    data = bytes(range(256)) * 100
    assert transfer(net, a, b, data) == data
    assert transfer(net, b, a, data) == data


def test_rendezvous_one_side_late():
    net = Net()
    a, b = _rendezvous(net)
    net.connect(a)
    net.run(1_000_000)
    net.connect(b)
    assert net.run(2_000_000, lambda: a.state == b.state == ST["CONNECTED"])


def test_rendezvous_connected_answers_with_minus_2_and_ignores_minus_2():
    net = Net()
    a, b = _rendezvous(net)
    net.connect(a)
    net.connect(b)
    assert net.run(2_000_000, lambda: a.state == b.state == ST["CONNECTED"])
    net.run(100_000)
    req0 = _testing.encode_handshake(isn=b.isn, req_type=0, socket_id=b.socket_id)
    assert a.receive(req0, net.now) & EV["WANT_TRANSMIT"]
    answer = _testing.decode_packet(a.next_datagram(net.now))["handshake"]
    assert answer["req_type"] == -2
    minus2 = _testing.encode_handshake(version=0, sock_type=0, req_type=-2, socket_id=b.socket_id)
    assert a.receive(minus2, net.now) == 0
    assert a.next_datagram(net.now) is None


def test_rendezvous_ignores_induction():
    a = _testing.Endpoint(1, now=0, rendezvous=True)
    a.connect(("10.0.0.2", 7000), 0)
    a.receive(_testing.encode_handshake(req_type=1, socket_id=5, isn=3), 10)
    assert a.state == ST["CONNECTING"] and a.stats(10)["invalid_state"] == 1


def test_rendezvous_completed_by_data_after_peer_request():
    a = _testing.Endpoint(1, now=0, rendezvous=True)
    a.connect(("10.0.0.2", 7000), 0)
    a.next_datagram(0)
    a.receive(_testing.encode_handshake(req_type=0, socket_id=5, isn=300), 10)
    assert _testing.decode_packet(a.next_datagram(10))["handshake"]["req_type"] == -1
    ev = a.receive(_testing.encode_data(300, 3, False, 1, 0, 1, b"hello"), 20)
    assert ev & EV["CONNECTED"] and a.state == ST["CONNECTED"]
    assert a.read(100, 20) == b"hello"


def test_client_cannot_connect_twice_and_failed_state_codes():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0)
    with pytest.raises(OSError):
        c.connect(SERVER, 0)
    assert c.write(b"x", 0) == -2002
    assert c.read(10, 0) == -2002


def test_ipv6_pair_connects_and_moves_data():
    import socket

    net, c, s = connected_pair(client_addr=("fd00::1", 5000), server_addr=("fd00::2", 9000))
    assert c.peer_ip == socket.inet_pton(socket.AF_INET6, "fd00::1")  # as the server saw us
    assert s.peer_ip == socket.inet_pton(socket.AF_INET6, "fd00::2")  # as the client sent to
    assert c.payload_size == 1500 - 48 - 16  # what fits an IPv6 packet of MSS bytes
    from engine_harness import transfer

    data = bytes(range(256)) * 4000
    assert transfer(net, c, s, data) == data
