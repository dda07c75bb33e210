"""Multicast group membership: the :class:`Membership` objects (Java's ``MembershipKey`` rules)
and the socket's join/leave/block calls that issue the kernel options for them."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket as _socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import udt._mcast as _mcast
from udt._net import Channel
from udt.dgram._addresses import Interface, _family_name, _ip, _resolve_interface, _ResolvedInterface
from udt.dgram.errors import InvalidMembershipError, MembershipStateError

if TYPE_CHECKING:
    from udt.dgram.socket import Socket


class Membership:
    """One multicast group membership of a socket, with the rules of Java's ``MembershipKey``.

    ``source`` is None for an any-source membership.  ``block``/``unblock`` filter sources of an
    any-source membership (else :class:`MembershipStateError`).  ``drop`` leaves the group; the
    membership is then invalid for ever (``valid`` False, ``block``/``unblock`` raise
    :class:`InvalidMembershipError`; ``drop`` again does nothing, as in Java).  Closing the socket
    invalidates all its memberships.  Joining again with the same arguments returns the same
    object while it is valid.
    """

    __slots__ = ("_socket", "_group", "_interface", "_resolved", "_source", "_blocked", "_valid", "__weakref__")

    def __init__(
        self, owner: Socket, group: str, interface: Interface, resolved: _ResolvedInterface, source: str | None
    ) -> None:
        self._socket = owner
        self._group = group
        self._interface = interface
        self._resolved = resolved
        self._source = source
        self._blocked: set[str] = set()
        self._valid = True

    @property
    def group(self) -> str:
        """The multicast group address."""
        return self._group

    @property
    def interface(self) -> Interface:
        """The interface as given when joining (None: the kernel chose)."""
        return self._interface

    @property
    def source(self) -> str | None:
        """The source of a source-specific membership; None for any-source."""
        return self._source

    @property
    def valid(self) -> bool:
        """False once dropped or once the socket closed."""
        return self._valid

    @property
    def socket(self) -> Socket:
        """The socket that joined (Java's ``channel()``)."""
        return self._socket

    @property
    def blocked_sources(self) -> frozenset[str]:
        """Sources currently blocked on this any-source membership."""
        return frozenset(self._blocked)

    def block(self, source: str) -> Membership:
        """Stop receiving from *source* (IP_BLOCK_SOURCE / MCAST_BLOCK_SOURCE).  Blocking a
        source already blocked does nothing, as in Java."""
        self._socket._block(self, source, True)
        return self

    def unblock(self, source: str) -> Membership:
        """Receive from a blocked *source* again; MembershipStateError if it is not blocked."""
        self._socket._block(self, source, False)
        return self

    def drop(self) -> None:
        """Leave the group; the membership becomes invalid.  No effect when already invalid."""
        self._socket._drop(self)

    def _check_valid(self) -> None:
        if not self._valid:
            raise InvalidMembershipError(f"{self!r} is no longer valid")

    def __repr__(self) -> str:
        state = "" if self._valid else " invalid"
        source = f" source={self._source}" if self._source else ""
        return f"<udt.dgram.Membership group={self._group}{source} interface={self._interface!r}{state}>"


class MembershipsMixin:
    """The multicast half of :class:`udt.dgram.Socket`: joining, leaving and source filters.

    Kept apart so the socket's own module stays about binding, sending and receiving; it works
    on the socket's lock, channel and membership table declared below.
    """

    _lock: threading.RLock
    _family: int
    _channel: Channel
    _memberships: dict[tuple, Membership]

    _check_open: Callable[[], None]

    def _group(self, group: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        address = _ip(group, "group")
        if address.version != (4 if self._family == _socket.AF_INET else 6):
            raise ValueError(f"group {group} is not an {_family_name(self._family)} address (mixed address families)")
        if not address.is_multicast:
            raise ValueError(f"group {group} is not a multicast address")
        return address

    def _source(
        self, source: Any, group: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        address = _ip(source, "source")
        if address.version != group.version:
            raise ValueError(f"source {source} and group {group} are of mixed address families")
        if address.is_unspecified:
            raise ValueError(f"source {source} is a wildcard address")
        if address.is_multicast:
            raise ValueError(f"source {source} is a multicast address")
        return address

    def _membership_key(self, group: Any, interface: Interface, source: Any):
        group_address = self._group(group)
        source_address = None if source is None else self._source(source, group_address)
        resolved = _resolve_interface(self._family, interface)
        return group_address, source_address, resolved

    def add_membership(self, group: str, interface: Interface = None) -> Membership:
        """Join *group* for every source on *interface* (None: the kernel's choice)."""
        return self._join(group, interface, None)

    def add_source_specific_membership(self, source: str, group: str, interface: Interface = None) -> Membership:
        """Join *group* for datagrams from *source* only (source-specific multicast)."""
        if source is None:
            raise TypeError("source must be an IP address string, not None")
        return self._join(group, interface, source)

    def drop_membership(self, group: str, interface: Interface = None) -> None:
        """Leave an any-source membership; OSError(EADDRNOTAVAIL) if there is none."""
        self._find(group, interface, None).drop()

    def drop_source_specific_membership(self, source: str, group: str, interface: Interface = None) -> None:
        """Leave a source-specific membership; OSError(EADDRNOTAVAIL) if there is none."""
        if source is None:
            raise TypeError("source must be an IP address string, not None")
        self._find(group, interface, source).drop()

    def memberships(self) -> list[Membership]:
        """The socket's valid memberships."""
        with self._lock:
            return list(self._memberships.values())

    def _find(self, group: Any, interface: Interface, source: Any) -> Membership:
        group_address, source_address, resolved = self._membership_key(group, interface, source)
        with self._lock:
            self._check_open()
            key = (group_address, resolved, source_address)
            membership = self._memberships.get(key)
        if membership is None:
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"{os.strerror(errno.EADDRNOTAVAIL)}: no such membership "
                f"(group {group}, source {source}, interface {interface!r})",
            )
        return membership

    def _join(self, group: Any, interface: Interface, source: Any) -> Membership:
        group_address, source_address, resolved = self._membership_key(group, interface, source)
        with self._lock:
            self._check_open()
            key = (group_address, resolved, source_address)
            existing = self._memberships.get(key)
            if existing is not None:
                return existing
            for other_group, other_resolved, other_source in self._memberships:
                if (
                    other_group == group_address
                    and other_resolved == resolved
                    and ((other_source is None) != (source_address is None))
                ):
                    kind = "any-source" if other_source is None else "source-specific"
                    raise MembershipStateError(
                        f"the socket already has a {kind} membership of {group_address} on this interface"
                    )
            self._membership_call(True, group_address, resolved, source_address)
            owner = cast("Socket", self)  # the mixin only ever exists as a Socket
            membership = Membership(
                owner, str(group_address), interface, resolved, None if source_address is None else str(source_address)
            )
            self._memberships[key] = membership
            return membership

    def _drop(self, membership: Membership) -> None:
        with self._lock:
            if not membership._valid:
                return
            group_address = ipaddress.ip_address(membership._group)
            source_address = None if membership._source is None else ipaddress.ip_address(membership._source)
            self._membership_call(False, group_address, membership._resolved, source_address)
            membership._valid = False
            self._memberships.pop((group_address, membership._resolved, source_address), None)

    def _block(self, membership: Membership, source: Any, block: bool) -> None:
        with self._lock:
            membership._check_valid()
            if membership._source is not None:
                raise MembershipStateError("block/unblock apply to any-source memberships only")
            group_address = ipaddress.ip_address(membership._group)
            source_address = self._source(source, group_address)
            text = str(source_address)
            if block and text in membership._blocked:
                return
            if not block and text not in membership._blocked:
                raise MembershipStateError(f"source {text} is not blocked")
            self._filter_call(block, group_address, membership._resolved, source_address)
            if block:
                membership._blocked.add(text)
            else:
                membership._blocked.discard(text)

    def _membership_call(self, join: bool, group, resolved: _ResolvedInterface, source) -> None:
        """Issue the kernel option that joins or leaves (caller holds the lock)."""
        if self._family == _socket.AF_INET:
            level = _mcast.IPPROTO_IP
            if source is None:
                option = _mcast.IP_ADD_MEMBERSHIP if join else _mcast.IP_DROP_MEMBERSHIP
                value = _mcast.ip_mreqn(group.packed, resolved.address, resolved.ifindex)
            elif resolved.ifindex:
                # ip_mreq_source names the interface by address only: use the
                # protocol-independent request, which takes an index.
                option = _mcast.MCAST_JOIN_SOURCE_GROUP if join else _mcast.MCAST_LEAVE_SOURCE_GROUP
                value = _mcast.group_source_req(_socket.AF_INET, group.packed, source.packed, resolved.ifindex)
            else:
                option = _mcast.IP_ADD_SOURCE_MEMBERSHIP if join else _mcast.IP_DROP_SOURCE_MEMBERSHIP
                value = _mcast.ip_mreq_source(group.packed, resolved.address, source.packed)
        else:
            level = _mcast.IPPROTO_IPV6
            if source is None:
                option = _mcast.IPV6_JOIN_GROUP if join else _mcast.IPV6_LEAVE_GROUP
                value = _mcast.ipv6_mreq(group.packed, resolved.ifindex)
            else:
                option = _mcast.MCAST_JOIN_SOURCE_GROUP if join else _mcast.MCAST_LEAVE_SOURCE_GROUP
                value = _mcast.group_source_req(_socket.AF_INET6, group.packed, source.packed, resolved.ifindex)
        self._channel.setsockopt(level, option, value)

    def _filter_call(self, block: bool, group, resolved: _ResolvedInterface, source) -> None:
        """Issue the kernel option that blocks or unblocks a source (caller holds the lock)."""
        if self._family == _socket.AF_INET and not resolved.ifindex:
            option = _mcast.IP_BLOCK_SOURCE if block else _mcast.IP_UNBLOCK_SOURCE
            self._channel.setsockopt(
                _mcast.IPPROTO_IP, option, _mcast.ip_mreq_source(group.packed, resolved.address, source.packed)
            )
            return
        level = _mcast.IPPROTO_IP if self._family == _socket.AF_INET else _mcast.IPPROTO_IPV6
        option = _mcast.MCAST_BLOCK_SOURCE if block else _mcast.MCAST_UNBLOCK_SOURCE
        self._channel.setsockopt(
            level, option, _mcast.group_source_req(self._family, group.packed, source.packed, resolved.ifindex)
        )
