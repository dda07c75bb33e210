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


def test_lent_views_are_hashed_in_order_and_released():
    data = os.urandom(5 * 4096)
    backing = bytearray(data)
    whole = memoryview(backing)
    hasher = BlockHasher(block=4096, buffers=2)  # fewer tokens than views: lend() must wait
    hasher.start()
    for offset in range(0, len(data), 4096):
        hasher.lend(whole[offset : offset + 4096])
    assert hasher.result() == hashlib.sha256(data).digest()
    whole.release()
    backing.extend(b"!")  # resizing fails while any lent view is still held


def test_an_abandoned_hasher_releases_what_was_lent():
    backing = bytearray(64)
    whole = memoryview(backing)
    hasher = BlockHasher(block=16, buffers=4)
    hasher.start()
    for offset in range(0, 64, 16):
        hasher.lend(whole[offset : offset + 16])
    hasher.abandon()
    hasher.join()
    whole.release()
    backing.extend(b"!")
