"""Two hosts, each behind its own NAT, joined by an "internet" namespace (for rendezvous tests).

::

    host_a 10.0.1.2 ── 10.0.1.1 nat_a 198.51.100.1 ──┐
                                                     internet (198.51.100.254, 203.0.113.254)
    host_b 10.0.2.2 ── 10.0.2.1 nat_b 203.0.113.1 ───┘

Each NAT forwards and masquerades what leaves its public side (``wan``) with one nftables rule,
chosen by :class:`Mapping`; its input and forward chains drop new flows arriving on ``wan``, as
a home router's firewall does (why this matters for port preservation: docs/testing.md, "NAT").  The
hosts know nothing of each other's private addresses: each can reach only the other NAT's public
address, which is what a rendezvous peer is told.

Built on :class:`netns.Topology` (names ``nat-<pid>-<n>-<label>``), so leaving the ``with`` block
removes every namespace and kills what runs inside.
"""

from __future__ import annotations

import enum
import shutil
from dataclasses import dataclass

import pytest

from netns import Namespace, Topology, require_netns


class Mapping(enum.Enum):
    """How a NAT maps a private (address, port) to a public one: the nft masquerade flavour."""

    #: ``masquerade``: the source port is kept while it is free, and the same public port serves
    #: every destination (endpoint-independent mapping) — rendezvous can work through it.
    PORT_PRESERVING = "masquerade"
    #: ``masquerade fully-random``: a random public port for every new flow, i.e. for every
    #: destination (a symmetric NAT) — the peer's guess of our public port is always wrong.
    SYMMETRIC = "masquerade fully-random"


PRIVATE_A, NAT_A_INSIDE, PUBLIC_A = "10.0.1.2", "10.0.1.1", "198.51.100.1"
PRIVATE_B, NAT_B_INSIDE, PUBLIC_B = "10.0.2.2", "10.0.2.1", "203.0.113.1"
INTERNET_A_SIDE, INTERNET_B_SIDE = "198.51.100.254", "203.0.113.254"


def nft_unavailable_reason() -> str | None:
    """None when ``nft`` is installed, else why the NAT tests skip."""
    return None if shutil.which("nft") else "nft (Debian nftables) not installed"


def require_nat() -> None:
    """Skip unless namespaces can be made and ``nft`` is there."""
    require_netns()
    reason = nft_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def nat_ruleset(mapping: Mapping, *, drop_unsolicited: bool = True) -> str:
    """The nftables ruleset of one NAT namespace: masquerade out of ``wan`` and (unless told
    otherwise) drop unsolicited inbound, so an unanswered packet never gets a conntrack entry
    that would take our port."""
    nat = f"""
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {mapping.value}
    }}
}}
"""
    firewall = """
table ip firewall {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "wan" ct state new drop
    }
}
"""
    return nat + firewall if drop_unsolicited else nat


@dataclass
class NatPair:
    """The built network: the two hosts, their NATs and the internet between."""

    host_a: Namespace
    host_b: Namespace
    nat_a: Namespace
    nat_b: Namespace
    internet: Namespace
    public_a: str = PUBLIC_A
    public_b: str = PUBLIC_B

    def conntrack(self, nat: Namespace) -> str:
        """The NAT's mappings as the kernel lists them (``/proc/net/nf_conntrack``)."""
        return nat.run(["cat", "/proc/net/nf_conntrack"], check=False).stdout

    def public_port(self, nat: Namespace, private: str, port: int) -> int | None:
        """The public port *nat* gave the UDP flow from *private*:*port* (None: no such flow).
        A conntrack line holds the original tuple, then the reply tuple, whose ``dport`` is the
        port the outside world sees."""
        for line in self.conntrack(nat).splitlines():
            words = line.split()
            if "udp" not in words or f"src={private}" not in words or f"sport={port}" not in words:
                continue
            dports = [word.split("=", 1)[1] for word in words if word.startswith("dport=")]
            return int(dports[1])
        return None


def build_nat_pair(
    topology: Topology, mapping_a: Mapping, mapping_b: Mapping, *, drop_unsolicited: bool = True
) -> NatPair:
    """Build the two-NAT network inside *topology* (its namespaces are removed with it);
    *drop_unsolicited* False leaves the NATs without their firewall rule."""
    host_a, nat_a = topology.namespace("host-a"), topology.namespace("nat-a")
    host_b, nat_b = topology.namespace("host-b"), topology.namespace("nat-b")
    internet = topology.namespace("internet")
    topology.veth(host_a, nat_a, ipv4=(f"{PRIVATE_A}/24", f"{NAT_A_INSIDE}/24"), left_name="eth0", right_name="lan")
    topology.veth(host_b, nat_b, ipv4=(f"{PRIVATE_B}/24", f"{NAT_B_INSIDE}/24"), left_name="eth0", right_name="lan")
    topology.veth(nat_a, internet, ipv4=(f"{PUBLIC_A}/24", f"{INTERNET_A_SIDE}/24"), left_name="wan", right_name="to-a")
    topology.veth(nat_b, internet, ipv4=(f"{PUBLIC_B}/24", f"{INTERNET_B_SIDE}/24"), left_name="wan", right_name="to-b")
    host_a.ip("route", "add", "default", "via", NAT_A_INSIDE)
    host_b.ip("route", "add", "default", "via", NAT_B_INSIDE)
    nat_a.ip("route", "add", "default", "via", INTERNET_A_SIDE)
    nat_b.ip("route", "add", "default", "via", INTERNET_B_SIDE)
    for router in (nat_a, nat_b, internet):
        router.sysctl("net.ipv4.ip_forward", 1)
    nat_a.run(["nft", "-f", "-"], input=nat_ruleset(mapping_a, drop_unsolicited=drop_unsolicited))
    nat_b.run(["nft", "-f", "-"], input=nat_ruleset(mapping_b, drop_unsolicited=drop_unsolicited))
    return NatPair(host_a, host_b, nat_a, nat_b, internet)
