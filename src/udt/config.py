"""The typed configuration a socket hands to the multiplexer when it listens or connects.

Built once from the socket's validated options (:mod:`udt.options`), frozen, and read by the
multiplexer's ``fill_options``/``make_cc`` as attributes (aioquic's ``QuicConfiguration``).  Each
field names the option it comes from in its metadata; its default is that option's default in
``udt.options.OPTION_SPECS``, so the option table stays the one list of defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .options import OPTION_SPECS, SocketOption

__all__ = ["ConnectionConfiguration"]


def _option(option: SocketOption) -> Any:
    """A dataclass field whose default is *option*'s, remembering the option it mirrors."""
    return field(default=OPTION_SPECS[option].default, metadata={"option": option})


@dataclass(frozen=True)
class ConnectionConfiguration:
    """What the engine needs to know about a connection before it is set up."""

    #: SOCK_DGRAM (message mode) rather than SOCK_STREAM; from the socket type, not an option.
    message_mode: bool = False
    #: Largest IP packet, bytes (``UDT_MSS``).
    mss: int = _option(SocketOption.UDT_MSS)
    #: Maximum flow window, packets (``UDT_FC``).
    flow_window: int = _option(SocketOption.UDT_FC)
    #: Send buffer, bytes (``UDT_SNDBUF``).
    sndbuf: int = _option(SocketOption.UDT_SNDBUF)
    #: Receive buffer, bytes (``UDT_RCVBUF``).
    rcvbuf: int = _option(SocketOption.UDT_RCVBUF)
    #: Sending rate cap, bytes/s; -1 unlimited (``UDT_MAXBW``).
    max_bandwidth: int = _option(SocketOption.UDT_MAXBW)
    #: Silence after which the connection is broken, ms (``UDT_PEERIDLETIMEO``).
    peer_idle_timeout_ms: int = _option(SocketOption.UDT_PEERIDLETIMEO)
    #: A native congestion control's name (udt.cc.available()), else a class or factory
    #: (``UDT_CC``); None means udt.cc.DEFAULT_CC.
    congestion_control: str | Callable[[], Any] | None = _option(SocketOption.UDT_CC)
    #: Path-MTU discovery between udt peers (``UDT_PMTUD``): the MSS grows from ``mss``.
    pmtud: bool = _option(SocketOption.UDT_PMTUD)
    #: Shared secret: encrypt and authenticate every packet (``UDT_PASSPHRASE``); None: plaintext.
    passphrase: str | None = field(default=None, repr=False, metadata={"option": SocketOption.UDT_PASSPHRASE})

    @classmethod
    def from_options(cls, options: Mapping[SocketOption, Any], *, message_mode: bool) -> ConnectionConfiguration:
        """The configuration for a socket whose validated option values are *options*."""
        values = {f.name: options[f.metadata["option"]] for f in fields(cls) if "option" in f.metadata}
        return cls(message_mode=message_mode, **values)
