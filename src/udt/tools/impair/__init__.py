"""A UDP impairment relay: the user-space stand-in for netem, which this kernel lacks.

The relay stands between two endpoints A and B. A sends to :attr:`Relay.address`; the relay
forwards each datagram to B from a socket of its own (one per A-side source address, so B's
replies find their way back to that A), and forwards B's replies back to A. Each direction
(``a_to_b``, ``b_to_a``) applies its own :class:`Impairment`, reproducibly from a seed:

* fixed delay plus jitter (jitter never reorders: each direction stays FIFO),
* Bernoulli loss and bursty loss (:class:`GilbertElliott`),
* reordering (a packet is held back until the next *n* packets have passed it),
* duplication, payload corruption (bit flips, length kept),
* a rate limit modelled as a link (serialization delay) behind a drop-tail queue,
* deterministic drops chosen by a predicate (:class:`DropNth`, :class:`UdtControl`).

The pipeline of one direction, in order::

    drop predicate -> loss (Bernoulli, Gilbert-Elliott) -> queue + link (rate)
        -> corruption -> propagation delay + jitter (FIFO) -> reordering -> duplication

Every random decision of a kind (loss, burst, jitter, reorder, duplicate, corrupt) draws from
its own ``random.Random`` stream seeded from ``(seed, direction, kind)``, so the loss pattern for
a given packet sequence does not change when, say, jitter is switched on.

Run it in a worker thread of the calling process (default) or, with ``process=True``, in a child
Python process so that it does not compete for the GIL with the code under test; counters come
back over a pipe. From the shell: ``python -m udt.tools.impair --help``.

Layout: :mod:`~udt.tools.impair.settings` (what to do), :mod:`~udt.tools.impair.stats` (the
counters), :mod:`~udt.tools.impair.relay` (the public :class:`Relay`), ``_direction`` (one
direction's pipeline), ``_engine`` (sockets and the event loop), ``_sockets`` (socket options),
``_child`` (the child process and its pipe protocol), :mod:`~udt.tools.impair.cli` (``main``).
"""

from __future__ import annotations

from udt.tools.impair._common import DIRECTIONS as DIRECTIONS  # API types
from udt.tools.impair._common import Address as Address
from udt.tools.impair._common import Direction as Direction
from udt.tools.impair._common import RelayError
from udt.tools.impair.cli import (
    main,
    parse_address,
    parse_burst,
    parse_duration,
    parse_interval,
    parse_probability,
    parse_queue,
)
from udt.tools.impair.relay import Relay
from udt.tools.impair.settings import DropNth, GilbertElliott, Impairment, UdtControl
from udt.tools.impair.stats import DirectionStats, RelayStats

__all__ = [
    "DirectionStats",
    "DropNth",
    "GilbertElliott",
    "Impairment",
    "Relay",
    "RelayError",
    "RelayStats",
    "UdtControl",
    "main",
    "parse_address",
    "parse_burst",
    "parse_duration",
    "parse_interval",
    "parse_probability",
    "parse_queue",
]
