"""An emulated WAN path between network namespaces that any IP traffic crosses (TCP included).

Per direction: a rate limit with a drop-tail queue (ms at the rate, or packets), one-way delay,
jitter, seeded random and Gilbert–Elliott loss and a rate schedule; a compiled forwarder
(:mod:`udt.tools.wan._link`) moves packets between two TUN devices.  See docs/tools.md::

    from udt.tools.wan import WanLink, LinkSpec
    with WanLink(forward=LinkSpec(rate="200Mbit", delay_ms=50, loss=0.01, seed=1)) as wan:
        wan.popen_right(["iperf3", "-s"])
        wan.run_left(["iperf3", "-c", wan.right_addr, "-t", "5"])
        print(wan.counters()["forward"]["random_drops"])
"""

from udt.tools.wan.link import WanLink, WanUnavailable
from udt.tools.wan.spec import GilbertElliott, LinkSpec

__all__ = ["GilbertElliott", "LinkSpec", "WanLink", "WanUnavailable"]
