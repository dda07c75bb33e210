"""``udt-demo``: README's main job — real, verified udt transfers over loopback, with throughput.

It runs the two command-line tools exactly as a user would, as separate processes on
127.0.0.1: ``udt-recv --once --json`` and ``udt-send FILE`` for a file of random bytes (sha256
checked by both ends), then ``udt-send --mem`` for memory-to-memory throughput (every byte
compared with the seeded pattern it must carry).  It prints what
the tools measured and exits non-zero if any transfer fails or does not verify.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from udt.cli._common import format_bytes
from udt.units import parse_size

PROG = "udt-demo"
LISTEN_MARKER = "udt-recv: listening on "
START_TIMEOUT = 30.0
RUN_TIMEOUT = 600.0


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


def _tool(name: str, *args: str) -> list[str]:
    # the module, not the console script: works whatever PATH says.  The tools run in the
    # demo's scratch directory, so their output files land there.
    return [sys.executable, "-m", f"udt.cli.{name}", *args]


def _start_receiver(args: list[str], log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start udt-recv on a free loopback port; returns it and its HOST:PORT."""
    err = log.open("w")
    proc = subprocess.Popen(
        _tool("recv", "--bind", "127.0.0.1", "--port", "0", "--once", "--json", *args),
        stdout=subprocess.PIPE,
        stderr=err,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=log.parent,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith(LISTEN_MARKER):
                return proc, line[len(LISTEN_MARKER) :].strip()
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise DemoError(f"udt-recv did not start: {log.read_text().strip() or 'no output'}")


def _json_of(
    proc: subprocess.Popen[str] | subprocess.CompletedProcess[str], stdout: str, who: str, log: str
) -> dict[str, Any]:
    if proc.returncode != 0:
        raise DemoError(f"{who} exited with {proc.returncode}: {log.strip()}")
    try:
        return json.loads(stdout)
    except ValueError:
        raise DemoError(f"{who} printed no JSON result: {stdout!r}") from None


def run_pair(send_args: list[str], recv_args: list[str], workdir: Path) -> tuple[dict, dict]:
    """One udt-send -> udt-recv transfer; returns both JSON results."""
    recv_log = workdir / "recv.log"
    receiver, address = _start_receiver(recv_args, recv_log)
    try:
        sender = subprocess.run(
            _tool("send", "--json", *send_args, address),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
        if sender.returncode != 0:  # it never connected, or gave up: nobody will end the receiver
            receiver.kill()
        recv_out, _ = receiver.communicate(timeout=RUN_TIMEOUT)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    sent = _json_of(sender, sender.stdout, "udt-send", sender.stderr)
    received = _json_of(receiver, recv_out, "udt-recv", recv_log.read_text())
    return sent, received


def _line(what: str, check: str, sent: dict, received: dict) -> str:
    same = sent.get("sha256") and sent.get("sha256") == received.get("sha256")
    return (
        f"{what:<24} {format_bytes(received['bytes']):>10} in {received['seconds']:6.2f} s = "
        f"{received['mbit_per_s']:8.0f} Mbit/s ({received['mbit_per_s'] / 8:6.0f} MB/s)  "
        f"{check} {'matches' if same else 'DIFFERS'}  retransmitted {sent.get('retransmitted', 0)}, "
        f"lost {received.get('lost', 0)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("256M"),
        help="size of the file to send (default 256M; K/M/G are powers of 1024)",
    )
    parser.add_argument(
        "--mem",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="length of the memory-to-memory run (default 2; 0 skips it)",
    )
    parser.add_argument("--mss", default=None, help="UDT MSS for both tools (default: auto, path-MTU discovery)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with all results")
    args = parser.parse_args(argv)
    extra = ["--mss", args.mss] if args.mss else []
    results: dict[str, Any] = {}
    lines = []
    try:
        with tempfile.TemporaryDirectory(prefix="udt-demo-") as tmp:
            work = Path(tmp)
            source = work / "random.bin"
            with source.open("wb") as f:
                left = args.size
                while left:
                    block = os.urandom(min(left, 4 << 20))
                    f.write(block)
                    left -= len(block)
            (work / "received").mkdir()
            # options before the file: udt-send's positionals are FILE ... HOST:PORT in one run
            sent, received = run_pair([*extra, str(source)], ["--output", str(work / "received"), *extra], work)
            if not (
                sent["sha256"] == received["sha256"] == received["files"][0]["sha256"]
                and received["bytes"] == args.size
            ):
                raise DemoError("the file did not arrive intact")
            results["file"] = {"send": sent, "recv": received}
            lines.append(_line("file, udt-send/recv", "sha256", sent, received))
            if args.mem > 0:
                sent, received = run_pair(["--mem", str(args.mem), *extra], ["--mem", *extra], work)
                if sent["sha256"] != received["sha256"]:
                    raise DemoError("memory mode: the receiver's stream digest differs from the sender's")
                results["memory"] = {"send": sent, "recv": received}
                lines.append(_line("memory, udt-send --mem", "pattern", sent, received))
    except (DemoError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print("udt over loopback (127.0.0.1), real processes, verified end to end:")
        for line in lines:
            print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
