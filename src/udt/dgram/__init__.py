"""Datagram sockets with the feature set of Node.js's ``dgram`` module, in Python's idiom.

::

    from udt import dgram
    with dgram.create_socket("udp4", reuse_addr=True) as s:
        s.bind(port=0)                                            # 0.0.0.0: unicast and groups
        s.on("message", lambda data, rinfo: print(data, rinfo))   # called on another thread
        m = s.add_membership("239.1.2.3", "127.0.0.1")            # a Membership (Java-style)
        s.set_multicast_interface("127.0.0.1")                    # keep multicast on lo
        s.send(b"hi", s.address().port, "239.1.2.3")

Every socket call goes through :class:`udt._net.Channel`, the same UDP socket object the UDT
multiplexer uses, so both share one implementation of the system calls; the multicast and
source-filter options Python 3.11's ``socket`` module lacks come from the C headers via
:mod:`udt._mcast`.

**Threads.** Events (``message``, ``listening``, ``connect``, ``close``, ``error``) and ``send``
callbacks run on one worker thread per socket, never in the caller's thread, in the order they
happened.  The worker exists only while there is something to deliver or ``message`` listeners to
feed; :meth:`Socket.close` delivers the ``close`` event and joins it.  A socket whose worker is
feeding ``message`` listeners keeps the interpreter alive until closed, as a bound socket keeps
Node's event loop alive; :meth:`Socket.unref` lifts that (the socket is closed when the
interpreter shuts down).

**Receiving.** Each datagram goes to exactly one consumer: to the ``message`` listeners while any
are attached, otherwise to :meth:`Socket.recvfrom` or ``async for data, rinfo in socket``.
Pulling while listeners are attached raises :class:`RuntimeError` (as asyncio streams do for two
concurrent readers).

**Where this deviates from Node, and why.**

- Names are snake_case (``create_socket``, ``add_membership``, ``set_multicast_ttl`` ...).
- Calls are synchronous: ``bind``, ``connect`` and ``send`` do their work before returning and
  raise their errors, as Python's ``socket`` does, instead of emitting ``error``; callbacks still
  run (on the worker) for code written the Node way, and a ``send`` with a callback hands its error
  to the callback instead of raising it.  The ``error`` event carries errors nobody could be
  handed synchronously: failed receives on the worker (``ConnectionRefusedError`` after an ICMP
  port-unreachable on a connected socket) and exceptions raised by listeners.
- Data is a bytes-like or a list of them; ``str`` is refused (``TypeError``), as ``socket.send``.
- ``recvfrom(timeout)`` and asynchronous iteration are added: Python code pulls.
- Options (TTL, broadcast, multicast) can be set before ``bind``: the socket exists from
  construction, so there is no reason to refuse (Node raises EBADF there).  Buffer sizes still
  need a bound socket, as in Node.
- ``add_membership`` returns a :class:`Membership` (Java's ``MembershipKey`` rules, see there).
- ``bind(exclusive=True)`` makes the port unshareable (SO_REUSEADDR/SO_REUSEPORT cleared): Python
  has no cluster module whose handle sharing Node's flag controls.
- ``address().family`` and ``rinfo.family`` are ``"IPv4"``/``"IPv6"``, as in Node.
- ``send`` hands each datagram to the kernel before returning (waiting for buffer space like a
  blocking socket), so there is no user-space queue as in libuv: ``get_send_queue_size()`` is
  the kernel's send queue (SIOCOUTQ, bytes not yet on the wire) and ``get_send_queue_count()``
  the sends whose callback has not run yet.
- Errors are exceptions of the :class:`DgramError` family (OSError subclasses with an errno)
  instead of Node's ``ERR_SOCKET_*`` codes; each class names the Node code it stands for.
- Unknown event names raise ``ValueError`` instead of being silently accepted.
- ``create_socket``'s ``signal`` (AbortSignal) has no Python counterpart; use ``close()``.

**Layout.** :mod:`~udt.dgram.socket` holds the :class:`Socket`; its event delivery
(``_events``) and multicast membership (:mod:`~udt.dgram.membership`) are mixins of it;
:mod:`~udt.dgram.errors` the exceptions; ``_addresses`` the results and argument checks;
``_shared`` the module-level state (live-socket registry, shutdown hook, receive buffer).
"""

from __future__ import annotations

from typing import Any

from udt.dgram._addresses import AddressInfo, RemoteInfo
from udt.dgram._addresses import Interface as Interface  # types of the API
from udt.dgram._addresses import Lookup as Lookup
from udt.dgram._events import EVENTS as EVENTS
from udt.dgram._events import Listener as Listener
from udt.dgram.errors import (
    AlreadyBoundError,
    AlreadyConnectedError,
    DgramError,
    InvalidMembershipError,
    MembershipStateError,
    NotBoundError,
    NotConnectedError,
    SocketClosedError,
)
from udt.dgram.membership import Membership
from udt.dgram.socket import BytesLike as BytesLike
from udt.dgram.socket import Socket

__all__ = [
    "create_socket",
    "Socket",
    "Membership",
    "AddressInfo",
    "RemoteInfo",
    "DgramError",
    "SocketClosedError",
    "AlreadyBoundError",
    "NotBoundError",
    "AlreadyConnectedError",
    "NotConnectedError",
    "MembershipStateError",
    "InvalidMembershipError",
]


def create_socket(type: str = "udp4", callback: Listener | None = None, **options: Any) -> Socket:
    """Node's ``dgram.createSocket``: a :class:`Socket` of *type* ``"udp4"`` or ``"udp6"``,
    *callback* attached to ``message``; *options* as :class:`Socket` (``reuse_addr``,
    ``reuse_port``, ``ipv6_only``, ``recv_buffer_size``, ``send_buffer_size``, ``lookup``)."""
    return Socket(type, callback, **options)
