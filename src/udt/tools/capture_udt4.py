"""Record real UDT4 traffic between two udt4py-ng processes as test fixtures (tests/data/udt4).

Each scenario runs a UDT4 client and server (tools.peers, each in its own process) through a
recording UDP relay on 127.0.0.1 that sits between them: every datagram is stored exactly as
a UDT4 process sent it, with its direction and arrival time, and the relay can drop chosen
data datagrams so that UDT4 has to send NAKs and retransmit. A scenario's fixture keeps every
handshake, a bounded number of each other control packet, the first and last data packets and
every retransmission, plus counts of everything seen, so the files stay small.

    python -m udt.tools.capture_udt4 [--out tests/data/udt4] [--only NAME] [--pcapng]

``--pcapng`` also records one small real capture with dumpcap on "lo" (needs tshark's dumpcap).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from udt.tools import peers
from udt.tools.udtdump import decode

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "udt4"
CONTROL_KEEP = 12  # first N of each control kind per direction kept in a fixture
CONTROL_KEEP_LAST = 2
DATA_KEEP_FIRST = 6
DATA_KEEP_LAST = 2
REPLAY_AFTER_DATA = 50  # data packets the client sends before the relay replays its -1


class RecordingRelay:
    """Forwards UDP between a client side and a server side, recording every datagram.

    The client talks to ``client_port``; datagrams go on to ``server`` from ``server_port``,
    and the server's answers go back to the client's address. ``drop_c2s_data`` lists the
    ordinal numbers (0-based, first transmissions only) of client-to-server data datagrams
    to drop.
    """

    def __init__(
        self,
        server: tuple[str, int],
        client: tuple[str, int] | None = None,
        drop_c2s_data: frozenset[int] = frozenset(),
        replay_conclusion: bool = False,
    ):
        self.server = server
        self.client = client
        self.drop = drop_c2s_data
        self.replay_conclusion = replay_conclusion
        self._last_conclusion: bytes | None = None
        self._data_seen_for_replay = 0
        self.records: list[dict[str, Any]] = []
        self._c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self._c, self._s):
            sock.bind(("127.0.0.1", 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.client_port = self._c.getsockname()[1]
        self.server_port = self._s.getsockname()[1]
        self._stop = threading.Event()
        self._seen_seqs: set[int] = set()
        self._data_count = 0
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._c, self._s], [], [], 0.05)
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                now = time.monotonic() - self._start
                if sock is self._c:
                    self.client = addr if self.client is None else self.client
                    dropped = self._should_drop(data)
                    self.records.append({"t": now, "dir": "c2s", "data": data, "dropped": dropped})
                    if not dropped:
                        self._s.sendto(data, self.server)
                    self._maybe_replay(data, now)
                elif self.client is not None:
                    self.records.append({"t": now, "dir": "s2c", "data": data, "dropped": False})
                    self._c.sendto(data, self.client)

    def _maybe_replay(self, data: bytes, now: float) -> None:
        """With ``replay_conclusion``: remember the client's last -1 handshake and send it to
        the server once more after some data packets, as a late retransmission would
        arrive. A connected UDT4 rendezvous socket answers it with -2."""
        if not self.replay_conclusion:
            return
        if len(data) == 64 and data[:4] == b"\x80\0\0\0" and data[36:40] == b"\xff" * 4:
            self._last_conclusion = data
        elif data[0] & 0x80 == 0 and self._last_conclusion is not None:
            self._data_seen_for_replay += 1
            if self._data_seen_for_replay < REPLAY_AFTER_DATA:
                return  # too early: the peer may still be finishing its own handshake
            self._s.sendto(self._last_conclusion, self.server)
            self.records.append(
                {"t": now, "dir": "c2s", "data": self._last_conclusion, "dropped": False, "replayed": True}
            )
            self._last_conclusion = None
            self.replay_conclusion = False

    def _should_drop(self, data: bytes) -> bool:
        if len(data) < 16 or data[0] & 0x80:
            return False
        seq = int.from_bytes(data[:4], "big")
        if seq in self._seen_seqs:
            return False  # retransmissions always pass
        self._seen_seqs.add(seq)
        ordinal = self._data_count
        self._data_count += 1
        return ordinal in self.drop

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._c.close()
        self._s.close()


@dataclass
class Scenario:
    name: str
    description: str
    sock_type: str = "stream"
    mss: int = 1500
    nbytes: int = 1_000_000
    msg_size: int = 65536
    rendezvous: bool = False
    hold: float = 0.0
    drop: frozenset[int] = frozenset()
    replay_conclusion: bool = False
    server_type: str | None = None  # a different socket type on the server: rejection
    keep_data_first: int = DATA_KEEP_FIRST
    expect: list[str] = field(default_factory=list)


SCENARIOS = [
    Scenario(
        "cs_stream_1500",
        "client/server STREAM, MSS 1500, 3 MB, then 1.5 s idle "
        "(keep-alives) and close (shutdown): handshake, data, full ACKs of 4 and 6 words, "
        "light ACKs, ACK2",
        nbytes=3_000_000,
        hold=1.5,
        expect=["handshake", "data", "ack", "light-ack", "ack2", "keep-alive", "shutdown"],
    ),
    Scenario(
        "cs_stream_nak",
        "client/server STREAM, MSS 1500, 1 MB; the relay drops the "
        "client's data datagrams number 30, 31, 32 and 100: NAKs with a single loss and a "
        "range, and retransmissions",
        nbytes=1_000_000,
        drop=frozenset({30, 31, 32, 100}),
        expect=["handshake", "data", "nak", "ack", "ack2"],
    ),
    Scenario(
        "rendezvous_stream",
        "rendezvous STREAM, MSS 1500, 200 kB: the rendezvous "
        "handshake (req 0, -1); after 50 data packets the relay sends side A's last -1 "
        "to B once more (a late retransmission), which the connected B answers with -2",
        nbytes=200_000,
        rendezvous=True,
        replay_conclusion=True,
        expect=["handshake", "data", "ack"],
    ),
    Scenario(
        "cs_dgram_messages",
        "client/server DGRAM, MSS 1500, messages of 4000 bytes "
        "(first/middle/last packets) and a final 1000-byte message (solo)",
        sock_type="dgram",
        nbytes=81_000,
        msg_size=4000,
        keep_data_first=64,
        expect=["handshake", "data", "ack"],
    ),
    Scenario(
        "cs_stream_9000",
        "client/server STREAM, MSS 9000, 1 MB: 8972-byte data datagrams",
        mss=9000,
        nbytes=1_000_000,
        expect=["handshake", "data", "ack"],
    ),
    Scenario(
        "cs_rejected",
        "a STREAM client connects to a DGRAM listener: the listener answers "
        "the conclusion with request type 1002 (rejected)",
        nbytes=10,
        server_type="dgram",
        expect=["handshake"],
    ),
]


def _select(records: list[dict[str, Any]], scenario: Scenario) -> list[dict[str, Any]]:
    """Pick the datagrams worth keeping (see module docstring)."""
    decoded = [(r, decode(r["data"])) for r in records]
    keep: set[int] = set()
    by_kind: dict[tuple[str, str], list[int]] = {}
    seen_seq: set[int] = set()
    for i, (r, p) in enumerate(decoded):
        by_kind.setdefault((r["dir"], p.name), []).append(i)
        if p.kind == "data":
            seq = p.fields["seq"]
            if seq in seen_seq or r["dropped"]:
                keep.add(i)  # retransmission, or the original that the relay dropped
            seen_seq.add(seq)
    for (_direction, name), indices in by_kind.items():
        if name == "handshake":
            keep.update(indices)
        elif name == "data":
            keep.update(indices[: scenario.keep_data_first])
            keep.update(indices[-DATA_KEEP_LAST:])
        else:
            keep.update(indices[:CONTROL_KEEP])
            keep.update(indices[-CONTROL_KEEP_LAST:])
    # a 4-word and a 6-word full ACK, whatever their position
    for words in (4, 6):
        for i, (_, p) in enumerate(decoded):
            if p.name == "ack" and p.fields.get("ack_words") == words:
                keep.add(i)
                break
    out = []
    for i in sorted(keep):
        r, p = decoded[i]
        what = p.summary()
        if r["dropped"]:
            what += " [dropped by the relay: never reached the server]"
        entry = {
            "i": i,
            "t": round(r["t"], 6),
            "dir": r["dir"],
            "len": len(r["data"]),
            "what": what,
            "hex": r["data"].hex(),
        }
        if r["dropped"]:
            entry["dropped"] = True
        if r.get("replayed"):
            entry["replayed"] = True
            entry["what"] += " [replayed by the relay]"
        out.append(entry)
    return out


def run_scenario(scenario: Scenario, out_dir: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Run one scenario between two UDT4 processes and write ``out_dir/NAME.json``."""
    common: dict[str, Any] = dict(
        sock_type=scenario.sock_type, mss=scenario.mss, msg_size=scenario.msg_size, timeout=timeout
    )
    reports: dict[str, Any] = {}
    if scenario.rendezvous:
        port_a, port_b = peers.free_udp_port(), peers.free_udp_port()
        relay = RecordingRelay(
            server=("127.0.0.1", port_b), client=("127.0.0.1", port_a), replay_conclusion=scenario.replay_conclusion
        )
        try:
            with (
                peers.udt4(
                    "send",
                    port=port_a,
                    rendezvous=True,
                    connect=("127.0.0.1", relay.client_port),
                    nbytes=scenario.nbytes,
                    hold=scenario.hold,
                    **common,
                ) as side_a,
                peers.udt4(
                    "recv", port=port_b, rendezvous=True, connect=("127.0.0.1", relay.server_port), **common
                ) as side_b,
            ):
                reports["client"] = side_a.result()
                reports["server"] = side_b.result()
        finally:
            relay.close()
        endpoints = {"client": ["127.0.0.1", port_a], "server": ["127.0.0.1", port_b]}
    else:
        server_common: dict[str, Any] = dict(common, sock_type=scenario.server_type or scenario.sock_type)
        if scenario.server_type:
            server_common["timeout"] = 6.0
        with peers.udt4("recv", **server_common) as server:
            server_port = server.ready()["port"]
            relay = RecordingRelay(server=("127.0.0.1", server_port), drop_c2s_data=scenario.drop)
            try:
                with peers.udt4(
                    "send",
                    connect=("127.0.0.1", relay.client_port),
                    nbytes=scenario.nbytes,
                    hold=scenario.hold,
                    **common,
                ) as client:
                    try:
                        reports["client"] = client.result()
                    except peers.PeerError as exc:
                        if not scenario.server_type:
                            raise
                        reports["client"] = {"error": str(exc).splitlines()[0]}
                if scenario.server_type:
                    server.kill()
                else:
                    reports["server"] = server.result()
            finally:
                relay.close()
            client_addr = relay.client or ("127.0.0.1", 0)
        endpoints = {"client": list(client_addr), "server": ["127.0.0.1", relay.server_port]}
    records = relay.records
    counts = Counter(f"{r['dir']} {decode(r['data']).name}" for r in records)
    missing = [k for k in scenario.expect if not any(key.endswith(" " + k) for key in counts)]
    doc = {
        "scenario": scenario.name,
        "description": scenario.description,
        "made_by": f"python -m udt.tools.capture_udt4 --only {scenario.name}",
        "peer": "UDT4 4.11 via udt4py-ng (two processes, udt/tools/peers.py)",
        "mss": scenario.mss,
        "socket_type": scenario.sock_type,
        "endpoints": endpoints,
        "note": (
            "'client' is the UDT4 process that connects (side A in rendezvous); the server "
            "address is where the recording relay forwarded from (the listener saw that "
            "port as the client)."
        ),
        "reports": reports,
        "counts": dict(sorted(counts.items())),
        "total_datagrams": len(records),
        "missing_kinds": missing,
        "datagrams": _select(records, scenario),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{scenario.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def capture_pcapng(out_dir: Path, timeout: float = 60.0) -> Path:
    """Record a small real capture on "lo" with dumpcap: a 40 kB STREAM transfer."""
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None:
        raise RuntimeError("dumpcap is not installed (apt-get install tshark)")
    path = out_dir / "cs_stream_small.pcapng"
    port = peers.free_udp_port()
    with peers.udt4("recv", port=port, nbytes=40_000, timeout=timeout) as server:
        server.ready()
        cap = subprocess.Popen(
            [dumpcap, "-q", "-i", "lo", "-f", f"udp port {port}", "-w", str(path)], stderr=subprocess.PIPE, text=True
        )
        try:
            time.sleep(1.0)  # dumpcap starts capturing asynchronously; it says nothing we can wait on
            with peers.udt4("send", connect=("127.0.0.1", port), nbytes=40_000, timeout=timeout) as client:
                client.result()
            server.result()
            time.sleep(0.5)
        finally:
            cap.send_signal(signal.SIGINT)
            cap.communicate(timeout=10)
    os.chmod(path, 0o644)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udt.tools.capture_udt4", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    parser.add_argument("--pcapng", action="store_true", help="also record a real pcapng with dumpcap")
    opts = parser.parse_args(argv)
    status = 0
    for scenario in SCENARIOS:
        if opts.only and scenario.name not in opts.only:
            continue
        doc = run_scenario(scenario, opts.out)
        print(
            f"{scenario.name}: {doc['total_datagrams']} datagrams, kept {len(doc['datagrams'])}, "
            f"missing {doc['missing_kinds'] or 'nothing'}"
        )
        status |= bool(doc["missing_kinds"])
    if opts.pcapng:
        print(f"wrote {capture_pcapng(opts.out)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
