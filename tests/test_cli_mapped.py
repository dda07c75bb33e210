"""MappedFile: the file tools' mapped file side; a page that cannot be had is an OSError, not a SIGBUS."""

import contextlib
import errno
import os

import pytest

from udt.cli._mapped import open_mapped


def test_an_empty_file_is_not_mapped(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert open_mapped(f.fileno(), 0, writable=False) is None


@contextlib.contextmanager
def _mapped_random_file(path, size: int = 1 << 20):
    """A file of ``size`` random bytes, open for writing too, and its read-only mapping."""
    data = os.urandom(size)
    path.write_bytes(data)
    with open(path, "r+b") as f:
        mapped = open_mapped(f.fileno(), len(data), writable=False)
        if mapped is None:
            pytest.skip("no MADV_POPULATE_READ on this kernel")
        yield f, mapped, data


def test_windows_read_the_file_and_a_shrunk_file_raises(tmp_path):
    with _mapped_random_file(tmp_path / "data") as (f, mapped, data):
        assert bytes(mapped.window(65536, 4096)) == data[65536 : 65536 + 4096]
        f.truncate(8192)
        with pytest.raises(OSError) as info:
            mapped.window(1 << 19, 4096)
        assert info.value.errno == errno.EFAULT
        mapped.close()


def test_writes_through_a_window_land_in_the_file(tmp_path):
    path = tmp_path / "out"
    with open(path, "w+b") as f:
        f.truncate(3 * 4096)
        mapped = open_mapped(f.fileno(), 3 * 4096, writable=True)
        if mapped is None:
            pytest.skip("no MADV_POPULATE_WRITE on this kernel")
        window = mapped.window(4096, 4096)
        window[:] = b"u" * 4096
        window.release()
        mapped.close()
    assert path.read_bytes() == bytes(4096) + b"u" * 4096 + bytes(4096)


class _CollectingSocket:
    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, view) -> None:
        self.data += view


class _ReleasingHasher:
    """Releases each lent view at once: the hasher thread may be that fast."""

    def lend(self, view) -> None:
        view.release()


def test_udt_send_touches_no_window_after_lending_it(tmp_path):
    from udt.cli._hashing import BLOCK
    from udt.cli._progress import Meter
    from udt.cli.send import SourceFile, _send_mapped

    path = tmp_path / "data"
    data = os.urandom(2 * BLOCK + 1000)
    path.write_bytes(data)
    sock, meter = _CollectingSocket(), Meter("data", len(data))
    with open(path, "rb") as f:
        mapped = open_mapped(f.fileno(), len(data), writable=False)
        if mapped is None:
            pytest.skip("no MADV_POPULATE_READ on this kernel")
        source = SourceFile(path=str(path), name="data", size=len(data))
        _send_mapped(sock, mapped, source, _ReleasingHasher(), meter, 0)  # type: ignore[arg-type]
        mapped.close()
    assert sock.data == data
    assert meter.queued == len(data)


def test_a_page_that_vanished_under_a_window_reads_as_zeros_and_is_reported(tmp_path):
    with _mapped_random_file(tmp_path / "data") as (f, mapped, _data):
        window = mapped.window(1 << 19, 8192)  # populated, then the file shrinks under it
        assert not mapped.shrank()
        f.truncate(4096)
        assert bytes(window) == bytes(8192)  # a SIGBUS without the guard
        assert mapped.shrank()
        window.release()
        mapped.close()


class _TruncatingSocket(_CollectingSocket):
    def __init__(self, f) -> None:
        super().__init__()
        self.file = f

    def sendall(self, view) -> None:
        self.file.truncate(0)  # someone truncates the file while the window waits for room
        super().sendall(view)


def test_udt_send_fails_cleanly_when_the_file_shrinks_under_a_window(tmp_path):
    from udt.cli._common import CliError, ExitCode
    from udt.cli._hashing import BLOCK
    from udt.cli._progress import Meter
    from udt.cli.send import SourceFile, _send_mapped

    path = tmp_path / "data"
    with _mapped_random_file(path, 2 * BLOCK) as (f, mapped, data):
        source = SourceFile(path=str(path), name="data", size=len(data))
        with pytest.raises(CliError, match="shrank") as info:
            _send_mapped(_TruncatingSocket(f), mapped, source, _ReleasingHasher(), Meter("data", len(data)), 0)  # type: ignore[arg-type]
        assert info.value.code == ExitCode.FILE_ERROR
        mapped.close()
