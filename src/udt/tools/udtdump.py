"""UDT4 packet decoder: explains every field of a datagram and says what is wrong with it.

Library::

    from udt.tools.udtdump import decode
    packet = decode(datagram)          # never raises, whatever the bytes
    packet.kind, packet.name, packet.fields, packet.errors, packet.summary()

CLI (one line per datagram, like tcpdump; ``--json`` for one JSON object per line)::

    python -m udt.tools.udtdump 80000000 00000000 ...        # hex on the command line
    python -m udt.tools.udtdump tests/data/udt4/cs_stream_1500.json
    python -m udt.tools.udtdump capture.pcapng --port 9000    # classic pcap or pcapng

Follows docs/protocol.md (the deployed UDT4 4.11 wire format) and recognises SRT's additions
(handshake version 5, user-defined control packets, the 7-word ACK) so SRT traffic decodes too.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Packet",
    "decode",
    "read_pcap",
    "write_pcap",
    "split_gso",
    "split_gso_records",
    "CaptureRecord",
    "decode_peer_ip",
    "encode_peer_ip",
    "main",
]

HEADER_SIZE = 16
SEQ_MASK = 0x7FFFFFFF
LOSS_RANGE_FLAG = 0x80000000
MSGNO_MASK = 0x1FFFFFFF
SRT_MSGNO_LIMIT = 1 << 26  # SRT reads msgno bits 26-27 as encryption flags
HANDSHAKE_CIF = 48
MIN_MSS = 76
SRT_MAGIC = 0x4A17

CONTROL_NAMES = {
    0: "handshake",
    1: "keep-alive",
    2: "ack",
    3: "nak",
    4: "congestion-warning",
    5: "shutdown",
    6: "ack2",
    7: "drop-request",
    8: "error-signal",
    0x7FFF: "user-defined",
}
ZERO_CIF_TYPES = {1, 4, 5, 6, 8}  # control packets that carry 4 zero bytes of CIF
SOCKET_TYPES = {1: "STREAM", 2: "DGRAM"}
REQUEST_TYPES = {
    1: "induction",
    0: "rendezvous",
    -1: "conclusion",
    -2: "agreement",
    -3: "done",  # SRT HSv5
}
SRT_USER_TYPES = {1: "HSREQ", 2: "HSRSP", 3: "KMREQ", 4: "KMRSP", 5: "SID", 6: "CONGESTION", 7: "FILTER", 8: "GROUP"}
MSG_BOUNDARY = {0b10: "first", 0b01: "last", 0b11: "solo", 0b00: "middle"}


@dataclass
class Packet:
    """One decoded datagram. ``errors`` lists every violation of the wire format found;
    ``warnings`` things that are legal but unusual (or only legal for SRT)."""

    length: int
    kind: str  # "data", "control" or "invalid"
    name: str  # "data", "handshake", "ack", "light-ack", ..., or "invalid"
    fields: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A one-line, tcpdump-like description."""
        f = self.fields
        if self.kind == "data":
            text = (
                f"data seq={f['seq']} msgno={f['msgno']} {f['boundary']}"
                f"{' inorder' if f['inorder'] else ''} ts={f['timestamp']} dst={f['dst_id']:#x}"
                f" payload={f['payload_length']}"
            )
        elif self.kind == "control":
            text = f"{self.name} {_control_details(self)} ts={f['timestamp']} dst={f['dst_id']:#x}"
        else:
            text = "invalid"
        text += f" len={self.length}"
        if self.errors:
            text += " ERRORS: " + "; ".join(self.errors)
        if self.warnings:
            text += " (warning: " + "; ".join(self.warnings) + ")"
        return text


def _control_details(p: Packet) -> str:
    f = p.fields
    if p.name == "handshake" and "version" in f:
        return (
            f"v{f['version']} {f.get('socket_type_name', f['socket_type'])} "
            f"req={f['request_type']}({f.get('request_name', '?')}) isn={f['isn']} "
            f"mss={f['mss']} ffs={f['flight_flag_size']} sid={f['socket_id']:#x} "
            f"cookie={f['cookie']:#x} peer={f['peer_ip']}"
        )
    if p.name == "ack":
        words = " ".join(
            f"{k}={f[k]}"
            for k in ("ack_seq", "ack", "rtt", "rtt_var", "avail_buffer", "recv_rate", "link_capacity")
            if k in f
        )
        return f"({f.get('ack_words', f['cif_length'] // 4)} words) {words}"
    if p.name == "light-ack":
        return f"ack={f.get('ack')}"
    if p.name == "ack2":
        return f"ack_seq={f.get('ack_seq')}"
    if p.name == "nak":
        ranges = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in f.get("loss", []))
        return f"loss=[{ranges}] ({f.get('lost_packets', 0)} packets)"
    if p.name == "drop-request":
        return f"msgno={f.get('msgno')} first={f.get('first_seq')} last={f.get('last_seq')}"
    if p.name == "error-signal":
        return f"code={f['additional_info']}"
    if p.name == "user-defined":
        return f"ext={f['extended_type']}({f.get('extended_name', '?')}) cif={f['cif_length']}B"
    return ""


def _words(cif: bytes) -> list[int]:
    return list(struct.unpack(f">{len(cif) // 4}I", cif[: len(cif) // 4 * 4]))


def _signed(word: int) -> int:
    return word - (1 << 32) if word & 0x80000000 else word


def _seq_le(a: int, b: int) -> bool:
    """a <= b for 31-bit sequence numbers (half-range rule)."""
    return ((b - a) & SEQ_MASK) < (1 << 30)


def decode_peer_ip(raw: bytes) -> str:
    """Decode the handshake's 16-byte peer IP field, undoing UDT4's per-word byte reversal."""
    unswapped = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    if unswapped[4:] == bytes(12):
        return str(ipaddress.IPv4Address(unswapped[:4]))
    return str(ipaddress.IPv6Address(unswapped))


def encode_peer_ip(address: str) -> bytes:
    """The 16 bytes UDT4 puts on the wire for ``address`` (inverse of :func:`decode_peer_ip`)."""
    packed = ipaddress.ip_address(address).packed.ljust(16, b"\0")
    return b"".join(packed[i : i + 4][::-1] for i in range(0, 16, 4))


def decode(datagram: bytes) -> Packet:
    """Decode one UDT datagram (the UDP payload). Never raises on any input."""
    data = bytes(datagram)
    if len(data) < HEADER_SIZE:
        return Packet(
            len(data),
            "invalid",
            "invalid",
            {"hex": data.hex()},
            [f"truncated header: {len(data)} bytes, need {HEADER_SIZE}"],
        )
    w0, w1, timestamp, dst_id = struct.unpack(">4I", data[:HEADER_SIZE])
    if w0 & 0x80000000 == 0:
        return _decode_data(data, w0, w1, timestamp, dst_id)
    return _decode_control(data, w0, w1, timestamp, dst_id)


def _decode_data(data: bytes, w0: int, w1: int, timestamp: int, dst_id: int) -> Packet:
    boundary_bits = w1 >> 30
    fields: dict[str, Any] = {
        "seq": w0 & SEQ_MASK,
        "boundary_bits": boundary_bits,
        "boundary": MSG_BOUNDARY[boundary_bits],
        "first": bool(boundary_bits & 0b10),
        "last": bool(boundary_bits & 0b01),
        "inorder": bool(w1 >> 29 & 1),
        "msgno": w1 & MSGNO_MASK,
        "timestamp": timestamp,
        "dst_id": dst_id,
        "payload_length": len(data) - HEADER_SIZE,
    }
    p = Packet(len(data), "data", "data", fields)
    if fields["payload_length"] == 0:
        p.errors.append("data packet without payload")
    if fields["msgno"] == 0:
        p.errors.append("message number 0 (UDT4 numbers messages from 1)")
    elif fields["msgno"] >= SRT_MSGNO_LIMIT:
        p.warnings.append("msgno >= 2^26: an SRT peer reads bits 26-27 as encryption flags")
    return p


def _decode_control(data: bytes, w0: int, w1: int, timestamp: int, dst_id: int) -> Packet:
    ctype = (w0 >> 16) & 0x7FFF
    ext = w0 & 0xFFFF
    cif = data[HEADER_SIZE:]
    name = CONTROL_NAMES.get(ctype, "unknown")
    fields: dict[str, Any] = {
        "control_type": ctype,
        "extended_type": ext,
        "additional_info": w1,
        "timestamp": timestamp,
        "dst_id": dst_id,
        "cif_length": len(cif),
    }
    p = Packet(len(data), "control", name, fields)
    if ctype not in CONTROL_NAMES:
        p.errors.append(f"unknown control type {ctype:#x}")
        return p
    if ext and ctype != 0x7FFF:
        p.warnings.append(f"extended type {ext:#x} on a type {ctype} packet")
    if len(cif) % 4:
        p.errors.append(f"CIF length {len(cif)} is not a multiple of 4")
    if ctype == 0:
        _decode_handshake(p, cif)
    elif ctype == 2:
        _decode_ack(p, cif, w1)
    elif ctype == 3:
        _decode_nak(p, cif, w1)
    elif ctype == 7:
        fields["msgno"] = w1 & MSGNO_MASK
        if len(cif) != 8:
            p.errors.append(f"drop request CIF is {len(cif)} bytes, expected 8")
        else:
            first, last = _words(cif)
            fields["first_seq"], fields["last_seq"] = first & SEQ_MASK, last & SEQ_MASK
            if (first | last) & LOSS_RANGE_FLAG:
                p.errors.append("drop request sequence number has bit 31 set")
            elif not _seq_le(first, last):
                p.errors.append(f"drop request range {first}..{last} is reversed")
    elif ctype == 0x7FFF:
        fields["extended_name"] = SRT_USER_TYPES.get(ext, "unknown")
        p.warnings.append("user-defined control packet (SRT extension): ignored by UDT4")
    elif ctype in ZERO_CIF_TYPES:
        if ctype == 6:
            fields["ack_seq"] = w1
            if w1 & LOSS_RANGE_FLAG:
                p.errors.append("ACK2 sequence number has bit 31 set")
        elif ctype == 8:
            fields["error_code"] = w1
        elif w1:
            p.warnings.append(f"additional info {w1:#x} should be 0")
        if len(cif) != 4:
            p.errors.append(f"{name} CIF is {len(cif)} bytes, expected 4")
        elif cif != bytes(4):
            p.warnings.append(f"{name} CIF {cif.hex()} should be zero")
    return p


def _decode_handshake(p: Packet, cif: bytes) -> None:
    f = p.fields
    if f["additional_info"]:
        p.warnings.append("handshake additional info should be 0")
    if len(cif) < HANDSHAKE_CIF:
        p.errors.append(f"handshake CIF is {len(cif)} bytes, expected {HANDSHAKE_CIF}")
        return
    version, stype, isn, mss, ffs, req, sid, cookie = _words(cif[:32])
    req = _signed(req)
    f.update(
        version=version,
        socket_type=stype,
        isn=isn,
        mss=mss,
        flight_flag_size=ffs,
        request_type=req,
        socket_id=sid,
        cookie=cookie,
    )
    f["peer_ip_raw"] = cif[32:48].hex()
    f["peer_ip"] = decode_peer_ip(cif[32:48])
    if req in REQUEST_TYPES:
        f["request_name"] = REQUEST_TYPES[req]
    elif req >= 1000:
        f["request_name"] = f"rejected({req})"
    else:
        p.errors.append(f"unknown request type {req}")
    if version == 0 and req == -2:
        # UDT4 builds its answer to a handshake on a connected rendezvous socket from a fresh,
        # mostly unset handshake: version 0, type 0, its default flight flag size, no peer IP.
        p.warnings.append("UDT4-style rendezvous agreement (-2) with version 0: only the request type matters")
    elif version == 4:
        if stype in SOCKET_TYPES:
            f["socket_type_name"] = SOCKET_TYPES[stype]
        else:
            p.errors.append(f"socket type {stype}: UDT4 knows 1 (STREAM) and 2 (DGRAM)")
        if len(cif) >= HANDSHAKE_CIF + 16 and cif[HANDSHAKE_CIF : HANDSHAKE_CIF + 4] == b"UDTX":
            # udt's extension trailer (protocol.md §11): the capabilities TLV comes first
            f["udt_extension_version"] = cif[HANDSHAKE_CIF + 4]
            f["udt_capabilities"] = _words(cif[HANDSHAKE_CIF + 12 : HANDSHAKE_CIF + 16])[0]
        elif len(cif) != HANDSHAKE_CIF:
            p.errors.append(
                f"version 4 handshake CIF is {len(cif)} bytes, a listener ignores anything but {HANDSHAKE_CIF}"
            )
    elif version == 5:
        # SRT: encryption field (16 bits) | extension field (16 bits); a listener's induction
        # answer carries the magic 0x4A17 as extension field to say "I speak SRT".
        encryption, extension = stype >> 16, stype & 0xFFFF
        f["srt_encryption"], f["srt_extension"] = encryption, extension
        f["socket_type_name"] = (
            "SRT(magic 0x4a17)" if extension == SRT_MAGIC else f"SRT(ext={extension:#x},enc={encryption})"
        )
        f["srt_extension_bytes"] = len(cif) - HANDSHAKE_CIF
        p.warnings.append("SRT handshake version 5")
    else:
        p.errors.append(f"handshake version {version}: UDT4 speaks 4 (SRT 5)")
    if isn & LOSS_RANGE_FLAG:
        p.errors.append("initial sequence number has bit 31 set")
    if mss < MIN_MSS:
        p.errors.append(f"MSS {mss} below the minimum {MIN_MSS}")
    if ffs == 0:
        p.errors.append("flight flag size 0")


def _decode_ack(p: Packet, cif: bytes, ack_seq: int) -> None:
    f = p.fields
    words = _words(cif)
    if len(cif) == 4:
        p.name = "light-ack"
        f["ack"] = words[0] & SEQ_MASK
        if ack_seq:
            p.errors.append(f"light ACK with ACK sequence number {ack_seq} (must be 0)")
    elif len(cif) in (16, 24, 28):
        f["ack_seq"] = ack_seq
        f["ack_words"] = len(words)
        keys = ("ack", "rtt", "rtt_var", "avail_buffer", "recv_rate", "link_capacity", "recv_rate_bytes")
        for key, value in zip(keys, words):
            f[key] = value
        if ack_seq == 0:
            p.errors.append("full ACK with ACK sequence number 0 (numbers start at 1)")
        if len(cif) == 28:
            p.warnings.append("7-word ACK: SRT's receive-rate-in-bytes extension")
    else:
        p.errors.append(f"ACK CIF is {len(cif)} bytes, expected 4, 16 or 24")
        if words:
            f["ack"] = words[0] & SEQ_MASK
        return
    if ack_seq & LOSS_RANGE_FLAG:
        p.errors.append("ACK sequence number has bit 31 set")
    if words[0] & LOSS_RANGE_FLAG:
        p.errors.append("acknowledged sequence number has bit 31 set")
    if p.name == "ack" and f["avail_buffer"] < 2:
        p.warnings.append(f"available buffer {f['avail_buffer']} below UDT4's minimum of 2")


def _decode_nak(p: Packet, cif: bytes, info: int) -> None:
    f = p.fields
    if info:
        p.warnings.append(f"NAK additional info {info:#x} should be 0")
    words = _words(cif)
    if not words:
        p.errors.append("NAK with an empty loss list")
        return
    loss: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word & LOSS_RANGE_FLAG:
            if i + 1 >= len(words):
                p.errors.append(f"loss range starting at {word & SEQ_MASK} has no end")
                break
            first, last = word & SEQ_MASK, words[i + 1]
            if last & LOSS_RANGE_FLAG:
                p.errors.append(f"loss range end {last & SEQ_MASK} has bit 31 set")
                last &= SEQ_MASK
            elif not _seq_le(first, last) or first == last:
                p.errors.append(f"loss range {first}..{last} is not increasing")
            loss.append((first, last))
            i += 2
        else:
            loss.append((word, word))
            i += 1
    for (_, prev_last), (next_first, _) in zip(loss, loss[1:]):
        if _seq_le(next_first, prev_last):
            p.errors.append(f"loss list not ascending at {next_first}")
            break
    f["loss"] = loss
    f["lost_packets"] = sum(((b - a) & SEQ_MASK) + 1 for a, b in loss if _seq_le(a, b))


# --------------------------------------------------------------------------- captures
@dataclass
class CaptureRecord:
    """A UDP datagram found in a capture."""

    time: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    gso_segment: tuple[int, int] | None = None  # (index, count) when split by split_gso


def split_gso(payload: bytes) -> list[bytes]:
    """Split what a capture on "lo" shows for a UDP GSO send back into UDT packets.

    A sender using UDP_SEGMENT hands the kernel several equal-sized datagrams in one buffer; a
    capture on the loopback interface sees that buffer as one oversized UDP datagram, while the
    receiving socket gets the segments one by one. UDT data packets sent together carry
    consecutive sequence numbers and the same destination ID, which gives the segment size away.
    Anything else is returned unchanged, as one datagram.
    """
    if len(payload) < 2 * HEADER_SIZE + 2:
        return [payload]
    if payload[0] & 0x80:
        return _split_gso_control(payload)
    seq = int.from_bytes(payload[:4], "big")
    dst = payload[12:16]
    second = ((seq + 1) & SEQ_MASK).to_bytes(4, "big")
    start = HEADER_SIZE + 1
    while (size := payload.find(second, start)) > 0:
        start = size + 1
        if payload[size + 12 : size + 16] != dst:
            continue
        segments = [payload[i : i + size] for i in range(0, len(payload), size)]
        if all(
            len(seg) > HEADER_SIZE and seg[12:16] == dst and int.from_bytes(seg[:4], "big") == (seq + k) & SEQ_MASK
            for k, seg in enumerate(segments)
        ):
            return segments
    return [payload]


# Sizes a control packet of each type can have, to find where a GSO buffer of them is cut.
_CONTROL_SIZES = {0: (64,), 1: (20,), 2: (40, 32, 20), 4: (20,), 5: (20,), 6: (20,), 7: (24,), 8: (20,)}


def _split_gso_control(payload: bytes) -> list[bytes]:
    """Control packets sent with one GSO call (ACK2s answering several ACKs, say) share a
    size and a destination. Split only what is invalid as a whole and valid once split."""
    if decode(payload).ok:
        return [payload]
    ctype = (payload[0] << 8 | payload[1]) & 0x7FFF
    dst = payload[12:16]
    for size in _CONTROL_SIZES.get(ctype, ()):
        if len(payload) <= size or len(payload) % size:
            continue
        segments = [payload[i : i + size] for i in range(0, len(payload), size)]
        if all(seg[0] & 0x80 and seg[12:16] == dst and decode(seg).ok for seg in segments):
            return segments
    return [payload]


def split_gso_records(records: Iterator[CaptureRecord]) -> Iterator[CaptureRecord]:
    """:func:`split_gso` over capture records; split ones carry ``gso_segment``."""
    for record in records:
        parts = split_gso(record.payload)
        if len(parts) == 1:
            yield record
            continue
        for index, part in enumerate(parts):
            yield CaptureRecord(
                record.time, record.src, record.sport, record.dst, record.dport, part, (index, len(parts))
            )


def _ip_udp(packet: bytes, time_: float) -> CaptureRecord | None:
    """Extract a UDP datagram from an IPv4 or IPv6 packet; None if it is not one."""
    if not packet:
        return None
    version = packet[0] >> 4
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack(">H", packet[2:4])[0]
        frag = struct.unpack(">H", packet[6:8])[0]
        if packet[9] != 17 or frag & 0x1FFF or frag & 0x2000 or len(packet) < ihl + 8:
            return None  # not UDP, or a fragment (UDT datagrams are never fragmented on lo)
        src, dst = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
        udp = packet[ihl : total if total >= ihl + 8 else len(packet)]
    elif version == 6 and len(packet) >= 40:
        if packet[6] != 17:
            return None
        src, dst = ipaddress.IPv6Address(packet[8:24]), ipaddress.IPv6Address(packet[24:40])
        udp = packet[40:]
    else:
        return None
    if len(udp) < 8:
        return None
    sport, dport, ulen = struct.unpack(">HHH", udp[:6])
    payload = udp[8:ulen] if 8 <= ulen <= len(udp) else udp[8:]
    return CaptureRecord(time_, str(src), sport, str(dst), dport, payload)


def _link_to_ip(linktype: int, frame: bytes) -> bytes | None:
    if linktype == 1:  # Ethernet (Linux "lo" captures use it)
        offset, ethertype = 14, struct.unpack(">H", frame[12:14])[0] if len(frame) >= 14 else 0
        while ethertype == 0x8100 and len(frame) >= offset + 4:  # VLAN tags
            ethertype = struct.unpack(">H", frame[offset + 2 : offset + 4])[0]
            offset += 4
        return frame[offset:] if ethertype in (0x0800, 0x86DD) else None
    if linktype == 113:  # Linux cooked v1
        return frame[16:] if len(frame) >= 16 else None
    if linktype == 276:  # Linux cooked v2
        return frame[20:] if len(frame) >= 20 else None
    if linktype == 0:  # BSD loopback: 4-byte family in host order
        return frame[4:] if len(frame) >= 4 else None
    if linktype in (12, 14, 101, 228, 229):  # raw IP
        return frame
    return None


def read_pcap(path: str | Path) -> Iterator[CaptureRecord]:
    """Yield the UDP datagrams of a classic pcap or pcapng file."""
    data = Path(path).read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: too short for a capture file")
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _read_pcapng(data)
        return
    formats = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
        b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
        b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    if magic not in formats:
        raise ValueError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")
    endian, unit = formats[magic]
    if len(data) < 24:
        raise ValueError(f"{path}: truncated pcap header")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _origlen = struct.unpack(endian + "4I", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        ip = _link_to_ip(linktype, frame)
        record = _ip_udp(ip, sec + frac * unit) if ip is not None else None
        if record is not None:
            yield record


def _read_pcapng(data: bytes) -> Iterator[CaptureRecord]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []  # (linktype, seconds per timestamp unit)
    offset = 0
    while offset + 12 <= len(data):
        if data[offset : offset + 4] == b"\x0a\x0d\x0d\x0a":  # section header: byte order
            endian = "<" if data[offset + 8 : offset + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        btype, blen = struct.unpack(endian + "II", data[offset : offset + 8])
        if blen < 12 or offset + blen > len(data):
            break
        body = data[offset + 8 : offset + blen - 4]
        if btype == 1 and len(body) >= 8:  # interface description
            linktype = struct.unpack(endian + "H", body[:2])[0]
            interfaces.append((linktype, _if_tsresol(body[8:], endian)))
        elif btype in (6, 3) and interfaces:  # enhanced / simple packet block
            if btype == 6 and len(body) >= 20:
                if_id, ts_hi, ts_lo, caplen, _orig = struct.unpack(endian + "5I", body[:20])
                frame = body[20 : 20 + caplen]
                if if_id >= len(interfaces):
                    if_id = 0
                linktype, unit = interfaces[if_id]
                time_ = ((ts_hi << 32) | ts_lo) * unit
            elif btype == 3 and len(body) >= 4:
                orig = struct.unpack(endian + "I", body[:4])[0]
                frame = body[4 : 4 + orig]
                linktype, time_ = interfaces[0][0], 0.0
            else:
                frame = b""
                linktype, time_ = 0, 0.0
            ip = _link_to_ip(linktype, frame) if frame else None
            record = _ip_udp(ip, time_) if ip is not None else None
            if record is not None:
                yield record
        offset += blen


def _if_tsresol(options: bytes, endian: str) -> float:
    """Timestamp unit from an interface description block's if_tsresol option (default µs)."""
    i = 0
    while i + 4 <= len(options):
        code, length = struct.unpack(endian + "HH", options[i : i + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[i + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0**-value
        i += 4 + (length + 3) // 4 * 4
    return 1e-6


def write_pcap(path: str | Path, records: list[CaptureRecord]) -> None:
    """Write UDP datagrams (IPv4) as a classic pcap with raw-IPv4 link type, e.g. to let
    tshark decode fixtures. Checksums are left 0 (valid for UDP over IPv4)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228)]
    for r in records:
        udp = struct.pack(">HHHH", r.sport, r.dport, 8 + len(r.payload), 0) + r.payload
        ip = struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            0,
            0x4000,
            64,
            17,
            0,
            ipaddress.IPv4Address(r.src).packed,
            ipaddress.IPv4Address(r.dst).packed,
        )
        checksum = _ip_checksum(ip)
        ip = ip[:10] + struct.pack(">H", checksum) + ip[12:]
        frame = ip + udp
        sec = int(r.time)
        out.append(struct.pack("<IIII", sec, int((r.time - sec) * 1e6), len(frame), len(frame)))
        out.append(frame)
    Path(path).write_bytes(b"".join(out))


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fixture_records(path: str | Path) -> list[tuple[CaptureRecord, dict[str, Any]]]:
    """The datagrams of a tests/data/udt4 fixture, as capture records plus their entries."""
    doc = json.loads(Path(path).read_text())
    endpoints = doc["endpoints"]
    result = []
    for entry in doc["datagrams"]:
        src, dst = (
            (endpoints["client"], endpoints["server"])
            if entry["dir"] == "c2s"
            else (endpoints["server"], endpoints["client"])
        )
        result.append((CaptureRecord(entry["t"], src[0], src[1], dst[0], dst[1], bytes.fromhex(entry["hex"])), entry))
    return result


# --------------------------------------------------------------------------- CLI
def _print(record: CaptureRecord | None, packet: Packet, as_json: bool, label: str = "") -> None:
    if as_json:
        obj = packet.to_dict()
        if record is not None:
            obj.update(time=record.time, src=f"{record.src}:{record.sport}", dst=f"{record.dst}:{record.dport}")
            if record.gso_segment is not None:
                obj["gso_segment"] = list(record.gso_segment)
        if label:
            obj["label"] = label
        print(json.dumps(obj, sort_keys=True))
        return
    prefix = ""
    if record is not None:
        prefix = f"{record.time:.6f} {record.src}.{record.sport} > {record.dst}.{record.dport}: "
        if record.gso_segment is not None:
            prefix += f"[gso {record.gso_segment[0] + 1}/{record.gso_segment[1]}] "
    print(f"{prefix}UDT {packet.summary()}{f'  # {label}' if label else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m udt.tools.udtdump", description="Decode UDT4 datagrams (hex, fixture JSON, pcap, pcapng)."
    )
    parser.add_argument("inputs", nargs="+", help="hex words of one datagram, or a .json fixture / pcap / pcapng file")
    parser.add_argument(
        "--port", type=int, action="append", help="only UDP datagrams from or to this port (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per datagram")
    parser.add_argument(
        "--no-gso-split", action="store_true", help="show UDP GSO sends captured on lo as the one buffer they were"
    )
    opts = parser.parse_args(argv)
    bad = 0
    first = opts.inputs[0]
    if Path(first).is_file():
        for name in opts.inputs:
            path = Path(name)
            try:
                if path.suffix == ".json":
                    items = [
                        (r, "dropped by the capture relay" if e.get("dropped") else "")
                        for r, e in fixture_records(path)
                    ]
                else:
                    records = read_pcap(path)
                    items = [(r, "") for r in (records if opts.no_gso_split else split_gso_records(records))]
            except (OSError, ValueError, KeyError) as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 2
            for record, label in items:
                if opts.port and record.sport not in opts.port and record.dport not in opts.port:
                    continue
                packet = decode(record.payload)
                bad += not packet.ok
                _print(record, packet, opts.json, label)
    else:
        text = "".join(opts.inputs).replace(" ", "").replace(":", "").replace("|", "")
        try:
            datagram = bytes.fromhex(text)
        except ValueError:
            print(f"not hex and not a file: {first!r}", file=sys.stderr)
            return 2
        packet = decode(datagram)
        bad += not packet.ok
        _print(None, packet, opts.json)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        sys.exit(0)
