"""``Relay(process=True)``: the length-prefixed pickle protocol over two pipes, and the child
process that serves it (``python -m udt.tools.impair --serve-fds CMD,REPLY``)."""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import sys
import time
from typing import Any

from udt.tools.impair._common import RelayError
from udt.tools.impair._engine import _Engine


def _write_message(fd: int, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("!I", len(payload)) + payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("relay process did not answer in time")
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("relay pipe closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_message(fd: int, timeout: float | None = None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = struct.unpack("!I", _read_exactly(fd, 4, deadline))
    return pickle.loads(_read_exactly(fd, size, deadline))


def _error_reply(exc: BaseException) -> tuple[str, BaseException]:
    """The exception itself if it survives pickling (keeps its type and errno), else its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return ("error", RelayError(f"{type(exc).__name__}: {exc}"))
    return ("error", exc)


def _remote_error(exc: BaseException) -> BaseException:
    """What the parent raises for an error reported by the child."""
    if isinstance(exc, (ValueError, OSError, RelayError)):
        return exc
    return RelayError(f"relay process: {type(exc).__name__}: {exc}")


def _serve_child(command_fd: int, reply_fd: int) -> int:
    """Entry point of ``Relay(process=True)``'s child: build the engine from the first message,
    then answer commands (stats, set, clients, close) from inside the relay loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        kind, sys_path, config = _read_message(command_fd)
        if kind != "init":
            raise RelayError(f"relay child expected 'init', got {kind!r}")
        for entry in reversed(sys_path):  # so picklable predicates from the caller's modules load
            if entry not in sys.path:
                sys.path.insert(0, entry)
        engine = _Engine(**pickle.loads(config))
    except BaseException as exc:  # report, do not die silently
        _write_message(reply_fd, _error_reply(exc))
        return 1
    _write_message(reply_fd, ("ready", engine.address))

    def on_command() -> bool:
        try:
            message = _read_message(command_fd)
        except EOFError:  # the parent is gone: stop
            return False
        op = message[0]
        try:
            if op == "stats":
                _write_message(reply_fd, ("ok", engine.snapshot()))
            elif op == "set":
                engine.set_impairment(message[1], message[2])
                _write_message(reply_fd, ("ok", None))
            elif op == "clients":
                _write_message(reply_fd, ("ok", engine.clients()))
            elif op == "close":
                _write_message(reply_fd, ("ok", engine.snapshot()))
                return False
            else:
                _write_message(reply_fd, ("error", RelayError(f"unknown relay command {op!r}")))
        except Exception as exc:
            _write_message(reply_fd, _error_reply(exc))
        return True

    try:
        engine.run(on_command, command_fd)
    finally:
        engine.close()
    return 0
