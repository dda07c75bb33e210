"""A file mapped whole, handed out in populated windows: the file tools' copy-free file side.

``udt-send`` queues slices of the mapped file on the socket, so the bytes go from the page cache
straight into the send buffer (``preadv`` into a buffer first was one more copy of every byte:
10 % of a 1 GiB transfer's samples).  Each window is populated with ``madvise``
(``MADV_POPULATE_READ``/``_WRITE``, Linux 5.14) before it is touched: one call maps its pages in
bulk instead of a fault per page, and a page that cannot be had (the file shrank, the file
system is full) becomes an ``OSError`` there instead of a ``SIGBUS`` on the access.  Without
that ``madvise`` (older kernels) or without ``mmap`` (some file systems) ``open_mapped`` returns
None and the caller keeps its read/write path.  A file truncated by someone else after a
window's ``madvise`` (the copy into the send buffer may wait long for room) would still fault:
a mapping for reading is guarded by ``_sigbus``, which turns that fault into zeros and the flag
``shrank``, checked after each window.
"""

from __future__ import annotations

import errno
import mmap

from udt.cli._sigbus import guard, shrank, unguard

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux's numbers; Python 3.13 names them
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


class MappedFile:
    """``size`` bytes of ``fd`` mapped at once (one mapping, unmapped only at ``close``: a
    mapping per block would shoot down the TLB at every ``munmap``)."""

    def __init__(self, fd: int, size: int, *, writable: bool) -> None:
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._map = mmap.mmap(fd, size, access=access)
        self._view = memoryview(self._map)
        self._advice = MADV_POPULATE_WRITE if writable else MADV_POPULATE_READ
        self.size = size
        self._guarded = not writable and guard(self._view)

    def shrank(self) -> bool:
        """Whether a page of the file vanished under a window since it was mapped (read only)."""
        return self._guarded and shrank()

    def window(self, offset: int, length: int) -> memoryview:
        """``length`` bytes at ``offset`` (a multiple of the page size), their pages present."""
        self._map.madvise(self._advice, offset, length)
        return self._view[offset : offset + length]

    def close(self) -> None:
        if self._guarded:
            unguard()
            self._guarded = False
        self._view.release()
        try:
            self._map.close()
        except BufferError:  # a window still held (a failed transfer): unmapped when it is freed
            pass


def open_mapped(fd: int, size: int, *, writable: bool) -> MappedFile | None:
    """The file mapped, or None when mapping or populating is not available here."""
    if size <= 0:
        return None
    try:
        mapped = MappedFile(fd, size, writable=writable)
    except (OSError, ValueError):
        return None
    try:
        mapped.window(0, min(size, mmap.PAGESIZE))
    except OSError as exc:
        mapped.close()
        if exc.errno == errno.EINVAL:  # no MADV_POPULATE_*: a fault could only be a SIGBUS
            return None
        raise
    return mapped
