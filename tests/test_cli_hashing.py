"""BlockHasher: the digest of exactly the blocks submitted, in order, with buffers recycled."""

import hashlib
import os

import pytest

from udt.cli._hashing import BlockHasher


def test_digest_covers_every_submitted_byte_in_order():
    data = os.urandom(3 * 4096 + 123)
    hasher = BlockHasher(block=4096, buffers=2)  # fewer buffers than blocks: they must come back
    hasher.start()
    offset = 0
    while offset < len(data):
        view = hasher.take()
        n = min(len(view), len(data) - offset)
        view[:n] = data[offset : offset + n]
        hasher.submit(view[:n])
        offset += n
    assert hasher.result() == hashlib.sha256(data).digest()


def test_a_submitted_prefix_only_is_hashed():
    hasher = BlockHasher(block=16, buffers=1)
    hasher.start()
    view = hasher.take()
    view[:] = b"x" * 16
    hasher.submit(view[:5])
    assert hasher.result() == hashlib.sha256(b"x" * 5).digest()


def test_abandoned_hashing_has_no_result():
    hasher = BlockHasher(block=16, buffers=1)
    hasher.start()
    hasher.abandon()
    with pytest.raises(RuntimeError, match="abandoned"):
        hasher.result()
    assert not hasher.is_alive()


def test_a_failure_in_the_thread_reaches_take_and_result():
    hasher = BlockHasher(block=16, buffers=1)
    hasher.start()
    hasher.take()
    hasher.submit("not a buffer")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hasher.take()
    with pytest.raises(TypeError):
        hasher.result()
