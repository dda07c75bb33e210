"""udt._net.Channel over real loopback sockets: data integrity on every I/O path, the offloads,
adoption, timeouts and wake-ups, and the exact errors."""

from __future__ import annotations

import errno
import hashlib
import socket
import threading
import time

import pytest

from udt._net import (
    GRO_BUFFER_SIZE,
    GSO_MAX_SEGMENTS,
    POLLIN,
    POLLOUT,
    Channel,
    RecvBatch,
    SendBatch,
    address_to_sockaddr,
    sockaddr_to_address,
)

PAYLOAD = 1456
BIG_BUFFER = 32 << 20  # forced past rmem_max as root; loopback drops nothing below it
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
FAMILIES = pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
OFFLOADS = pytest.mark.parametrize(
    "gso,gro",
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["gso+gro", "gso-only", "gro-only", "neither"],
)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


if not _has_ipv6():  # pragma: no cover - this machine has ::1
    FAMILIES = pytest.mark.parametrize("family", [socket.AF_INET], ids=["v4"])


def bound(family: int = socket.AF_INET, **keywords) -> Channel:
    channel = Channel(family, rcvbuf=BIG_BUFFER, sndbuf=BIG_BUFFER, **keywords)
    channel.bind((LOOPBACK[family], 0))
    return channel


@pytest.fixture
def v4_pair():
    sender, receiver = bound(), bound()
    yield sender, receiver
    sender.close()
    receiver.close()


def numbered(sequence: int, size: int = PAYLOAD) -> bytes:
    """A datagram that says which one it is and whose body depends on that number."""
    head = sequence.to_bytes(4, "big")
    body = bytes((sequence + i) & 0xFF for i in range(min(size - 4, 64)))
    return (head + body * (size // max(len(body), 1) + 1))[:size]


def receive_exactly(channel: Channel, count: int, batch: RecvBatch | None = None) -> list[bytes]:
    """Receive ``count`` datagrams through recv_batch (1 s per wait: loopback is immediate)."""
    batch = RecvBatch(16) if batch is None else batch
    received: list[bytes] = []
    while len(received) < count:
        n = channel.recv_batch(batch, timeout=1.0)
        received.extend(batch[i][0] for i in range(n))
    return received


# ---------------------------------------------------------------------------------------------
# basics
# ---------------------------------------------------------------------------------------------


@FAMILIES
def test_single_datagram_round_trip(family):
    with bound(family) as sender, bound(family) as receiver:
        destination = receiver.getsockname()
        assert sender.sendto(b"hello channel", destination) == 13
        buffer = bytearray(2048)
        nbytes, source = receiver.recvfrom_into(buffer, timeout=1.0)
        assert bytes(buffer[:nbytes]) == b"hello channel"
        assert source == sender.getsockname()
        if family == socket.AF_INET6:
            assert len(source) == 4 and source[0] == "::1"
        else:
            assert source[0] == "127.0.0.1"


@FAMILIES
def test_thousands_through_sendto_and_recvfrom_into(family):
    count = 3000
    with bound(family) as sender, bound(family) as receiver:
        destination = receiver.getsockname()
        buffer = bytearray(PAYLOAD)
        sent_digest, received_digest = hashlib.sha256(), hashlib.sha256()
        for window in range(0, count, 500):
            for sequence in range(window, window + 500):
                datagram = numbered(sequence)
                sent_digest.update(datagram)
                assert sender.sendto(datagram, destination) == PAYLOAD
            for sequence in range(window, window + 500):
                nbytes, _ = receiver.recvfrom_into(buffer, timeout=1.0)
                assert nbytes == PAYLOAD
                assert int.from_bytes(buffer[:4], "big") == sequence
                received_digest.update(buffer)
        assert received_digest.digest() == sent_digest.digest()


def test_scatter_gather_sends_one_datagram(v4_pair):
    sender, receiver = v4_pair
    parts = [b"head", bytearray(b"-middle-"), memoryview(b"tail"), b""]
    assert sender.sendto(parts, receiver.getsockname()) == 16
    many = [bytes([i]) for i in range(40)]  # more pieces than fit the on-stack iovec array
    assert sender.sendto(many, receiver.getsockname()) == 40
    assert [data for data, _ in receiver.recvmany(2, timeout=1.0)] == [b"head-middle-tail", bytes(range(40))]


def test_short_buffer_truncates_like_the_socket_module(v4_pair):
    sender, receiver = v4_pair
    sender.sendto(b"0123456789", receiver.getsockname())
    small = bytearray(4)
    assert receiver.recvfrom_into(small, timeout=1.0)[0] == 4
    assert small == b"0123"


def test_empty_datagram(v4_pair):
    sender, receiver = v4_pair
    assert sender.sendto(b"", receiver.getsockname()) == 0
    assert receiver.recvfrom_into(bytearray(16), timeout=1.0)[0] == 0


# ---------------------------------------------------------------------------------------------
# batches, GSO and GRO
# ---------------------------------------------------------------------------------------------


@FAMILIES
@OFFLOADS
def test_batches_deliver_identical_data_on_every_path(family, gso, gro):
    count, window = 5000, 400
    with bound(family, gso=gso) as sender, bound(family, gro=gro) as receiver:
        assert sender.gso_enabled == (gso and sender.gso_supported)
        assert receiver.gro_enabled == (gro and receiver.gro_supported)
        destination = receiver.getsockname()
        sent_digest, received_digest = hashlib.sha256(), hashlib.sha256()
        batch = RecvBatch(8)
        next_expected = 0
        for start in range(0, count, window):
            datagrams = [numbered(sequence) for sequence in range(start, start + window)]
            for datagram in datagrams:
                sent_digest.update(datagram)
            assert sender.send_batch(datagrams, destination, timeout=5.0) == window
            for datagram in receive_exactly(receiver, window, batch):
                assert len(datagram) == PAYLOAD
                assert int.from_bytes(datagram[:4], "big") == next_expected
                next_expected += 1
                received_digest.update(datagram)
        assert received_digest.hexdigest() == sent_digest.hexdigest()
        assert batch.truncated == 0


def test_gso_and_gro_really_coalesce():
    """With both offloads one receive buffer brings a whole GSO run; without GRO the kernel
    hands the receiver the segments one by one."""
    with bound(gso=True) as sender, bound(gro=True) as receiver, bound(gro=False) as plain:
        if not (sender.gso_enabled and receiver.gro_enabled):
            pytest.skip("this kernel has no UDP GSO/GRO")
        datagrams = [numbered(i) for i in range(GSO_MAX_SEGMENTS)]
        one_slot = RecvBatch(1)
        sender.send_batch(datagrams, receiver.getsockname())
        assert receiver.recv_batch(one_slot, timeout=1.0) == 44  # 44 * 1456 <= 65507
        assert [one_slot[i][0] for i in range(44)] == datagrams[:44]
        assert receiver.recv_batch(one_slot, timeout=1.0) == 20
        assert [one_slot[i][0] for i in range(20)] == datagrams[44:]

        sender.send_batch(datagrams, plain.getsockname())
        assert plain.recv_batch(one_slot, timeout=1.0) == 1
        assert one_slot[0][0] == datagrams[0]
        assert receive_exactly(plain, 63) == datagrams[1:]


def test_gro_buffer_larger_than_the_batch_stays_pending():
    with bound(gso=True) as sender, bound(gro=True) as receiver:
        if not (sender.gso_enabled and receiver.gro_enabled):
            pytest.skip("this kernel has no UDP GSO/GRO")
        datagrams = [numbered(i) for i in range(40)]
        sender.send_batch(datagrams, receiver.getsockname())
        small = RecvBatch(1, max_datagrams=16)
        counts, received = [], []
        while len(received) < 40:
            counts.append(receiver.recv_batch(small, timeout=1.0))
            received.extend(small[i][0] for i in range(counts[-1]))
        assert counts == [16, 16, 8]
        assert received == datagrams
        assert not small.has_pending


@OFFLOADS
def test_mixed_sizes_and_header_payload_pairs(gso, gro):
    """Runs break where sizes change; a segment may be several iovecs (header + payload)."""
    sizes = [PAYLOAD] * 10 + [100] + [PAYLOAD] * 70 + [7, 7, 7, 0, 1200, 1300] + [65000] + [9] * 3
    with bound(gso=gso) as sender, bound(gro=gro) as receiver:
        batch = SendBatch(len(sizes))
        expected = []
        for index, size in enumerate(sizes):
            datagram = numbered(index, size) if size >= 4 else bytes([index]) * size
            expected.append(datagram)
            if size >= 16:
                batch.add((datagram[:16], datagram[16:]))  # header + payload, not joined
            else:
                batch.add(datagram)
        assert len(batch) == len(sizes) and batch.pending == len(sizes)
        assert sender.send_batch(batch, receiver.getsockname(), timeout=5.0) == len(sizes)
        assert batch.pending == 0
        assert receive_exactly(receiver, len(sizes)) == expected
        batch.rewind()  # the same batch, sent again
        assert sender.send_batch(batch, receiver.getsockname()) == len(sizes)
        assert receive_exactly(receiver, len(sizes)) == expected


def test_send_batch_full_and_bad_batches():
    batch = SendBatch(2)
    batch.add(b"a")
    batch.add(b"b")
    with pytest.raises(OSError) as caught:
        batch.add(b"c")
    assert caught.value.errno == errno.ENOBUFS
    with pytest.raises(ValueError):
        batch.add([])
    batch.clear()
    assert len(batch) == 0
    with pytest.raises(ValueError):
        SendBatch(0)
    with pytest.raises(ValueError):
        RecvBatch(0)
    with pytest.raises(ValueError):
        RecvBatch(1, GRO_BUFFER_SIZE + 1)


def test_small_receive_slots_are_refused_on_a_gro_socket():
    with bound(gro=True) as receiver:
        if not receiver.gro_enabled:
            pytest.skip("this kernel has no UDP GRO")
        with pytest.raises(OSError) as caught:
            receiver.recv_batch(RecvBatch(4, 2048), timeout=0)
        assert caught.value.errno == errno.EINVAL


def test_small_slots_drop_and_count_oversized_datagrams():
    with bound() as sender, bound(gro=False) as receiver:
        sender.sendto(b"x" * 3000, receiver.getsockname())
        sender.sendto(b"fits", receiver.getsockname())
        batch = RecvBatch(4, 2048)
        received = receive_exactly(receiver, 1, batch)
        assert received == [b"fits"]
        assert batch.truncated == 1


def test_recvmany_and_recvfrom_into_share_one_stream(v4_pair):
    sender, receiver = v4_pair
    datagrams = [numbered(i, 200) for i in range(30)]
    sender.send_batch(datagrams, receiver.getsockname())
    first = receiver.recvmany(5, timeout=1.0)
    assert [data for data, _ in first] == datagrams[:5]
    assert first[0][1] == sender.getsockname()
    buffer = bytearray(300)
    rest = []
    for _ in range(25):
        nbytes, _ = receiver.recvfrom_into(buffer, timeout=1.0)
        rest.append(bytes(buffer[:nbytes]))
    assert rest == datagrams[5:]


# ---------------------------------------------------------------------------------------------
# adoption
# ---------------------------------------------------------------------------------------------


@FAMILIES
def test_adopt_an_existing_udp_socket(family):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK[family], 0))
    name = sock.getsockname()
    with Channel.adopt(sock, gso=False) as channel, bound(family) as peer:
        assert sock.fileno() == -1  # ownership moved to the channel
        assert channel.family == family
        assert channel.getsockname() == name
        assert not channel.gso_enabled
        peer.sendto(b"to the adopted socket", name)
        assert channel.recvmany(1, timeout=1.0)[0][0] == b"to the adopted socket"
    sock.close()


def test_adopt_refuses_tcp_and_non_sockets():
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ValueError):
            Channel.adopt(tcp)
        assert tcp.fileno() != -1  # refused: still the caller's socket
    finally:
        tcp.close()
    with pytest.raises(TypeError):
        Channel.adopt(3)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    with pytest.raises(OSError):
        Channel.adopt(closed)


# ---------------------------------------------------------------------------------------------
# timeouts and wake-ups
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_timeouts(gro):
    with bound(gro=gro) as channel:
        buffer = bytearray(64)
        with pytest.raises(BlockingIOError):
            channel.recvfrom_into(buffer, timeout=0)
        with pytest.raises(BlockingIOError):
            channel.recv_batch(RecvBatch(2), timeout=0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            channel.recvfrom_into(buffer, timeout=0.05)
        assert time.monotonic() - started >= 0.045
        with pytest.raises(TimeoutError):
            channel.recv_batch(RecvBatch(2), timeout=0.02)
        assert channel.poll(POLLIN, timeout=0.02) == 0
        assert channel.poll(POLLOUT, timeout=0) & POLLOUT
        with pytest.raises(ValueError):
            channel.recvfrom_into(buffer, timeout=-1)


def _close_soon(channel: Channel, started: threading.Event) -> threading.Thread:
    def run():
        started.wait(5)
        time.sleep(0.05)  # let the main thread get into its wait
        channel.close()

    thread = threading.Thread(target=run, name="closer")
    thread.start()
    return thread


@pytest.mark.parametrize("operation", ["recvfrom_into", "recv_batch", "recvmany", "poll"])
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_close_from_another_thread_wakes_a_blocked_receive(operation, gro):
    channel = bound(gro=gro)
    started = threading.Event()
    closer = _close_soon(channel, started)
    began = time.monotonic()
    try:
        started.set()
        with pytest.raises(OSError) as caught:
            if operation == "recvfrom_into":
                channel.recvfrom_into(bytearray(64), timeout=None)
            elif operation == "recv_batch":
                channel.recv_batch(RecvBatch(2), timeout=None)
            elif operation == "recvmany":
                channel.recvmany(4, timeout=None)
            else:
                channel.poll(POLLIN, timeout=None)
        assert caught.value.errno == errno.EBADF
        assert time.monotonic() - began < 5
    finally:
        closer.join()
    assert channel.closed and channel.fileno() == -1


def test_interrupt_wakes_poll_without_closing(v4_pair):
    _, receiver = v4_pair
    result = []
    waiting = threading.Event()

    def wait():
        waiting.set()
        result.append(receiver.poll(POLLIN, timeout=10))

    thread = threading.Thread(target=wait, name="poller")
    thread.start()
    waiting.wait(5)
    time.sleep(0.05)
    receiver.interrupt()
    thread.join(5)
    assert not thread.is_alive()
    assert result == [0]
    assert not receiver.closed


def test_poll_reports_readable(v4_pair):
    sender, receiver = v4_pair
    sender.sendto(b"x", receiver.getsockname())
    assert receiver.poll(POLLIN, timeout=1.0) & POLLIN


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_everything_on_a_closed_channel_is_ebadf():
    channel = bound()
    name = channel.getsockname()
    channel.close()
    channel.close()  # idempotent
    assert channel.closed and channel.fileno() == -1
    calls = [
        lambda: channel.sendto(b"x", name),
        lambda: channel.recvfrom_into(bytearray(8), 0),
        lambda: channel.recv_batch(RecvBatch(1), 0),
        lambda: channel.send_batch([b"x"], name),
        lambda: channel.bind(("127.0.0.1", 0)),
        lambda: channel.connect(name),
        lambda: channel.disconnect(),
        lambda: channel.getsockname(),
        lambda: channel.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1),
        lambda: channel.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST),
        lambda: channel.outq(),
        lambda: channel.rcvbuf,
        lambda: channel.poll(POLLIN, 0),
        lambda: channel.interrupt(),
    ]
    for call in calls:
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.EBADF


def test_bad_addresses(v4_pair):
    sender, _ = v4_pair
    with pytest.raises(TypeError):
        sender.sendto(b"x", "127.0.0.1:9")
    with pytest.raises(TypeError):
        sender.sendto(b"x", ("127.0.0.1", 9, 0, 0))  # a v6 tuple on a v4 channel
    with pytest.raises(TypeError):
        sender.sendto(b"x", ("127.0.0.1", "nine"))
    with pytest.raises(ValueError):
        sender.sendto(b"x", ("127.0.0.1", 70000))
    with pytest.raises(socket.gaierror):
        sender.sendto(b"x", ("no-such-host.invalid", 9))
    with pytest.raises(OSError):
        sender.bind(("127.0.0.1", 0))  # already bound: EINVAL
    with Channel(socket.AF_INET6) as v6:
        with pytest.raises(ValueError):
            v6.sendto(b"x", ("::1", 9, 1 << 20))  # flowinfo beyond 20 bits
        with pytest.raises(TypeError):
            v6.sendto(b"x", ("::1",))
    with pytest.raises(ValueError):
        Channel(socket.AF_UNIX)


def test_hostnames_are_resolved(v4_pair):
    sender, receiver = v4_pair
    port = receiver.getsockname()[1]
    sender.sendto(b"by name", ("localhost", port))
    assert receiver.recvmany(1, timeout=1.0)[0][0] == b"by name"


def test_v6_channel_reaches_ipv4_through_mapped_addresses():
    with Channel(socket.AF_INET6) as dual, bound(socket.AF_INET) as v4:
        dual.bind(("", 0))
        dual.sendto(b"mapped", v4.getsockname())  # an IPv4 literal on a v6 channel
        data, source = v4.recvmany(1, timeout=1.0)[0]
        assert data == b"mapped" and source == ("127.0.0.1", dual.getsockname()[1])


@OFFLOADS
def test_oversized_datagram_is_emsgsize(gso, gro):
    with bound(gso=gso) as sender, bound(gro=gro) as receiver:
        too_big = b"x" * (sender.max_payload + 1)
        for send in (
            lambda: sender.sendto(too_big, receiver.getsockname()),
            lambda: (
                sender.send_batch([b"ok", too_big], receiver.getsockname())
                and sender.send_batch([too_big], receiver.getsockname())
            ),
        ):
            with pytest.raises(OSError) as caught:
                send()
            assert caught.value.errno == errno.EMSGSIZE
        assert receiver.recvmany(5, timeout=1.0) == [(b"ok", sender.getsockname())]


def test_send_without_address_on_an_unconnected_channel(v4_pair):
    sender, _ = v4_pair
    with pytest.raises(OSError) as caught:
        sender.sendto(b"x")
    assert caught.value.errno == errno.EDESTADDRREQ
    with pytest.raises(OSError) as caught:
        sender.send_batch([b"x", b"y"])
    assert caught.value.errno == errno.EDESTADDRREQ


def test_connection_refused_is_reported_as_such():
    with bound() as channel:
        vacant = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        vacant.bind(("127.0.0.1", 0))
        address = vacant.getsockname()
        vacant.close()  # nothing listens there now
        channel.connect(address)
        channel.sendto(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            channel.recvfrom_into(bytearray(8), timeout=1.0)


# ---------------------------------------------------------------------------------------------
# connect, options, buffers
# ---------------------------------------------------------------------------------------------


def test_connect_and_disconnect():
    with bound() as channel, bound() as peer, bound() as stranger:
        with pytest.raises(OSError) as caught:
            channel.getpeername()
        assert caught.value.errno == errno.ENOTCONN
        channel.connect(peer.getsockname())
        assert channel.getpeername() == peer.getsockname()
        assert channel.sendto(b"implicit") == 8
        assert peer.recvmany(1, timeout=1.0)[0][0] == b"implicit"
        stranger.sendto(b"filtered", channel.getsockname())  # not from the peer: dropped
        peer.sendto(b"from the peer", channel.getsockname())
        assert channel.recvmany(1, timeout=1.0)[0][0] == b"from the peer"
        channel.disconnect()
        with pytest.raises(OSError) as caught:
            channel.getpeername()
        assert caught.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as caught:
            channel.sendto(b"nowhere")
        assert caught.value.errno == errno.EDESTADDRREQ


def test_buffer_sizes_grow_when_set():
    with Channel() as channel:
        default_rcv, default_snd = channel.rcvbuf, channel.sndbuf
        channel.rcvbuf = 8 << 20
        channel.sndbuf = 8 << 20
        assert channel.rcvbuf >= 8 << 20 > default_rcv
        assert channel.sndbuf >= 8 << 20 > default_snd
        with pytest.raises(ValueError):
            channel.rcvbuf = -1
    with Channel(rcvbuf=4 << 20) as channel:
        assert channel.rcvbuf >= 4 << 20


def test_socket_options_and_outq(v4_pair):
    sender, receiver = v4_pair
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    assert sender.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, (7).to_bytes(4, "little"))
    assert int.from_bytes(sender.getsockopt(socket.IPPROTO_IP, socket.IP_TTL, 4), "little") == 7
    with pytest.raises(OSError):
        sender.setsockopt(socket.SOL_SOCKET, 0x7FFF, 1)
    with pytest.raises(ValueError):
        sender.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 5000)
    assert sender.outq() >= 0


def test_offloads_can_be_turned_off():
    with Channel(gso=False, gro=False) as channel:
        assert not channel.gso_enabled and not channel.gro_enabled
        assert channel.getsockopt(socket.IPPROTO_UDP, 104) == 0  # UDP_GRO stays off
    with Channel() as channel:
        assert channel.gso_enabled == channel.gso_supported
        assert channel.gro_enabled == channel.gro_supported
        if channel.gro_supported:
            assert channel.getsockopt(socket.IPPROTO_UDP, 104) == 1


def test_reuse_port_lets_two_channels_share_a_port():
    with Channel(reuse_port=True) as first:
        first.bind(("127.0.0.1", 0))
        with Channel(reuse_port=True) as second:
            second.bind(first.getsockname())
            assert second.getsockname() == first.getsockname()
        with Channel() as third, pytest.raises(OSError) as caught:
            third.bind(first.getsockname())
        assert caught.value.errno == errno.EADDRINUSE


# ---------------------------------------------------------------------------------------------
# address helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address,family,expected",
    [
        (("127.0.0.1", 9), socket.AF_INET, ("127.0.0.1", 9)),
        (("", 0), socket.AF_INET, ("0.0.0.0", 0)),
        (("<broadcast>", 1), socket.AF_INET, ("255.255.255.255", 1)),
        (("::1", 3), socket.AF_INET6, ("::1", 3, 0, 0)),
        (("::1", 3, 5, 0), socket.AF_INET6, ("::1", 3, 5, 0)),
        (("127.0.0.1", 9), socket.AF_INET6, ("::ffff:127.0.0.1", 9, 0, 0)),
        (("fe80::1%lo", 5), socket.AF_INET6, ("fe80::1%lo", 5, 0, 1)),
        (("fe80::1", 5, 0, 1), socket.AF_INET6, ("fe80::1%lo", 5, 0, 1)),
    ],
)
def test_address_conversion_round_trips(address, family, expected):
    raw = address_to_sockaddr(address, family)
    assert len(raw) == (16 if family == socket.AF_INET else 28)
    assert sockaddr_to_address(raw) == expected


def test_address_conversion_matches_the_socket_module():
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as reference:
            reference.bind((host, 0))
            with Channel(family) as channel:
                channel.bind(reference.getsockname()[:1] + (0,))
                assert type(channel.getsockname()) is tuple
                assert len(channel.getsockname()) == len(reference.getsockname())
    with pytest.raises(ValueError):
        sockaddr_to_address(b"\x02\x00")  # AF_INET but too short
    assert sockaddr_to_address(b"") is None


def test_the_split_units_keep_udt_net_importable():
    """udt._net is still the one import for the channel, after the split into _addr/_batch/_sock."""
    import udt._addr
    import udt._batch
    import udt._net
    import udt._sock

    assert udt._net.SendBatch is udt._batch.SendBatch and udt._net.RecvBatch is udt._batch.RecvBatch
    assert udt._net.address_to_sockaddr is udt._addr.address_to_sockaddr
    assert issubclass(Channel, udt._sock.UdpSocket)
    limits = {
        "MAX_UDP_PAYLOAD_V4": 65507,
        "MAX_UDP_PAYLOAD_V6": 65527,
        "GSO_MAX_SEGMENTS": 64,
        "GRO_BUFFER_SIZE": 65536,
        "GRO_MAX_SEGMENTS": 128,
        "MAX_IOVECS_PER_MESSAGE": 1024,
    }
    assert {name: getattr(udt._net, name) for name in limits} == limits
    with Channel() as channel:
        assert channel.max_payload == udt._net.MAX_UDP_PAYLOAD_V4
    for name in udt._net.__all__:
        assert hasattr(udt._net, name), name


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_close_while_another_thread_receives_a_stream(gro):
    """A worker looping in recv_batch while data flows stops cleanly (EBADF) at close()."""
    sender, receiver = bound(), bound(gro=gro)
    outcome: list[object] = []
    counted = threading.Event()

    def worker():
        batch = RecvBatch(8)
        total = 0
        try:
            while True:
                total += receiver.recv_batch(batch, timeout=5.0)
                if total >= 1000:
                    counted.set()
        except OSError as error:
            outcome.append(error.errno)

    thread = threading.Thread(target=worker, name="receive-worker")
    thread.start()
    try:
        datagrams = [numbered(i) for i in range(100)]
        while not counted.is_set():
            sender.send_batch(datagrams, receiver.getsockname())
            counted.wait(0.001)
        receiver.close()
        thread.join(5)
        assert not thread.is_alive()
        assert outcome == [errno.EBADF]
    finally:
        receiver.close()
        sender.close()
        thread.join()


@pytest.mark.slow
def test_bench_runs_and_offloads_pay_off():
    """The benchmark itself works end to end; GSO+GRO beats the plain path even on a busy box."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_channel.py"
    spec = importlib.util.spec_from_file_location("bench_channel", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while loading
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    modes = [bench.MODES[0], bench.MODES[-1]]
    rows = bench.run(0.3, 1, pin=False, modes=modes)
    text = bench.table(rows)
    assert "python sendto/recvfrom_into" in text and "GSO+GRO" in text
    (_, plain), (_, offloaded) = rows
    assert plain["received"] > 0 and offloaded["received"] > 0
    with Channel() as probe:
        if probe.gso_supported and probe.gro_supported:
            assert offloaded["received"] > plain["received"]


# ---------------------------------------------------------------------------------------------
# GSO fallback on real devices (two network namespaces joined by veth)
# ---------------------------------------------------------------------------------------------


def _ip(*arguments: str) -> None:
    import subprocess

    subprocess.run(["ip", *arguments], check=True, capture_output=True, timeout=10)


@pytest.fixture
def veth_link():
    """Namespaces A and B joined by veth (10.231.0.1 <-> 10.231.0.2); yields a helper that
    runs a block inside a namespace (sockets keep the namespace they were made in)."""
    import contextlib
    import ctypes
    import os
    import shutil
    import subprocess
    import uuid

    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed")
    tag = uuid.uuid4().hex[:6]
    names = (f"udtch-a-{tag}", f"udtch-b-{tag}")
    made = []
    try:
        for name in names:
            try:
                _ip("netns", "add", name)
            except subprocess.CalledProcessError as error:
                pytest.skip(f"cannot create network namespaces: {error.stderr.decode().strip()}")
            made.append(name)
        _ip("link", "add", f"va{tag}", "netns", names[0], "type", "veth", "peer", "name", f"vb{tag}", "netns", names[1])
        for name, device, address in ((names[0], f"va{tag}", "10.231.0.1/24"), (names[1], f"vb{tag}", "10.231.0.2/24")):
            _ip("-n", name, "addr", "add", address, "dev", device)
            _ip("-n", name, "link", "set", device, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        libc = ctypes.CDLL(None, use_errno=True)

        @contextlib.contextmanager
        def inside(index: int):
            original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(f"/var/run/netns/{names[index]}", os.O_RDONLY)
            try:
                if libc.setns(target, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns")
                yield
            finally:
                libc.setns(original, 0x40000000)
                os.close(original)
                os.close(target)

        yield names, tag, inside
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _send_across(inside, datagrams, gro: bool):
    with inside(0):
        sender = Channel(rcvbuf=BIG_BUFFER, sndbuf=BIG_BUFFER)
        sender.bind(("10.231.0.1", 0))
    with inside(1):
        receiver = Channel(gro=gro, rcvbuf=BIG_BUFFER)
        receiver.bind(("10.231.0.2", 0))
    try:
        assert sender.send_batch(datagrams, receiver.getsockname(), timeout=5.0) == len(datagrams)
        return sender, receive_exactly(receiver, len(datagrams))
    finally:
        sender.close()
        receiver.close()


@pytest.mark.netns
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_gso_run_above_the_mtu_falls_back_and_learns(veth_link, gro):
    names, tag, inside = veth_link
    for name, device in ((names[0], f"va{tag}"), (names[1], f"vb{tag}")):
        _ip("-n", name, "link", "set", device, "mtu", "1280")
    datagrams = [numbered(i) for i in range(300)]  # 1456 bytes: above the MTU
    sender, received = _send_across(inside, datagrams, gro)
    if not sender.gso_supported:
        pytest.skip("this kernel has no UDP GSO")
    assert received == datagrams  # sent one by one, fragmented
    assert sender.gso_enabled
    assert sender.gso_segment_limit == PAYLOAD - 1  # learnt: no GSO for 1456


@pytest.mark.netns
def test_gso_without_checksum_offload_still_delivers(veth_link):
    """Older kernels refuse GSO without checksum offload (EIO: the channel turns GSO off),
    newer ones checksum in software; either way every datagram arrives intact."""
    import shutil
    import subprocess

    names, tag, inside = veth_link
    if shutil.which("ethtool") is None:
        pytest.skip("ethtool is not installed (apt-get install ethtool)")
    subprocess.run(
        ["ip", "netns", "exec", names[0], "ethtool", "-K", f"va{tag}", "tx", "off"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    datagrams = [numbered(i, 1200) for i in range(300)]
    sender, received = _send_across(inside, datagrams, gro=True)
    if not sender.gso_supported:
        pytest.skip("this kernel has no UDP GSO")
    assert received == datagrams
