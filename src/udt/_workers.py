"""How many worker threads serve the process's ports: the pool of udt/_pool.pyx, typed."""

from __future__ import annotations

import udt._pool as _pool


def set_worker_count(count: int | None = None) -> None:
    """Serve the udt ports created from now on with ``count`` worker pairs (one receive and one
    send thread each, shared by all the ports given to them), 1 to 64.  ``None`` restores the
    default: ``$UDT_WORKERS`` when set, else one pair per core up to 4.  Ports already open
    keep their pair; a pair's threads exist only while it serves a port."""
    _pool.set_worker_count(count)


def worker_count() -> int:
    """The number of worker pairs new udt ports are spread over (see :func:`set_worker_count`)."""
    return int(_pool.worker_count())
