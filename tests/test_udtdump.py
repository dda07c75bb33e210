"""udt/tools/udtdump.py against protocol.md's byte-level examples, real UDT4 captures, Wireshark's
UDT dissector and random garbage."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udt.tools import udtdump
from udt.tools.udtdump import CaptureRecord, decode, decode_peer_ip, encode_peer_ip

DATA = Path(__file__).resolve().parent / "data" / "udt4"
FIXTURES = sorted(DATA.glob("*.json"))
PCAPNG = DATA / "cs_stream_small.pcapng"
TSHARK = shutil.which("tshark")


def words(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def packets(name: str, direction: str | None = None, kind: str | None = None):
    for entry in load(name)["datagrams"]:
        packet = decode(bytes.fromhex(entry["hex"]))
        if (direction is None or entry["dir"] == direction) and (kind is None or packet.name == kind):
            yield entry, packet


# --------------------------------------------------------------------------- protocol.md §10 examples
def test_spec_handshake_examples():
    induction = decode(
        words(
            "80000000 00000000 00000000 00000000 | 00000004 00000001 74697164 000005dc "
            "00002000 00000001 27555d6a 00000000 0100007f 00000000 00000000 00000000"
        )
    )
    assert induction.ok and induction.name == "handshake" and induction.length == 64
    f = induction.fields
    assert (f["version"], f["socket_type_name"], f["isn"], f["mss"], f["flight_flag_size"]) == (
        4,
        "STREAM",
        0x74697164,
        1500,
        8192,
    )
    assert (f["request_type"], f["request_name"], f["socket_id"], f["cookie"]) == (1, "induction", 0x27555D6A, 0)
    assert f["peer_ip"] == "127.0.0.1" and f["dst_id"] == 0 and f["timestamp"] == 0

    response = decode(
        words(
            "80000000 00000000 00000000 27555d6a | 00000004 00000001 74697164 000005dc "
            "00002000 00000001 27555d6a 252008b0 0100007f 00000000 00000000 00000000"
        )
    )
    assert response.ok and response.fields["cookie"] == 0x252008B0 and response.fields["dst_id"] == 0x27555D6A

    final = decode(
        words(
            "80000000 00000000 00000000 27555d6a | 00000004 00000001 74697164 000005dc "
            "00002000 ffffffff 21e40ace 252008b0 0100007f 00000000 00000000 00000000"
        )
    )
    assert final.ok and final.fields["request_type"] == -1 and final.fields["request_name"] == "conclusion"
    assert final.fields["socket_id"] == 0x21E40ACE


def test_udt_extension_trailer_decodes():
    hs = words(
        "80000000 00000000 00000000 27555d6a | 00000004 00000001 74697164 000005dc "
        "00002000 ffffffff 21e40ace 252008b0 0100007f 00000000 00000000 00000000"
    )
    p = decode(hs + words("55445458 01000008 00010004 00000001"))
    assert p.ok and p.fields["udt_extension_version"] == 1 and p.fields["udt_capabilities"] == 1
    assert not decode(hs + bytes(16)).ok  # trailing bytes that are not ours: a UDT4 listener ignores it


def test_spec_ack_examples():
    full = decode(words("80020000 00000001 00000000 00000007 | 74697174 000186a0 0000c350 00001fef 00011705 000003e8"))
    assert full.ok and full.name == "ack" and full.length == 40
    f = full.fields
    assert (f["ack_seq"], f["ack"], f["rtt"], f["rtt_var"], f["avail_buffer"], f["recv_rate"], f["link_capacity"]) == (
        1,
        0x74697174,
        100_000,
        50_000,
        0x1FEF,
        0x11705,
        1000,
    )
    assert f["ack_words"] == 6 and f["dst_id"] == 7

    ack2 = decode(words("80060000 00000001 00000000 00000007 | 00000000"))
    assert ack2.ok and ack2.name == "ack2" and ack2.fields["ack_seq"] == 1 and ack2.length == 20

    light = decode(words("80020000 00000000 00000000 00000007 | 746971e9"))
    assert light.ok and light.name == "light-ack" and light.fields["ack"] == 0x746971E9

    nak = decode(words("80030000 00000000 00000000 00000007 | 74697933"))
    assert nak.ok and nak.name == "nak" and nak.fields["loss"] == [(0x74697933, 0x74697933)]

    keepalive = decode(words("80010000 00000000 00000000 00000007 | 00000000"))
    assert keepalive.ok and keepalive.name == "keep-alive" and keepalive.length == 20


def test_spec_data_example():
    packet = decode(words("74697164 80000001 00001234 00000007") + bytes(1456))
    assert packet.ok and packet.kind == "data" and packet.length == 1472
    f = packet.fields
    assert (f["seq"], f["boundary"], f["inorder"], f["msgno"], f["payload_length"]) == (
        0x74697164,
        "first",
        False,
        1,
        1456,
    )
    assert f["timestamp"] == 0x1234 and f["dst_id"] == 7


def test_nak_ranges_and_their_errors():
    nak = decode(words("80030000 00000000 00000000 00000001 80000005 00000009 0000000c"))
    assert nak.ok and nak.fields["loss"] == [(5, 9), (12, 12)] and nak.fields["lost_packets"] == 6
    assert "5-9,12" in nak.summary()
    reversed_range = decode(words("80030000 00000000 00000000 00000001 80000009 00000005"))
    assert not reversed_range.ok and "not increasing" in reversed_range.errors[0]
    dangling = decode(words("80030000 00000000 00000000 00000001 80000009"))
    assert any("no end" in e for e in dangling.errors)
    unordered = decode(words("80030000 00000000 00000000 00000001 00000009 00000005"))
    assert any("not ascending" in e for e in unordered.errors)
    empty = decode(words("80030000 00000000 00000000 00000001"))
    assert any("empty" in e for e in empty.errors)
    # a range across the 31-bit wrap is legal
    wrap = decode(words("80030000 00000000 00000000 00000001 fffffffe 00000001"))
    assert wrap.ok and wrap.fields["lost_packets"] == 4


def test_errors_are_reported_not_raised():
    assert decode(b"").errors == ["truncated header: 0 bytes, need 16"]
    short_hs = decode(words("80000000 00000000 00000000 00000000 00000004"))
    assert any("handshake CIF is 4 bytes" in e for e in short_hs.errors)
    long_hs = decode(
        words("80000000 00000000 00000000 00000000")
        + struct.pack(">12I", 4, 1, 1, 1500, 8192, 1, 9, 0, 0, 0, 0, 0)
        + bytes(4)
    )
    assert any("listener ignores" in e for e in long_hs.errors)
    bad_type = decode(
        words("80000000 00000000 00000000 00000000") + struct.pack(">12I", 4, 0, 1, 1500, 8192, 1, 9, 0, 0, 0, 0, 0)
    )
    assert any("socket type 0" in e for e in bad_type.errors)
    unknown = decode(words("80090000 00000000 00000000 00000000 00000000"))
    assert unknown.errors == ["unknown control type 0x9"]
    odd_ack = decode(words("80020000 00000003 00000000 00000000 00000001 00000002"))
    assert any("ACK CIF is 8 bytes" in e for e in odd_ack.errors)
    empty_data = decode(words("00000001 c0000001 00000000 00000000"))
    assert "data packet without payload" in empty_data.errors
    msgno0 = decode(words("00000001 c0000000 00000000 00000000 ff"))
    assert any("message number 0" in e for e in msgno0.errors)
    srt_bits = decode(words("00000001 c4000001 00000000 00000000 ff"))
    assert srt_bits.ok and any("2^26" in w for w in srt_bits.warnings)
    bad_keepalive = decode(words("80010000 00000000 00000000 00000000"))
    assert any("CIF is 0 bytes, expected 4" in e for e in bad_keepalive.errors)


def test_srt_packets_are_recognised():
    hsv5 = decode(
        words("80000000 00000000 00000000 00000000")
        + struct.pack(">12I", 5, 0x4A17 << 16 | 2, 1, 1500, 8192, 1, 9, 0, 0x0100007F, 0, 0, 0)
        + bytes(8)
    )
    assert hsv5.ok and hsv5.fields["srt_extension_bytes"] == 8
    assert (hsv5.fields["srt_encryption"], hsv5.fields["srt_extension"]) == (0x4A17, 2)
    # what srt-file-transmit answers a UDT4 induction with (captured)
    srt_induction = decode(
        words(
            "80000000 00000000 00065701 223051c1 00000005 00004a17 4b9d4c65 000005dc "
            "00002000 00000001 223051c1 4eef8947 0100007f 00000000 00000000 00000000"
        )
    )
    assert srt_induction.ok and srt_induction.fields["socket_type_name"] == "SRT(magic 0x4a17)"
    rejected = decode(
        words(
            "80000000 00000000 00000000 223051c1 00000004 00000001 4b9d4c65 000005dc "
            "00002000 000003ec 223051c1 4eef8947 0100007f 00000000 00000000 00000000"
        )
    )
    assert rejected.ok and rejected.fields["request_name"] == "rejected(1004)"
    user = decode(words("ffff0001 00000000 00000000 00000005 00010501"))
    assert user.ok and user.name == "user-defined" and user.fields["extended_name"] == "HSREQ"


def test_peer_ip_byte_order_quirk():
    assert encode_peer_ip("127.0.0.1") == bytes.fromhex("0100007f") + bytes(12)
    assert decode_peer_ip(bytes.fromhex("0100007f") + bytes(12)) == "127.0.0.1"
    v6 = encode_peer_ip("2001:db8::1")
    assert v6[:4] == bytes.fromhex("b80d0120")  # a3 a2 a1 a0
    assert decode_peer_ip(v6) == "2001:db8::1"
    assert decode_peer_ip(encode_peer_ip("::1")) == "::1"


# --------------------------------------------------------------------------- real captures
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_every_captured_datagram_decodes_cleanly(fixture):
    doc = json.loads(fixture.read_text())
    assert not doc["missing_kinds"]
    for entry in doc["datagrams"]:
        packet = decode(bytes.fromhex(entry["hex"]))
        assert packet.ok, (entry, packet.errors)
        assert packet.length == entry["len"]
        assert entry["what"].startswith(packet.summary().split(" len=")[0])


def test_client_server_handshake_is_four_datagrams_with_echoed_cookie_and_isn():
    hs = [(e["dir"], p.fields) for e, p in packets("cs_stream_1500", kind="handshake")]
    assert [d for d, _ in hs] == ["c2s", "s2c", "c2s", "s2c"]
    (_, induction), (_, challenge), (_, conclusion), (_, answer) = hs
    assert (induction["request_type"], induction["cookie"], induction["dst_id"]) == (1, 0, 0)
    assert challenge["cookie"] != 0 and challenge["dst_id"] == induction["socket_id"]
    assert (conclusion["request_type"], conclusion["cookie"], conclusion["dst_id"]) == (-1, challenge["cookie"], 0)
    assert answer["request_type"] == -1 and answer["isn"] == induction["isn"]
    assert answer["socket_id"] != induction["socket_id"] and answer["peer_ip"] == "127.0.0.1"
    assert all(f["mss"] == 1500 and f["version"] == 4 and f["socket_type"] == 1 for _, f in hs)


def test_full_ack_light_ack_ack2_keepalive_shutdown_are_captured():
    kinds = {(e["dir"], p.name) for e, p in packets("cs_stream_1500")}
    for expected in [
        ("s2c", "ack"),
        ("s2c", "light-ack"),
        ("c2s", "ack2"),
        ("c2s", "keep-alive"),
        ("s2c", "keep-alive"),
        ("c2s", "shutdown"),
        ("c2s", "data"),
    ]:
        assert expected in kinds
    widths = {p.fields["ack_words"] for _, p in packets("cs_stream_1500", kind="ack")}
    assert widths == {4, 6}
    acks = {p.fields["ack_seq"] for _, p in packets("cs_stream_1500", "s2c", "ack")}
    ack2s = {p.fields["ack_seq"] for _, p in packets("cs_stream_1500", "c2s", "ack2")}
    assert ack2s <= acks  # every ACK2 answers a full ACK the capture shows
    data = [p for _, p in packets("cs_stream_1500", "c2s", "data")]
    assert all(p.length == 1472 for p in data[:4])  # MSS 1500 - 28 - 16 payload + header


def test_nak_lists_exactly_what_the_relay_dropped():
    dropped = {p.fields["seq"] for e, p in packets("cs_stream_nak", "c2s", "data") if e.get("dropped")}
    assert len(dropped) == 4
    reported = set()
    for _, p in packets("cs_stream_nak", "s2c", "nak"):
        for first, last in p.fields["loss"]:
            reported.update(range(first, last + 1))
    assert reported == dropped
    retransmitted = [p.fields["seq"] for e, p in packets("cs_stream_nak", "c2s", "data") if not e.get("dropped")]
    assert dropped <= set(retransmitted)


def test_rendezvous_handshake_requests():
    requests = [(e["dir"], p.fields["request_type"]) for e, p in packets("rendezvous_stream", kind="handshake")]
    assert ("c2s", 0) in requests and ("s2c", 0) in requests
    assert ("c2s", -1) in requests and ("s2c", -1) in requests
    assert -2 in {r for _, r in requests}
    for _, p in packets("rendezvous_stream", kind="handshake"):
        assert p.fields["cookie"] == 0


def test_dgram_message_boundaries():
    data = [p.fields for _, p in packets("cs_dgram_messages", "c2s", "data")]
    by_msg: dict[int, list[str]] = {}
    for f in data:
        by_msg.setdefault(f["msgno"], []).append(f["boundary"])
    assert by_msg[1] == ["first", "middle", "last"]
    assert by_msg[max(by_msg)] == ["solo"]
    assert all(not f["inorder"] for f in data)
    assert sorted(by_msg)[:3] == [1, 2, 3]


def test_mss_9000_and_rejection():
    hs = [p.fields for _, p in packets("cs_stream_9000", kind="handshake")]
    assert {f["mss"] for f in hs} == {9000}
    sizes = {p.length for _, p in packets("cs_stream_9000", "c2s", "data")}
    assert 9000 - 28 in sizes
    rejected = [p.fields for _, p in packets("cs_rejected", "s2c", "handshake") if p.fields["request_type"] == 1002]
    assert rejected and rejected[0]["request_name"] == "rejected(1002)"


# --------------------------------------------------------------------------- capture files
def test_reads_real_pcapng():
    records = list(udtdump.read_pcap(PCAPNG))
    assert len(records) > 20
    decoded = [decode(r.payload) for r in records]
    assert all(p.ok for p in decoded)
    assert [p.fields["request_type"] for p in decoded if p.name == "handshake"][:2] == [1, 1]
    assert sum(p.name == "data" for p in decoded) >= 27  # 40 kB / 1456
    assert all(r.src == "127.0.0.1" for r in records)


def test_classic_pcap_round_trip(tmp_path):
    records = [
        CaptureRecord(1.5 + i, "127.0.0.1", 1000 + i, "127.0.0.2", 2000, bytes([i]) * (16 + i)) for i in range(5)
    ]
    path = tmp_path / "x.pcap"
    udtdump.write_pcap(path, records)
    back = list(udtdump.read_pcap(path))
    assert [(r.src, r.sport, r.dst, r.dport, r.payload) for r in back] == [
        (r.src, r.sport, r.dst, r.dport, r.payload) for r in records
    ]
    assert back[1].time == pytest.approx(2.5)


def test_garbage_capture_file_is_refused(tmp_path):
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"not a capture at all")
    with pytest.raises(ValueError):
        list(udtdump.read_pcap(path))
    truncated = tmp_path / "cut.pcapng"
    truncated.write_bytes(PCAPNG.read_bytes()[:3000])
    list(udtdump.read_pcap(truncated))  # reads what is whole, never raises on the cut


# --------------------------------------------------------------------------- Wireshark
def _tshark_udt(pcap: Path, port: int) -> list[dict]:
    proc = subprocess.run(
        [TSHARK, "-r", str(pcap), "-d", f"udp.port=={port},udt", "-T", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [frame["_source"]["layers"] for frame in json.loads(proc.stdout)]


def _as_tshark(p) -> dict[str, str]:
    """What Wireshark's UDT dissector shows for a packet, from our decoding."""
    f = p.fields
    out = {"udt.timestamp": str(f["timestamp"]), "udt.id": f"0x{f['dst_id']:08x}"}
    if p.kind == "data":
        out.update(
            {
                "udt.iscontrol": "0",
                "udt.seqno": str(f["seq"]),
                "udt.msg.first": str(int(f["first"])),
                "udt.msg.last": str(int(f["last"])),
                "udt.msg.order": str(int(f["inorder"])),
                "udt.msgno": str(f["msgno"]),
            }
        )
        return out
    out.update({"udt.iscontrol": "1", "udt.type": f"0x{f['control_type']:08x}"})
    if p.name in ("ack", "light-ack", "ack2"):
        out["udt.ackno"] = str(f["additional_info"])
    else:
        out["udt.addinfo"] = str(f["additional_info"])
    if p.name in ("ack", "light-ack"):
        out["udt.ack_seqno"] = str(f["ack"])
    if p.name == "ack":
        for ours, theirs in (
            ("rtt", "rtt"),
            ("rtt_var", "rttvar"),
            ("avail_buffer", "buf"),
            ("recv_rate", "rate"),
            ("link_capacity", "linkcap"),
        ):
            if ours in f:
                out[f"udt.{theirs}"] = str(f[ours])
    if p.name == "handshake":
        out.update(
            {
                "udt.hs.version": str(f["version"]),
                "udt.hs.type": str(f["socket_type"]),
                "udt.hs.isn": str(f["isn"]),
                "udt.hs.mtu": str(f["mss"]),
                "udt.hs.flow_window": str(f["flight_flag_size"]),
                "udt.hs.reqtype": str(f["request_type"]),
                "udt.hs.id": str(f["socket_id"]),
                "udt.hs.cookie": f"0x{f['cookie']:08x}",
                "udt.hs.peerip": ":".join(f"{b:02x}" for b in bytes.fromhex(f["peer_ip_raw"])),
            }
        )
    return out


def _nak_text(p) -> set[str]:
    # Wireshark's own wording, odd space included
    return {
        f"Missing Sequence Numbers: {a}-{b}" if a != b else f"Missing Sequence Number : {a}"
        for a, b in p.fields["loss"]
    }


def _compare_with_tshark(records: list[CaptureRecord], layers: list[dict]) -> int:
    assert len(layers) == len(records)
    compared = 0
    for record, frame in zip(records, layers):
        packet = decode(record.payload)
        theirs = frame["udt"]
        flat = {k: v for k, v in theirs.items() if k.startswith("udt.") and isinstance(v, str)}
        assert flat == _as_tshark(packet), (packet.summary(), theirs)
        if packet.name == "nak":
            texts = {k for k in theirs if k.startswith("Missing Sequence")}
            assert texts == _nak_text(packet)
        assert "_ws.malformed" not in frame and "_ws.expert" not in json.dumps(flat)
        compared += 1
    return compared


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_fields_match_wireshark_on_fixtures(fixture, tmp_path):
    records = [r for r, _ in udtdump.fixture_records(fixture)]
    pcap = tmp_path / "f.pcap"
    udtdump.write_pcap(pcap, records)
    port = json.loads(fixture.read_text())["endpoints"]["server"][1]
    assert _compare_with_tshark(records, _tshark_udt(pcap, port)) == len(records)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")
def test_fields_match_wireshark_on_real_pcapng():
    records = list(udtdump.read_pcap(PCAPNG))
    port = decode(records[0].payload) and records[0].dport  # the listener's port
    assert _compare_with_tshark(records, _tshark_udt(PCAPNG, port)) == len(records)


# --------------------------------------------------------------------------- robustness
def _check_never_crashes(data: bytes) -> None:
    packet = decode(data)
    assert packet.kind in ("data", "control", "invalid")
    json.dumps(packet.to_dict())
    assert isinstance(packet.summary(), str)
    if len(data) < 16:
        assert not packet.ok


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_never_crash(data):
    _check_never_crashes(data)


_CONTROL_HEADERS = st.sampled_from(
    [0x8000, 0x8001, 0x8002, 0x8003, 0x8004, 0x8005, 0x8006, 0x8007, 0x8008, 0xFFFF, 0x8009, 0x0000]
)


@settings(max_examples=1500, deadline=None)
@given(
    _CONTROL_HEADERS,
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**32 - 1), max_size=16),
    st.integers(0, 3),
)
def test_fuzz_structured_control_packets(ctype, ext, info, cif_words, tail):
    data = struct.pack(">HHIII", ctype, ext, info, 0, 1) + struct.pack(f">{len(cif_words)}I", *cif_words) + bytes(tail)
    _check_never_crashes(data)


_REAL = [bytes.fromhex(e["hex"]) for fx in FIXTURES for e in json.loads(fx.read_text())["datagrams"] if e["len"] <= 64]


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(_REAL), st.integers(0, 63), st.integers(0, 255), st.integers(0, 70))
def test_fuzz_mutated_real_datagrams(datagram, position, value, cut):
    mutated = bytearray(datagram)
    mutated[position % len(mutated)] = value
    _check_never_crashes(bytes(mutated[: max(0, len(mutated) - cut % (len(mutated) + 1))]))


# --------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "udt.tools.udtdump", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_cli_hex_text_and_json():
    ok = _cli("80060000", "00000001", "00000000", "00000007", "00000000")
    assert ok.returncode == 0 and ok.stdout.startswith("UDT ack2 ack_seq=1")
    as_json = _cli("--json", "80020000 00000000 00000000 00000007 746971e9")
    obj = json.loads(as_json.stdout)
    assert obj["name"] == "light-ack" and obj["fields"]["ack"] == 0x746971E9
    bad = _cli("8001")
    assert bad.returncode == 1 and "truncated header" in bad.stdout
    nonsense = _cli("zzz")
    assert nonsense.returncode == 2 and "not hex" in nonsense.stderr


def test_cli_files():
    fixture = _cli(str(DATA / "cs_stream_nak.json"))
    assert fixture.returncode == 0
    lines = fixture.stdout.splitlines()
    assert len(lines) == len(load("cs_stream_nak")["datagrams"])
    assert sum("dropped by the capture relay" in line for line in lines) == 4
    assert " > " in lines[0] and "handshake" in lines[0]
    capture = _cli("--json", str(PCAPNG))
    objs = [json.loads(line) for line in capture.stdout.splitlines()]
    assert capture.returncode == 0 and objs and all(o["errors"] == [] for o in objs)
    assert objs[0]["src"].startswith("127.0.0.1:")
    other_port = _cli("--port", "1", str(PCAPNG))
    assert other_port.returncode == 0 and other_port.stdout == ""


def test_split_gso_buffers_captured_on_loopback():
    """A UDP_SEGMENT send shows up on "lo" as one buffer of back-to-back UDT data packets."""

    def data(seq: int, payload: int) -> bytes:
        return struct.pack(">IIII", seq, 0x40000001 if seq else 0x80000001, 10, 0x1234) + bytes([seq & 0xFF]) * payload

    segments = [data(0x7FFFFFFE + k & 0x7FFFFFFF, 1456) for k in range(3)] + [data(1, 100)]
    joined = b"".join(segments)
    assert udtdump.split_gso(joined) == segments  # also across the 31-bit wrap
    single = data(5, 1456)
    assert udtdump.split_gso(single) == [single]
    keepalive = words("80010000 00000000 00000000 00000007 00000000")
    assert udtdump.split_gso(keepalive) == [keepalive]
    assert udtdump.split_gso(keepalive * 2) == [keepalive, keepalive]
    nak = words("80030000 00000000 00000000 00000007 80000005 00000009")
    assert udtdump.split_gso(nak) == [nak]  # valid as a whole: never split
    # a payload that merely contains the next sequence number is not split
    lookalike = struct.pack(">IIII", 9, 0xC0000001, 0, 7) + struct.pack(">I", 10) + bytes(40)
    assert udtdump.split_gso(lookalike) == [lookalike]
    ack2s = words(
        "80060000 00000001 00000000 0737cbf6 00000000 80060000 00000002 00000000 0737cbf6 00000000"
        "80060000 00000003 00000000 0737cbf6 00000000"
    )  # captured from udt: three ACK2 in one send
    assert [decode(p).fields["ack_seq"] for p in udtdump.split_gso(ack2s)] == [1, 2, 3]
    mixed_dst = ack2s[:20] + words("80060000 00000002 00000000 00000009 00000000")
    assert udtdump.split_gso(mixed_dst) == [mixed_dst]
    records = list(udtdump.split_gso_records(iter([CaptureRecord(1.0, "127.0.0.1", 1, "127.0.0.1", 2, joined)])))
    assert [r.gso_segment for r in records] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert all(decode(r.payload).ok for r in records)
