"""Network namespaces joined by veth pairs, for tests that need several hosts on one machine.

Usage (as a context manager, or through the :func:`netns_topology` pytest fixture)::

    from netns import Topology, require_netns

    def test_something():
        require_netns()                          # skips with the reason when namespaces fail
        with Topology() as net:
            a, b = net.namespace("a"), net.namespace("b")
            link = net.veth(a, b, ipv4=("10.1.0.1/24", "10.1.0.2/24"),
                            ipv6=("fd00:1::1/64", "fd00:1::2/64"))
            a.run(["ip", "addr"])
            result = b.python("import socket; print(socket.gethostname())")
            server = b.python_popen(code)         # a long-running peer; killed on exit

Namespace names are unique per process and call (``udt-<pid>-<counter>-<label>``; ``Topology(prefix=…)``
changes ``udt``), so parallel
test runs never collide.  Veth ends are created directly inside their namespaces, so their
names (``veth0``, ``veth1``, … by default) only need to be unique within one namespace.  IPv6
addresses are added with ``nodad`` so they are usable at once.  Leaving the ``with`` block —
normally or by an exception — kills every process started through the helper, then deletes
every namespace it made (which removes their veth ends); an ``atexit`` hook does the same if
the interpreter exits first.

Python snippets run with the interpreter running the tests (``sys.executable``), so they
import the same installed ``udt`` as the tests (the checkout's ``src/`` layout keeps the
working directory from shadowing it).
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 30.0

_counter = itertools.count()
_counter_lock = threading.Lock()
_live_topologies: set[Topology] = set()


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no iproute2, no kernel support)."""


def _unique_name(label: str, prefix: str = "udt") -> str:
    with _counter_lock:
        number = next(_counter)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)[:20]
    return f"{prefix}-{os.getpid()}-{number}-{safe}"


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; a failure raises with its stderr in the message."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, list(argv), result.stdout, result.stderr)
    return result


@functools.cache
def netns_unavailable_reason() -> str | None:
    """None when ``ip netns add`` works here, else why not (checked once per process by really
    adding and deleting a namespace)."""
    if shutil.which("ip") is None:
        return "iproute2 'ip' command not found"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = _unique_name("probe")
    try:
        result = _run(["ip", "netns", "add", probe], check=False)
        if result.returncode != 0:
            return f"'ip netns add' failed: {result.stderr.strip() or result.returncode}"
        veth = _run(["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"], check=False)
        if veth.returncode != 0:
            return f"veth pairs unavailable: {veth.stderr.strip()}"
        return None
    except (OSError, subprocess.SubprocessError) as error:
        return f"'ip netns add' failed: {error}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)


def require_netns() -> None:
    """Skip the calling test (with the reason) unless namespaces can be made."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")


@dataclass
class Namespace:
    """One network namespace: run commands and Python inside it."""

    name: str
    topology: Topology = field(repr=False)
    _interface_numbers: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """*argv* wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run *argv* inside the namespace and wait (text output captured)."""
        return _run(self.exec_argv(argv), check=check, timeout=timeout, input=input)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``ip -n <ns> ...``."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a sysctl inside the namespace (e.g. ``net.ipv4.ip_forward``)."""
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start *argv* inside the namespace; the topology kills it on exit if still running.
        Defaults: text pipes for stdin, stdout and stderr."""
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        process = subprocess.Popen(self.exec_argv(argv), **kwargs)
        self.topology._processes.append(process)
        return process

    def python_argv(self, code: str, *args: str) -> list[str]:
        return [sys.executable, "-c", code, *args]

    def python(
        self, code: str, *args: str, check: bool = True, timeout: float = DEFAULT_TIMEOUT, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a Python snippet inside the namespace with the test interpreter (the installed
        ``udt``), the repository as working directory; wait for it."""
        result = subprocess.run(
            self.exec_argv(self.python_argv(code, *args)),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=REPO_ROOT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"python in {self.name} failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
            )
        return result

    def python_popen(self, code: str, *args: str, **kwargs) -> subprocess.Popen:
        """Start a Python snippet inside the namespace (see :meth:`python`) without waiting."""
        kwargs.setdefault("cwd", REPO_ROOT)
        return self.popen(self.python_argv(code, *args), **kwargs)

    def interface_index(self, name: str) -> int:
        """The index of interface *name* inside this namespace."""
        text = self.run(["cat", f"/sys/class/net/{name}/ifindex"]).stdout
        return int(text.strip())

    def operstate(self, name: str) -> str:
        """The interface's operational state (``up``, ``down``, ``lowerlayerdown`` ...)."""
        return self.run(["cat", f"/sys/class/net/{name}/operstate"]).stdout.strip()

    def wait_operstate_up(self, name: str, timeout: float = 10.0) -> None:
        """Wait until *name* carries traffic: the kernel reports a new veth's carrier up to a
        second after ``ip link set up`` (link-watch delay), and packets sent before are lost."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.operstate(name)
            if state == "up":
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} in {self.name} still {state!r} after {timeout} s")
            time.sleep(0.05)

    def next_interface_name(self, prefix: str = "veth") -> str:
        return f"{prefix}{next(self._interface_numbers)}"


@dataclass
class Veth:
    """A veth pair: ``left`` end (``left_name``) in one namespace, ``right`` in another, with
    the addresses given (interface form, e.g. ``"10.1.0.1/24"``)."""

    left: Namespace
    left_name: str
    right: Namespace
    right_name: str
    ipv4: tuple[str | None, str | None] = (None, None)
    ipv6: tuple[str | None, str | None] = (None, None)

    @staticmethod
    def _bare(address: str | None) -> str | None:
        return None if address is None else str(ipaddress.ip_interface(address).ip)

    @property
    def left_ipv4(self) -> str | None:
        return self._bare(self.ipv4[0])

    @property
    def right_ipv4(self) -> str | None:
        return self._bare(self.ipv4[1])

    @property
    def left_ipv6(self) -> str | None:
        return self._bare(self.ipv6[0])

    @property
    def right_ipv6(self) -> str | None:
        return self._bare(self.ipv6[1])


class Topology:
    """Namespaces and veth links made for one test; everything is removed on exit.

    *prefix* starts every namespace name (``<prefix>-<pid>-<n>-<label>``), so a family of
    tests can be told apart in ``ip netns list`` (the NAT tests use ``nat``).

    Use as a context manager (or :func:`netns_topology`).  Raises :class:`NetnsUnavailable`
    on entry when namespaces cannot be made (tests call :func:`require_netns` first to skip).
    """

    def __init__(self, *, loopback_up: bool = True, prefix: str = "udt") -> None:
        self.namespaces: list[Namespace] = []
        self._prefix = prefix
        self.links: list[Veth] = []
        self._processes: list[subprocess.Popen] = []
        self._loopback_up = loopback_up
        self._closed = False

    def __enter__(self) -> Topology:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        _live_topologies.add(self)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __hash__(self) -> int:
        return id(self)

    def namespace(self, label: str = "ns") -> Namespace:
        """Create a namespace (loopback up unless ``loopback_up=False``)."""
        if self._closed:
            raise RuntimeError("topology already closed")
        namespace = Namespace(_unique_name(label, self._prefix), self)
        _run(["ip", "netns", "add", namespace.name])
        self.namespaces.append(namespace)
        if self._loopback_up:
            namespace.ip("link", "set", "lo", "up")
        return namespace

    def veth(
        self,
        left: Namespace,
        right: Namespace,
        *,
        ipv4: tuple[str | None, str | None] = (None, None),
        ipv6: tuple[str | None, str | None] = (None, None),
        left_name: str | None = None,
        right_name: str | None = None,
        mtu: int | None = None,
    ) -> Veth:
        """Join two namespaces with a veth pair, bring both ends up and add the addresses
        (IPv6 with ``nodad``, so they work at once)."""
        left_name = left_name or left.next_interface_name()
        right_name = right_name or right.next_interface_name()
        # Create the pair inside the left namespace and move the peer at once: no name ever
        # lives in the root namespace, so parallel runs cannot clash.
        _run(
            [
                "ip",
                "-n",
                left.name,
                "link",
                "add",
                left_name,
                "type",
                "veth",
                "peer",
                "name",
                right_name,
                "netns",
                right.name,
            ]
        )
        link = Veth(left, left_name, right, right_name, ipv4, ipv6)
        self.links.append(link)
        for namespace, name, v4, v6 in ((left, left_name, ipv4[0], ipv6[0]), (right, right_name, ipv4[1], ipv6[1])):
            if mtu is not None:
                namespace.ip("link", "set", name, "mtu", str(mtu))
            if v4:
                namespace.ip("addr", "add", v4, "dev", name)
            if v6:
                namespace.ip("-6", "addr", "add", v6, "dev", name, "nodad")
            namespace.ip("link", "set", name, "up")
        for namespace, name in ((left, left_name), (right, right_name)):
            namespace.wait_operstate_up(name)
        return link

    def close(self) -> None:
        """Kill the processes started here, delete every namespace (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            try:
                process.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                pass
        for namespace in reversed(self.namespaces):
            # Anything still running inside (started by other means) would keep it alive.
            pids = _run(["ip", "netns", "pids", namespace.name], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", namespace.name], check=False)
        _live_topologies.discard(self)


@atexit.register
def _close_leftovers() -> None:
    for topology in list(_live_topologies):
        topology.close()


@pytest.fixture
def netns_topology():
    """A :class:`Topology` for one test; skips when namespaces cannot be made."""
    require_netns()
    with Topology() as topology:
        yield topology
