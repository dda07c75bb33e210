"""What a failed rendezvous tried, in words: the usual cause is a NAT between the peers.

A rendezvous has no listener to refuse it: both peers send handshakes to the address they were
told and wait to hear the other.  When nothing comes back, the user needs what was tried (our
port, the peer's address, how many handshakes, how long) to compare with the other side's
account, and the likely reason, which udt cannot see from here: a NAT that gives each
destination its own public port (a symmetric NAT), so the peer's packets aim at a port that
does not lead to us.  docs/testing.md ("NAT") says which mappings let a rendezvous through.
"""

from __future__ import annotations

from typing import Any

NAT_HINT = (
    "both peers must connect at the same time, each to the address and port the other's "
    "packets come from; a NAT between must keep the port (endpoint-independent mapping): "
    "a symmetric NAT, which picks a new public port per destination, cannot be crossed"
)


def _address(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def rendezvous_failure_message(
    local: tuple[Any, ...], peer: tuple[Any, ...], handshakes: int, seconds: float, peer_heard: bool
) -> str:
    """The error text of a rendezvous connect that gave up."""
    heard = "the peer was heard but the handshake did not complete" if peer_heard else "nothing came back"
    return (
        f"rendezvous from local port {local[1]} ({_address(local)}) to {_address(peer)} failed: "
        f"{handshakes} handshake{'s' if handshakes != 1 else ''} sent in {seconds:.1f} s, {heard}; {NAT_HINT}"
    )
