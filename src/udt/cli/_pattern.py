"""The generated data of ``udt-send --mem``: a seeded pattern the receiver checks byte for byte.

Memory mode measures the transport, so its verification must cost far less than the transport:
sha256 on both ends (about 1 GB/s per core with SHA-NI) used half the CPU of a 2-core machine
and capped the mode near 1 GB/s before the transport did any work.  Instead the sender draws a
random 32-byte seed, sends it first, and every chunk it sends is a slice of a pool both ends
derive from that seed; the receiver compares each received chunk with the slice it expects
(``memcmp``, tens of GB/s) and the sender does no per-byte work at all.  This checks more than a
digest would: every byte at its position, so a lost, duplicated, reordered or corrupted packet
fails the first chunk it touches, and the receiver says which byte offset differed.

Chunk ``k`` (counting from 0) of length ``L`` carries ``pool[o_k : o_k + L]`` with ``o_0 = 0`` and
``o_(k+1) = (o_k + STRIDE) mod CHUNK``: consecutive chunks start at different places, so a
chunk delivered in place of another does not match.  The session's reported digest is
:func:`stream_digest` of the seed and the byte count, which names the stream exactly (the same
seed and count give the same bytes); both ends print it as ``sha256``.
"""

from __future__ import annotations

import hashlib
import os
import struct

from udt.cli._compare import same_bytes

SEED_BYTES = 32
#: Longest chunk of a pattern session (also what ``udt-send --mem`` uses).
CHUNK = 1 << 20
#: Chunk starts move by a prime through the pool: no two neighbours are equal.
STRIDE = 4093
_POOL_DOMAIN = b"udt-mem-pattern-pool-v1"
_DIGEST_DOMAIN = b"udt-mem-pattern-stream-v1"


def new_seed() -> bytes:
    return os.urandom(SEED_BYTES)


def stream_digest(seed: bytes, count: int) -> bytes:
    """sha256 naming the stream of ``count`` bytes generated from ``seed``."""
    return hashlib.sha256(_DIGEST_DOMAIN + seed + struct.pack("!Q", count)).digest()


class Pattern:
    """The chunks of one pattern session, in order; the same on both ends for the same seed."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a pattern seed has {SEED_BYTES} bytes, not {len(seed)}")
        self.seed = seed
        # 2 × CHUNK: any chunk start below CHUNK leaves room for a whole chunk; 2 MiB stays in L2
        self._pool = memoryview(hashlib.shake_256(_POOL_DOMAIN + seed).digest(2 * CHUNK))
        self._offset = 0
        self.position = 0  # stream bytes covered by the chunks taken so far

    def next_chunk(self, length: int) -> memoryview:
        """The next chunk's expected bytes (a view into the pool, valid for the pattern's life)."""
        if not 0 < length <= CHUNK:
            raise ValueError(f"pattern chunk length {length} out of range 1..{CHUNK}")
        chunk = self._pool[self._offset : self._offset + length]
        self._offset = (self._offset + STRIDE) % CHUNK
        self.position += length
        return chunk


def first_difference(got: memoryview, expected: memoryview) -> int:
    """Index of the first byte where ``got`` differs from ``expected`` (they are known to differ);
    only on the failure path, so plain Python is fast enough."""
    step = 4096
    for start in range(0, min(len(got), len(expected)), step):
        if not same_bytes(got[start : start + step], expected[start : start + step]):
            for i in range(start, min(start + step, len(got), len(expected))):
                if got[i] != expected[i]:
                    return i
    return min(len(got), len(expected))


__all__ = ["CHUNK", "SEED_BYTES", "STRIDE", "Pattern", "first_difference", "new_seed", "same_bytes", "stream_digest"]
