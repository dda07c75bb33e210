"""The file side of ``udt.socket.sendfile``/``recvfile``: a raw descriptor from a path or a
file object, and the checks of offset and count."""

from __future__ import annotations

import io
import os

from .errors import ErrorCode, InvalidParameterError


class FileHandle:
    """A raw descriptor for sendfile/recvfile from a path or a file object (kept open by us only
    when we opened it)."""

    def __init__(self, file, *, writing: bool) -> None:
        self._opened = False
        self._file = None
        if isinstance(file, (str, bytes, os.PathLike)):
            flags = (os.O_WRONLY | os.O_CREAT) if writing else os.O_RDONLY
            self.fd = os.open(file, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
            self._opened = True
        else:
            try:
                self.fd = file.fileno()
            except (AttributeError, io.UnsupportedOperation):
                raise InvalidParameterError(
                    ErrorCode.BAD_PARAMETER, "expected a path or a file object with a fileno()"
                ) from None
            if isinstance(file, io.TextIOBase):
                raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "the file must be opened in binary mode")
            if writing:
                file.flush()
            self._file = file

    def advance(self, position: int) -> None:
        if self._file is not None:
            try:
                self._file.seek(position)
            except (OSError, ValueError):
                pass

    def __enter__(self) -> FileHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._opened:
            os.close(self.fd)


def check_file_range(offset: int, count: int | None) -> tuple[int, int | None]:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError("offset must be an int")
    if offset < 0:
        raise InvalidParameterError(ErrorCode.BAD_PARAMETER, f"negative offset {offset}")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError("count must be an int or None")
        if count < 0:
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, f"negative count {count}")
    return offset, count
