"""Namespaces and TUN devices for the WAN link.

A TUN fd is bound to the network namespace in which ``TUNSETIFF`` runs.  Python 3.11 has no
``os.setns``, so :func:`open_tun` calls libc ``setns`` through ctypes in a short-lived thread:
only that thread changes namespace, the fd it opens keeps the device in that namespace, and the
thread exits before anything else could run in the wrong namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import itertools
import os
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Sequence

__all__ = [
    "add_netns",
    "delete_netns",
    "ip",
    "open_tun",
    "sweep_orphans",
    "unavailable_reason",
    "unique_name",
    "wait_up",
]

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

_counter = itertools.count()
_counter_lock = threading.Lock()


def unique_name(label: str) -> str:
    """``wan-<pid>-<n>-<label>``: parallel runs and several links in one process never collide."""
    with _counter_lock:
        number = next(_counter)
    return f"wan-{os.getpid()}-{number}-{label}"


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans() -> list[str]:
    """Delete the ``wan-<pid>-...`` namespaces whose process is gone; return their names.

    A process killed by a signal it does not handle (SIGKILL, or SIGTERM without a handler)
    runs no ``atexit`` hook, so its namespaces outlive it; the next link made on the machine
    removes them.  Namespaces of a live process are never touched."""
    swept = []
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split(" ", 1)[0]
        parts = name.split("-")
        if len(parts) < 4 or parts[0] != "wan" or not parts[1].isdigit():
            continue
        if int(parts[1]) == os.getpid() or _owner_alive(int(parts[1])):
            continue
        delete_netns(name)
        swept.append(name)
    return swept


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``ip -n <netns> ...``."""
    return run(["ip", "-n", netns, *args], check=check)


@functools.cache
def unavailable_reason() -> str | None:
    """None when namespaces and TUN devices can be made here, else why not (probed once)."""
    if shutil.which("ip") is None:
        return "iproute2 'ip' command not found"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    probe = unique_name("probe")
    try:
        result = run(["ip", "netns", "add", probe], check=False)
        if result.returncode != 0:
            return f"'ip netns add' failed: {result.stderr.strip()}"
        try:
            os.close(open_tun(probe, "probe0"))
        except OSError as error:
            return f"TUN device unavailable in a namespace: {error}"
        return None
    finally:
        run(["ip", "netns", "del", probe], check=False)


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    """Kill whatever still runs inside *name* (it would keep the namespace alive), delete it."""
    for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "del", name], check=False)


def open_tun(netns: str, ifname: str, *, offload: bool = False) -> int:
    """A non-blocking fd of a new TUN device *ifname* (no packet-info header) inside *netns*.

    ``offload``: with a virtio-net header on every packet, checksum and UDP segmentation
    offload, so a UDP GSO sender's batch crosses the fd in one read (kernel 6.2+; OSError
    where the kernel refuses)."""
    outcome: list[int | BaseException] = []

    def attach() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            ns_fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(ns_fd, CLONE_NEWNET) != 0:
                    number = ctypes.get_errno()
                    raise OSError(number, f"setns({netns}): {os.strerror(number)}")
            finally:
                os.close(ns_fd)
            tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
                fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), flags))
                if offload:
                    fcntl.ioctl(tun, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6)
            except OSError:
                os.close(tun)
                raise
            outcome.append(tun)
        except BaseException as error:  # handed to the caller's thread below
            outcome.append(error)

    thread = threading.Thread(target=attach, name=f"setns-{netns}")
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def wait_up(netns: str, ifname: str, timeout: float = 10.0) -> None:
    """Wait for the carrier: a new veth reports it up to a second after ``link set up``."""
    deadline = time.monotonic() + timeout
    while "LOWER_UP" not in ip(netns, "link", "show", "dev", ifname).stdout:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ifname} in {netns} not up after {timeout} s")
        time.sleep(0.05)
