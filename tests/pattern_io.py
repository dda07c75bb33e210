"""Move udt.tools.peers' deterministic pattern over a connected udt socket and check what arrived:
the interop tests (against UDT4) and the impairment tests share it."""

from __future__ import annotations

import hashlib

from udt.tools import peers


def write_pattern_file(path, nbytes: int, seed: int) -> str:
    """Write nbytes of the pattern to path (the file interop tests' source); returns its sha256."""
    with open(path, "wb") as f:
        for block in peers.pattern_chunks(nbytes, seed):
            f.write(block)
    return peers.pattern_sha256(nbytes, seed)


def send_pattern(sock, message_mode: bool, nbytes: int, *, msg_size: int, seed: int = 0) -> str:
    """Send nbytes of the pattern (stream: sendall; message mode: messages of msg_size cut from
    each pattern block); returns its sha256."""
    digest = hashlib.sha256()
    for block in peers.pattern_chunks(nbytes, seed):
        digest.update(block)
        if not message_mode:
            sock.sendall(block)
            continue
        view = memoryview(block)
        for start in range(0, len(view), msg_size):
            message = view[start : start + msg_size]
            assert sock.sendmsg(message) == len(message)
    return digest.hexdigest()


def receive_pattern(sock, message_mode: bool, nbytes: int | None = None) -> tuple[int, str, list[int]]:
    """Receive until nbytes (or the peer's close when None); returns (bytes, sha256, message
    sizes — empty in stream mode)."""
    digest = hashlib.sha256()
    total = 0
    sizes: list[int] = []
    buf = bytearray(1 << 20)
    while nbytes is None or total < nbytes:
        if not message_mode:
            n = sock.recv_into(buf)
            chunk = memoryview(buf)[:n]
        else:
            chunk = memoryview(sock.recvmsg(len(buf)))
            n = len(chunk)
            if n:
                sizes.append(n)
        if n == 0:
            break
        digest.update(chunk)
        total += n
    return total, digest.hexdigest(), sizes


def pattern_message_sizes(nbytes: int, msg_size: int) -> list[int]:
    """The messages send_pattern (and the UDT4 peer) send: each pattern block in msg_size pieces."""
    full, rest = divmod(nbytes, peers.PATTERN_BLOCK)
    sizes: list[int] = []
    for block_len in [peers.PATTERN_BLOCK] * full + ([rest] if rest else []):
        sizes += [msg_size] * (block_len // msg_size) + ([block_len % msg_size] if block_len % msg_size else [])
    return sizes
