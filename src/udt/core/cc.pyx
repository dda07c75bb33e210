# cython: language_level=3
# Native congestion control: UDT's DAIMD ("CUDTCC", protocol.md §7), without UDT4's ceil() of the
# period and its inverted cwnd/(RTT+RC) slow-start exit formula.  Its own unit: the engine only
# reaches it through the CCOps table (native_cc_ops()), an indirect call either way.
#
# Two deliberate deviations.  First, a loss epoch (a x1.125 decrease) begins at most once per RC
# interval: UDT4 starts one whenever a NAK names a packet sent after the last decrease, i.e. once
# per round trip, which on a path with RTT << 10 ms outnumbers the increases (one per 10 ms) and
# lets random loss pin the rate (through the relay, 5 % loss: 4.0 -> 5.3 MB/s, a 200 Mbit/s
# bottleneck: 18.9 -> 22.8 MB/s with 40 % fewer drops).  NAKs inside it count in that epoch.
# Second, a loss report or a timeout that comes before the first full ACK does
# not end slow start.  Nothing about the path is known then (no RTT sample, no receive rate), and
# the usual cause is a peer that was not ready: a UDT4 rendezvous peer drops the data that reaches
# it before its own handshake completes.  Leaving slow start there would pace at 16 packets per
# the 100 ms RTT guess and crawl for seconds.  The window still caps what is in flight at 16.

from libc.math cimport ceil, log10, pow
from libc.stdint cimport int32_t, int64_t, uint32_t
from udt.core.ccapi cimport CCOps, CCState
from udt.core.seq cimport SEQ_MAX, seq_cmp, seq_off
from udt.core.siphash cimport splitmix64

cdef enum:
    RC_INTERVAL_US = 10000       # rate control interval = SYN


cdef inline double _cc_rate_period(CCState* cc) noexcept nogil:
    """Packet period matching the peer's receive rate, or the window over RTT+RC."""
    if cc.rcv_rate > 0:
        return 1e6 / <double>cc.rcv_rate
    if cc.cwnd > 0:
        return <double>(cc.rtt_us + RC_INTERVAL_US) / cc.cwnd
    return 1.0


cdef void native_cc_init(CCState* cc, int64_t now) noexcept nogil:
    cc.cwnd = 16.0
    cc.period_us = 1.0
    cc.slow_start = True
    cc.heard_ack = False
    cc.loss_since_increase = False
    cc.last_ack = cc.snd_curr_seq + 1 if cc.snd_curr_seq < SEQ_MAX else 0
    cc.last_dec_seq = cc.snd_curr_seq
    cc.last_dec_time = 0            # the first loss after the first ACK begins an epoch at once
    cc.last_dec_period = 1.0
    cc.avg_nak = 1
    cc.nak_count = 1
    cc.dec_count = 1
    cc.dec_random = 1
    cc.last_rc_time = now


cdef void native_cc_on_ack(CCState* cc, int32_t ack, int64_t now) noexcept nogil:
    cdef double b, inc, bandwidth
    cc.heard_ack = True
    if now - cc.last_rc_time < RC_INTERVAL_US:
        return
    cc.last_rc_time = now
    if cc.slow_start:
        if seq_cmp(ack, cc.last_ack) > 0:
            cc.cwnd += <double>seq_off(cc.last_ack, ack)
        cc.last_ack = ack
        if cc.cwnd > cc.max_cwnd:
            cc.slow_start = False
            cc.period_us = _cc_rate_period(cc)
        else:
            return
    else:
        cc.last_ack = ack
        cc.cwnd = <double>cc.rcv_rate * <double>(cc.rtt_us + RC_INTERVAL_US) / 1e6 + 16.0
    if cc.loss_since_increase:
        cc.loss_since_increase = False
        return
    bandwidth = <double>cc.bandwidth
    b = bandwidth - 1e6 / cc.period_us
    if cc.period_us > cc.last_dec_period and bandwidth / 9.0 < b:
        b = bandwidth / 9.0
    if b <= 0:
        inc = 0.01
    else:
        inc = pow(10.0, ceil(log10(b * cc.mss * 8.0))) * 0.0000015 / cc.mss
        if inc < 0.01:
            inc = 0.01
    cc.period_us = (cc.period_us * RC_INTERVAL_US) / (cc.period_us * inc + RC_INTERVAL_US)


cdef void native_cc_on_loss(CCState* cc, const int32_t* loss, int count, int64_t now) noexcept nogil:
    cdef int32_t first_lost
    if count <= 0 or not cc.heard_ack:
        return
    if cc.slow_start:
        cc.slow_start = False
        if cc.rcv_rate > 0:
            cc.period_us = 1e6 / <double>cc.rcv_rate
            return
        cc.period_us = _cc_rate_period(cc)
    cc.loss_since_increase = True
    first_lost = <int32_t>(<uint32_t>loss[0] & SEQ_MAX)
    if seq_cmp(first_lost, cc.last_dec_seq) > 0 and now - cc.last_dec_time >= RC_INTERVAL_US:
        cc.last_dec_time = now
        cc.last_dec_period = cc.period_us
        cc.period_us *= 1.125
        cc.avg_nak = <int>ceil(cc.avg_nak * 0.875 + cc.nak_count * 0.125)
        cc.nak_count = 1
        cc.dec_count = 1
        cc.last_dec_seq = cc.snd_curr_seq
        cc.dec_random = <int>ceil(cc.avg_nak * (<double>(splitmix64(&cc.rng) >> 11) / 9007199254740992.0))
        if cc.dec_random < 1:
            cc.dec_random = 1
    else:
        cc.dec_count += 1
        if cc.dec_count <= 5:
            cc.nak_count += 1
            if cc.nak_count % cc.dec_random == 0:
                cc.period_us *= 1.125
                cc.last_dec_seq = cc.snd_curr_seq


cdef void native_cc_on_timeout(CCState* cc, int64_t now) noexcept nogil:
    if cc.slow_start and cc.heard_ack:
        cc.slow_start = False
        cc.period_us = _cc_rate_period(cc)


cdef CCOps NATIVE_CC_OPS
NATIVE_CC_OPS.init = native_cc_init
NATIVE_CC_OPS.close = NULL
NATIVE_CC_OPS.on_ack = native_cc_on_ack
NATIVE_CC_OPS.on_loss = native_cc_on_loss
NATIVE_CC_OPS.on_timeout = native_cc_on_timeout
NATIVE_CC_OPS.on_pkt_sent = NULL
NATIVE_CC_OPS.on_pkt_received = NULL
NATIVE_CC_OPS.on_custom = NULL
NATIVE_CC_OPS.report = NULL


cdef const CCOps* native_cc_ops() noexcept nogil:
    return &NATIVE_CC_OPS
