"""Multicast across a veth pair between two network namespaces (IPv6 multicast does not work on
``lo``, and loopback-off or TTL can only be observed across a real link).

Namespace ``a`` (fd00:1::1 and fd00:1::3, 10.1.0.1) and ``b`` (fd00:1::2, 10.1.0.2) are joined
by ``veth0``–``veth0``.  The peers are small Python programs that import udt.dgram, run inside
the namespaces with ``ip netns exec``.  Negative cases are checked by order, not by waiting: the
datagram that must be filtered is sent first, and the receiver's first datagram must be the one
sent after it (a veth link delivers in order).
"""

from __future__ import annotations

import json

import pytest

from netns import Topology, require_netns

pytestmark = pytest.mark.netns

PORT = 45000  # namespaces are private: a fixed port cannot collide
WAIT = 10.0

RECEIVER = r"""
import json, sys
from udt import dgram
config = json.loads(sys.argv[1])
with dgram.create_socket(config["type"], reuse_addr=True) as sock:
    sock.bind(config["port"], config["bind"])
    if config.get("source"):
        membership = sock.add_source_specific_membership(config["source"], config["group"],
                                                         config["interface"])
    else:
        membership = sock.add_membership(config["group"], config["interface"])
    print(json.dumps({"ready": sock.address().port}), flush=True)
    received = []
    try:
        while len(received) < config["count"]:
            data, rinfo = sock.recvfrom(config["timeout"])
            received.append([data.decode(), rinfo.address, rinfo.family])
    except TimeoutError:
        pass
print(json.dumps(received), flush=True)
"""

SENDER = r"""
import json, sys
from udt import dgram
config = json.loads(sys.argv[1])
for item in config["sends"]:
    with dgram.create_socket(config["type"]) as sock:
        sock.bind(0, item["source"])
        sock.set_multicast_interface(item.get("interface", config["interface"]))
        sock.set_multicast_ttl(item.get("ttl", 1))
        sock.set_multicast_loopback(item.get("loopback", True))
        sock.send(item["payload"].encode(), config["port"], config["group"])
"""

LOOPBACK = r"""
import json, sys
from udt import dgram
config = json.loads(sys.argv[1])
port, group, interface = config["port"], config["group"], config["interface"]
result = {}
with dgram.create_socket("udp6", reuse_addr=True) as local, dgram.create_socket("udp6") as sender:
    local.bind(port, "::")
    local.add_membership(group, interface)
    sender.bind(0, config["source"])
    sender.set_multicast_interface(interface)
    sender.set_multicast_ttl(1)
    sender.set_multicast_loopback(False)
    sender.send(b"loop-off", port, group)
    sender.send(b"marker", port, "::1")          # unicast to the local member, after it
    result["off"] = local.recvfrom(10.0)[0].decode()
    assert sender.set_multicast_loopback(True) is True
    sender.send(b"loop-on", port, group)
    result["on"] = local.recvfrom(10.0)[0].decode()
print(json.dumps(result), flush=True)
"""


@pytest.fixture
def hosts():
    """Namespaces a and b joined by a veth pair with IPv4 and IPv6 addresses."""
    require_netns()
    with Topology() as net:
        a, b = net.namespace("mc-a"), net.namespace("mc-b")
        link = net.veth(a, b, ipv4=("10.1.0.1/24", "10.1.0.2/24"), ipv6=("fd00:1::1/64", "fd00:1::2/64"))
        a.ip("-6", "addr", "add", "fd00:1::3/64", "dev", link.left_name, "nodad")
        yield a, b, link


def start_receiver(namespace, **config):
    """Start a receiver in *namespace*; returns (process, port) once it has joined."""
    config.setdefault("port", PORT)
    config.setdefault("timeout", WAIT)
    process = namespace.python_popen(RECEIVER, json.dumps(config))
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"receiver failed to start:\n{process.communicate()[1]}")
    return process, json.loads(line)["ready"]


def finish(process, timeout: float = 3 * WAIT) -> list:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def send_from(namespace, type_: str, group: str, interface, sends: list[dict]) -> None:
    namespace.python(
        SENDER, json.dumps({"type": type_, "group": group, "port": PORT, "interface": interface, "sends": sends})
    )


@pytest.mark.parametrize("interface", ["veth0", "fd00:1::2", "::%veth0"])
def test_ipv6_any_source_across_veth(hosts, interface):
    a, b, link = hosts
    receiver, _ = start_receiver(b, type="udp6", bind="::", group="ff15::1234", interface=interface, count=1)
    send_from(a, "udp6", "ff15::1234", "veth0", [{"source": link.left_ipv6, "payload": "hello ff15"}])
    assert finish(receiver) == [["hello ff15", "fd00:1::1", "IPv6"]]


def test_ipv6_source_specific_across_veth(hosts):
    a, b, link = hosts
    receiver, _ = start_receiver(
        b, type="udp6", bind="::", group="ff3e::8000:1", source="fd00:1::1", interface="veth0", count=1
    )
    send_from(
        a,
        "udp6",
        "ff3e::8000:1",
        "veth0",
        [{"source": "fd00:1::3", "payload": "wrong source"}, {"source": "fd00:1::1", "payload": "right source"}],
    )
    assert finish(receiver) == [["right source", "fd00:1::1", "IPv6"]]


def test_ipv6_block_source_across_veth(hosts):
    a, b, link = hosts
    code = RECEIVER.replace(
        '    print(json.dumps({"ready"', "    membership.block('fd00:1::3')\n    print(json.dumps({\"ready\""
    )
    process = b.python_popen(
        code,
        json.dumps(
            {
                "type": "udp6",
                "bind": "::",
                "group": "ff15::77",
                "interface": "veth0",
                "count": 1,
                "port": PORT,
                "timeout": WAIT,
            }
        ),
    )
    assert process.stdout.readline()
    send_from(
        a,
        "udp6",
        "ff15::77",
        "veth0",
        [{"source": "fd00:1::3", "payload": "blocked"}, {"source": "fd00:1::1", "payload": "allowed"}],
    )
    assert finish(process) == [["allowed", "fd00:1::1", "IPv6"]]


def test_ipv6_loopback_off_across_veth(hosts):
    a, b, link = hosts
    remote, _ = start_receiver(b, type="udp6", bind="::", group="ff15::99", interface="veth0", count=2)
    result = a.python(
        LOOPBACK, json.dumps({"port": PORT, "group": "ff15::99", "interface": "veth0", "source": "fd00:1::1"})
    )
    local = json.loads(result.stdout.strip().splitlines()[-1])
    # Loopback off: the member on the sending host got the later marker, not the group datagram;
    # loopback on: it got the group datagram.  The other host got both over the veth.
    assert local == {"off": "marker", "on": "loop-on"}
    assert [item[0] for item in finish(remote)] == ["loop-off", "loop-on"]


TTL_RECEIVER = r"""
import json, socket, sys
from udt import _mcast
config = json.loads(sys.argv[1])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:   # reads the TTL of each datagram
    plain.bind(("0.0.0.0", config["port"]))
    plain.settimeout(config["timeout"])
    plain.setsockopt(socket.IPPROTO_IP, _mcast.IP_RECVTTL, 1)
    plain.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton(config["group"]) + socket.inet_aton(config["interface"]))
    print(json.dumps({"ready": config["port"]}), flush=True)
    received = []
    for _ in range(config["count"]):
        data, ancillary, _, _ = plain.recvmsg(100, socket.CMSG_SPACE(4))
        ttls = [int.from_bytes(value[:4], sys.byteorder) for level, kind, value in ancillary
                if level == socket.IPPROTO_IP and kind == _mcast.IP_TTL]
        received.append([data.decode(), ttls])
print(json.dumps(received), flush=True)
"""


def test_ipv4_multicast_ttl_across_veth(hosts):
    """The hop limit set with set_multicast_ttl is the one the other host sees.  (This kernel
    sends even TTL 0 out of the interface, so "TTL 0 stays home" is not asserted.)"""
    a, b, link = hosts
    process = b.python_popen(
        TTL_RECEIVER,
        json.dumps({"port": PORT, "timeout": WAIT, "group": "239.1.2.3", "interface": "10.1.0.2", "count": 2}),
    )
    assert process.stdout.readline()
    send_from(
        a,
        "udp4",
        "239.1.2.3",
        "10.1.0.1",
        [{"source": "10.1.0.1", "payload": "ttl 1", "ttl": 1}, {"source": "10.1.0.1", "payload": "ttl 7", "ttl": 7}],
    )
    assert finish(process) == [["ttl 1", [1]], ["ttl 7", [7]]]


def test_ipv4_source_specific_across_veth(hosts):
    a, b, link = hosts
    a.ip("addr", "add", "10.1.0.3/24", "dev", link.left_name)
    receiver, _ = start_receiver(
        b, type="udp4", bind="0.0.0.0", group="232.9.9.9", source="10.1.0.1", interface="10.1.0.2", count=1
    )
    send_from(
        a,
        "udp4",
        "232.9.9.9",
        "10.1.0.1",
        [{"source": "10.1.0.3", "payload": "wrong"}, {"source": "10.1.0.1", "payload": "right"}],
    )
    assert finish(receiver) == [["right", "10.1.0.1", "IPv4"]]
