"""The attack datagrams of the flood: spoofed UDT handshakes of every hostile kind.

Each kind is a handshake (16-byte header with destination socket ID 0, 48-byte CIF, maybe the
16-byte udt trailer) a listener must answer cheaply or drop without keeping anything:

* ``induction``: a udt client's induction (cookie "UDTX", padded with the trailer);
* ``induction-plain``: a UDT4/SRT client's induction (48-byte CIF, cookie 0);
* ``conclusion``: a conclusion with a forged (random) cookie;
* ``replay``: a conclusion carrying a cookie that was valid for another address (``cookie=``);
* ``absurd``: conclusions with absurd MSS / flow window / ISN / version values.
"""

from __future__ import annotations

import ipaddress
import random
import struct

KINDS = ("induction", "induction-plain", "conclusion", "replay", "absurd")
DEFAULT_MIX = {"induction": 0.5, "induction-plain": 0.1, "conclusion": 0.25, "absurd": 0.15}

_HSEXT_MAGIC = 0x55445458
_TRAILER = struct.pack(">IIII", _HSEXT_MAGIC, (1 << 24) | 8, (1 << 16) | 4, 1)
_ABSURD = (
    # (version, sock_type, isn, mss, flow window)
    (4, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FFFFFFF),
    (4, 1, 0x80000000, 1500, 25600),  # a negative ISN
    (4, 1, 12345, 0, 0),  # MSS 0
    (4, 1, 12345, 1 << 30, 1 << 30),
    (0xFFFFFFFF, 0xFFFFFFFF, 1, 1500, 25600),
    (4, 2, 1, 1500, 0xFFFFFFFF),
)


def handshake(
    req_type: int,
    cookie: int,
    socket_id: int,
    *,
    version: int = 4,
    sock_type: int = 1,
    isn: int = 1,
    mss: int = 1500,
    flow_window: int = 25600,
    trailer: bool = False,
) -> bytes:
    """One handshake datagram to a listener (destination ID 0)."""
    header = struct.pack(">IIII", 0x80000000, 0, 0, 0)
    cif = struct.pack(
        ">IIIIIiII16s",
        version & 0xFFFFFFFF,
        sock_type & 0xFFFFFFFF,
        isn & 0xFFFFFFFF,
        mss & 0xFFFFFFFF,
        flow_window & 0xFFFFFFFF,
        req_type,
        socket_id & 0xFFFFFFFF,
        cookie & 0xFFFFFFFF,
        b"\x7f\x00\x00\x01" + bytes(12),
    )
    return header + cif + (_TRAILER if trailer else b"")


def spoofed_sources(count: int, seed: int = 1, network: str = "127.0.0.0/8") -> list[tuple[int, int]]:
    """count distinct (address, port) pairs inside network, never 127.0.0.1 (the legit
    clients' address), reproducibly from seed."""
    net = ipaddress.ip_network(network)
    rng = random.Random(seed)
    reserved = {int(ipaddress.ip_address("127.0.0.1")), int(net.network_address), int(net.broadcast_address)}
    seen: set[tuple[int, int]] = set()
    result: list[tuple[int, int]] = []
    span = net.num_addresses
    if count > (span - len(reserved)) * 64511:
        raise ValueError(f"{network} has too few addresses for {count} sources")
    while len(result) < count:
        address = int(net.network_address) + rng.randrange(span)
        port = rng.randrange(1024, 65536)
        if address in reserved or (address, port) in seen:
            continue
        seen.add((address, port))
        result.append((address, port))
    return result


def flood_packets(
    sources: int = 4096,
    mix: dict[str, float] | None = None,
    *,
    seed: int = 1,
    cookie: int = 0,
    network: str = "127.0.0.0/8",
    source_list: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int, bytes]]:
    """The ring of datagrams the sender cycles through: one per source (``sources`` drawn
    from network, or cycling through ``source_list`` to impersonate given peers), kinds drawn
    by mix (weights; ``replay`` needs ``cookie``)."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    for kind in mix:
        if kind not in KINDS:
            raise ValueError(f"unknown flood kind {kind!r} (known: {', '.join(KINDS)})")
    if mix.get("replay") and not cookie:
        raise ValueError("the replay kind needs the cookie to replay")
    rng = random.Random(seed ^ 0x5EED)
    kinds = [k for k in mix if mix[k] > 0]
    weights = [mix[k] for k in kinds]
    result = []
    if source_list:
        pairs = [source_list[i % len(source_list)] for i in range(sources)]
    else:
        pairs = spoofed_sources(sources, seed, network)
    for address, port in pairs:
        kind = rng.choices(kinds, weights)[0]
        socket_id = rng.randrange(1, 1 << 30)
        if kind == "induction":
            payload = handshake(1, _HSEXT_MAGIC, socket_id, isn=rng.randrange(1 << 31), trailer=True)
        elif kind == "induction-plain":
            payload = handshake(1, 0, socket_id, isn=rng.randrange(1 << 31))
        elif kind == "conclusion":
            payload = handshake(-1, rng.randrange(1, 1 << 32), socket_id, isn=rng.randrange(1 << 31), trailer=True)
        elif kind == "replay":
            payload = handshake(-1, cookie, socket_id, isn=rng.randrange(1 << 31), trailer=True)
        else:
            version, sock_type, isn, mss, window = _ABSURD[rng.randrange(len(_ABSURD))]
            payload = handshake(
                -1 if rng.random() < 0.7 else 1,
                rng.randrange(1 << 32),
                socket_id,
                version=version,
                sock_type=sock_type,
                isn=isn,
                mss=mss,
                flow_window=window,
            )
        result.append((address, port, payload))
    return result
