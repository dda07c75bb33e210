"""udt-send --mem's pattern sessions: the receiver checks every byte against the seed's pattern."""

from __future__ import annotations

import pytest

from test_cli import Receiver, no_traceback, raw_replies
from udt.cli import _wire as wire
from udt.cli._pattern import CHUNK, SEED_BYTES, STRIDE, Pattern, first_difference, new_seed, same_bytes, stream_digest


def test_same_seed_same_chunks_and_starts_move():
    seed = new_seed()
    a, b = Pattern(seed), Pattern(seed)
    first = bytes(a.next_chunk(CHUNK))
    assert first == bytes(b.next_chunk(CHUNK))
    second = bytes(a.next_chunk(CHUNK))
    assert second != first and second[: CHUNK - STRIDE] == first[STRIDE:]  # one pool, shifted start
    assert a.position == 2 * CHUNK
    assert bytes(Pattern(new_seed()).next_chunk(64)) != first[:64]


def test_pattern_rejects_bad_seed_and_length():
    with pytest.raises(ValueError, match="seed"):
        Pattern(b"short")
    p = Pattern(bytes(SEED_BYTES))
    for length in (0, CHUNK + 1):
        with pytest.raises(ValueError, match="out of range"):
            p.next_chunk(length)


def test_stream_digest_names_seed_and_count():
    seed = new_seed()
    assert stream_digest(seed, 10) == stream_digest(seed, 10)
    assert stream_digest(seed, 10) != stream_digest(seed, 11)
    assert stream_digest(seed, 10) != stream_digest(new_seed(), 10)


def test_same_bytes_and_first_difference():
    data = bytearray(Pattern(new_seed()).next_chunk(100_000))
    other = bytearray(data)
    assert same_bytes(data, other) and same_bytes(b"", b"")
    assert not same_bytes(data, other[:-1])
    other[77_777] ^= 0x40
    assert not same_bytes(data, other)
    assert first_difference(memoryview(other), memoryview(data)) == 77_777


def _pattern_records(seed: bytes, lengths: list[int], corrupt_at: int | None = None, swap: bool = False) -> bytes:
    """A pattern session's records as udt-send would send them, optionally damaged."""
    pattern = Pattern(seed)
    chunks = [bytearray(pattern.next_chunk(n)) for n in lengths]
    if swap:
        chunks[0], chunks[1] = chunks[1], chunks[0]
    stream = b"".join(chunks)
    if corrupt_at is not None:
        damaged = bytearray(stream)
        damaged[corrupt_at] ^= 1
        stream = bytes(damaged)
    out = wire.pack_session_header(wire.SessionKind.PATTERN) + wire.pack_seed(seed)
    position = 0
    for n in lengths:
        out += wire.pack_chunk_header(n) + stream[position : position + n]
        position += n
    return out + wire.pack_end(position, stream_digest(seed, position))


LENGTHS = [CHUNK, 5000, 123_457, 1]


def test_intact_pattern_session_is_verified(tmp_path):
    seed = new_seed()
    with Receiver(tmp_path, "--mem", "--once", "--json") as recv:
        replies = raw_replies(recv.address, _pattern_records(seed, LENGTHS))
        assert recv.wait() == 0, recv.stderr
    total = sum(LENGTHS)
    assert replies == [(wire.ReplyStatus.OK, total, stream_digest(seed, total))]
    result = recv.json()
    assert result["mode"] == "memory" and result["bytes"] == total
    assert result["sha256"] == stream_digest(seed, total).hex()
    no_traceback(recv)


@pytest.mark.parametrize(
    ("damage", "message"),
    [({"corrupt_at": CHUNK + 4321}, f"byte {CHUNK + 4321} differs"), ({"swap": True}, "byte 0 differs")],
)
def test_damaged_pattern_is_refused_with_the_offset(tmp_path, damage, message):
    seed = new_seed()
    with Receiver(tmp_path, "--mem", "--once", "--json") as recv:
        replies = raw_replies(recv.address, _pattern_records(seed, [CHUNK, CHUNK, 1000], **damage))
        assert recv.wait() == 6, recv.stderr
    assert [r[0] for r in replies] == [wire.ReplyStatus.DIGEST_MISMATCH]
    assert message in recv.stderr
    no_traceback(recv)


def test_pattern_session_needs_its_seed_and_bounded_chunks(tmp_path):
    header = wire.pack_session_header(wire.SessionKind.PATTERN)
    with Receiver(tmp_path, "--mem", "--once", name="noseed") as recv:
        replies = raw_replies(recv.address, header + wire.pack_chunk_header(10) + bytes(10))
        assert recv.wait() == 8
    assert [r[0] for r in replies] == [wire.ReplyStatus.PROTOCOL_ERROR]
    assert "expected the pattern seed" in recv.stderr
    with Receiver(tmp_path, "--mem", "--once", name="bigchunk") as recv:
        replies = raw_replies(recv.address, header + wire.pack_seed(new_seed()) + wire.pack_chunk_header(CHUNK + 1))
        assert recv.wait() == 8
    assert "out of range" in recv.stderr
    no_traceback(recv)
