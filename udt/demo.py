"""``udt-demo``: a datagram run over loopback that prints what it measured.

A receiver thread counts numbered 1456-byte datagrams (UDT's payload size at MSS 1500) sent as
fast as one thread can; then one datagram goes through an IPv4 multicast group on ``lo``.  The
numbers are the datagram layer's, not yet a reliable transfer's.
"""
from __future__ import annotations

import argparse
import struct
import threading
import time

from udt import dgram

PAYLOAD = 1456
_SEQ = struct.Struct("!Q")


def unicast_run(seconds: float) -> dict:
    """Send numbered datagrams for *seconds*; count what arrives, in order and lost."""
    received = 0
    highest = -1
    stop = threading.Event()
    with dgram.create_socket("udp4") as rx, dgram.create_socket("udp4") as tx:
        rx.bind(port=0, address="127.0.0.1")
        rx.set_recv_buffer_size(8 << 20)
        port = rx.address().port

        def receive() -> None:
            nonlocal received, highest
            while not stop.is_set():
                try:
                    data, _ = rx.recvfrom(timeout=0.2)
                except TimeoutError:
                    continue
                except OSError:
                    return
                received += 1
                highest = max(highest, _SEQ.unpack_from(data)[0])

        worker = threading.Thread(target=receive, name="udt-demo-rx")
        worker.start()
        payload = bytearray(PAYLOAD)
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for _ in range(256):
                _SEQ.pack_into(payload, 0, sent)
                tx.send(payload, port, "127.0.0.1")
                sent += 1
        elapsed = time.perf_counter() - start
        time.sleep(0.2)  # let the last datagrams in flight arrive before counting
        stop.set()
        worker.join()
    return {"sent": sent, "received": received, "seconds": elapsed,
            "mbit_per_s": received * PAYLOAD * 8 / elapsed / 1e6,
            "lost": sent - received}


def multicast_round(group: str = "239.255.77.1") -> bool:
    """Join *group* on loopback and receive one datagram sent to it."""
    with dgram.create_socket("udp4", reuse_addr=True) as rx, \
            dgram.create_socket("udp4") as tx:
        rx.bind(port=0, address="0.0.0.0")
        membership = rx.add_membership(group, "127.0.0.1")
        tx.set_multicast_interface("127.0.0.1")  # pin the interface: lo, never the default route
        tx.set_multicast_ttl(1)
        tx.send(b"hello, group", rx.address().port, group)
        data, rinfo = rx.recvfrom(timeout=2.0)
        membership.drop()
        return data == b"hello, group" and rinfo.address == "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="udt-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the unicast run")
    args = parser.parse_args(argv)
    result = unicast_run(args.seconds)
    print(f"unicast over loopback: {result['sent']} datagrams of {PAYLOAD} B sent, "
          f"{result['received']} received ({result['lost']} lost, plain UDP is unreliable) "
          f"in {result['seconds']:.2f} s = {result['mbit_per_s']:.0f} Mbit/s received")
    ok = multicast_round()
    print(f"multicast 239.255.77.1 on lo: {'received' if ok else 'NOT received'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
