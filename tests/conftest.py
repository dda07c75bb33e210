"""Shared fixtures: every test must leave no thread and no open file descriptor behind."""

from __future__ import annotations

import os
import threading
import time

import pytest


def _open_fds() -> set[int]:
    try:
        return {int(fd) for fd in os.listdir("/proc/self/fd")}
    except OSError:  # not Linux: nothing to compare
        return set()


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture(autouse=True)
def no_leaked_threads_or_sockets(request):
    """Fail a test that leaves a thread running or a socket open (a port behind)."""
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        extra_sockets = [fd for fd in _open_fds() - fds_before if _fd_target(fd).startswith("socket:")]
        if (not extra_threads and not extra_sockets) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra_threads, f"test left threads running: {[t.name for t in extra_threads]}"
    assert not extra_sockets, f"test left sockets open: fds {extra_sockets}"
