"""sha256 of a file's bytes as the transfer moves them, in a background thread.

The transfer thread reads (sender) or receives (receiver) each block into a buffer it takes
from here, sends or writes it, then hands the same buffer over; this thread hashes it and gives
the buffer back.  So the hash covers exactly the bytes sent or written, the file is never read a
second time (re-reading it from the page cache cost about 8 % of a 1 GiB transfer's CPU), and
hashing overlaps with the network: ``hashlib`` releases the GIL on large buffers.
"""

from __future__ import annotations

import hashlib
import queue
import threading

BLOCK = 256 << 10  # bytes per buffer: a block is still in L2 when it is copied the second time
BUFFERS = 8  # buffers in flight between the transfer and the hashing thread


class BlockHasher(threading.Thread):
    """Hash, in order, the blocks handed over with ``submit``.

    ``take()`` waits for a free buffer (a memoryview of ``BLOCK`` bytes); ``submit(view)`` queues
    a prefix of it for hashing and gives up the buffer; ``result()`` waits for every submitted
    block and returns the digest; ``abandon()`` stops early (the transfer failed).
    """

    def __init__(self, *, name: str = "udt-cli-hash", block: int = BLOCK, buffers: int = BUFFERS) -> None:
        super().__init__(name=name, daemon=True)
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        for _ in range(buffers):
            self._free.put(memoryview(bytearray(block)))
        self._abandoned = False
        self._finished = False
        self._digest: bytes | None = None
        self._error: BaseException | None = None

    def take(self) -> memoryview:
        """A free buffer; raises what went wrong in the hashing thread, if anything did."""
        while True:
            if self._error is not None:
                raise self._error
            try:
                return self._free.get(timeout=1.0)
            except queue.Empty:
                if self._error is None and not self.is_alive():
                    raise RuntimeError("the hashing thread is gone") from None

    def submit(self, view: memoryview) -> None:
        """Hash ``view`` (a prefix of a buffer from ``take``) after what was submitted before."""
        self._full.put(view)

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
            hasher = hashlib.sha256()
            while True:
                view = self._full.get()
                if view is None or self._abandoned:
                    break
                hasher.update(view)
                self._free.put(memoryview(view.obj))  # the whole buffer, free again
            self._digest = hasher.digest()
        except BaseException as exc:  # handed to take() and result()
            self._error = exc
