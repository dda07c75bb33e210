"""sha256 of a file's bytes as the transfer moves them, in a background thread.

The transfer thread reads (sender) or receives (receiver) each block into a buffer it takes
from here, sends or writes it, then hands the same buffer over; this thread hashes it and gives
the buffer back.  So the hash covers exactly the bytes sent or written, the file is never read a
second time (re-reading it from the page cache cost about 8 % of a 1 GiB transfer's CPU), and
hashing overlaps with the network: the hash releases the GIL.  A caller that maps the file
(``_mapped.py``) lends slices of the mapping instead of copying into our buffers; ``udt-recv``
lends ``RingLease`` objects (``udt.socket._recvfile_lend``): bytes it wrote to the file
straight from the receive ring, hashed here from the ring's slots, then given back to it.
"""

from __future__ import annotations

import queue
import threading
from typing import Protocol, cast

from udt._digest import Sha256

BLOCK = 256 << 10  # bytes per buffer: a block is still in L2 when it is copied the second time
BUFFERS = 8  # buffers in flight between the transfer and the hashing thread


class Lease(Protocol):
    """What ``lend_lease`` takes (``udt._connection.RingLease``)."""

    def feed(self, digest: Sha256) -> None: ...
    def release(self) -> None: ...


class BlockHasher(threading.Thread):
    """Hash, in order, the blocks handed over with ``submit``.

    ``take()`` waits for a free buffer (a memoryview of ``BLOCK`` bytes); ``submit(view)`` queues
    a prefix of it for hashing and gives up the buffer; ``lend(view)`` queues a view the caller
    owns (a slice of a mapped file), waiting while ``buffers`` lent views are not hashed yet, and
    releases it once hashed; ``lend_lease(lease)`` the same for a lease, which hashes itself
    into our digest and is released once hashed; ``result()`` waits for every submitted block and returns the digest;
    ``abandon()`` stops early (the transfer failed).
    """

    def __init__(self, *, name: str = "udt-cli-hash", block: int = BLOCK, buffers: int = BUFFERS) -> None:
        super().__init__(name=name, daemon=True)
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[memoryview | Lease, bool] | None] = queue.SimpleQueue()
        self._block, self._buffers = block, buffers
        self._made = 0  # our own buffers, made at the first take(): a lending caller needs none
        self._lent: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token per view that may be lent
        for _ in range(buffers):
            self._lent.put(None)
        self._abandoned = False
        self._finished = False
        self._digest: bytes | None = None
        self._error: BaseException | None = None

    def take(self) -> memoryview:
        """A free buffer; raises what went wrong in the hashing thread, if anything did."""
        if self._made < self._buffers:
            self._made += 1
            return memoryview(bytearray(self._block))
        return self._wait(self._free)

    def submit(self, view: memoryview) -> None:
        """Hash ``view`` (a prefix of a buffer from ``take``) after what was submitted before."""
        self._full.put((view, True))

    def lend(self, view: memoryview) -> None:
        """Hash ``view``, the caller's, after what was submitted before; it is released once
        hashed (so the caller must not touch it after this call) and the caller may close what it
        points into after ``result()``."""
        self._wait(self._lent)
        self._full.put((view, False))

    def lend_lease(self, lease: Lease) -> None:
        """Hash ``lease`` after what was submitted before, then release it (also when the
        hashing is abandoned or fails: its slots must go back to the ring)."""
        self._wait(self._lent)
        self._full.put((lease, False))

    def _wait(self, source: queue.SimpleQueue):
        while True:
            if self._error is not None:
                raise self._error
            try:
                return source.get(timeout=1.0)
            except queue.Empty:
                if self._error is None and not self.is_alive():
                    raise RuntimeError("the hashing thread is gone") from None

    def abandon(self) -> None:
        if not self._finished:
            self._abandoned = True
            self._finished = True
            self._full.put(None)

    def result(self) -> bytes:
        if not self._finished:
            self._finished = True
            self._full.put(None)
        self.join()
        if self._error is not None:
            raise self._error
        if self._digest is None or self._abandoned:
            raise RuntimeError("hashing was abandoned")
        return self._digest

    def run(self) -> None:
        try:
            hasher = Sha256()
            while True:
                item = self._full.get()
                if item is None:
                    break
                view, ours = item
                if not ours and not isinstance(view, memoryview):  # a lease
                    try:
                        if not self._abandoned:
                            view.feed(hasher)
                    finally:
                        view.release()
                    self._lent.put(None)
                    continue
                buffer = cast(memoryview, view)
                if not self._abandoned:  # after abandon() only give back what is still queued
                    hasher.update(buffer)
                if ours:
                    self._free.put(memoryview(buffer.obj))  # the whole buffer, free again
                else:
                    buffer.release()
                    self._lent.put(None)
            self._digest = hasher.digest()
        except BaseException as exc:  # handed to take(), lend() and result()
            self._error = exc
        finally:
            self._release_lent()

    def _release_lent(self) -> None:
        """Views lent but not hashed (abandoned, failed) are released too: their mapping may close."""
        while True:
            try:
                item = self._full.get_nowait()
            except queue.Empty:
                return
            if item is not None and not item[1]:
                item[0].release()  # a view or a lease
