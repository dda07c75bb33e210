"""Drive UDT engines against each other without sockets: a fake clock and an in-memory network.

``Net`` plays the multiplexer's routing role (destination socket ID, then the listener or a
connecting socket for ID 0, duplicates by (peer address, peer socket ID)) and an impaired link
per direction: seeded random loss (independent or Gilbert-Elliott bursts), duplication,
reordering, delay/jitter and an optional rate-limited bottleneck queue that drops on overflow.
Everything is deterministic for a given seed; a multi-megabyte transfer takes well under a
second of real time because the clock jumps from event to event.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from udt import _core, _testing

EV = _testing.EVENTS
ST = _testing.STATES


def invalid_counts(stats: dict) -> dict[str, int]:
    """The perfmon's invalid_<reason> counters as {reason: count}."""
    return {reason: stats["invalid_" + reason] for reason in _core.INVALID_REASONS}


@dataclass
class LinkProfile:
    """Impairments of one direction of the emulated path."""

    loss: float = 0.0  # independent drop probability
    burst_enter: float = 0.0  # Gilbert-Elliott: P(good -> bad) per packet
    burst_exit: float = 0.3  # P(bad -> good) per packet; every packet in "bad" is lost
    duplicate: float = 0.0
    reorder: float = 0.0  # probability a packet is held back by reorder_delay_us
    reorder_delay_us: int = 3000
    delay_us: int = 1000  # one-way propagation delay
    jitter_us: int = 0
    rate_pps: float = 0.0  # bottleneck rate in packets/s (0 = infinite)
    queue_packets: int = 100  # bottleneck queue; overflow drops
    mtu: int = 0  # path MTU (IP packet bytes, IPv4: datagram + 28); larger ones are dropped (0 = none)


@dataclass
class _Direction:
    profile: LinkProfile
    rng: random.Random
    bad: bool = False
    busy_until: float = 0.0
    dropped: int = 0
    duplicated: int = 0
    delivered: int = 0
    too_big: int = 0  # dropped for the path MTU
    queue_dropped: int = 0  # dropped because the bottleneck queue was full
    reverse: bool = False  # takes the reverse profile (source address above the destination's)


@dataclass
class Host:
    addr: tuple
    listener: object = None
    conns: dict = field(default_factory=dict)  # socket id -> Endpoint
    by_peer: dict = field(default_factory=dict)  # (peer addr, peer socket id) -> Endpoint
    connecting: list = field(default_factory=list)  # (Endpoint, peer addr)
    accepted: list = field(default_factory=list)
    backlog: int = 16
    accept_options: dict = field(default_factory=dict)


class Net:
    """An in-memory network of engines with a fake clock (µs)."""

    def __init__(
        self,
        seed: int = 1,
        profile: LinkProfile | None = None,
        reverse: LinkProfile | None = None,
        *,
        shared: bool = False,
    ):
        """``shared``: all traffic towards one host crosses one queue (a dumbbell's bottleneck)
        instead of one per (source, destination) pair."""
        self.now = 0
        self.shared = shared
        self.seed = seed
        self._rng = random.Random(seed)
        self._profile = profile or LinkProfile()
        self._reverse = reverse
        self._directions: dict[tuple, _Direction] = {}
        self.queue: list = []
        self._counter = itertools.count()
        self.hosts: dict[tuple, Host] = {}
        self.where: dict[int, tuple] = {}  # id(Endpoint) -> (local addr, peer addr)
        self.events: dict[int, int] = {}  # id(Endpoint) -> OR of event bits seen
        self.endpoints: list = []
        self._next_sid = 1000
        self.sent_log: list | None = None  # set to [] to record (time, src, dst, bytes)

    # ---- topology ----
    def host(self, addr: tuple) -> Host:
        if addr not in self.hosts:
            self.hosts[addr] = Host(addr)
        return self.hosts[addr]

    def listen(
        self,
        addr: tuple,
        key: bytes = b"0123456789abcdef",
        sock_type: int = 1,
        mss: int = 1500,
        slice_us: int = 0,
        backlog: int = 16,
        **accept_options,
    ) -> Host:
        h = self.host(addr)
        h.listener = _testing.ListenerShim(key, sock_type, mss, 8192, self.now, slice_us)
        h.backlog = backlog
        h.accept_options = dict(sock_type=sock_type, mss=mss, **accept_options)
        return h

    def new_sid(self) -> int:
        self._next_sid += 1
        return self._next_sid

    def endpoint(self, addr: tuple, peer: tuple, **options) -> _testing.Endpoint:
        sid = options.pop("socket_id", None) or self.new_sid()
        options.setdefault("seed", self._rng.getrandbits(32) or 1)
        ep = _testing.Endpoint(sid, now=self.now, **options)
        h = self.host(addr)
        h.conns[sid] = ep
        self.where[id(ep)] = (addr, peer)
        self.events[id(ep)] = 0
        self.endpoints.append(ep)
        return ep

    def connect(self, ep, isn: int | None = None) -> None:
        addr, peer = self.where[id(ep)]
        ep.connect(peer, self.now, isn=isn)
        self.host(addr).connecting.append((ep, peer))

    # ---- links ----
    def _direction(self, src: tuple, dst: tuple) -> _Direction:
        key = (None, dst) if self.shared else (src, dst)
        d = self._directions.get(key)
        if d is None:
            profile = self._profile
            if self._reverse is not None and src > dst:
                profile = self._reverse
            d = _Direction(profile, random.Random(f"{self.seed}|{src}|{dst}"), reverse=src > dst)
            self._directions[key] = d
        return d

    def set_profile(self, profile: LinkProfile, reverse: LinkProfile | None = None) -> None:
        self._profile = profile
        self._reverse = reverse
        for d in self._directions.values():
            d.profile = reverse if reverse is not None and d.reverse else profile

    def transmit(self, src: tuple, dst: tuple, data: bytes) -> None:
        if self.sent_log is not None:
            self.sent_log.append((self.now, src, dst, data))
        d = self._direction(src, dst)
        p = d.profile
        r = d.rng
        if p.mtu and len(data) + 28 > p.mtu:
            d.dropped += 1
            d.too_big += 1
            return
        if p.burst_enter > 0:
            d.bad = (r.random() >= p.burst_exit) if d.bad else (r.random() < p.burst_enter)
            if d.bad:
                d.dropped += 1
                return
        if p.loss > 0 and r.random() < p.loss:
            d.dropped += 1
            return
        copies = 2 if (p.duplicate > 0 and r.random() < p.duplicate) else 1
        d.duplicated += copies - 1
        for _ in range(copies):
            t = float(self.now)
            if p.rate_pps > 0:
                gap = 1e6 / p.rate_pps
                start = max(t, d.busy_until)
                if start - t > p.queue_packets * gap:
                    d.dropped += 1
                    d.queue_dropped += 1
                    continue
                d.busy_until = start + gap
                t = d.busy_until
            t += p.delay_us
            if p.jitter_us:
                t += r.randint(0, p.jitter_us)
            if p.reorder > 0 and r.random() < p.reorder:
                t += p.reorder_delay_us
            d.delivered += 1
            heapq.heappush(self.queue, (int(t), next(self._counter), src, dst, data))

    # ---- routing (what the multiplexer does) ----
    def _note(self, ep, ev: int) -> None:
        self.events[id(ep)] = self.events.get(id(ep), 0) | ev

    def deliver(self, src: tuple, dst: tuple, data: bytes) -> None:
        h = self.hosts.get(dst)
        if h is None:
            return
        try:
            info = _testing.peek(data)
        except ValueError:
            return
        if info["dst_id"] != 0:
            ep = h.conns.get(info["dst_id"])
            if ep is not None:
                self._note(ep, ep.receive(data, self.now))
            return
        if info["kind"] == 0:  # handshake to ID 0
            ep = h.by_peer.get((src, info["hs_socket_id"]))
            if ep is not None:
                self._note(ep, ep.receive(data, self.now))
                return
            for ep, peer in h.connecting:
                if peer == src and ep.state == ST["CONNECTING"]:
                    self._note(ep, ep.receive(data, self.now))
                    return
            if h.listener is not None:
                verdict, reply, req = h.listener.handle(data, src, self.now)
                if verdict == _testing.LISTENER_VERDICTS["REPLY"]:
                    self.transmit(dst, src, reply)
                elif verdict == _testing.LISTENER_VERDICTS["ACCEPT"]:
                    if len(h.accepted) >= h.backlog:
                        self.transmit(dst, src, h.listener.reject(req))
                        return
                    ep = self.endpoint(dst, src, **h.accept_options)
                    response = ep.accept(req, self.now)
                    if isinstance(response, int):
                        self.transmit(dst, src, h.listener.reject(req))
                        return
                    h.by_peer[(src, req.peer_socket_id)] = ep
                    h.accepted.append(ep)
                    self._note(ep, EV["CONNECTED"])
                    self.transmit(dst, src, response)
            return
        # other packets to ID 0: a rendezvous peer that is already connected
        for ep, peer in h.connecting:
            if peer == src:
                self._note(ep, ep.receive(data, self.now))
                return

    # ---- the clock ----
    def flush(self) -> None:
        """Let every endpoint send whatever is due now."""
        for ep in self.endpoints:
            addr, peer = self.where[id(ep)]
            for _ in range(100000):
                d = ep.next_datagram(self.now)
                if d is None:
                    break
                self.transmit(addr, peer, d)

    def next_event_time(self) -> int | None:
        times = []
        if self.queue:
            times.append(self.queue[0][0])
        for ep in self.endpoints:
            t = ep.next_timer()
            if t >= 0:
                times.append(max(t, self.now + 1) if t <= self.now else t)
            t = ep.next_send_time(self.now)
            if t >= 0:
                times.append(t if t > self.now else self.now + 1)
        return min(times) if times else None

    def step(self, limit: int) -> bool:
        self.flush()
        t = self.next_event_time()
        if t is None or t > limit:
            self.now = limit
            return False
        self.now = max(self.now, t)
        while self.queue and self.queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self.queue)
            self.deliver(src, dst, data)
        for ep in self.endpoints:
            t = ep.next_timer()
            if 0 <= t <= self.now:
                self._note(ep, ep.on_timer(self.now))
        return True

    def run(self, duration_us: int, until: Callable[[], bool] | None = None) -> bool:
        """Advance the clock up to duration_us; stop early (True) once until() holds."""
        limit = self.now + duration_us
        while self.now < limit:
            if until is not None and until():
                return True
            if not self.step(limit):
                break
        return until() if until is not None else False


def connected_pair(
    net: Net | None = None,
    *,
    client_addr=("10.0.0.1", 5000),
    server_addr=("10.0.0.2", 9000),
    isn: int | None = None,
    client_options: dict | None = None,
    server_options: dict | None = None,
    timeout_us: int = 5_000_000,
):
    """A client connected to a listener through net; returns (net, client, server)."""
    net = net or Net()
    server_options = dict(server_options or {})
    sock_type = server_options.pop("sock_type", (client_options or {}).get("sock_type", 1))
    mss = server_options.pop("mss", 1500)
    h = net.listen(server_addr, sock_type=sock_type, mss=mss, **server_options)
    client = net.endpoint(client_addr, server_addr, **(client_options or {}))
    net.connect(client, isn=isn)
    ok = net.run(timeout_us, lambda: client.state == ST["CONNECTED"] and len(h.accepted) == 1)
    assert ok, f"handshake did not complete: client state {client.state}, error {client.error}"
    return net, client, h.accepted[0]


def transfer(
    net: Net,
    sender,
    receiver,
    data: bytes,
    *,
    chunk: int = 65536,
    timeout_us: int = 600_000_000,
    read_size: int = 1 << 20,
    message_mode: bool = False,
) -> bytes:
    """Write data into sender as fast as it accepts it, read everything at receiver."""
    received = bytearray()
    messages: list[bytes] = []
    offset = 0

    def pump() -> bool:
        nonlocal offset
        while offset < len(data):
            n = sender.write(data[offset : offset + chunk], net.now)
            if n <= 0:
                break
            offset += n
        while True:
            if message_mode:
                r = receiver.read_message(read_size, net.now)
                if isinstance(r, int):
                    break
                messages.append(r[0])
                received.extend(r[0])
            else:
                r = receiver.read(read_size, net.now)
                if isinstance(r, int) or not r:
                    break
                received.extend(r)
        return len(received) >= len(data)

    net.run(timeout_us, pump)
    return bytes(received)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
