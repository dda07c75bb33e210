"""The process-wide worker pool (udt/_pool.pyx): threads follow the cores, not the ports."""

from __future__ import annotations

import hashlib
import threading

import pytest

import udt

LOOP4 = "127.0.0.1"
SERVERS = 4


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("udt-pool-")]


def _fan_out(count: int, size: int) -> None:
    """``count`` clients, each on its own ephemeral port, all connected at once to a few
    servers; each sends ``size`` distinct bytes and gets them back; sha256 compared."""
    bound = 2 * udt.worker_count()
    baseline = threading.active_count()
    servers = [udt.create_server((LOOP4, 0), backlog=count) for _ in range(SERVERS)]
    clients: list[udt.socket] = []
    accepted: list[udt.socket] = []
    try:
        for i in range(count):
            client = udt.create_connection(servers[i % SERVERS].getsockname(), timeout=10)
            clients.append(client)
        for i in range(count):
            conn, _ = servers[i % SERVERS].accept()
            conn.settimeout(10)
            accepted.append(conn)
        # every port is open now: 2 * count ports' worth of connections, a bounded pool
        assert len(_pool_threads()) <= bound
        assert threading.active_count() - baseline <= bound, [t.name for t in threading.enumerate()]
        payloads = [i.to_bytes(4, "big") + hashlib.sha256(b"%d" % i).digest() * (size // 32) for i in range(count)]
        for client, payload in zip(clients, payloads):
            client.sendall(payload)
        received = {}
        for conn in accepted:
            data = bytearray()
            while len(data) < 4 + size // 32 * 32:
                chunk = conn.recv(65536)
                assert chunk, "EOF before the whole payload"
                data += chunk
            index = int.from_bytes(data[:4], "big")
            received[index] = bytes(data)
            conn.sendall(data)  # echoed: the other direction over the same pool
        assert sorted(received) == list(range(count))
        for i, payload in enumerate(payloads):
            assert hashlib.sha256(received[i]).digest() == hashlib.sha256(payload).digest()
        for client, payload in zip(clients, payloads):
            back = bytearray()
            while len(back) < len(payload):
                chunk = client.recv(65536)
                assert chunk, "EOF before the echo"
                back += chunk
            assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
        assert threading.active_count() - baseline <= bound
    finally:
        for s in clients + accepted + servers:
            s.close()
    assert _pool_threads() == []  # the last port took the pool's threads along


def test_two_hundred_outgoing_connections_use_a_bounded_pool():
    _fan_out(200, 8192)


@pytest.mark.slow
def test_thousand_outgoing_connections_use_a_bounded_pool():
    _fan_out(1000, 8192)


def test_worker_count_is_configurable():
    before = udt.worker_count()
    try:
        udt.set_worker_count(1)
        assert udt.worker_count() == 1
        with udt.create_server((LOOP4, 0)) as server:
            with udt.create_connection(server.getsockname(), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"one pair serves both ports" * 1000)
                    data = bytearray()
                    while len(data) < 26000:
                        data += conn.recv(65536)
                    assert bytes(data) == b"one pair serves both ports" * 1000
                    assert len(_pool_threads()) == 2
        with pytest.raises(ValueError):
            udt.set_worker_count(0)
        with pytest.raises(TypeError):
            udt.set_worker_count(1.5)  # type: ignore[arg-type]
    finally:
        udt.set_worker_count(None)
    assert udt.worker_count() == before


def test_udt_workers_environment_variable(monkeypatch):
    from udt import _pool

    monkeypatch.setenv("UDT_WORKERS", "3")
    assert _pool._default_count() == 3
    for bad in ("0", "65", "many"):
        monkeypatch.setenv("UDT_WORKERS", bad)
        with pytest.raises(ValueError, match="UDT_WORKERS"):
            _pool._default_count()
    monkeypatch.delenv("UDT_WORKERS")
    assert 1 <= _pool._default_count() <= 4
