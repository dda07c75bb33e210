"""sha256 of a file computed in a background thread, alongside the transfer of that file.

The data path (``sendfile``/``recvfile``) runs in C without the GIL; hashing the same bytes in
the transfer thread would stall it (measured: receive-side hashing and writing in one Python
loop halved the rate and cost packet losses, ``recvfile`` plus this thread did not).  So the
hasher reads the file on its own descriptor — from the page cache — while the transfer goes on.
On the receiving side the file grows as data arrives: the hasher reads only up to the length the
receiver has published so far.
"""

from __future__ import annotations

import hashlib
import threading

BLOCK = 1 << 20


class FileShrankError(Exception):
    """The file ended before the expected size (changed while it was being sent)."""


class FileHasher(threading.Thread):
    """Hash the first ``size`` bytes of ``path`` as they become available.

    ``publish(n)`` says the first ``n`` bytes are in the file (a sender publishes ``size`` at
    once); ``result()`` waits and returns the digest or raises what went wrong; ``abandon()``
    stops early (the transfer failed).
    """

    def __init__(self, path: str, size: int, *, name: str = "udt-cli-hash") -> None:
        super().__init__(name=name, daemon=True)
        self.path, self.size = path, size
        self._cond = threading.Condition()
        self._available = 0
        self._abandoned = False
        self._digest: bytes | None = None
        self._error: BaseException | None = None

    def publish(self, available: int) -> None:
        with self._cond:
            self._available = min(available, self.size)
            self._cond.notify()

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._cond.notify()

    def result(self) -> bytes:
        self.join()
        if self._error is not None:
            raise self._error
        if self._digest is None:
            raise RuntimeError("hashing was abandoned")
        return self._digest

    def run(self) -> None:
        try:
            hasher = hashlib.sha256()
            buf = bytearray(BLOCK)
            view = memoryview(buf)
            position = 0
            with open(self.path, "rb", buffering=0) as f:
                while position < self.size:
                    with self._cond:
                        while self._available <= position and not self._abandoned:
                            self._cond.wait()
                        if self._abandoned:
                            return
                        limit = self._available
                    while position < limit:
                        if self._abandoned:  # a plain flag read: stop promptly, lock not needed
                            return
                        n = f.readinto(view[: min(BLOCK, limit - position)])
                        if not n:
                            raise FileShrankError(f"{self.path} shrank to {position} bytes while being transferred")
                        hasher.update(view[:n])
                        position += n
            self._digest = hasher.digest()
        except BaseException as exc:  # handed to result()
            self._error = exc
