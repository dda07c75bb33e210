"""udt: a reliable, congestion-controlled transport over UDP, wire-compatible with UDT4.

Layers, bottom up: ``udt.dgram`` (datagram sockets, multicast) over the channel in
``udt._net`` (batched, GIL-free UDP I/O with GSO/GRO); later the protocol engine and the
socket API.  See docs/architecture.md.
"""

__version__ = "0.1.0"
