"""IPv4 multicast and broadcast through udt.dgram on ``lo`` (see docs/testing.md, multicast).

Every sender pins its interface to 127.0.0.1 and uses TTL 0 or 1, so nothing leaves the host.
"Not delivered" is checked without sleeping: after the datagram that must be filtered, a
unicast *marker* goes to the same port; loopback delivers in order, so the receiver's next
datagram is the marker exactly when the filtered one was dropped.
"""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from udt import _mcast, dgram

WAIT = 5.0
GROUP = "239.255.42.1"
OTHER_GROUP = "239.255.42.2"
SSM_GROUP = "232.1.2.3"
MARKER = b"marker"


@pytest.fixture
def make_sender():
    """Senders bound to a given loopback source, multicast pinned to lo, TTL 1."""
    made = []

    def make(source: str = "127.0.0.1", ttl: int = 1) -> dgram.Socket:
        sender = dgram.create_socket("udp4")
        made.append(sender)
        sender.bind(0, source)
        sender.set_multicast_interface("127.0.0.1")
        sender.set_multicast_ttl(ttl)
        return sender

    yield make
    for sender in made:
        sender.close()


@pytest.fixture
def receiver():
    with dgram.create_socket("udp4", reuse_addr=True) as sock:
        sock.bind(0, "0.0.0.0")
        yield sock


def next_data(sock: dgram.Socket) -> bytes:
    return sock.recvfrom(WAIT)[0]


def send_marker(sock: dgram.Socket) -> None:
    with dgram.create_socket("udp4") as marker:
        marker.send(MARKER, sock.address().port, "127.0.0.1")


# ---- membership and delivery ---------------------------------------------------------------------
def test_any_source_join_receives(receiver, make_sender):
    membership = receiver.add_membership(GROUP, "127.0.0.1")
    assert (membership.group, membership.interface, membership.source) == (GROUP, "127.0.0.1", None)
    assert membership.valid and membership.socket is receiver
    sender = make_sender(ttl=0)
    assert sender.send(b"to the group", receiver.address().port, GROUP) == 12
    data, rinfo = receiver.recvfrom(WAIT)
    assert data == b"to the group" and rinfo.address == "127.0.0.1"
    assert rinfo.port == sender.address().port


@pytest.mark.parametrize("interface", ["lo", 1])
def test_join_by_interface_name_or_index(receiver, make_sender, interface):
    index = _mcast.interface_index("lo")
    membership = receiver.add_membership(GROUP, interface if interface == "lo" else index)
    make_sender().send(b"by index", receiver.address().port, GROUP)
    assert next_data(receiver) == b"by index"
    membership.drop()


def test_two_receivers_on_one_port(make_sender):
    with dgram.create_socket("udp4", reuse_addr=True) as first, dgram.create_socket("udp4", reuse_addr=True) as second:
        first.bind(0, "0.0.0.0")
        second.bind(first.address().port, "0.0.0.0")
        first.add_membership(GROUP, "127.0.0.1")
        second.add_membership(GROUP, "127.0.0.1")
        make_sender().send(b"both", first.address().port, GROUP)
        assert next_data(first) == b"both"
        assert next_data(second) == b"both"


def test_drop_stops_delivery(receiver, make_sender):
    membership = receiver.add_membership(GROUP, "127.0.0.1")
    sender = make_sender()
    port = receiver.address().port
    sender.send(b"joined", port, GROUP)
    assert next_data(receiver) == b"joined"
    receiver.drop_membership(GROUP, "127.0.0.1")
    assert not membership.valid
    sender.send(b"after drop", port, GROUP)
    send_marker(receiver)
    assert next_data(receiver) == MARKER


def test_membership_drop_method(receiver, make_sender):
    membership = receiver.add_membership(GROUP, "127.0.0.1")
    membership.drop()
    assert not membership.valid and receiver.memberships() == []
    membership.drop()  # no effect, as in Java
    make_sender().send(b"after drop", receiver.address().port, GROUP)
    send_marker(receiver)
    assert next_data(receiver) == MARKER


@pytest.mark.parametrize("interface", ["127.0.0.1", "lo"])
def test_source_specific_right_and_wrong_source(receiver, make_sender, interface):
    membership = receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, interface)
    assert membership.source == "127.0.0.1" and membership.group == SSM_GROUP
    port = receiver.address().port
    make_sender("127.0.0.2").send(b"wrong source", port, SSM_GROUP)
    make_sender("127.0.0.1").send(b"right source", port, SSM_GROUP)
    data, rinfo = receiver.recvfrom(WAIT)
    assert (data, rinfo.address) == (b"right source", "127.0.0.1")
    receiver.drop_source_specific_membership("127.0.0.1", SSM_GROUP, interface)
    assert not membership.valid
    make_sender("127.0.0.1").send(b"after drop", port, SSM_GROUP)
    send_marker(receiver)
    assert next_data(receiver) == MARKER


def test_two_sources_of_one_group(receiver, make_sender):
    one = receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, "127.0.0.1")
    two = receiver.add_source_specific_membership("127.0.0.2", SSM_GROUP, "127.0.0.1")
    assert one is not two
    port = receiver.address().port
    make_sender("127.0.0.2").send(b"from two", port, SSM_GROUP)
    assert next_data(receiver) == b"from two"
    two.drop()
    assert one.valid
    make_sender("127.0.0.2").send(b"two dropped", port, SSM_GROUP)
    make_sender("127.0.0.1").send(b"from one", port, SSM_GROUP)
    assert next_data(receiver) == b"from one"


@pytest.mark.parametrize("interface", ["127.0.0.1", "lo"])
def test_block_and_unblock(receiver, make_sender, interface):
    membership = receiver.add_membership(GROUP, interface)
    port = receiver.address().port
    assert membership.block("127.0.0.2") is membership
    assert membership.blocked_sources == {"127.0.0.2"}
    make_sender("127.0.0.2").send(b"blocked", port, GROUP)
    make_sender("127.0.0.1").send(b"allowed", port, GROUP)
    assert next_data(receiver) == b"allowed"
    membership.block("127.0.0.2")  # already blocked: no effect
    assert membership.unblock("127.0.0.2") is membership
    make_sender("127.0.0.2").send(b"unblocked", port, GROUP)
    assert next_data(receiver) == b"unblocked"


def test_multicast_ttl_is_seen_on_the_wire(make_sender):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind(("0.0.0.0", 0))
        plain.settimeout(WAIT)
        plain.setsockopt(socket.IPPROTO_IP, _mcast.IP_RECVTTL, 1)
        plain.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
        )
        for ttl in (0, 1, 3):
            sender = make_sender(ttl=ttl)
            assert sender.getsockopt(socket.IPPROTO_IP, _mcast.IP_MULTICAST_TTL) == ttl
            sender.send(b"ttl", plain.getsockname()[1], GROUP)
            data, ancillary, _, _ = plain.recvmsg(100, socket.CMSG_SPACE(4))
            ttls = [
                int.from_bytes(value[:4], sys.byteorder)
                for level, kind, value in ancillary
                if level == socket.IPPROTO_IP and kind == _mcast.IP_TTL
            ]
            assert (data, ttls) == (b"ttl", [ttl])


def test_multicast_loopback_option_is_set(make_sender):
    sender = make_sender()
    assert sender.set_multicast_loopback(False) is False
    assert sender.getsockopt(socket.IPPROTO_IP, _mcast.IP_MULTICAST_LOOP) == 0
    assert sender.set_multicast_loopback(True) is True
    assert sender.getsockopt(socket.IPPROTO_IP, _mcast.IP_MULTICAST_LOOP) == 1


@pytest.mark.parametrize("multicast_all", [True, False])
def test_ip_multicast_all(make_sender, multicast_all):
    """A wildcard socket on port P that never joined receives group traffic for P when another
    socket joined, unless IP_MULTICAST_ALL is off."""
    with (
        dgram.create_socket("udp4", reuse_addr=True) as bystander,
        dgram.create_socket("udp4", reuse_addr=True) as member,
    ):
        bystander.bind(0, "0.0.0.0")
        port = bystander.address().port
        member.bind(port, GROUP)  # bound to the group: unicast markers skip it
        member.add_membership(GROUP, "127.0.0.1")
        if not multicast_all:
            assert bystander.set_multicast_all(False) is False
        make_sender().send(b"group", port, GROUP)
        assert next_data(member) == b"group"
        send_marker(bystander)
        assert next_data(bystander) == (b"group" if multicast_all else MARKER)


# ---- Membership rules (Java's MembershipKey) ---------------------------------------------------
def test_joining_twice_returns_the_same_membership(receiver):
    first = receiver.add_membership(GROUP, "127.0.0.1")
    assert receiver.add_membership(GROUP, "127.0.0.1") is first
    ssm = receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, "127.0.0.1")
    assert receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, "127.0.0.1") is ssm
    assert set(receiver.memberships()) == {first, ssm}
    first.drop()
    again = receiver.add_membership(GROUP, "127.0.0.1")
    assert again is not first and again.valid and not first.valid


def test_same_group_twice_on_one_interface_is_the_kernels_error(receiver):
    receiver.add_membership(GROUP, "127.0.0.1")
    with pytest.raises(OSError) as raised:
        receiver.add_membership(GROUP, "lo")  # same interface, other spelling
    assert raised.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize(
    "group,source,interface",
    [
        ("127.0.0.1", None, None),  # not multicast
        ("ff15::1", None, None),  # IPv6 group on an IPv4 socket
        (GROUP, "0.0.0.0", None),  # wildcard source
        (GROUP, "239.1.1.1", None),  # multicast source
        (GROUP, "::1", None),  # mixed families
        (GROUP, None, "::1"),  # IPv6 interface on an IPv4 socket
        ("not-an-address", None, None),
    ],
)
def test_invalid_join_arguments_raise_value_error(receiver, group, source, interface):
    with pytest.raises(ValueError):
        if source is None:
            receiver.add_membership(group, interface)
        else:
            receiver.add_source_specific_membership(source, group, interface)
    assert receiver.memberships() == []


def test_ipv6_socket_refuses_ipv4_groups():
    with dgram.create_socket("udp6") as six:
        with pytest.raises(ValueError):
            six.add_membership(GROUP)
        with pytest.raises(ValueError):
            six.add_source_specific_membership("127.0.0.1", "ff35::1")


def test_any_source_and_source_specific_of_one_group_conflict(receiver):
    receiver.add_membership(SSM_GROUP, "127.0.0.1")
    with pytest.raises(dgram.MembershipStateError):
        receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, "127.0.0.1")
    receiver.drop_membership(SSM_GROUP, "127.0.0.1")
    receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, "127.0.0.1")
    with pytest.raises(dgram.MembershipStateError):
        receiver.add_membership(SSM_GROUP, "127.0.0.1")


def test_block_rules(receiver):
    ssm = receiver.add_source_specific_membership("127.0.0.1", SSM_GROUP, "127.0.0.1")
    with pytest.raises(dgram.MembershipStateError) as raised:
        ssm.block("127.0.0.2")
    assert raised.value.errno == errno.EINVAL
    asm = receiver.add_membership(GROUP, "127.0.0.1")
    with pytest.raises(dgram.MembershipStateError):
        asm.unblock("127.0.0.2")  # not blocked
    for bad in ("0.0.0.0", "239.0.0.9", "::1"):
        with pytest.raises(ValueError):
            asm.block(bad)


def test_dropped_membership_is_invalid_for_ever(receiver):
    membership = receiver.add_membership(GROUP, "127.0.0.1")
    membership.drop()
    for call in (lambda: membership.block("127.0.0.2"), lambda: membership.unblock("127.0.0.2")):
        with pytest.raises(dgram.InvalidMembershipError):
            call()
    receiver.add_membership(GROUP, "127.0.0.1")
    assert not membership.valid


def test_close_invalidates_every_membership():
    with dgram.create_socket("udp4") as sock:
        sock.bind(0, "0.0.0.0")
        memberships = [
            sock.add_membership(GROUP, "127.0.0.1"),
            sock.add_membership(OTHER_GROUP, "127.0.0.1"),
            sock.add_source_specific_membership("127.0.0.1", SSM_GROUP, "lo"),
        ]
    assert not any(membership.valid for membership in memberships)
    with pytest.raises(dgram.InvalidMembershipError):
        memberships[0].block("127.0.0.2")
    memberships[1].drop()  # no effect


def test_drop_without_membership_is_the_kernels_error(receiver):
    for call in (
        lambda: receiver.drop_membership(GROUP, "127.0.0.1"),
        lambda: receiver.drop_source_specific_membership("127.0.0.1", SSM_GROUP),
    ):
        with pytest.raises(OSError) as raised:
            call()
        assert raised.value.errno == errno.EADDRNOTAVAIL


def test_join_works_before_bind():
    with dgram.create_socket("udp4") as sock:
        membership = sock.add_membership(GROUP, "127.0.0.1")
        assert membership.valid


def test_set_multicast_interface_errors():
    with dgram.create_socket("udp4") as sock:
        with pytest.raises(OSError) as raised:
            sock.set_multicast_interface("10.255.255.254")  # no such local address
        assert raised.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(OSError) as raised:
            sock.set_multicast_interface("no-such-if0")
        assert raised.value.errno == errno.ENODEV
        with pytest.raises(ValueError):
            sock.set_multicast_interface("::1")
        sock.set_multicast_interface(None)  # back to the kernel's choice
        sock.set_multicast_interface("lo")


# ---- broadcast ---------------------------------------------------------------------------------
def test_broadcast_needs_set_broadcast(receiver):
    port = receiver.address().port
    with dgram.create_socket("udp4") as sender:
        sender.bind(0, "127.0.0.1")
        for address in ("127.255.255.255", "255.255.255.255"):
            with pytest.raises(PermissionError) as raised:
                sender.send(b"refused", port, address)
            assert raised.value.errno == errno.EACCES
        sender.set_broadcast(True)
        assert sender.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        sender.send(b"subnet broadcast", port, "127.255.255.255")
        assert next_data(receiver) == b"subnet broadcast"
        sender.set_broadcast(False)
        with pytest.raises(PermissionError):
            sender.send(b"refused again", port, "127.255.255.255")


def test_limited_broadcast_pinned_to_lo(receiver):
    with dgram.create_socket("udp4") as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")  # stay on lo
        with pytest.raises(PermissionError):
            sender.send(b"refused", receiver.address().port, "255.255.255.255")
        sender.set_broadcast(True)
        sender.send(b"limited broadcast", receiver.address().port, "255.255.255.255")
        assert next_data(receiver) == b"limited broadcast"
