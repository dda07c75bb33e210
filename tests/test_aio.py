"""udt.aio on real loopback udt sockets, every test under the stdlib loop and under uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket as pysocket

import pytest

import udt
import udt._socket as udt_socket
import udt.aio as aio

try:
    import uvloop
except ImportError:  # pragma: no cover - the test extra installs it
    uvloop = None

HOST = "127.0.0.1"
FAST_FAIL = {"UDT_CONNTIMEO": 400}  # ms: a connect nobody answers fails quickly here


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""
    if request.param == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop is not installed (pip install uvloop)")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def runner(coro):
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(asyncio.wait_for(coro, 60))

    yield runner
    assert not [s for s in udt_socket._live_sockets if not s._closed], "udt sockets left open"


def _fds() -> set[str]:
    return {
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    }


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _server(cb=_echo, **options):
    server = await aio.start_server(cb, HOST, 0, **options)
    return server, server.sockets[0].getsockname()[1]


def test_echo_and_extra_info(run):
    async def main():
        server, port = await _server()
        async with server:
            reader, writer = await aio.open_connection(HOST, port)
            writer.write(b"hello udt")
            await writer.drain()
            assert await reader.readexactly(9) == b"hello udt"
            transport = writer.transport
            assert transport.get_extra_info("peername") == (HOST, port)
            assert transport.get_extra_info("sockname")[1] != 0
            assert isinstance(transport.get_extra_info("socket"), udt.socket)
            assert transport.get_extra_info("perfmon")["pkt_sent_total"] >= 1
            assert transport.can_write_eof()  # both ends udt: the half-close was negotiated
            writer.close()
            await writer.wait_closed()
            assert transport.is_closing()

    run(main())


def test_large_transfer_sha256(run):
    payload = os.urandom(8 << 20)

    async def main():
        got = hashlib.sha256()
        done = asyncio.Event()

        async def sink(reader, writer):
            left = int.from_bytes(await reader.readexactly(8), "big")
            while left:
                data = await reader.read(min(left, 1 << 20))
                got.update(data)
                left -= len(data)
            writer.write(got.digest())
            await writer.drain()
            writer.close()
            done.set()

        server, port = await _server(sink)
        async with server:
            reader, writer = await aio.open_connection(HOST, port)
            writer.write(len(payload).to_bytes(8, "big"))
            for i in range(0, len(payload), 1 << 20):
                writer.write(payload[i : i + (1 << 20)])
                await writer.drain()
            assert await reader.readexactly(32) == hashlib.sha256(payload).digest()
            await done.wait()
            writer.close()
            await writer.wait_closed()

    run(main())


def test_readexactly_readuntil_and_eof(run):
    async def main():
        async def talker(reader, writer):
            # the server speaks and closes at once: the client still connects and reads it all
            writer.write(b"line one\nline two\n" + b"x" * 100)
            await writer.drain()
            writer.close()

        server, port = await _server(talker)
        async with server:
            reader, writer = await aio.open_connection(HOST, port)
            assert await reader.readuntil(b"\n") == b"line one\n"
            assert await reader.readline() == b"line two\n"
            assert await reader.readexactly(60) == b"x" * 60
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(100)
            assert info.value.partial == b"x" * 40
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()

    run(main())


def test_drain_back_pressure_and_pause_reading(run):
    async def main():
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        async def slow(reader, writer):
            accepted.set_result((reader, writer))

        server, port = await _server(slow, UDT_SNDBUF=64, UDT_RCVBUF=64)
        async with server:
            reader, writer = await aio.open_connection(HOST, port, UDT_SNDBUF=64, UDT_RCVBUF=64)
            writer.transport.set_write_buffer_limits(high=256 * 1024)
            assert writer.transport.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
            peer_reader, peer_writer = await accepted
            peer_writer.transport.pause_reading()
            assert not peer_writer.transport.is_reading()
            chunk = b"z" * 65536
            total = 0
            with pytest.raises(TimeoutError):  # the peer reads nothing: the buffer grows, drain waits
                async with asyncio.timeout(1.0):
                    while True:
                        writer.write(chunk)
                        total += len(chunk)
                        await writer.drain()
            assert writer.transport.get_write_buffer_size() > 256 * 1024
            peer_writer.transport.resume_reading()
            drained = asyncio.ensure_future(writer.drain())
            assert len(await peer_reader.readexactly(total)) == total
            await drained
            assert writer.transport.get_write_buffer_size() == 0
            writer.close()
            peer_writer.close()
            await writer.wait_closed()

    run(main())


def test_half_close_peer_reads_eof_and_still_answers(run):
    async def main():
        async def answer(reader, writer):
            request = await reader.read()  # read() returns at EOF only
            writer.write(b"%d bytes" % len(request))  # the half-closed peer still receives
            await writer.drain()
            writer.close()

        server, port = await _server(answer)
        async with server:
            reader, writer = await aio.open_connection(HOST, port)
            assert writer.can_write_eof()
            writer.write(b"request" * 1000)
            writer.write_eof()
            with pytest.raises(RuntimeError):
                writer.write(b"after eof")
            assert await reader.read() == b"7000 bytes"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_hundred_concurrent_connections(run):
    async def main():
        server, port = await _server()
        async with server:

            async def client(i: int) -> bytes:
                reader, writer = await aio.open_connection(HOST, port)
                message = f"{i:05d}".encode() * 2000
                writer.write(message)
                data = await reader.readexactly(len(message))
                writer.close()
                await writer.wait_closed()
                return data == message

            assert all(await asyncio.gather(*(client(i) for i in range(100))))

    run(main())


def test_cancel_mid_read_and_mid_drain_keeps_stream(run):
    async def main():
        server, port = await _server(UDT_SNDBUF=64, UDT_RCVBUF=64)
        async with server:
            reader, writer = await aio.open_connection(HOST, port, UDT_SNDBUF=64, UDT_RCVBUF=64)
            pending = asyncio.ensure_future(reader.readexactly(10))
            await asyncio.sleep(0.05)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            payload = os.urandom(512 << 10)
            writer.transport.set_write_buffer_limits(high=16 * 1024)
            writer.write(payload)
            assert writer.transport.get_write_buffer_size() > 16 * 1024  # small udt buffers: drain waits
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.sleep(0)
            drain.cancel()
            with pytest.raises(asyncio.CancelledError):
                await drain
            assert await reader.readexactly(len(payload)) == payload  # nothing lost or reordered
            writer.close()
            await writer.wait_closed()

    run(main())


def test_timeouts_and_refused_connect_leave_no_socket(run):
    async def main():
        silent: list[asyncio.StreamWriter] = []
        server, port = await _server(lambda r, w: silent.append(w))  # accepts, never answers
        async with server:
            reader, writer = await aio.open_connection(HOST, port)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(1), 0.2)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reader.read(1)
            writer.write(b"still usable")
            writer.close()
            await writer.wait_closed()
            silent[0].close()
        dead = pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
        dead.bind((HOST, 0))
        dead_port = dead.getsockname()[1]
        try:
            with pytest.raises(TimeoutError):  # asyncio.timeout cancels the handshake cleanly
                async with asyncio.timeout(0.1):
                    await aio.open_connection(HOST, dead_port)
            with pytest.raises(OSError):  # nobody answers: the handshake times out
                await aio.open_connection(HOST, dead_port, **FAST_FAIL)
        finally:
            dead.close()

    run(main())


def test_server_close_with_live_clients(run):
    async def main():
        server, port = await _server()
        reader, writer = await aio.open_connection(HOST, port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        server.close()
        assert not server.is_serving()
        waiting = asyncio.ensure_future(server.wait_closed())
        writer.write(b"still here")  # an accepted connection outlives its server's close
        assert await reader.readexactly(10) == b"still here"
        assert not waiting.done()
        with pytest.raises(OSError):
            await aio.open_connection(HOST, port, **FAST_FAIL)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(waiting, 5)

    run(main())


def test_serve_forever_cancelled_closes(run):
    async def main():
        server, port = await _server()
        task = asyncio.ensure_future(server.serve_forever())
        reader, writer = await aio.open_connection(HOST, port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        writer.close()
        await writer.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.sockets

    run(main())


def test_protocol_level_pause_resume_writing(run):
    async def main():
        events: list[str] = []
        lost: asyncio.Future = asyncio.get_running_loop().create_future()

        class Client(asyncio.Protocol):
            def pause_writing(self):
                events.append("pause")

            def resume_writing(self):
                events.append("resume")

            def connection_lost(self, exc):
                lost.set_result(exc)

        server, port = await _server()
        async with server:
            transport, _ = await aio.create_connection(Client, HOST, port, UDT_SNDBUF=64)
            transport.set_write_buffer_limits(high=32 * 1024, low=8 * 1024)
            transport.writelines([b"a" * (256 << 10), b"b" * (256 << 10)])
            assert events == ["pause"]
            while transport.get_write_buffer_size():
                await asyncio.sleep(0.01)
            assert events == ["pause", "resume"]
            transport.abort()
            assert await lost is None

    run(main())


def test_message_mode(run):
    async def main():
        async def echo_messages(ms):
            async with ms:
                while message := await ms.recvmsg():
                    await ms.sendmsg(message)

        server = await aio.start_message_server(echo_messages, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            ms = await aio.open_message_connection(HOST, port)
            sizes = [1, 1000, 5000, 70000, 3]
            for size in sizes:
                await ms.sendmsg(bytes([size % 251]) * size)
            for size in sizes:  # boundaries are kept: one recvmsg, one message
                assert await ms.recvmsg() == bytes([size % 251]) * size
            pending = asyncio.ensure_future(ms.recvmsg())
            await asyncio.sleep(0.05)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            await ms.sendmsg(b"after cancel")
            assert await ms.recvmsg() == b"after cancel"
            waiting = asyncio.ensure_future(ms.recvmsg())
            await asyncio.sleep(0.05)
            ms.close()  # a receive waiting in another task ends with an error, not a hang
            with pytest.raises(OSError):
                await waiting

    run(main())


def test_rendezvous(run):
    async def main():
        probe = [pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) for _ in range(2)]
        for s in probe:
            s.bind((HOST, 0))
        port_a, port_b = (s.getsockname()[1] for s in probe)
        for s in probe:
            s.close()
        a, b = await asyncio.gather(
            aio.open_connection(HOST, port_b, local_addr=(HOST, port_a), rendezvous=True),
            aio.open_connection(HOST, port_a, local_addr=(HOST, port_b), rendezvous=True),
        )
        a[1].write(b"from a")
        b[1].write(b"from b")
        assert await b[0].readexactly(6) == b"from a"
        assert await a[0].readexactly(6) == b"from b"
        for _, writer in (a, b):
            writer.close()
            await writer.wait_closed()
        with pytest.raises(ValueError):
            await aio.open_connection(HOST, port_a, rendezvous=True)

    run(main())


def test_bad_options_are_refused(run):
    async def main():
        with pytest.raises(TypeError):
            await aio.open_connection(HOST, 9, UDT_NO_SUCH=1)
        with pytest.raises(ValueError):
            await aio.open_connection(HOST, 9, UDT_RCVSYN=True)

    run(main())


def test_no_descriptor_left_after_loop(run):
    before = _fds()

    async def main():
        server, port = await _server()
        async with server:
            for _ in range(3):
                reader, writer = await aio.open_connection(HOST, port)
                writer.write(b"abc")
                assert await reader.readexactly(3) == b"abc"
                writer.close()
                await writer.wait_closed()

    run(main())
    leaked = [fd for fd in _fds() - before if "eventfd" in fd or "eventpoll" in fd or fd.startswith("socket:")]
    assert not leaked
