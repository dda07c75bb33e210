"""udt.dgram basics on real loopback sockets: binding, unicast v4/v6, scatter, connect, events,
asyncio, buffers, ref/unref and every misuse error."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import udt
from udt import _mcast, dgram

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT = 5.0  # generous: the machine is shared


@pytest.fixture
def pair():
    """A bound receiver and an unbound sender on IPv4 loopback."""
    with dgram.create_socket("udp4") as receiver, dgram.create_socket("udp4") as sender:
        receiver.bind(port=0, address="127.0.0.1")
        yield receiver, sender


class Collector:
    """Collects events from the worker thread and lets the test wait for them."""

    def __init__(self) -> None:
        self.items: list = []
        self.threads: list[threading.Thread] = []
        self._condition = threading.Condition()

    def __call__(self, *args):
        with self._condition:
            self.items.append(args)
            self.threads.append(threading.current_thread())
            self._condition.notify_all()

    def wait(self, count: int = 1, timeout: float = WAIT) -> list:
        with self._condition:
            assert self._condition.wait_for(lambda: len(self.items) >= count, timeout), (
                f"only {len(self.items)} of {count} events arrived"
            )
            return list(self.items)


# ---- creation and binding ------------------------------------------------------------------------
def test_create_socket_types_and_bad_arguments():
    with dgram.create_socket("udp4") as four, dgram.Socket("udp6") as six:
        assert four.type == "udp4" and four.family == socket.AF_INET
        assert six.type == "udp6" and six.family == socket.AF_INET6
    with pytest.raises(ValueError):
        dgram.create_socket("tcp")
    with pytest.raises(ValueError):
        dgram.create_socket("udp4", ipv6_only=True)
    with pytest.raises(ValueError):
        dgram.create_socket("udp4", recv_buffer_size=0)
    with pytest.raises(TypeError):
        dgram.create_socket("udp4", lookup=42)


def test_bind_and_address_ipv4():
    with dgram.create_socket("udp4") as s:
        assert s.bind(port=0, address="127.0.0.1") is s
        info = s.address()
        assert isinstance(info, dgram.AddressInfo)
        assert info.address == "127.0.0.1" and info.family == "IPv4" and 0 < info.port < 65536
        assert info == (info.address, info.family, info.port)


def test_bind_and_address_ipv6_default_wildcard():
    with dgram.create_socket("udp6") as s:
        s.bind()
        info = s.address()
        assert info.address == "::" and info.family == "IPv6" and info.port > 0


@pytest.mark.parametrize("kind,host", [("udp4", "127.0.0.1"), ("udp6", "::1")])
def test_send_and_recvfrom(kind, host):
    with dgram.create_socket(kind) as receiver, dgram.create_socket(kind) as sender:
        receiver.bind(0, host)
        sent = sender.send(b"hello", receiver.address().port, host)
        assert sent == 5
        data, rinfo = receiver.recvfrom(timeout=WAIT)
        assert data == b"hello"
        assert isinstance(rinfo, dgram.RemoteInfo)
        assert rinfo == (host, "IPv4" if kind == "udp4" else "IPv6", sender.address().port, 5)


def test_scatter_send_is_one_datagram(pair):
    receiver, sender = pair
    parts = [b"ab", bytearray(b"cd"), memoryview(b"xxefxx")[2:4], b""]
    assert sender.send(parts, receiver.address().port, "127.0.0.1") == 6
    data, rinfo = receiver.recvfrom(WAIT)
    assert data == b"abcdef" and rinfo.size == 6


def test_send_offset_and_length(pair):
    receiver, sender = pair
    port = receiver.address().port
    assert sender.send(b"0123456789", port, "127.0.0.1", offset=2, length=3) == 3
    assert receiver.recvfrom(WAIT)[0] == b"234"
    assert sender.send(bytearray(b"0123456789"), port, "127.0.0.1", offset=7) == 3
    assert receiver.recvfrom(WAIT)[0] == b"789"
    with pytest.raises(ValueError):
        sender.send(b"abc", port, "127.0.0.1", offset=4)
    with pytest.raises(ValueError):
        sender.send(b"abc", port, "127.0.0.1", offset=1, length=3)
    with pytest.raises(ValueError):
        sender.send([b"a", b"b"], port, "127.0.0.1", offset=1)
    with pytest.raises(TypeError):
        sender.send("text", port, "127.0.0.1")
    with pytest.raises(TypeError):
        sender.send([b"a", 5], port, "127.0.0.1")


def test_empty_datagram(pair):
    receiver, sender = pair
    assert sender.send(b"", receiver.address().port, "127.0.0.1") == 0
    data, rinfo = receiver.recvfrom(WAIT)
    assert data == b"" and rinfo.size == 0


def test_first_send_binds_implicitly_and_emits_listening(pair):
    receiver, sender = pair
    listening = Collector()
    sender.on("listening", listening)
    with pytest.raises(dgram.NotBoundError):
        sender.address()
    sender.send(b"x", receiver.address().port)  # address defaults to localhost
    assert sender.address().address == "0.0.0.0" and sender.address().port > 0
    listening.wait(1)
    assert listening.threads[0] is not threading.current_thread()
    assert receiver.recvfrom(WAIT)[1].port == sender.address().port


def test_bind_callback_runs_on_another_thread():
    called = Collector()
    with dgram.create_socket("udp4") as s:
        s.bind(0, "127.0.0.1", called)
        called.wait(1)
        assert called.threads[0] is not threading.current_thread()


def test_exclusive_bind_refuses_sharing():
    with (
        dgram.create_socket("udp4", reuse_addr=True) as first,
        dgram.create_socket("udp4", reuse_addr=True) as second,
        dgram.create_socket("udp4", reuse_addr=True) as third,
    ):
        first.bind(0, "127.0.0.1")
        second.bind(first.address().port, "127.0.0.1")  # shared: both asked for reuse
        with dgram.create_socket("udp4", reuse_addr=True) as exclusive:
            exclusive.bind(0, "127.0.0.1", exclusive=True)
            with pytest.raises(OSError) as raised:
                third.bind(exclusive.address().port, "127.0.0.1")
            assert raised.value.errno == errno.EADDRINUSE


def test_bind_adopts_a_descriptor():
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.bind(("127.0.0.1", 0))
    port = plain.getsockname()[1]
    with dgram.create_socket("udp4") as s:
        s.bind(fd=plain.detach())
        assert s.address() == ("127.0.0.1", "IPv4", port)
        s.send(b"self", port, "127.0.0.1")
        assert s.recvfrom(WAIT)[0] == b"self"
    with dgram.create_socket("udp6") as s, socket.socket(socket.AF_INET) as wrong:
        with pytest.raises(ValueError):
            s.bind(fd=wrong.fileno())


def test_ipv6_only():
    with dgram.create_socket("udp6", ipv6_only=True) as six, dgram.create_socket("udp4") as four:
        six.bind(0, "::")
        four.bind(six.address().port, "0.0.0.0")  # the IPv4 port is still free
    with dgram.create_socket("udp6") as dual, dgram.create_socket("udp4") as sender:
        dual.bind(0, "::")
        with dgram.create_socket("udp4") as four:
            with pytest.raises(OSError) as raised:
                four.bind(dual.address().port, "0.0.0.0")
            assert raised.value.errno == errno.EADDRINUSE
        sender.send(b"mapped", dual.address().port, "127.0.0.1")
        data, rinfo = dual.recvfrom(WAIT)
        assert data == b"mapped" and rinfo.address == "::ffff:127.0.0.1"


def test_lookup_resolves_names():
    asked = []

    def lookup(host, family):
        asked.append((host, family))
        return "127.0.0.1"

    with dgram.create_socket("udp4", lookup=lookup) as s:
        s.bind(0, "my-receiver")
        s.send(b"named", s.address().port, "my-receiver")
        assert s.recvfrom(WAIT)[0] == b"named"
    assert asked == [("my-receiver", socket.AF_INET)] * 2
    with dgram.create_socket("udp4") as s:  # the default lookup: getaddrinfo
        s.bind(0, "127.0.0.1")
        s.send(b"localhost", s.address().port, "localhost")
        assert s.recvfrom(WAIT)[0] == b"localhost"


# ---- connect -------------------------------------------------------------------------------------
def test_connect_remote_address_disconnect(pair):
    receiver, sender = pair
    port = receiver.address().port
    connected = Collector()
    with pytest.raises(dgram.NotConnectedError) as raised:
        sender.remote_address()
    assert raised.value.errno == errno.ENOTCONN
    assert sender.connect(port, "127.0.0.1", connected) is sender
    connected.wait(1)
    assert connected.threads[0] is not threading.current_thread()
    assert sender.remote_address() == ("127.0.0.1", "IPv4", port)
    assert sender.address().port > 0  # connect bound implicitly
    assert sender.send(b"to peer") == 7
    assert receiver.recvfrom(WAIT)[0] == b"to peer"
    with pytest.raises(dgram.AlreadyConnectedError) as raised:
        sender.send(b"x", port, "127.0.0.1")
    assert raised.value.errno == errno.EISCONN
    with pytest.raises(dgram.AlreadyConnectedError):
        sender.connect(port)
    # Only the peer's datagrams arrive on a connected socket.
    with dgram.create_socket("udp4") as stranger:
        receiver.connect(sender.address().port, "127.0.0.1")
        stranger.send(b"stranger", port, "127.0.0.1")
        sender.send(b"peer")
        assert receiver.recvfrom(WAIT)[0] == b"peer"
    sender.disconnect()
    with pytest.raises(dgram.NotConnectedError):
        sender.remote_address()
    with pytest.raises(dgram.NotConnectedError):
        sender.disconnect()
    with pytest.raises(ValueError):
        sender.send(b"no port")


def test_connect_defaults_to_localhost_and_checks_port():
    with dgram.create_socket("udp6") as s:
        s.connect(9)
        assert s.remote_address() == ("::1", "IPv6", 9)
        with pytest.raises(ValueError):
            dgram.create_socket("udp4").connect(0)


# ---- events --------------------------------------------------------------------------------------
def test_message_events_arrive_on_another_thread(pair):
    receiver, sender = pair
    messages = Collector()
    receiver.on("message", messages)
    assert receiver.listener_count("message") == 1
    for index in range(3):
        sender.send(b"m%d" % index, receiver.address().port, "127.0.0.1")
    items = messages.wait(3)
    assert [data for data, _ in items] == [b"m0", b"m1", b"m2"]
    assert all(rinfo.port == sender.address().port and rinfo.size == 2 for _, rinfo in items)
    assert all(thread is not threading.current_thread() for thread in messages.threads)
    receiver.off("message", messages)
    assert receiver.listeners("message") == []
    sender.send(b"pulled", receiver.address().port, "127.0.0.1")
    assert receiver.recvfrom(WAIT)[0] == b"pulled"


def test_create_socket_callback_is_a_message_listener():
    messages = Collector()
    with dgram.create_socket("udp4", messages) as s:
        s.bind(0, "127.0.0.1")
        s.send(b"cb", s.address().port, "127.0.0.1")
        assert messages.wait(1)[0][0] == b"cb"


def test_once_and_remove_listener(pair):
    receiver, sender = pair
    once, always = Collector(), Collector()
    receiver.once("message", once).on("message", always)
    receiver.add_listener("message", always)
    receiver.remove_listener("message", always)  # removes one registration
    for index in range(2):
        sender.send(b"%d" % index, receiver.address().port, "127.0.0.1")
    always.wait(2)
    assert [args[0] for args in once.wait(1)] == [b"0"]
    assert [args[0] for args in always.items] == [b"0", b"1"]
    receiver.remove_all_listeners("message")
    assert receiver.listener_count("message") == 0
    with pytest.raises(ValueError):
        receiver.on("mesage", always)
    with pytest.raises(TypeError):
        receiver.on("message", None)


def test_pull_while_listeners_attached_is_refused(pair):
    receiver, _ = pair
    receiver.on("message", lambda *args: None)
    with pytest.raises(RuntimeError):
        receiver.recvfrom(0)


def test_close_callback_and_event_run_before_close_returns():
    closes, callback = Collector(), Collector()
    s = dgram.create_socket("udp4")
    s.on("close", closes)
    s.close(callback)
    assert len(closes.items) == 1 and len(callback.items) == 1
    assert closes.threads[0] is not threading.current_thread()
    s.close()  # idempotent, no second event
    assert len(closes.items) == 1
    assert s.closed and s.fileno() == -1


def test_close_from_a_message_listener(pair):
    receiver, sender = pair
    closed = threading.Event()
    receiver.on("message", lambda data, rinfo: receiver.close())
    receiver.on("close", closed.set)
    sender.send(b"bye", receiver.address().port, "127.0.0.1")
    assert closed.wait(WAIT)
    assert receiver.closed


def test_error_event_for_icmp_port_unreachable():
    with dgram.create_socket("udp4") as gone:
        gone.bind(0, "127.0.0.1")
        dead_port = gone.address().port
    errors, messages = Collector(), Collector()
    with dgram.create_socket("udp4") as s:
        s.connect(dead_port, "127.0.0.1")
        s.on("error", errors).on("message", messages)
        s.send(b"anyone?")
        ((error,),) = errors.wait(1)
        assert isinstance(error, ConnectionRefusedError)
        assert errors.threads[0] is not threading.current_thread()
    assert messages.items == []


def test_listener_exception_goes_to_error_listeners(pair):
    receiver, sender = pair
    errors = Collector()

    def broken(data, rinfo):
        raise KeyError(data)

    receiver.on("message", broken).on("error", errors)
    sender.send(b"boom", receiver.address().port, "127.0.0.1")
    ((error,),) = errors.wait(1)
    assert isinstance(error, KeyError) and error.args == (b"boom",)


def test_send_callback_gets_result_or_error(pair):
    receiver, sender = pair
    results = Collector()
    assert sender.send(b"abc", receiver.address().port, "127.0.0.1", results) == 3
    assert results.wait(1)[0] == (None, 3)
    assert results.threads[0] is not threading.current_thread()
    # An error goes to the callback instead of being raised.
    assert sender.send(bytes(70000), receiver.address().port, "127.0.0.1", results) == 0
    error, sent = results.wait(2)[1]
    assert isinstance(error, OSError) and error.errno == errno.EMSGSIZE and sent == 0
    with pytest.raises(OSError) as raised:  # and is raised without a callback
        sender.send(bytes(70000), receiver.address().port, "127.0.0.1")
    assert raised.value.errno == errno.EMSGSIZE


def test_send_queue_count_counts_callbacks_not_yet_run(pair):
    receiver, sender = pair
    release = threading.Event()
    started = threading.Event()

    def slow(error, sent):
        started.set()
        release.wait(WAIT)

    port = receiver.address().port
    assert sender.get_send_queue_count() == 0
    sender.send(b"1", port, "127.0.0.1", slow)
    sender.send(b"2", port, "127.0.0.1", slow)
    assert started.wait(WAIT)
    assert sender.get_send_queue_count() == 1  # one running (taken), one waiting
    release.set()
    deadline = time.monotonic() + WAIT
    while sender.get_send_queue_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.get_send_queue_count() == 0
    assert sender.get_send_queue_size() >= 0


# ---- receiving -----------------------------------------------------------------------------------
def test_recvfrom_timeouts_and_close_while_waiting(pair):
    receiver, _ = pair
    with pytest.raises(BlockingIOError):
        receiver.recvfrom(0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        receiver.recvfrom(0.05)
    assert time.monotonic() - started >= 0.04
    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(_catch(receiver.recvfrom, None)))
    waiter.start()
    time.sleep(0.1)
    receiver.close()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert isinstance(outcome[0], dgram.SocketClosedError)


def _catch(function, *args):
    try:
        return function(*args)
    except BaseException as error:  # returned for the test to inspect
        return error


def test_async_iteration(pair):
    receiver, sender = pair
    port = receiver.address().port

    async def main():
        got = []
        for index in range(3):
            sender.send(b"a%d" % index, port, "127.0.0.1")

        async def late_sender():
            await asyncio.sleep(0.05)
            sender.send(b"late", port, "127.0.0.1")

        task = asyncio.create_task(late_sender())
        async for data, rinfo in receiver:
            got.append(data)
            assert rinfo.port == sender.address().port
            if len(got) == 4:
                break
        await task
        return got

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == [b"a0", b"a1", b"a2", b"late"]


def test_async_iteration_ends_when_closed(pair):
    receiver, _ = pair

    async def main():
        async def closer():
            await asyncio.sleep(0.05)
            receiver.close()

        task = asyncio.create_task(closer())
        received = [item async for item in receiver]
        await task
        return received

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == []


def test_async_iteration_ends_when_closed_from_another_thread(pair):
    receiver, _ = pair

    async def main():
        timer = threading.Timer(0.1, receiver.close)
        timer.start()
        try:
            return [item async for item in receiver]
        finally:
            timer.join()

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == []


def test_two_async_readers_are_refused(pair):
    receiver, _ = pair

    async def main():
        first = asyncio.create_task(receiver.__anext__())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError):
            await receiver.__anext__()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())


# ---- buffers -------------------------------------------------------------------------------------
def test_buffer_sizes_need_a_bound_socket():
    with dgram.create_socket("udp4") as s:
        for call in (
            s.get_recv_buffer_size,
            s.get_send_buffer_size,
            lambda: s.set_recv_buffer_size(1 << 16),
            lambda: s.set_send_buffer_size(1 << 16),
        ):
            with pytest.raises(dgram.NotBoundError) as raised:
                call()
            assert raised.value.errno == errno.EBADF
        s.bind(0, "127.0.0.1")
        s.set_recv_buffer_size(1 << 20)
        s.set_send_buffer_size(1 << 19)
        assert s.get_recv_buffer_size() >= 1 << 20  # Linux reports twice the request
        assert s.get_send_buffer_size() >= 1 << 19
        with pytest.raises(ValueError):
            s.set_recv_buffer_size(0)
        with pytest.raises(TypeError):
            s.set_send_buffer_size(1.5)


def test_buffer_sizes_from_create_socket_apply_at_bind():
    with dgram.create_socket("udp4", recv_buffer_size=1 << 20, send_buffer_size=1 << 20) as s:
        s.bind(0, "127.0.0.1")
        assert s.get_recv_buffer_size() >= 1 << 20
        assert s.get_send_buffer_size() >= 1 << 20


# ---- options -------------------------------------------------------------------------------------
def _ttl_of_next_datagram(receiver: socket.socket) -> tuple[bytes, int]:
    data, ancillary, _, _ = receiver.recvmsg(100, socket.CMSG_SPACE(4))
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IP and kind == _mcast.IP_TTL:
            return data, int.from_bytes(value[:4], sys.byteorder)
    raise AssertionError(f"no TTL control message in {ancillary}")


def test_set_ttl_is_seen_on_the_wire():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, dgram.create_socket("udp4") as sender:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(WAIT)
        receiver.setsockopt(socket.IPPROTO_IP, _mcast.IP_RECVTTL, 1)
        assert sender.set_ttl(17) == 17
        sender.send(b"ttl", receiver.getsockname()[1], "127.0.0.1")
        assert _ttl_of_next_datagram(receiver) == (b"ttl", 17)
        assert sender.getsockopt(socket.IPPROTO_IP, _mcast.IP_TTL) == 17
        for bad in (0, 256):
            with pytest.raises(ValueError):
                sender.set_ttl(bad)
        with pytest.raises(TypeError):
            sender.set_ttl("64")


def test_option_setters_validate():
    with dgram.create_socket("udp6") as s:
        assert s.set_ttl(64) == 64
        assert s.getsockopt(socket.IPPROTO_IPV6, _mcast.IPV6_UNICAST_HOPS) == 64
        assert s.set_multicast_ttl(0) == 0
        with pytest.raises(ValueError):
            s.set_multicast_ttl(256)
        assert s.set_multicast_loopback(False) is False
        assert s.getsockopt(socket.IPPROTO_IPV6, _mcast.IPV6_MULTICAST_LOOP) == 0
        s.set_broadcast(True)  # allowed on IPv6: a no-op option
        with pytest.raises(TypeError):
            s.set_broadcast("yes")


# ---- misuse --------------------------------------------------------------------------------------
def test_bind_twice():
    with dgram.create_socket("udp4") as s:
        s.bind(0, "127.0.0.1")
        with pytest.raises(dgram.AlreadyBoundError) as raised:
            s.bind(0, "127.0.0.1")
        assert isinstance(raised.value, OSError) and raised.value.errno == errno.EINVAL
    with dgram.create_socket("udp4") as s:
        s.send(b"x", 9, "127.0.0.1")  # implicit bind counts
        with pytest.raises(dgram.AlreadyBoundError):
            s.bind()


def test_bad_ports_and_addresses():
    with dgram.create_socket("udp4") as s:
        with pytest.raises(ValueError):
            s.bind(70000)
        with pytest.raises(TypeError):
            s.bind("80")
        with pytest.raises(ValueError):
            s.send(b"x", 0, "127.0.0.1")
        with pytest.raises(ValueError):
            s.send(b"x")  # no port, not connected
        with pytest.raises(socket.gaierror):
            s.send(b"x", 9, "no-such-host.invalid")
        with pytest.raises(ValueError):
            s.send(b"x", 9, "::1")  # IPv6 on a 'udp4' socket
        with pytest.raises(ValueError):
            s.bind(0, "::1")


def test_everything_on_a_closed_socket_raises():
    s = dgram.create_socket("udp4")
    s.bind(0, "127.0.0.1")
    membership = s.add_membership("239.1.2.3", "127.0.0.1")
    s.close()
    calls = [
        lambda: s.bind(),
        lambda: s.send(b"x", 9, "127.0.0.1"),
        lambda: s.connect(9),
        lambda: s.disconnect(),
        lambda: s.address(),
        lambda: s.remote_address(),
        lambda: s.recvfrom(0),
        lambda: s.add_membership("239.1.2.4"),
        lambda: s.add_source_specific_membership("127.0.0.1", "232.1.2.3"),
        lambda: s.drop_membership("239.1.2.3", "127.0.0.1"),
        lambda: s.set_broadcast(True),
        lambda: s.set_ttl(3),
        lambda: s.set_multicast_ttl(1),
        lambda: s.set_multicast_loopback(True),
        lambda: s.set_multicast_interface("127.0.0.1"),
        lambda: s.get_recv_buffer_size(),
        lambda: s.set_send_buffer_size(4096),
        lambda: s.get_send_queue_size(),
        lambda: s.get_send_queue_count(),
    ]
    for call in calls:
        with pytest.raises(dgram.SocketClosedError) as raised:
            call()
        assert isinstance(raised.value, OSError) and raised.value.errno == errno.EBADF
    assert not membership.valid


def test_error_hierarchy():
    for error in (
        dgram.SocketClosedError,
        dgram.AlreadyBoundError,
        dgram.NotBoundError,
        dgram.AlreadyConnectedError,
        dgram.NotConnectedError,
        dgram.MembershipStateError,
        dgram.InvalidMembershipError,
    ):
        assert issubclass(error, dgram.DgramError) and issubclass(error, OSError)
    assert issubclass(dgram.InvalidMembershipError, dgram.MembershipStateError)
    assert dgram.NotConnectedError("x").errno == errno.ENOTCONN
    # one "not connected" error: dgram's is also udt's, so either except form catches it
    assert issubclass(dgram.NotConnectedError, udt.NotConnectedError)
    error = dgram.NotConnectedError("x")
    assert error.udt_code == udt.ErrorCode.NO_CONNECTION and str(error) == f"[Errno {errno.ENOTCONN}] x"


# ---- ref / unref ---------------------------------------------------------------------------------
_REF_SCRIPT = """
import sys
from udt import dgram
s = dgram.create_socket("udp4")
s.bind(0, "127.0.0.1")
s.on("message", lambda data, rinfo: s.close())
if sys.argv[1] == "unref":
    s.unref()
print(s.address().port, flush=True)
"""


def _start_ref_script(mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _REF_SCRIPT, mode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))},
    )


def test_unref_socket_does_not_keep_the_interpreter_alive():
    process = _start_ref_script("unref")
    try:
        int(process.stdout.readline())
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.communicate()


def test_referenced_socket_keeps_the_interpreter_alive_until_closed():
    process = _start_ref_script("ref")
    try:
        port = int(process.stdout.readline())
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)  # still serving its listener
        with dgram.create_socket("udp4") as s:
            s.send(b"close", port, "127.0.0.1")  # the listener closes the socket
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.communicate()


def test_ref_and_unref_return_the_socket():
    with dgram.create_socket("udp4") as s:
        assert s.unref() is s and s.ref() is s


def test_repr_and_context_manager():
    with dgram.create_socket("udp4") as s:
        assert "unbound" in repr(s)
        s.bind(0, "127.0.0.1")
        assert "127.0.0.1" in repr(s)
    assert s.closed and "closed" in repr(s)


# ---- the kernel send queue, made visible by a slow link ------------------------------------------
_QUEUE_SCRIPT = r"""
import json, time
from udt import dgram
with dgram.create_socket("udp4") as s:
    s.bind(0, "10.2.0.1")
    for _ in range(20):
        s.send(bytes(1000), 9, "10.2.0.2")
    queued = s.get_send_queue_size()
    deadline = time.monotonic() + 20
    while s.get_send_queue_size() and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"queued": queued, "drained": s.get_send_queue_size()}))
"""


@pytest.mark.netns
def test_send_queue_size_shows_datagrams_held_by_a_slow_link():
    """Datagrams waiting in a 1 Mbit/s token-bucket qdisc still count against the socket: the
    send queue size is non-zero right after a burst and drains to zero."""
    from netns import Topology, require_netns

    require_netns()
    with Topology() as net:
        a, b = net.namespace("q-a"), net.namespace("q-b")
        link = net.veth(a, b, ipv4=("10.2.0.1/24", "10.2.0.2/24"))
        a.run(
            [
                "tc",
                "qdisc",
                "add",
                "dev",
                link.left_name,
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "2000",
                "limit",
                "100000",
            ]
        )
        result = a.python(_QUEUE_SCRIPT)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["queued"] > 10 * 1000
    assert figures["drained"] == 0
