"""The small application protocol ``udt-send`` and ``udt-recv`` speak over one UDT stream.

Everything is big-endian.  One connection carries one *session*, in one of two kinds:

Session header (sender → receiver, 8 bytes)::

    magic b"UDTX" | version u8 (1) | kind u8 (1 = files, 2 = memory, 3 = pattern) | flags u16 (0)

Files session, for each file, in the order given on the command line::

    b"F" | size u64 | name_length u16 | name (UTF-8, one path component)
    <size bytes of file data>
    b"H" | sha256 of the data (32 bytes)

Memory session (any data, sha256-checked; what udt-send before pattern sessions sent), repeated
until the time is up::

    b"C" | length u32 (1 .. MAX_CHUNK) | <length bytes of generated data>

Pattern session (what ``udt-send --mem`` sends): a seed, then chunks as in a memory session whose
data is the pattern of :mod:`udt.cli._pattern` (length 1 .. ``_pattern.CHUNK``), which the
receiver compares byte for byte instead of hashing::

    b"S" | seed (32 bytes)
    b"C" | length u32 | <the next length bytes of the seed's pattern>   (repeated)

Both kinds end with::

    b"E" | count u64 | digest (32 bytes)

where, for files, ``count`` is the number of files and ``digest`` the *session digest* (see
:func:`session_digest`); for memory, ``count`` is the number of bytes and ``digest`` their
sha256; for a pattern session, ``count`` is the number of bytes and ``digest``
:func:`udt.cli._pattern.stream_digest` of the seed and that count.

Replies (receiver → sender), one per file and one for the end record::

    b"R" | status u8 | bytes u64 | sha256 as computed by the receiver (32 bytes)

The digest comes *after* the data so the sender can hash while it streams.  A receiver that
refuses something (bad name, cannot write, unknown kind) sends its reply and closes the
connection: resynchronising on hostile input is not worth the bandwidth.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from enum import IntEnum

MAGIC = b"UDTX"
VERSION = 1

#: Longest file name accepted, in UTF-8 bytes (the usual NAME_MAX of Linux file systems).
MAX_NAME_BYTES = 255
#: Largest memory-mode chunk a receiver accepts; bigger lengths are a protocol error.
MAX_CHUNK = 16 * 1024 * 1024
#: Prefix of the temporary names partial files live under; senders may not use it.
PARTIAL_PREFIX = ".udt-partial-"


class SessionKind(IntEnum):
    FILES = 1
    MEMORY = 2
    PATTERN = 3


class Tag:
    """Record tags, one byte each."""

    FILE = b"F"
    DIGEST = b"H"
    CHUNK = b"C"
    SEED = b"S"
    END = b"E"
    REPLY = b"R"


class ReplyStatus(IntEnum):
    """What the receiver says about a file or a session."""

    OK = 0
    DIGEST_MISMATCH = 1  # the data arrived but its sha256 differs: nothing was kept
    NAME_REFUSED = 2  # unsafe or invalid file name
    WRITE_FAILED = 3  # the receiver could not write (disk full, permissions)
    KIND_REFUSED = 4  # this receiver does not take this kind of session
    PROTOCOL_ERROR = 5  # malformed records


STATUS_TEXT = {
    ReplyStatus.OK: "verified",
    ReplyStatus.DIGEST_MISMATCH: "sha256 mismatch, file discarded by the receiver",
    ReplyStatus.NAME_REFUSED: "file name refused by the receiver",
    ReplyStatus.WRITE_FAILED: "the receiver could not write the file (disk full or not writable)",
    ReplyStatus.KIND_REFUSED: "the receiver does not accept this kind of transfer",
    ReplyStatus.PROTOCOL_ERROR: "the receiver reported a protocol error",
}

SESSION_HEADER = struct.Struct("!4sBBH")
FILE_HEADER = struct.Struct("!QH")  # after the b"F" tag
DIGEST_BODY = struct.Struct("!32s")  # after the b"H" tag
CHUNK_BODY = struct.Struct("!I")  # after the b"C" tag
SEED_BODY = struct.Struct("!32s")  # after the b"S" tag
END_BODY = struct.Struct("!Q32s")  # after the b"E" tag
REPLY = struct.Struct("!cBQ32s")

ZERO_DIGEST = bytes(32)


class ProtocolError(Exception):
    """The peer sent something that is not this protocol (or not this version of it)."""


def pack_session_header(kind: SessionKind) -> bytes:
    return SESSION_HEADER.pack(MAGIC, VERSION, int(kind), 0)


def unpack_session_header(data: bytes) -> SessionKind:
    magic, version, kind, flags = SESSION_HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"not a udt-send session (magic {magic!r})")
    if version != VERSION:
        raise ProtocolError(f"unsupported session version {version} (this side speaks {VERSION})")
    if flags != 0:
        raise ProtocolError(f"unknown session flags {flags:#06x}")
    try:
        return SessionKind(kind)
    except ValueError:
        raise ProtocolError(f"unknown session kind {kind}") from None


def pack_file_header(name: str, size: int) -> bytes:
    encoded = name.encode("utf-8")
    return Tag.FILE + FILE_HEADER.pack(size, len(encoded)) + encoded


def pack_digest(digest: bytes) -> bytes:
    return Tag.DIGEST + DIGEST_BODY.pack(digest)


def pack_chunk_header(length: int) -> bytes:
    return Tag.CHUNK + CHUNK_BODY.pack(length)


def pack_seed(seed: bytes) -> bytes:
    return Tag.SEED + SEED_BODY.pack(seed)


def pack_end(count: int, digest: bytes) -> bytes:
    return Tag.END + END_BODY.pack(count, digest)


def pack_reply(status: ReplyStatus, nbytes: int, digest: bytes) -> bytes:
    return REPLY.pack(Tag.REPLY, int(status), nbytes, digest)


def unpack_reply(data: bytes) -> tuple[ReplyStatus, int, bytes]:
    tag, status, nbytes, digest = REPLY.unpack(data)
    if tag != Tag.REPLY:
        raise ProtocolError(f"expected a reply record, got tag {tag!r}")
    try:
        return ReplyStatus(status), nbytes, digest
    except ValueError:
        raise ProtocolError(f"unknown reply status {status}") from None


def session_digest(file_digests: list[bytes]) -> bytes:
    """The sha256 reported for a files session.

    One file: that file's sha256 (so it matches ``sha256sum``).  Several: the sha256 of their raw
    32-byte digests concatenated in order, which both sides compute without hashing the data twice.
    """
    if len(file_digests) == 1:
        return file_digests[0]
    return hashlib.sha256(b"".join(file_digests)).digest()


def check_file_name(raw: bytes) -> str:
    """Return ``raw`` decoded if it is a safe single file name, else raise ValueError saying why.

    A safe name is one path component: non-empty UTF-8 of at most MAX_NAME_BYTES bytes, neither
    ``.`` nor ``..``, without ``/``, ``\\``, NUL or other control characters, and not one of the
    receiver's temporary names.  Nothing a sender says can make the receiver write outside its
    output directory.
    """
    if not raw:
        raise ValueError("empty file name")
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"file name longer than {MAX_NAME_BYTES} bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("file name is not valid UTF-8") from None
    if name in (".", ".."):
        raise ValueError(f"file name {name!r} is a directory reference")
    if "/" in name or "\\" in name:
        raise ValueError(f"file name {name!r} contains a path separator")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch != "\u200d" for ch in name):
        raise ValueError(f"file name {name!r} contains control or unassigned characters")
    if name.startswith(PARTIAL_PREFIX):
        raise ValueError(f"file name {name!r} uses the receiver's temporary prefix")
    return name
