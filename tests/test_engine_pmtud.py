"""Path-MTU discovery between udt peers (protocol.md §13), with the fake clock: the search
reaches the path's MTU (the harness drops datagrams above LinkProfile.mtu), lost probes fall
back, a peer that does not offer it (UDT4/SRT-like, or udt with it off) keeps the handshake's
MSS, and an MSS that grows while packets are lost and retransmitted keeps the data intact."""

from __future__ import annotations

import struct

import pytest

from engine_harness import LinkProfile, Net, connected_pair, sha, transfer
from udt import _testing

ST = _testing.STATES
PMTUD = _testing.CAPS["PMTUD"]
ON = {"pmtud_max_mss": 65535}
DATA = bytes(range(256)) * 16_000  # 4 MB


def _pair(mtu: int = 0, client: dict | None = None, server: dict | None = None, **profile):
    net = Net(seed=7, profile=LinkProfile(mtu=mtu, **profile))
    return connected_pair(
        net, client_options=ON if client is None else client, server_options=ON if server is None else server
    )


def _settle(net, *eps) -> None:
    """Run until every endpoint's search is over (probes time out after RTT + 4·RTTVar)."""
    assert net.run(60_000_000, lambda: all(ep.pmtud["done"] for ep in eps))


@pytest.mark.parametrize(
    ("mtu", "low", "high"),
    [(0, 65535, 65535), (9000, 9000, 9000), (4000, 4000 - 512, 4000), (1500, 1500, 1500)],
)
def test_discovery_reaches_the_path_mtu(mtu, low, high):
    net, c, s = _pair(mtu)
    assert c.caps & PMTUD and s.caps & PMTUD
    assert c.pmtud["max"] == s.pmtud["max"] == 65535
    _settle(net, c, s)
    for ep in (c, s):
        assert low <= ep.mss <= high, ep.pmtud
        assert ep.stats(net.now)["mss"] == ep.mss
        # new chunks take slots of the confirmed size only: a refusing path costs no memory
        assert ep.pmtud["slot_size"] == ep.mss - 44
    got = transfer(net, c, s, DATA)
    assert sha(got) == sha(DATA)
    # what the sender put on the wire matches what it found
    assert c.payload_size == c.mss - 28 - 16


def test_lost_probes_are_not_congestion_and_fall_back():
    """On a 1500-byte path every probe is lost: the MSS stays, the search ends, no data lost."""
    net, c, s = _pair(1500)
    _settle(net, c, s)
    st = c.pmtud
    assert c.mss == 1500 and st["probes_lost"] == st["probes_sent"] > 0 and st["fail"] > 1500
    # three copies per size, and the search is bounded (a binary search to 512 bytes)
    assert st["probes_sent"] % 3 == 0 and st["probes_sent"] <= 3 * 10
    before = c.stats(net.now)
    assert before["pkt_snd_loss_total"] == 0  # probe loss never reaches the loss list or the CC
    # perfmon shows the search: what the engine counted, the MSS in use and the ceiling
    assert (before["pmtud_probes_sent"], before["pmtud_probes_lost"]) == (st["probes_sent"], st["probes_lost"])
    assert before["pmtud_probes_confirmed"] == 0
    assert (before["mss"], before["pmtud_max_mss"]) == (1500, 65535)
    got = transfer(net, c, s, DATA)
    assert sha(got) == sha(DATA)


def test_random_probe_loss_still_converges():
    net, c, s = _pair(9000, loss=0.2)
    _settle(net, c, s)
    assert 8000 <= c.mss <= 9000, c.pmtud
    got = transfer(net, c, s, DATA)
    assert sha(got) == sha(DATA)


@pytest.mark.parametrize("side", ["server", "client"])
def test_peer_that_refuses_keeps_the_negotiated_mss(side):
    """A peer without the TLV (discovery off, or a UDT4/SRT peer: no trailer at all) is never
    probed: both stay at the handshake's MSS, with slots of that size."""
    net = Net(seed=3)
    net.sent_log = []
    opts = {"client": dict(ON), "server": dict(ON)}
    opts[side] = {}
    net, c, s = connected_pair(net, client_options=opts["client"], server_options=opts["server"])
    net.run(3_000_000)
    for ep in (c, s):
        assert ep.mss == 1500 and not ep.caps & PMTUD and ep.pmtud["max"] == 0
        assert ep.pmtud["probes_sent"] == 0 and ep.pmtud["slot_size"] == 1500 - 44
    assert max(len(d) for _, _, _, d in net.sent_log) <= 1500 - 28
    got = transfer(net, c, s, DATA)
    assert sha(got) == sha(DATA)


def test_plain_udt4_listener_sees_no_tlv():
    """The listener's conclusion answer carries TLV 3 only when the conclusion did, so the
    answer is never longer than the request (protocol.md §11)."""
    net = Net(seed=5)
    net.sent_log = []
    net, c, s = connected_pair(net, client_options=ON, server_options=ON)
    hs = [d for _, _, _, d in net.sent_log if _testing.decode_packet(d).get("type") == 0]
    conclusion, response = hs[2], hs[3]
    assert len(conclusion) == len(response) == 64 + 16 + 8
    assert struct.unpack_from("!HHI", conclusion, 80) == (3, 4, 65535)


def test_smaller_peer_maximum_is_the_ceiling():
    net, c, s = _pair(0, server={"pmtud_max_mss": 9000})
    assert c.pmtud["max"] == s.pmtud["max"] == 9000
    _settle(net, c, s)
    assert c.mss == s.mss == 9000


@pytest.mark.parametrize("message_mode", [False, True])
def test_mss_change_under_loss_keeps_data_intact(message_mode):
    """Writing starts at once, so packets of 1500 are in flight, lost and retransmitted at
    their old size while new ones go out at the grown MSS; the receiver moves chunks made
    before the change to bigger slots when big packets land in them."""
    opts = dict(ON, sock_type=2 if message_mode else 1)
    net, c, s = _pair(0, client=opts, server=opts, loss=0.02, delay_us=20_000)
    data = bytes((i * 7) & 0xFF for i in range(8 << 20))
    got = transfer(net, c, s, data, chunk=200_000 if message_mode else 65536, message_mode=message_mode)
    assert sha(got) == sha(data)
    assert c.mss == 65535
    st = c.stats(net.now)
    assert st["pkt_retrans_total"] > 0
    assert st["pkt_sent_total"] < len(data) // 1456  # most of it went in big packets


def test_probe_above_our_maximum_is_invalid():
    net, c, s = _pair(0, server={"pmtud_max_mss": 9000})
    header = struct.pack("!IIII", 0xFFFF5503, 1, 0, s.socket_id)
    before = s.stats(net.now)["invalid_length"]
    s.receive(header + bytes(9004 - 28 - 16), net.now)  # one word above the ceiling
    assert s.stats(net.now)["invalid_length"] == before + 1
    s.receive(header + bytes(9000 - 28 - 16), net.now)  # at the ceiling: confirmed
    assert s.stats(net.now)["invalid_length"] == before + 1


def test_discovery_off_in_engine_options_by_default():
    net, c, s = _pair(0, client={}, server={})
    assert c.pmtud["max"] == 0 and c.pmtud["slot_size"] == 1500 - 44


@pytest.mark.parametrize(("packets", "ceiling"), [(64, 0), (640, 640 * 1456 // 64 + 44)])
def test_buffers_in_bytes_bound_the_ceiling(packets, ceiling):
    """UDT_SNDBUF/UDT_RCVBUF are bytes: the MSS grows only while a ring still holds a chunk
    (64 packets) at the new size, and the packet limits shrink to the same bytes."""
    opts = dict(ON, snd_buf=packets, rcv_buf=packets)
    net, c, s = _pair(0, client=opts, server=opts)
    assert c.pmtud["max"] == ceiling
    if ceiling:
        _settle(net, c, s)
    else:
        net.run(1_000_000)
    assert c.mss == (ceiling or 1500)
    got = transfer(net, c, s, DATA)
    assert sha(got) == sha(DATA)
    assert c.buffers["snd_limit"] * (c.mss - 44) <= packets * 1456 or c.buffers["snd_limit"] == 64


def test_a_side_with_small_buffers_offers_its_own_ceiling():
    """TLV 3 carries the ceiling the side's rings allow, so both agree on it: a side that
    lowered it only after the handshake refused the peer's probes (invalid_length) and the
    peer stayed at the handshake's MSS for most of a transfer."""
    net, c, s = _pair(0, server=dict(ON, rcv_buf=2000))
    ceiling = 2000 * 1456 // 64 + 44
    assert c.pmtud["max"] == s.pmtud["max"] == ceiling
    _settle(net, c, s)
    assert c.mss == s.mss == ceiling
    assert c.pmtud["probes_lost"] == 0
    assert c.stats(net.now)["invalid_length"] == s.stats(net.now)["invalid_length"] == 0


def test_maxbw_stays_bytes_per_second_after_growth():
    opts = dict(ON, max_bandwidth=2_000_000)
    net, c, s = _pair(0, client=opts)
    _settle(net, c, s)
    assert c.mss == 65535
    start = net.now
    got = transfer(net, c, s, DATA)
    assert sha(got) == sha(DATA)
    assert (net.now - start) / 1e6 >= 0.9 * len(DATA) / 2_000_000


def test_server_waits_for_the_client_before_probing():
    net = Net(seed=9)
    net.sent_log = []
    net, c, s = connected_pair(net, client_options=ON, server_options=ON)
    _settle(net, c, s)
    assert s.pmtud["probes_lost"] == 0 and s.mss == 65535


def _stall(opts: dict, seconds: int = 10):
    """Write as fast as the sender takes it to a reader that never reads; bytes written by
    the end of each second."""
    net = Net(seed=7, profile=LinkProfile(delay_us=500))
    net, c, s = connected_pair(net, client_options=opts, server_options=opts)
    if opts:
        _settle(net, c, s)
    block = bytes(1 << 16)
    written = 0
    marks = []

    def pump() -> bool:
        nonlocal written
        while (n := c.write(block, net.now)) > 0:
            written += n
        return False

    for _ in range(seconds):
        net.run(1_000_000, pump)
        marks.append(written)
    return marks, net, c, s


def test_a_reader_that_stopped_holds_the_same_bytes_after_growth():
    """The hang in tests/test_memory.py: at 64 KiB the zero window's 2-packet probes let
    ~12 MB/s through (sendall never timed out), the receiver kept it past UDT_RCVBUF's bytes
    (its ring's geometry is packets), and the limits' starting points were capped instead of
    scaled (512 receive packets of 64 KiB).  Now the trickle and the bytes held match MSS 1500."""
    base, _, _, s0 = _stall({})
    grown, net, c, s = _stall(ON)
    assert c.mss == 65535
    base_rate = (base[-1] - base[4]) / 5
    rate = (grown[-1] - grown[4]) / 5
    assert rate <= 2 * base_rate + 65536, (rate, base_rate)
    # bytes held by the receiver stay within its byte cap (8192 packets of 1456 here)
    assert s.readable_bytes <= 8192 * 1456
    assert s.readable_bytes <= 4 * s0.readable_bytes
    # the reader comes back: the spacing ends with the ACK that reports room, and 16 MB more
    # arrive at the grown MSS's speed, every byte
    more = bytes((i * 13) & 0xFF for i in range(16 << 20))
    start = net.now
    held = bytearray()

    def drain() -> bool:
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            held.extend(r)
        return len(held) >= grown[-1]

    assert net.run(5_000_000, drain) and held == bytes(grown[-1])
    got = transfer(net, c, s, more, timeout_us=60_000_000)
    assert sha(got) == sha(more)
    assert net.now - start < 5_000_000


def test_black_hole_mid_transfer_keeps_data_intact():
    """The path's MTU drops to 1500 a quarter into a transfer at MSS 65535 (a relay or an
    ICMP-filtered router dropping big datagrams).  The big packets already in the send ring
    keep their sequence numbers; an EXP makes the sender check its MSS, three lost copies
    (while base-size probes cross) are a black hole, the MSS goes back to 1500 and the packets
    written before leave as fragments the receiver joins (protocol.md §13)."""
    net, c, s = _pair(0)
    _settle(net, c, s)
    assert c.mss == 65535
    got = bytearray()
    offset = 0

    def pump() -> bool:
        nonlocal offset
        if len(got) > len(DATA) // 4 and net._profile.mtu == 0:
            net.set_profile(LinkProfile(mtu=1500))
        while offset < len(DATA) and (n := c.write(DATA[offset : offset + 65536], net.now)) > 0:
            offset += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got.extend(r)
        return len(got) >= len(DATA) or c.state != ST["CONNECTED"]

    net.run(60_000_000, pump)
    assert c.state == ST["CONNECTED"], (c.state, c.error, len(got))
    assert sha(bytes(got)) == sha(DATA)


def _black_hole_transfer(data: bytes, *, message_mode: bool = False, loss: float = 0.0, seed: int = 7):
    """Move data at MSS 65535 while the path's MTU drops to 1500 (both ways) a quarter in."""
    opts = dict(ON, sock_type=2 if message_mode else 1)
    net = Net(seed=seed, profile=LinkProfile(loss=loss))
    net, c, s = connected_pair(net, client_options=opts, server_options=opts)
    _settle(net, c, s)
    assert c.mss == 65535 and c.pmtud["fragments"] and s.pmtud["fragments"]
    chunk = 200_000 if message_mode else 65536
    got = bytearray()
    messages: list[bytes] = []
    offset = 0
    dropped_at: list[int] = []

    def pump() -> bool:
        nonlocal offset
        if len(got) > len(data) // 4 and not dropped_at:
            net.set_profile(LinkProfile(mtu=1500, loss=loss))
            dropped_at.append(net.now)
        while offset < len(data) and (n := c.write(data[offset : offset + chunk], net.now)) > 0:
            offset += n
        while True:
            r = s.read_message(1 << 20, net.now) if message_mode else s.read(1 << 20, net.now)
            if isinstance(r, int) or not r:
                break
            messages.append(r[0] if message_mode else r)
            got.extend(messages[-1])
        return len(got) >= len(data) or c.state != ST["CONNECTED"]

    assert net.run(60_000_000, pump), (c.state, c.error, len(got), c.pmtud)
    return net, c, s, bytes(got), messages, dropped_at[0]


@pytest.mark.parametrize("loss", [0.0, 0.01])
@pytest.mark.parametrize("message_mode", [False, True])
def test_black_hole_falls_back_to_the_base_and_joins_fragments(message_mode, loss):
    data = bytes((i * 7) & 0xFF for i in range(4 << 20))
    net, c, s, got, messages, dropped_at = _black_hole_transfer(data, message_mode=message_mode, loss=loss)
    assert c.state == ST["CONNECTED"]
    assert got == data
    if message_mode:  # every message whole, in order, boundaries kept
        assert messages == [data[i : i + 200_000] for i in range(0, len(data), 200_000)]
    # one black hole, found within a second or two, not the 10 s idle timeout
    assert c.pmtud["black_holes"] == 1 and c.mss == 1500 and c.pmtud["fail"] <= 1500 + 512
    assert net.now - dropped_at < 3_000_000
    st = c.stats(net.now)
    assert st["pmtud_black_holes"] == 1 and st["mss"] == 1500
    # the packets written before the drop crossed in pieces, which the receiver joined
    assert st["pmtud_fragments_sent"] > 0
    assert 0 < s.stats(net.now)["pmtud_fragments_received"] <= st["pmtud_fragments_sent"]
    # the reverse direction (ACKs only) never grew past what crosses: no black hole there
    assert s.pmtud["black_holes"] == 0
    # the receiver's reassembly goes with the idle release
    assert s.pmtud["reassembly"]
    net.run(3_000_000)
    assert not s.pmtud["reassembly"]


def test_black_hole_found_while_small_packets_keep_the_peer_talking():
    """Messages of 66,000 bytes: a full packet and a 509-byte tail each.  The tails cross, so
    the receiver NAKs the big packets again and again and no EXP ever fires; NAKs while the
    cumulative ACK stands still make the sender check its MSS too."""
    opts = dict(ON, sock_type=2)
    net, c, s = connected_pair(Net(seed=7), client_options=opts, server_options=opts)
    _settle(net, c, s)
    data = bytes((i * 7) & 0xFF for i in range(66_000 * 60))
    got = bytearray()
    offset = 0
    dropped_at: list[int] = []

    def pump() -> bool:
        nonlocal offset
        if len(got) > len(data) // 4 and not dropped_at:
            net.set_profile(LinkProfile(mtu=1500))
            dropped_at.append(net.now)
        while offset < len(data) and (n := c.write(data[offset : offset + 66_000], net.now)) > 0:
            offset += n
        while not isinstance(r := s.read_message(1 << 20, net.now), int):
            got.extend(r[0])
        return len(got) >= len(data) or c.state != ST["CONNECTED"]

    assert net.run(30_000_000, pump)
    assert c.state == ST["CONNECTED"] and bytes(got) == data
    assert c.pmtud["black_holes"] == 1 and c.mss == 1500
    assert net.now - dropped_at[0] < 3_000_000


def test_after_a_black_hole_the_search_runs_again_and_regrows():
    """RFC 8899's raise timer: 60 s after the black hole the search starts from the ceiling
    again, and finds the path's MTU back at 65535; data still crosses intact."""
    net, c, s, got, _, dropped_at = _black_hole_transfer(DATA)
    assert got == DATA and c.mss == 1500
    raise_time = c.pmtud["raise_time"]
    assert raise_time - dropped_at >= 59_000_000
    net.set_profile(LinkProfile())  # the path is whole again
    assert net.run(90_000_000, lambda: c.mss == 65535), c.pmtud
    assert net.now >= raise_time
    assert c.pmtud["black_holes"] == 1 and c.pmtud["raise_time"] == 0  # at the ceiling: no more
    more = bytes((i * 11) & 0xFF for i in range(4 << 20))
    assert sha(transfer(net, c, s, more)) == sha(more)


def test_a_search_below_the_ceiling_raises_again_after_600_s():
    net, c, s = _pair(9000)
    _settle(net, c, s)
    assert c.mss == 9000 and c.pmtud["raise_time"] > 0
    assert c.pmtud["raise_time"] - net.now >= 590_000_000
    net.set_profile(LinkProfile(mtu=20_000))
    sent = c.pmtud["probes_sent"]
    assert net.run(700_000_000, lambda: c.mss > 9000), c.pmtud
    _settle(net, c)
    assert 20_000 - 512 <= c.mss <= 20_000 and c.pmtud["probes_sent"] > sent


def test_an_outage_is_not_a_black_hole():
    """Everything lost for 2 s (a dead path, not a small MTU): the big copies are lost but so
    are the base-size probes, so the MSS stays; once the path is back the check confirms it."""
    net, c, s = _pair(0)
    _settle(net, c, s)
    got = bytearray()
    offset = 0
    outage: list[int] = []

    def pump() -> bool:
        nonlocal offset
        if len(got) > len(DATA) // 4 and not outage:
            net.set_profile(LinkProfile(loss=1.0))
            outage.append(net.now)
        if outage and len(outage) == 1 and net.now - outage[0] >= 2_000_000:
            net.set_profile(LinkProfile())
            outage.append(net.now)
        while offset < len(DATA) and (n := c.write(DATA[offset : offset + 65536], net.now)) > 0:
            offset += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got.extend(r)
        return len(got) >= len(DATA) or c.state != ST["CONNECTED"]

    sent = c.pmtud["probes_sent"]
    assert net.run(60_000_000, pump)
    assert sha(bytes(got)) == sha(DATA)
    net.run(1_000_000)  # the last copy's answer
    assert c.mss == 65535 and c.pmtud["black_holes"] == 0 and not c.pmtud["confirming"]
    assert c.pmtud["probes_sent"] > sent  # it did check
    assert c.pmtud["fragments_sent"] == 0


def _fragment(s, seq: int, index: int, count: int, total: int, payload: bytes, word: int = 0xC0000001) -> bytes:
    header = struct.pack("!IIII", 0xFFFF5505, seq, 0, s.socket_id)
    return header + struct.pack("!III", word, index << 16 | count, total) + payload


def test_fragments_are_joined_and_checked():
    net, c, s = _pair(0)
    _settle(net, c, s)
    seq = s.peer_isn  # what c sends first
    body = bytes(range(256)) * 12  # 3072 bytes in 3 fragments of 1024
    invalid = s.stats(net.now)["invalid_length"]
    bad = [
        _fragment(s, seq, 0, 1, 3072, body[:1024]),  # count below 2
        _fragment(s, seq, 3, 3, 3072, body[:1024]),  # index past the count
        _fragment(s, seq, 0, 3, 3072, body[:1000]),  # size that does not match its index
        _fragment(s, seq, 0, 3, 70_000, body[:1024]),  # longer than a receive slot
        _fragment(s, seq, 0, 300, 3072 * 100, body[:1024]),  # more than 256 fragments
    ]
    for d in bad:
        s.receive(d, net.now)
    assert s.stats(net.now)["invalid_length"] == invalid + len(bad)
    s.receive(_fragment(s, seq, 2, 3, 3072, body[2048:]), net.now)
    s.receive(_fragment(s, seq, 0, 3, 3072, body[:1024]), net.now)
    s.receive(_fragment(s, seq, 0, 3, 3072, body[:1024]), net.now)  # a duplicate fragment
    assert s.readable_bytes == 0  # one fragment missing: nothing yet
    s.receive(_fragment(s, seq, 1, 3, 3072, body[1024:2048]), net.now)
    assert s.readable_bytes == 3072 and s.read(1 << 20, net.now) == body
    before = s.stats(net.now)["pkt_duplicate_total"]
    s.receive(_fragment(s, seq, 1, 3, 3072, body[1024:2048]), net.now)  # that packet is here
    assert s.stats(net.now)["pkt_duplicate_total"] == before + 1
    assert s.stats(net.now)["invalid_length"] == invalid + len(bad)


def test_fragments_without_discovery_are_not_data():
    """A fragment control from a peer that did not negotiate them is an ordinary user-defined
    packet: never delivered as data."""
    net, c, s = _pair(0, client={}, server={})
    assert not s.pmtud["fragments"]
    s.receive(_fragment(s, s.peer_isn, 0, 2, 2048, bytes(1024)), net.now)
    s.receive(_fragment(s, s.peer_isn, 1, 2, 2048, bytes(1024)), net.now)
    assert s.readable_bytes == 0
