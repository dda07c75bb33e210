"""pytest-benchmark view of the channel: one round = 256 datagrams of 1456 bytes sent and all
received back over loopback, in one process (the two-process rate table is bench_channel.py).

    python -m pytest bench/test_bench_channel.py --benchmark-only
"""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("pytest_benchmark")

from udt._net import Channel, RecvBatch, SendBatch  # noqa: E402

ROUND = 256
PAYLOAD = bytes(range(256)) * 5 + bytes(176)  # 1456 bytes
BUFFER = 16 << 20


@pytest.fixture
def python_pair():
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, 33, BUFFER)  # SO_RCVBUFFORCE (root)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(1.0)
    yield sender, receiver
    sender.close()
    receiver.close()


def test_python_sockets(benchmark, python_pair):
    sender, receiver = python_pair
    address = receiver.getsockname()
    buffer = bytearray(65536)

    def one_round():
        for _ in range(ROUND):
            sender.sendto(PAYLOAD, address)
        received = 0
        while received < ROUND:
            received += receiver.recvfrom_into(buffer)[0] // len(PAYLOAD)
        return received

    assert benchmark(one_round) == ROUND


@pytest.mark.parametrize("gso,gro", [(False, False), (True, False), (True, True)], ids=["batch", "gso", "gso+gro"])
def test_channel_batches(benchmark, gso, gro):
    with Channel(gso=gso, sndbuf=BUFFER) as sender, Channel(gro=gro, rcvbuf=BUFFER) as receiver:
        receiver.bind(("127.0.0.1", 0))
        address = receiver.getsockname()
        outgoing = SendBatch(ROUND)
        for _ in range(ROUND):
            outgoing.add(PAYLOAD)
        incoming = RecvBatch(64)

        def one_round():
            outgoing.rewind()
            sender.send_batch(outgoing, address)
            received = 0
            while received < ROUND:
                received += receiver.recv_batch(incoming, 1.0)
            return received

        assert benchmark(one_round) == ROUND
