"""The errors udt.dgram raises for misuse of a socket: OSError subclasses that carry an errno,
each naming the Node.js ``ERR_SOCKET_*`` code it stands for."""

from __future__ import annotations

import errno

from udt import errors as _errors


class DgramError(OSError):
    """Base of the errors udt.dgram raises for misuse of a socket (all carry an errno)."""

    default_errno = errno.EINVAL

    def __init__(self, message: str, code: int | None = None) -> None:
        code = self.default_errno if code is None else code
        OSError.__init__(self, code, message)  # not super(): NotConnectedError is a UDTError too


class SocketClosedError(DgramError):
    """The socket was closed (Node: ERR_SOCKET_DGRAM_NOT_RUNNING); errno EBADF."""

    default_errno = errno.EBADF


class AlreadyBoundError(DgramError):
    """``bind`` on a socket that is already bound (Node: ERR_SOCKET_ALREADY_BOUND); EINVAL,
    what the kernel answers for a second bind."""

    default_errno = errno.EINVAL


class NotBoundError(DgramError):
    """The call needs a bound socket: ``address()``, buffer sizes, ``recvfrom`` (Node:
    ERR_SOCKET_BUFFER_SIZE / getsockname EBADF); errno EBADF, the code Node reports."""

    default_errno = errno.EBADF


class AlreadyConnectedError(DgramError):
    """``connect`` twice, or ``send`` with an address on a connected socket (Node:
    ERR_SOCKET_DGRAM_IS_CONNECTED); errno EISCONN."""

    default_errno = errno.EISCONN


class NotConnectedError(DgramError, _errors.NotConnectedError):
    """``disconnect`` or ``remote_address`` on a socket that is not connected (Node:
    ERR_SOCKET_DGRAM_NOT_CONNECTED); errno ENOTCONN.  Also a :class:`udt.NotConnectedError`
    (UDT 2002), so ``except udt.NotConnectedError`` catches it as well."""

    default_errno = errno.ENOTCONN
    udt_code = _errors.ErrorCode.NO_CONNECTION
    # A DgramError first: its message-first constructor, OSError's str and pickling.
    __str__ = OSError.__str__
    __reduce__ = OSError.__reduce__


class MembershipStateError(DgramError):
    """A membership operation that the membership's state forbids — Java's
    ``IllegalStateException``: blocking a source on a source-specific membership, unblocking a
    source that is not blocked, or an any-source and a source-specific membership of the same group
    on the same interface; errno EINVAL."""


class InvalidMembershipError(MembershipStateError):
    """The Membership was dropped or its socket closed: it is invalid for ever."""
