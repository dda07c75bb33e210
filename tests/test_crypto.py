"""Encryption between udt peers (protocol.md §12): real sockets on loopback, a relay that
injects forged, replayed and flipped packets and records the wire, real UDT4 and SRT peers."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

import udt
from loopback_pair import connected_pair
from rebinding_nat import RebindingNat
from udt._seal import CryptoState
from udt.errors import InvalidParameterError

LOOP = "127.0.0.1"
PASSPHRASE = "correct horse battery staple"
SECRET = {udt.UDT_PASSPHRASE: PASSPHRASE}
OPEN_OK, OPEN_FORGED, OPEN_REPLAYED = 0, 1, 2


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(conn, out: dict) -> None:
    chunks = []
    try:
        while data := conn.recv(1 << 20):
            chunks.append(data)
    except OSError as exc:
        out["error"] = exc
    out["data"] = b"".join(chunks)


def transfer(client_options: dict, server_options: dict, payload: bytes, *, via=None):
    """Send payload from a client to a server (through via(server address) -> relay, if
    given); returns (received bytes, server-side perfmon, client-side perfmon)."""
    got: dict = {}
    with connected_pair(client_options, server_options, via=via) as (client, conn):
        conn.settimeout(30)
        reader = threading.Thread(target=_read_all, args=(conn, got))
        reader.start()
        client.sendall(payload)
        client.flush(timeout=30)
        client_stats = client.perfmon()
        client.shutdown(socket.SHUT_WR)
        reader.join(30)
        assert not reader.is_alive(), "the reader hung"
        server_stats = conn.perfmon()
    assert "error" not in got, got
    return got["data"], server_stats, client_stats


class Relay:
    """A UDP relay between one client and the server that records every datagram and, with
    attack=True, sends the server extra copies of the client's sealed data packets: replayed,
    bit-flipped in the ciphertext, in the tag and in the (authenticated) header, and forged."""

    def __init__(self, target, *, attack: bool = False) -> None:
        self.target = target
        self.attack = attack
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind((LOOP, 0))
        self.outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.outside.bind((LOOP, 0))
        self.address = self.inside.getsockname()
        self.wire: list[bytes] = []
        self.injected = 0
        self.client = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="crypto-relay")
        self.thread.start()

    def _inject(self, data: bytes) -> None:
        flipped_body = bytearray(data)
        flipped_body[40] ^= 0x01
        flipped_tag = bytearray(data)
        flipped_tag[-1] ^= 0x80
        flipped_header = bytearray(data)
        flipped_header[9] ^= 0x10  # the timestamp: associated data
        flipped_number = bytearray(data)
        flipped_number[23] ^= 0x55  # a packet number not seen yet: only the tag can tell
        forged = data[:16] + os.urandom(len(data) - 16)
        # the flipped copies keep an opened packet number: replays; the others fail the tag
        for copy in (data, flipped_body, flipped_tag, flipped_header, flipped_number, forged):
            self.outside.sendto(bytes(copy), self.target)
            self.injected += 1

    def _run(self) -> None:
        import select

        count = 0
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.inside, self.outside], [], [], 0.05)
            for sock in ready:
                data, source = sock.recvfrom(65536)
                self.wire.append(data)
                if sock is self.inside:
                    self.client = source
                    self.outside.sendto(data, self.target)
                    is_data = len(data) > 200 and not data[0] & 0x80
                    if self.attack and is_data:
                        count += 1
                        if count % 40 == 0:
                            self._inject(data)
                elif self.client is not None:
                    self.inside.sendto(data, self.client)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.inside.close()
        self.outside.close()


# --------------------------------------------------------------------------- the seal itself


def _state_pair() -> tuple[CryptoState, CryptoState]:
    a, b = os.urandom(32), os.urandom(32)
    return CryptoState.keyed_with(a, b), CryptoState.keyed_with(b, a)


def test_sealed_packet_opens_once_and_tampering_is_detected():
    sender, receiver = _state_pair()
    packet = bytes(range(16)) + b"payload bytes " * 20
    sealed = sender.seal_packet(packet)
    assert len(sealed) == len(packet) + 24 and sealed[:16] == packet[:16]
    assert packet[16:] not in sealed
    assert receiver.open_packet(sealed) == (OPEN_OK, packet)
    assert receiver.open_packet(sealed)[0] == OPEN_REPLAYED
    for offset in (9, 17, 30, len(sealed) - 1):  # header, packet number, body, tag
        bad = bytearray(sender.seal_packet(packet))
        bad[offset] ^= 0x04
        assert receiver.open_packet(bytes(bad))[0] in (OPEN_FORGED, OPEN_REPLAYED)
    assert receiver.open_packet(sealed[:30])[0] == OPEN_FORGED


def test_seal_is_standard_aes_gcm_as_cryptography_computes_it():
    """The workers seal through OpenSSL's EVP; cryptography's AESGCM must agree both ways."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    send_key, receive_key = os.urandom(32), os.urandom(32)
    ours = CryptoState.keyed_with(send_key, receive_key)
    packet = os.urandom(16) + os.urandom(1400)
    for expected_pn in range(3):
        sealed = ours.seal_packet(packet)
        pn = int.from_bytes(sealed[16:24], "big")
        assert pn == expected_pn
        nonce = bytes(4) + sealed[16:24]
        assert AESGCM(send_key).decrypt(nonce, sealed[24:], sealed[:16]) == packet[16:]
    theirs = bytes(4) + (7).to_bytes(8, "big")
    foreign = packet[:16] + theirs[4:] + AESGCM(receive_key).encrypt(theirs, packet[16:], packet[:16])
    assert ours.open_packet(foreign) == (OPEN_OK, packet)


def test_replay_window_takes_reordering_and_refuses_old_numbers():
    sender, receiver = _state_pair()
    sealed = [sender.seal_packet(bytes(16) + i.to_bytes(4, "big")) for i in range(1100)]
    assert receiver.open_packet(sealed[5])[0] == OPEN_OK
    assert receiver.open_packet(sealed[2])[0] == OPEN_OK  # late but inside the window
    assert receiver.open_packet(sealed[2])[0] == OPEN_REPLAYED
    assert receiver.open_packet(sealed[1099])[0] == OPEN_OK
    assert receiver.open_packet(sealed[3])[0] == OPEN_REPLAYED  # older than the window now
    assert receiver.open_packet(sealed[1000])[0] == OPEN_OK
    assert receiver.open_packet(sealed[1000])[0] == OPEN_REPLAYED
    keyless = CryptoState.for_client(None)
    assert keyless.open_packet(sealed[0])[0] == 3 and keyless.seal_packet(bytes(20)) is None


def test_passphrase_option_is_validated():
    sock = udt.socket()
    with sock:
        for bad in ("short", 12345, b"bytes are not text"):
            with pytest.raises(InvalidParameterError):
                sock.setsockopt(udt.UDT_PASSPHRASE, bad)
        sock.setsockopt(udt.UDT_PASSPHRASE, PASSPHRASE)
        sock.setsockopt(udt.UDT_PASSPHRASE, None)  # back to plaintext


# --------------------------------------------------------------------------- connections


def test_right_passphrase_transfers_intact_and_encrypted():
    payload = os.urandom(3 << 20)
    data, server_stats, client_stats = transfer(SECRET, SECRET, payload)
    assert _digest(data) == _digest(payload)
    assert server_stats["encrypted"] and client_stats["encrypted"]
    assert server_stats["pkt_rcv_forged"] == server_stats["pkt_rcv_replayed"] == 0


def test_encrypted_connection_reports_the_mss_on_the_wire():
    options = {**SECRET, udt.UDT_MSS: 1400}
    with connected_pair(options) as (client, conn):
        assert client.getsockopt(udt.UDT_MSS) == conn.getsockopt(udt.UDT_MSS) == 1400
    with udt.socket() as sock:
        sock.setsockopt(udt.UDT_MSS, 90)
        sock.setsockopt(udt.UDT_PASSPHRASE, PASSPHRASE)
        with pytest.raises(InvalidParameterError, match="at least 100"):
            sock.connect((LOOP, 9))


def test_plaintext_connections_stay_plaintext():
    payload = os.urandom(256 << 10)
    data, server_stats, _ = transfer({}, {}, payload)
    assert data == payload and not server_stats["encrypted"]


@pytest.mark.parametrize(
    ("client", "server", "reason", "counter"),
    [
        ({udt.UDT_PASSPHRASE: "not the right passphrase"}, SECRET, "wrong passphrase", "crypto_refused_mismatch"),
        ({}, SECRET, "requires a passphrase", "crypto_refused_no_passphrase"),
        (SECRET, {}, "has no passphrase", "crypto_refused_unexpected"),
    ],
    ids=["wrong", "missing-on-client", "missing-on-server"],
)
def test_mismatch_is_refused_with_its_reason_and_the_listener_goes_on(client, server, reason, counter):
    with udt.create_server((LOOP, 0), options=server) as listener:
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError, match=reason):
            udt.create_connection(listener.getsockname(), timeout=10, options=client)
        assert time.monotonic() - started < 3
        assert listener.listener_stats()[counter] == 1
        # the listener keeps serving: a client that matches it connects and talks
        listener.settimeout(10)
        with udt.create_connection(listener.getsockname(), timeout=10, options=server) as good:
            conn, _ = listener.accept()
            with conn:
                good.sendall(b"still serving")
                assert conn.recv(100) == b"still serving"
                assert conn.perfmon()["encrypted"] == bool(server)


def test_forged_replayed_and_flipped_packets_are_dropped_and_counted():
    payload = os.urandom(3 << 20)
    relays: list[Relay] = []

    def attacking(target):
        relays.append(Relay(target, attack=True))
        return relays[0]

    # MSS pinned at 1500: the relay attacks per data packet, and discovery would carry 3 MiB in ~50
    pinned = {**SECRET, udt.UDT_MSS: 1500}
    data, server_stats, _ = transfer(pinned, pinned, payload, via=attacking)
    assert _digest(data) == _digest(payload)
    injected = relays[0].injected
    assert injected >= 60
    forged, replayed = server_stats["pkt_rcv_forged"], server_stats["pkt_rcv_replayed"]
    assert forged >= injected // 6 and replayed >= injected // 6
    assert forged + replayed >= injected - 6  # every copy dropped and counted (the last may trail)


def _leaks(wire: list[bytes], payload: bytes) -> int:
    """How many aligned 16-byte pieces of payload appear in the captured datagrams.  Any
    32-byte run of the payload on the wire contains one such piece."""
    pieces = {payload[i : i + 16] for i in range(0, len(payload) - 15, 16)}
    found = 0
    for datagram in wire:
        for i in range(len(datagram) - 15):
            if datagram[i : i + 16] in pieces:
                found += 1
    return found


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plaintext-control"])
def test_capture_of_an_encrypted_transfer_has_no_plaintext(encrypted):
    payload = os.urandom(512 << 10)
    relays: list[Relay] = []

    def recording(target):
        relays.append(Relay(target))
        return relays[0]

    options = SECRET if encrypted else {}
    data, _, _ = transfer(options, options, payload, via=recording)
    assert data == payload
    wire = relays[0].wire
    assert sum(map(len, wire)) > len(payload)
    if encrypted:
        assert _leaks(wire, payload) == 0
    else:  # the check finds plaintext where there is some
        assert _leaks(wire, payload) > len(payload) // 64


def test_nat_rebinding_with_encryption_follows_the_peer():
    options = {**SECRET, udt.UDT_PEERIDLETIMEO: 3000}
    payload = os.urandom(3 << 20)
    server = udt.create_server((LOOP, 0), options=options)
    nat = RebindingNat(server.getsockname())
    got: dict = {}
    try:
        client = udt.create_connection(nat.address, timeout=10, options=options)
        server.settimeout(10)
        conn, _ = server.accept()
        with client, conn:
            client.setsockopt(udt.UDT_MAXBW, 4_000_000)
            conn.settimeout(30)
            reader = threading.Thread(target=_read_all, args=(conn, got))
            reader.start()
            writer_done = threading.Event()

            def write():
                client.sendall(payload)
                client.flush(timeout=30)
                writer_done.set()

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.3)
            nat.rebind()
            writer.join(30)
            assert writer_done.is_set(), "the sender did not finish"
            rebinds = conn.perfmon()["peer_rebinds"]
            client.shutdown(socket.SHUT_WR)
            reader.join(30)
    finally:
        nat.close()
        server.close()
    assert "error" not in got, got
    assert _digest(got["data"]) == _digest(payload)
    assert rebinds >= 1


def test_rendezvous_with_a_passphrase_is_refused_clearly():
    with udt.socket() as sock:
        sock.setsockopt(udt.UDT_RENDEZVOUS, True)
        sock.setsockopt(udt.UDT_PASSPHRASE, PASSPHRASE)
        sock.bind((LOOP, 0))
        with pytest.raises(OSError, match="rendezvous"):
            sock.connect((LOOP, 9))


# --------------------------------------------------------------------------- plain peers


@pytest.mark.interop
class TestPlainPeersAreRefused:
    """UDT4 and SRT know no handshake extension: a passphrase never falls back to plaintext."""

    @pytest.fixture(autouse=True)
    def _peers(self):
        from udt.tools import peers

        self.peers = peers

    def test_udt4_listener(self):
        reason = self.peers.udt4_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with self.peers.udt4("recv", sock_type="stream", nbytes=1, timeout=15) as server:
            port = server.ready()["port"]
            with pytest.raises(ConnectionRefusedError, match="cannot encrypt"):
                udt.create_connection((LOOP, port), timeout=10, options=SECRET)

    def test_udt4_client(self):
        reason = self.peers.udt4_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with udt.create_server((LOOP, 0), options=SECRET) as server:
            port = server.getsockname()[1]
            with self.peers.udt4("send", connect=(LOOP, port), sock_type="stream", nbytes=10, timeout=20) as client:
                with pytest.raises(self.peers.PeerError, match="ECONNREJ|1002"):
                    client.result(timeout=20)
            assert server.listener_stats()["crypto_refused_no_passphrase"] >= 1

    def test_srt_listener(self, tmp_path):
        reason = self.peers.srt_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with self.peers.srt_recv(self.peers.free_udp_port(), tmp_path / "never.bin", timeout=15) as listener:
            port = listener.ready()["port"]
            with pytest.raises(ConnectionRefusedError, match="cannot encrypt"):
                udt.create_connection((LOOP, port), timeout=10, type=udt.SOCK_DGRAM, options=SECRET)


# --------------------------------------------------------------------------- the CLIs


def test_cli_passphrase_file_and_environment(tmp_path, monkeypatch):
    import test_cli

    source = test_cli.make_file(tmp_path / "secret.bin", 1 << 20)
    key = tmp_path / "key"
    key.write_text(PASSPHRASE + "\n")
    out = tmp_path / "out"
    # the receiver reads the file, the sender the environment variable
    monkeypatch.setattr(test_cli, "ENV", {**test_cli.ENV, "UDT_PASSPHRASE": PASSPHRASE})
    with test_cli.Receiver(tmp_path, "--output", out, "--passphrase-file", key) as recv:
        code, send = test_cli.run_sender(tmp_path, source, recv.address, "--json")
        assert code == 0, send.stderr
        assert send.json()["sha256"] == _digest(source.read_bytes())
        # a sender with the wrong passphrase is refused with the reason; udt-recv logs it
        monkeypatch.setattr(test_cli, "ENV", {**test_cli.ENV, "UDT_PASSPHRASE": "a wrong passphrase"})
        code, bad = test_cli.run_sender(tmp_path, source, recv.address, name="bad")
        assert code != 0 and "wrong passphrase" in bad.stderr, bad.stderr
        test_cli.wait_for(lambda: "refused 1 connection(s): wrong passphrase" in recv.stderr, what="the log")
    assert (out / source.name).read_bytes() == source.read_bytes()
