# cython: language_level=3
# Native BBR-family congestion control ("bbr"; docs/engine.md, "BBR").  A model of the path --
# the bottleneck bandwidth (windowed max of delivery-rate samples) and the round-trip
# propagation time (windowed min RTT) -- sets the pacing rate (gain x bandwidth) and the window
# (gain x BDP).  Random loss below LOSS_THRESH per round does not move the model; above it, or
# above QUEUE_LOSS_THRESH with a queue standing all round (an overflow), the round counts as
# congestion and caps the window and the bandwidth by BETA (as BBRv3 does).
#
# It learns only from what a UDT4/SRT receiver sends: the cumulative ACK sequence of full ACKs,
# the loss ranges of NAKs, plus its own per-packet send times (on_pkt_sent).  Each sent packet
# gets a record in a ring indexed by sequence number (allocated in init, freed in close: nothing
# per packet).  A NAK also says that the packet after each gap arrived, so the newest sequence
# known received (hi_recv) runs ahead of the cumulative ACK while holes wait for repair; every
# ACK or NAK that moves it makes one rate sample from hi_recv's record
# (draft-cheng-iccrg-delivery-rate-estimation, delivered = packets up to hi_recv less holes).
# A rate sample counts first transmissions only (packets up to hi_recv less every packet ever
# named lost) and is capped by the receiver's reported arrival rate and link capacity; STARTUP
# also ends one round after the RTT shows a queue building.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from udt.core.cc cimport native_cc_ops
from udt.core.ccapi cimport CCOps, CCReport, CCState
from udt.core.seq cimport SEQ_MAX, seq_cmp, seq_dec, seq_inc, seq_off
from udt.core.siphash cimport splitmix64

cdef enum:
    STARTUP = 0
    DRAIN = 1
    PROBE_BW = 2
    BW_WINDOW = 10               # rounds the bandwidth max filter spans
    CYCLE_LEN = 8
    FULL_BW_ROUNDS = 3           # STARTUP ends after 3 rounds without 25 % growth
    MIN_CWND = 16
    SYN_US = 10000               # UDT4's full ACK period
    MIN_RTT_WINDOW_US = 10000000
    MAX_RING = 1 << 20
    SEND_LAG_US = 2000           # the engine's pacing catch-up (MAX_PACING_LAG_US): later is lost

cdef double STARTUP_GAIN = 2.77           # 2 / ln 2: doubles the delivery rate every round
cdef double STARTUP_CWND_GAIN = 2.0            # BBRv3: 2 x BDP fits the link plus a BDP of queue
cdef double CWND_GAIN = 2.0
cdef double LOSS_THRESH = 0.1             # round loss rate above which loss means congestion
cdef double QUEUE_LOSS_THRESH = 0.02      # the same while the RTT shows the queue full (BBRv2's 2 %)
cdef double BETA = 0.7
cdef double YIELD_GAIN = 0.9              # cruise gain while another flow's queue stands
cdef double PROBE_AGAIN = 1.15            # bandwidth growth in an up phase that means headroom
cdef double[8] PROBE_GAINS = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
cdef int CRUISE_MIN = 4                   # cruising phases per cycle: 4-8 at random, 6 on average
cdef int CRUISE_SPREAD = 5


cdef struct SendRecord:
    int64_t sent_time
    int64_t first_sent_time        # send time of the newest acknowledged packet when this left
    int64_t delivered_time         # when `delivered` was last advanced, as this left
    int64_t delivered              # packets delivered when this left
    int64_t delivered_first        # of them, delivered on their first transmission
    float send_rate                # pacing rate when it left, packets/s
    int32_t seq
    uint8_t app_limited
    uint8_t lost                   # a NAK named it since it was (re)sent: counted once
    uint8_t hole                   # named by a NAK and not yet passed by the cumulative ACK
    uint8_t resent                 # sent more than once: no RTT sample (Karn)
    uint8_t before_probe           # sent in STARTUP or DRAIN: its loss is STARTUP's overshoot


cdef struct Bbr:
    SendRecord* ring
    int ring_mask
    int state
    int32_t last_ack
    int32_t hi_recv                # newest sequence known to have reached the receiver
    int64_t hi_count               # packets up to hi_recv (since init)
    bint hi_moved                  # hi_recv moved since the last _on_delivery: a fresh sample
    int64_t holes                  # packets before hi_recv named lost and not yet acknowledged
    int64_t delivered              # hi_count - holes: what the receiver has, never decreasing
    int64_t holes_ever             # packets ever named lost (each counted once, until acknowledged)
    int64_t delivered_first        # hi_count - holes_ever: arrived on their first transmission
    int64_t delivered_time
    int64_t first_sent_time
    int64_t app_limited_until      # the delivered count that ends an app-limited period (0 = none)
    double pace_due                # when the next packet is due at the pacing rate (0 = not sending)
    bint send_blocked              # the last send filled the window or emptied the send buffer
    int64_t lag_until              # packets sent before this time are marked app-limited
    int64_t round_count
    int64_t next_round_delivered
    double bw_max[BW_WINDOW]       # per-round max of the rate samples, indexed by round % window
    int64_t bw_round[BW_WINDOW]
    double btl_bw                  # packets/s
    double bw_lo                   # congestion cap on the bandwidth (0 = none)
    double round_max_sample
    int64_t round_min_rtt          # smallest RTT sample of the round (0 = none)
    int64_t min_rtt_us
    int64_t min_rtt_stamp
    int64_t rtt_half_min           # lowest RTT sample of the current half min-RTT window (0 = none)
    int64_t rtt_prev_half_min      # of the half window before it: what an expired window keeps
    int64_t rtt_half_stamp         # when the current half window began
    bint rtt_measured              # min_rtt_us is a sample, not the engine's 100 ms placeholder
    double full_bw
    int full_bw_count
    bint full_bw_reached
    int queue_samples              # STARTUP: consecutive RTT samples that show a queue building
    int64_t queue_exit_round       # STARTUP ends when this round begins (0 = no queue seen)
    int64_t queue_since            # when the current run of queue samples began
    bint left_on_loss              # STARTUP's last exit was its loss rule (see _startup_cut_short)
    int cycle_index
    int cruise_left                # cruising phases (gain 1) left before the next up phase
    bint queue_stuck               # the last draining phase ran out with a queue still there
    bint probe_skipped             # so the last cycle had no up phase (the next one has)
    int stuck_drains               # consecutive draining phases that ran out with the queue there
    int64_t cycle_stamp
    double probe_start_bw          # btl_bw when the up phase began
    int64_t round_lost
    int64_t round_lost_probe       # of them, sent in PROBE_BW: what the congestion check counts
    int64_t named_lost             # packets ever named lost (each once per transmission)
    int64_t named_mark             # named_lost when reorder_frac was last updated
    int64_t spurious_mark          # counters.spurious_losses then
    double reorder_frac            # of the packets named lost lately, the share that was not
    int64_t loss_round             # the last round that saw a loss
    int64_t congestion_round       # the last round whose loss rate was above LOSS_THRESH
    int64_t round_delivered_start
    double inflight_hi             # congestion cap on the window (0 = none)
    double cwnd                    # the model's pipe; cc.cwnd adds what loss holes hold back
    double pacing_gain
    double cwnd_gain
    CCReport counters              # perfmon's view (bbr_report): counts kept here, model copied there


cdef inline Bbr* _bbr(CCState* cc) noexcept nogil:
    return <Bbr*>cc.user


cdef inline double _bw(Bbr* b) noexcept nogil:
    if b.bw_lo > 0 and b.bw_lo < b.btl_bw:
        return b.bw_lo
    return b.btl_bw


cdef inline double _bdp(Bbr* b) noexcept nogil:
    return _bw(b) * <double>b.min_rtt_us / 1e6


cdef inline double _pipe(CCState* cc, Bbr* b) noexcept nogil:
    """Packets in the network: the engine's in-flight count less what the receiver holds beyond
    the loss holes (see _set_window)."""
    cdef int64_t beyond = seq_off(b.last_ack, b.hi_recv)
    if beyond > 0 and beyond < cc.inflight:
        return <double>(cc.inflight - beyond)
    return <double>cc.inflight


cdef void bbr_init(CCState* cc, int64_t now) noexcept nogil:
    cdef int size = 1024
    cdef Bbr* b = <Bbr*>calloc(1, sizeof(Bbr))
    while size < cc.max_cwnd and size < MAX_RING:
        size <<= 1
    if b != NULL:
        b.ring = <SendRecord*>calloc(size, sizeof(SendRecord))
    if b == NULL or b.ring == NULL:
        # out of memory: the connection still works, with UDT4's DAIMD
        free(b)
        cc.user = NULL
        cc.ops = native_cc_ops()
        cc.ops.init(cc, now)
        return
    cc.user = <void*>b
    cc.want_pkt_sent = True
    b.ring_mask = size - 1
    b.state = STARTUP
    b.last_ack = seq_inc(cc.snd_curr_seq)
    b.hi_recv = cc.snd_curr_seq
    b.delivered_time = now
    b.first_sent_time = now
    b.min_rtt_us = cc.rtt_us if cc.rtt_us > 0 else 100000
    b.min_rtt_stamp = now
    b.btl_bw = <double>MIN_CWND * 1e6 / <double>b.min_rtt_us
    b.pacing_gain = STARTUP_GAIN
    b.cwnd_gain = STARTUP_CWND_GAIN
    b.next_round_delivered = 0
    b.cwnd = MIN_CWND
    cc.cwnd = MIN_CWND
    cc.period_us = 1e6 / (b.pacing_gain * b.btl_bw)


cdef void bbr_close(CCState* cc) noexcept nogil:
    cdef Bbr* b = _bbr(cc)
    if b != NULL:
        free(b.ring)
        free(b)
        cc.user = NULL


cdef void _grow_ring(Bbr* b) noexcept nogil:
    """Double the ring, each record moving to its slot in the larger one.  The ring is sized
    from the flow window at the handshake, which with auto-sized buffers is the receiver's
    initial ~512 packets; the window then grows with the path, and a ring smaller than what is
    in flight overwrote every record before its feedback came back (no samples, no rounds: the
    model froze or sank on the WAN link).  Rare (at most log2(MAX_RING / 1024) times), never
    per packet; on allocation failure the ring stays as it is."""
    cdef int size = (b.ring_mask + 1) * 2
    cdef SendRecord* ring = <SendRecord*>calloc(size, sizeof(SendRecord))
    cdef int i
    if ring == NULL:
        return
    for i in range(b.ring_mask + 1):
        if b.ring[i].sent_time != 0:
            ring[b.ring[i].seq & (size - 1)] = b.ring[i]
    free(b.ring)
    b.ring = ring
    b.ring_mask = size - 1


cdef void bbr_on_pkt_sent(CCState* cc, int32_t seq, int size, int64_t now) noexcept nogil:
    cdef Bbr* b = _bbr(cc)
    cdef SendRecord* r
    if cc.inflight + 64 > b.ring_mask + 1 and b.ring_mask + 1 < MAX_RING:
        _grow_ring(b)
    r = &b.ring[seq & b.ring_mask]
    if cc.inflight <= 1:
        # nothing else in flight: intervals start now, not at the last (old) delivery
        b.first_sent_time = now
        b.delivered_time = now
    if cc.unsent == 0 and <double>cc.inflight < cc.cwnd:
        b.app_limited_until = b.delivered + cc.inflight if b.delivered + cc.inflight > 0 else 1
    else:
        if (b.pace_due > 0 and not b.send_blocked
                and <double>now > b.pace_due + SEND_LAG_US + cc.period_us):
            # the sender fell behind its own pacing with data queued and the window open: the
            # process did not get the CPU (2 shared cores running sender, receiver and the WAN
            # link's forwarder).  What it sends meanwhile samples the host, not the path: treat
            # it as app-limited, or the model follows the starved rate down (500 Mbit/s link,
            # pacing 480 -> 420 Mbit/s in 3 s while the sender sent 350-420) and STARTUP ends
            # at a plateau that is the CPU's.  For a round trip more: a sample's interval
            # reaches a round trip back, and one spanning the end of a stall mixes both rates
            if now >= b.lag_until:
                b.counters.pacing_lag_events += 1
            b.lag_until = now + b.min_rtt_us
        if now < b.lag_until and cc.rtt_us > b.min_rtt_us + b.min_rtt_us // 8 + SYN_US // 2:
            # but a queue stands at the bottleneck: the path, not the host, limits what gets
            # through, and the samples are the path's.  A sender behind its schedule all the time
            # (the scheduler's slices on a loaded host) marked everything, and its model, which
            # app-limited samples can only raise, froze where it was: sharing a 1-BDP queue, the
            # first flow kept 0.82-0.88 of the link against the late one's 0.09-0.14 (fake clock,
            # a 3 ms stall in every 10), and on the WAN link's fair2 both models summed to 118 %
            b.lag_until = 0
        if now < b.lag_until:
            b.counters.pacing_lag_packets += 1
            b.app_limited_until = b.delivered + cc.inflight if b.delivered + cc.inflight > 0 else 1
    # the engine's schedule: one period per packet, never more than SEND_LAG_US behind
    if b.pace_due < <double>now - SEND_LAG_US:
        b.pace_due = <double>now - SEND_LAG_US
    b.pace_due += cc.period_us
    b.send_blocked = cc.unsent == 0 or <double>cc.inflight + 1 > cc.cwnd
    if r.seq != seq:
        if r.hole:
            # the ring wrapped over a hole never acknowledged (a send buffer beyond the ring)
            r.hole = 0
            b.holes -= 1
        r.resent = 0
    else:
        r.resent = 1
    r.seq = seq
    r.sent_time = now
    r.send_rate = <float>(1e6 / cc.period_us if cc.period_us > 0 else 1e9)
    r.first_sent_time = b.first_sent_time
    r.delivered_time = b.delivered_time
    r.delivered = b.delivered
    r.delivered_first = b.delivered_first
    r.app_limited = b.app_limited_until != 0
    r.lost = 0
    r.before_probe = b.state != PROBE_BW


cdef void _bw_update(Bbr* b, double sample) noexcept nogil:
    cdef int slot = <int>(b.round_count % BW_WINDOW)
    cdef int i
    if b.bw_round[slot] != b.round_count:
        b.bw_round[slot] = b.round_count
        b.bw_max[slot] = 0
    if sample > b.bw_max[slot]:
        b.bw_max[slot] = sample
    b.btl_bw = 0
    for i in range(BW_WINDOW):
        if b.round_count - b.bw_round[i] < BW_WINDOW and b.bw_max[i] > b.btl_bw:
            b.btl_bw = b.bw_max[i]


cdef void _update_reorder_frac(Bbr* b) noexcept nogil:
    """The share of the packets named lost lately whose first transmission arrived (_unlose):
    the cumulative ACK shows it half a round trip or more after the NAK, too late for the round
    that counted the NAK, so a round's loss is discounted by the share found lately.  Both
    counts include this round's NAKs: a burst of real drops (an overflow) lowers the share at
    once, as the drops are named now and none of them turns out spurious."""
    cdef int64_t named = b.named_lost - b.named_mark
    cdef int64_t spurious = b.counters.spurious_losses - b.spurious_mark
    cdef double frac
    if named < MIN_CWND:
        return                     # too few to judge: keep counting
    frac = <double>spurious / <double>named
    if frac > 1:
        frac = 1                   # (the spurious ones of the round before)
    b.reorder_frac = 0.5 * b.reorder_frac + 0.5 * frac
    b.named_mark = b.named_lost
    b.spurious_mark = b.counters.spurious_losses


cdef inline double _real_loss(Bbr* b, int64_t lost) noexcept nogil:
    """What of `lost` (packets named lost) was lost, not overtaken (see _update_reorder_frac)."""
    return <double>lost * (1.0 - b.reorder_frac)


cdef void _end_round(CCState* cc, Bbr* b, bint app_limited) noexcept nogil:
    """A round trip ended: check STARTUP's plateau and whether this round's loss was congestion.
    A round that ends on an app-limited packet says nothing about a plateau (as in Linux BBR)."""
    cdef int64_t delivered = b.delivered - b.round_delivered_start
    cdef double loss_rate = 0
    cdef double probe_loss_rate = 0
    cdef bint overflow
    _update_reorder_frac(b)
    if delivered + b.round_lost > 0:
        loss_rate = _real_loss(b, b.round_lost) / <double>(delivered + b.round_lost)
        probe_loss_rate = _real_loss(b, b.round_lost_probe) / <double>(delivered + b.round_lost)
    if b.round_lost > 0:
        b.loss_round = b.round_count
        b.counters.loss_rounds += 1
    if loss_rate > LOSS_THRESH:
        b.congestion_round = b.round_count
        b.counters.congestion_rounds += 1
    # a random drop happens at any queue depth, an overflow drop when the queue is full: with
    # every RTT sample of the round half the minimum above it (a queue standing all round; bbr
    # alone under 1-3 % random loss keeps it within 1.25x, and one sample inflated by a host
    # stall does not count), 2 % is a queue overflowing, as BBRv2 reads any loss over 2 %
    overflow = (b.round_min_rtt > b.min_rtt_us + b.min_rtt_us // 2 + SYN_US // 2
                and probe_loss_rate > QUEUE_LOSS_THRESH)
    if overflow:
        b.congestion_round = b.round_count
        b.counters.overflow_rounds += 1
    if (probe_loss_rate > LOSS_THRESH or overflow) and b.state == PROBE_BW:
        # Only losses of packets sent in PROBE_BW count: STARTUP's overshoot is drained by DRAIN,
        # and its losses, reported a round trip or more later (the repairs of a full queue die
        # in it too), once read as congestion in the first PROBE_BW rounds cut the model to
        # 0.7x for 1.5 s on the WAN link's clean path (pacing 125 of 194 Mbit/s)
        b.inflight_hi = BETA * (_pipe(cc, b) if b.inflight_hi == 0 or _pipe(cc, b) < b.inflight_hi
                                else b.inflight_hi)
        if b.inflight_hi < _bdp(b) + MIN_CWND:
            b.inflight_hi = _bdp(b) + MIN_CWND
        b.bw_lo = BETA * (b.bw_lo if b.bw_lo > 0 else b.btl_bw)
        if b.round_max_sample > b.bw_lo:
            b.bw_lo = b.round_max_sample
    elif not b.full_bw_reached:
        if b.queue_exit_round and b.round_count >= b.queue_exit_round:
            b.full_bw_reached = True
            b.left_on_loss = False
            b.counters.startup_exit_queue += 1
        elif b.btl_bw >= b.full_bw * 1.25:
            b.full_bw = b.btl_bw
            b.full_bw_count = 0
        elif app_limited:
            pass
        else:
            b.full_bw_count += 1
            if b.full_bw_count >= FULL_BW_ROUNDS:
                b.full_bw_reached = True
                b.left_on_loss = False
                b.counters.startup_exit_plateau += 1
    b.round_lost = 0
    b.round_lost_probe = 0
    b.round_delivered_start = b.delivered
    b.round_max_sample = 0
    b.round_min_rtt = 0


cdef void _enter_cycle_phase(CCState* cc, Bbr* b, int index, int64_t now) noexcept nogil:
    b.cycle_index = index
    b.cycle_stamp = now
    b.pacing_gain = PROBE_GAINS[index]
    if index == 0:
        # probing up: forget the congestion caps slowly, so a freed path is found again
        b.bw_lo = 0
        b.probe_start_bw = b.btl_bw


cdef inline bint _startup_cut_short(Bbr* b) noexcept nogil:
    """May STARTUP resume (the model beat STARTUP's exit by 25 %)?  After a plateau or queue
    exit, yes: a host stall fakes both.  After a loss exit only when the up phase just ended
    found headroom (its 1.25x came through: the model grew PROBE_AGAIN times).  Loss is no host
    stall, and that exit comes mid-round, before the samples of the round that filled the link:
    on the lfn path (1 Gbit/s, 200 ms, half a BDP of queue) STARTUP left on loss at 75 % of the
    link, the cruise found the rest in steps of 4-12 %, and the resume at the link rate
    overflowed the queue again (7,900-11,500 packets dropped at once, in 4 of 6 runs on the WAN
    link).  (Headroom after every exit was tried: a late flow sharing a queue, whose up phases
    grow it by less than 1.15x, then kept 0.56 of the other's rate, not 0.6.)"""
    return not b.left_on_loss or b.btl_bw >= PROBE_AGAIN * b.probe_start_bw > 0


cdef void _update_state(CCState* cc, Bbr* b, int64_t now) noexcept nogil:
    cdef int64_t phase_us
    cdef int start
    cdef bint extended
    if b.state == STARTUP and b.full_bw_reached:
        b.state = DRAIN
        if b.btl_bw > b.full_bw:
            b.full_bw = b.btl_bw           # what a later up phase must beat by 25 % (see below)
        b.pacing_gain = 1.0 / STARTUP_CWND_GAIN
        b.cwnd_gain = STARTUP_CWND_GAIN
    if b.state == DRAIN and _pipe(cc, b) <= _bdp(b) * 1.25 + <double>MIN_CWND:
        b.state = PROBE_BW
        b.cwnd_gain = CWND_GAIN
        # a random phase other than the draining one, so competing flows do not probe in step
        start = <int>(splitmix64(&cc.rng) % (CYCLE_LEN - 1))
        _enter_cycle_phase(cc, b, 0 if start == 0 else 2, now)
        if start > 0:
            b.cruise_left = CYCLE_LEN - 1 - start
    elif b.state == PROBE_BW:
        phase_us = b.min_rtt_us if b.min_rtt_us > 2 * SYN_US else 2 * SYN_US
        if now - b.cycle_stamp < phase_us:
            return
        # the draining phase lasts until the queue is gone (the ACK/ACK2 RTT, which data holes
        # do not inflate, back near the minimum), at most 4 phases.  That RTT lags the queue by
        # half a round trip and its smoothing (7/8 per ACK), so the phase ran 2-3 phases where
        # one drains the up phase's quarter BDP (3 % of the link lost per cycle): it also ends
        # once the pipe is down to one BDP (what the sender knows at once) with the RTT within
        # a quarter of the minimum.  A queue standing above that (another flow's share) still
        # needs the RTT back near the minimum: what lets competing flows converge
        if (b.cycle_index == 1 and now - b.cycle_stamp < 4 * phase_us
                and cc.rtt_us > b.min_rtt_us + b.min_rtt_us // 16 + SYN_US // 2
                and (_pipe(cc, b) > _bdp(b)
                     or cc.rtt_us > b.min_rtt_us + b.min_rtt_us // 4 + SYN_US // 2)):
            return
        if (b.cycle_index == 1 and b.congestion_round < b.round_count - 2
                and b.btl_bw >= 1.25 * b.full_bw > 0 and _startup_cut_short(b)):
            # the bandwidth grew 25 % past where STARTUP stopped, and no congestion loss: STARTUP
            # stopped early (a host stall -- the sender or receiver descheduled for a few
            # hundred ms on a loaded machine -- looks like a queue or a plateau, and on the WAN
            # link left the model at 10-40 % of the link for seconds); grow exponentially again
            b.state = STARTUP
            b.counters.startup_resumes += 1
            b.full_bw_reached = False
            b.full_bw = b.btl_bw
            b.full_bw_count = 0
            b.queue_samples = 0
            b.queue_exit_round = 0
            b.pacing_gain = STARTUP_GAIN
            b.cwnd_gain = STARTUP_CWND_GAIN
            return
        if b.cycle_index == 1 and b.btl_bw >= PROBE_AGAIN * b.probe_start_bw > 0:
            # the up phase found headroom (its packets, all acknowledged by the end of the
            # draining phase, came through at nearly 1.25x): probe again at once instead of
            # cruising six phases, so a freed path (or a model a stall left low) is found in
            # about 2 round trips per 1.25x, not 8
            _enter_cycle_phase(cc, b, 0, now)
            return
        if b.cycle_index == 2:
            b.cruise_left -= 1
            if b.cruise_left > 0:
                b.cycle_stamp = now
                return
            if b.queue_stuck and not b.probe_skipped:
                # the queue outlived the last draining phase: a flow that does not yield to
                # delay holds it (a loss-based one, TCP cubic), and an up phase into it only
                # takes its share (samples grow with the queue's arrival share, and the max
                # filter keeps them).  Drain again instead, and probe once the queue can go
                b.counters.probes_skipped += 1
                b.probe_skipped = True
                _enter_cycle_phase(cc, b, 1, now)
                return
            b.probe_skipped = False
            _enter_cycle_phase(cc, b, 0, now)
            return
        if b.cycle_index == 0:
            _enter_cycle_phase(cc, b, 1, now)
            return
        extended = now - b.cycle_stamp >= 3 * phase_us
        b.queue_stuck = (now - b.cycle_stamp >= 4 * phase_us
                         and cc.rtt_us > b.min_rtt_us + b.min_rtt_us // 4 + SYN_US // 2)
        b.stuck_drains = b.stuck_drains + 1 if b.queue_stuck else 0
        _enter_cycle_phase(cc, b, 2, now)
        if b.stuck_drains >= 2:
            # and so did the one before, with no up phase between (the stuck drain skips it):
            # bbr's own queue, which one draining phase of 4 at 0.75x empties by a BDP, is gone
            # by then, so this one is another flow's that does not yield to delay (TCP cubic).
            # Cruise below the model, leaving it headroom (as BBRv3 cruises below inflight_hi):
            # cubic's median share of the WAN link's tcpshare 66 -> 79 Mbit/s (4 pairs).  After one
            # stuck drain alone, the queue was often bbr's own (STARTUP's overshoot under bursty
            # loss: 82 % of the link, not 96 %; or another bbr flow's on a 20 ms path, where the
            # flows ended at 0.66 of each other, not 0.89)
            b.pacing_gain = YIELD_GAIN
        b.cruise_left = CRUISE_MIN + CRUISE_SPREAD // 2
        if extended:
            # the draining phase waited 3 phases or more for the queue: the queue of flows
            # that share the bottleneck, and they all leave the phase when it is gone.  With a
            # fixed cycle they then probe in step for good, each up phase raising every flow by
            # the same ratio, so a late flow kept the share its STARTUP found (fake clock, 100 ms
            # path, 1-BDP queue, second flow 1.5 s later: 0.29-0.32 of the other's rate after
            # 15 s).  A cruise of random length lets each flow probe alone next cycle
            b.cruise_left = CRUISE_MIN + <int>(splitmix64(&cc.rng) % CRUISE_SPREAD)


cdef void _set_output(CCState* cc, Bbr* b, int64_t newly) noexcept nogil:
    cdef double bw = _bw(b)
    cdef double rate = b.pacing_gain * bw
    cdef double target
    if b.state == STARTUP and b.queue_exit_round:
        # a queue is building: the link is full, hold the window until the round ends
        rate = bw
        newly = 0
    elif b.state == STARTUP and cc.period_us > 0 and rate < 1e6 / cc.period_us:
        rate = 1e6 / cc.period_us          # STARTUP never slows down
    if rate > 0:
        cc.period_us = 1e6 / rate
    # ACKs come every SYN: two of them in the window.
    target = b.cwnd_gain * _bdp(b) + bw * (2 * SYN_US) / 1e6 + MIN_CWND
    if b.full_bw_reached:
        b.cwnd = b.cwnd + newly if b.cwnd + newly < target else target
    elif b.cwnd < target:
        b.cwnd += newly
    if b.inflight_hi > 0 and b.state == PROBE_BW and b.cycle_index == 0:
        # probing up: the cap grows like slow start (doubling per round) and goes once it is moot
        b.inflight_hi += newly
        if b.inflight_hi > 2 * target:
            b.inflight_hi = 0
    if b.inflight_hi > 0 and b.cwnd > b.inflight_hi:
        b.cwnd = b.inflight_hi
    if b.cwnd < MIN_CWND:
        b.cwnd = MIN_CWND
    _set_window(cc, b)


cdef void _set_window(CCState* cc, Bbr* b) noexcept nogil:
    """The engine's window counts from the cumulative ACK, so the packets a loss hole holds back
    (received beyond it, waiting for the retransmission: a round trip, one more NAK period if
    that is lost too) would count as in flight.  The receiver NAKs a gap as soon as the packet
    after it arrives, so the newest NAK bounds what it has: the window is the model's pipe plus
    everything up to there, and data keeps flowing while holes wait (the flow window, the
    receiver's free buffer, still caps it)."""
    cdef int64_t beyond = seq_off(b.last_ack, b.hi_recv)
    cc.cwnd = b.cwnd + (<double>beyond if beyond > 0 else 0.0)


cdef void _advance_hi_recv(CCState* cc, Bbr* b, int32_t seq) noexcept nogil:
    if seq_cmp(seq, b.hi_recv) > 0 and seq_cmp(seq, cc.snd_curr_seq) <= 0:
        b.hi_count += seq_off(b.hi_recv, seq)
        b.hi_recv = seq
        b.hi_moved = True


cdef void _min_rtt_update(Bbr* b, int64_t rtt, int64_t now) noexcept nogil:
    """The min-RTT filter: the lowest sample of the last 10 s, kept as two half windows.  When
    the minimum is 10 s old it gives way to the lowest sample of the last 5-10 s, not to the
    current one: behind a loss-based flow's standing queue (TCP cubic's: it shrinks only on
    cubic's own losses) the current sample is that queue, and adopting it (122-139 ms on the WAN
    link's 100 ms tcpshare path, seconds 10-15) made every queue rule blind while bbr took more
    of the link.  There is no PROBE_RTT: the draining phase brings the true minimum back."""
    if now - b.rtt_half_stamp >= MIN_RTT_WINDOW_US // 2:
        b.rtt_prev_half_min = b.rtt_half_min
        b.rtt_half_min = 0
        b.rtt_half_stamp = now
    if rtt < b.rtt_half_min or b.rtt_half_min == 0:
        b.rtt_half_min = rtt
    if rtt < b.min_rtt_us or not b.rtt_measured:
        # (the first sample replaces the guess: a 200 ms path measured as 100 ms would halve the
        # BDP and STARTUP would grow the window linearly, not double it)
        b.min_rtt_us = rtt
        b.min_rtt_stamp = now
        b.rtt_measured = True
    elif now - b.min_rtt_stamp > MIN_RTT_WINDOW_US:
        b.min_rtt_us = b.rtt_half_min
        if 0 < b.rtt_prev_half_min < b.min_rtt_us:
            b.min_rtt_us = b.rtt_prev_half_min
        b.min_rtt_stamp = now


cdef void _on_delivery(CCState* cc, Bbr* b, int64_t now) noexcept nogil:
    """What the receiver holds grew (hi_recv moved, or the cumulative ACK passed holes): a
    delivery-rate sample from the record of hi_recv, the newest packet known to have arrived.
    Counting from it, not from the cumulative ACK, keeps a hole's retransmission (a round trip
    or more) from freezing the count and then crediting all it held back at once."""
    cdef int64_t d = b.hi_count - b.holes
    cdef int64_t newly = d - b.delivered
    cdef int64_t interval, rtt
    cdef SendRecord* r
    cdef double sample, cap
    cdef bint fresh = b.hi_moved
    b.hi_moved = False
    if b.hi_count - b.holes_ever > b.delivered_first:
        b.delivered_first = b.hi_count - b.holes_ever
    if newly <= 0:
        _set_window(cc, b)
        return
    b.delivered = d
    b.delivered_time = now
    r = &b.ring[b.hi_recv & b.ring_mask]
    if r.seq == b.hi_recv and r.sent_time > 0:
        # (Karn: the feedback for a resent packet may answer its first copy; and when only the
        # cumulative ACK moved, past repaired holes, hi_recv arrived long ago: no RTT sample)
        rtt = now - r.sent_time if fresh and not r.resent else 0
        if rtt > 0:
            _min_rtt_update(b, rtt, now)
        if rtt > 0 and (rtt < b.round_min_rtt or b.round_min_rtt == 0):
            b.round_min_rtt = rtt
        if b.state == STARTUP and rtt > 0 and b.rtt_measured:
            # a queue is building: the bottleneck is full now, and waiting the 3 rounds of the
            # plateau rule at 2.77x overflows a 1-BDP queue (a burst of drops whose repairs
            # die in the same full queue, and a window stuck behind them)
            # (only once the model holds a few windows: a CPU stall of a user-space endpoint
            # inflates RTT samples too, and a false exit in the first rounds left the model at
            # 3 Mbit/s on a 200 Mbit/s link; slow links still have the plateau rule)
            if (rtt > b.min_rtt_us + b.min_rtt_us // 4 + SYN_US // 2
                    and _bdp(b) >= 4 * MIN_CWND):
                if b.queue_samples == 0:
                    b.queue_since = now
                b.queue_samples += 1
                # two samples at least a quarter round trip apart: a queue, not a hiccup
                if (b.queue_samples >= 2 and not b.queue_exit_round
                        and now - b.queue_since >= b.min_rtt_us // 4):
                    # leave at the end of this round: its samples, taken while the bottleneck
                    # was already full, are the link rate (the last round's show about half)
                    b.queue_exit_round = b.round_count + 1
            else:
                b.queue_samples = 0
        b.first_sent_time = r.sent_time
        if r.delivered >= b.next_round_delivered:
            b.next_round_delivered = b.delivered
            b.round_count += 1
            b.counters.rounds[b.state] += 1
            _end_round(cc, b, r.app_limited)
        interval = r.sent_time - r.first_sent_time
        if now - r.delivered_time > interval:
            interval = now - r.delivered_time
        if interval > 0 and fresh and not r.resent:
            # only first transmissions count: a repaired hole's retransmission left a round trip
            # or more after the interval began, and crediting it to this interval showed more
            # than the link carries (109 % at 1 % loss, and a queue kept full)
            sample = <double>(b.delivered_first - r.delivered_first) * 1e6 / <double>interval
            # nothing is delivered faster than it is sent (a lost NAK, found again by the next
            # one, can credit a burst at once)
            if sample > r.send_rate:
                sample = r.send_rate
            # nor faster than the receiver sees packets arrive (its ACKs carry the packet-pair
            # link capacity and the arrival rate): packets held beyond a hole are only named
            # when the cumulative ACK passes it, so a sample can count some that arrived before
            # its interval began (4300 pkt/s on a 4000 pkt/s link at 1 % loss).  Not in STARTUP:
            # both are smoothed over 8 ACKs and lag a rate that doubles every round
            if b.full_bw_reached and (cc.bandwidth > 0 or cc.rcv_rate > 0):
                cap = <double>(cc.bandwidth if cc.bandwidth > cc.rcv_rate else cc.rcv_rate)
                if sample > cap:
                    sample = cap
            if sample > b.round_max_sample:
                b.round_max_sample = sample
            # an app-limited sample only counts if it shows more than the model knows
            if not r.app_limited or sample > b.btl_bw:
                _bw_update(b, sample)
    if b.app_limited_until != 0 and b.delivered > b.app_limited_until:
        b.app_limited_until = 0
    _update_state(cc, b, now)
    _set_output(cc, b, newly)


cdef void _unlose(Bbr* b, SendRecord* r) noexcept nogil:
    """A NAKed packet the cumulative ACK passed before its retransmission could have arrived
    (under 3/4 of the min RTT after it left, or never resent): its first transmission arrived,
    late, and the NAK was the receiver seeing it overtaken.  Reordering is not loss: credit it
    as delivered on its first transmission and take it out of the round's loss count.  Counted
    as lost, every reordered packet (0-2 ms of jitter on the data path reorders most of them
    at 4000 packets/s) read as a round over 10 % loss: STARTUP left after 4 rounds and PROBE_BW
    cut the model until packets were spaced wider than the jitter (18 % of the link).  The
    round that counted the NAK has often ended by then: _update_reorder_frac discounts."""
    b.holes_ever -= 1
    b.counters.spurious_losses += 1


cdef void bbr_on_ack(CCState* cc, int32_t ack, int64_t now) noexcept nogil:
    cdef Bbr* b = _bbr(cc)
    cdef int64_t newly = seq_off(b.last_ack, ack)
    cdef int64_t _k
    cdef int32_t s
    cdef SendRecord* r
    # (the min RTT comes from the send records only: the ACK's RTT field is the receiver's
    # 100 ms placeholder until its first ACK2, and would halve a 200 ms path's BDP)
    if newly <= 0:
        return
    s = b.last_ack
    for _k in range(newly if newly <= b.ring_mask + 1 else b.ring_mask + 1):
        r = &b.ring[s & b.ring_mask]
        if r.seq == s and r.hole:
            r.hole = 0
            b.holes -= 1
            if not r.resent or now - r.sent_time < b.min_rtt_us - b.min_rtt_us // 4:
                _unlose(b, r)
        s = seq_inc(s)
    if b.holes < 0:
        b.holes = 0
    b.last_ack = ack
    _advance_hi_recv(cc, b, seq_dec(ack))
    _on_delivery(cc, b, now)


cdef void bbr_on_loss(CCState* cc, const int32_t* loss, int count, int64_t now) noexcept nogil:
    """Count each lost transmission once (the receiver repeats its NAKs for old holes)."""
    cdef Bbr* b = _bbr(cc)
    cdef int i = 0
    cdef int64_t _k, n, sent
    cdef int32_t first, last, s
    cdef SendRecord* r
    while i < count:
        if <uint32_t>loss[i] & 0x80000000u:
            if i + 1 >= count:
                break
            first = <int32_t>(<uint32_t>loss[i] & SEQ_MAX)
            last = loss[i + 1]
            i += 2
        else:
            first = loss[i]
            last = first
            i += 1
        if seq_cmp(first, b.last_ack) < 0:
            first = b.last_ack
        n = seq_off(first, last) + 1
        if n > b.ring_mask + 1:
            n = b.ring_mask + 1
        s = first
        for _k in range(n):
            r = &b.ring[s & b.ring_mask]
            if r.seq == s:
                if not r.lost:
                    r.lost = 1
                    b.round_lost += 1
                    b.named_lost += 1
                    if not r.before_probe:
                        b.round_lost_probe += 1
                if not r.hole:
                    r.hole = 1
                    b.holes += 1
                    b.holes_ever += 1
            s = seq_inc(s)
        # the receiver saw the gap when the packet after it arrived
        _advance_hi_recv(cc, b, seq_inc(last))
    # STARTUP overflowing the queue stalls the cumulative ACK, so the round may never end:
    # leave STARTUP as soon as this round's loss is clearly congestion
    # (measured against what is in flight too: early in a round little is delivered yet, and
    # 3 % random loss alone looked like congestion and left STARTUP at half the link)
    sent = b.delivered - b.round_delivered_start + b.round_lost
    if sent < cc.inflight:
        sent = cc.inflight
    if (b.state == STARTUP and b.round_lost >= MIN_CWND
            and _real_loss(b, b.round_lost) > LOSS_THRESH * <double>sent):
        b.full_bw_reached = True
        b.left_on_loss = True
        b.counters.startup_exit_loss += 1
        _update_state(cc, b, now)
    _on_delivery(cc, b, now)


cdef bint bbr_report(CCState* cc, CCReport* out) noexcept nogil:
    cdef Bbr* b = _bbr(cc)
    if b == NULL:
        return False          # closed (an init out of memory runs DAIMD, whose ops have none)
    out[0] = b.counters
    out.state = b.state
    out.btl_bw = b.btl_bw
    out.bw_lo = b.bw_lo
    out.inflight_hi = b.inflight_hi
    out.model_cwnd = b.cwnd
    out.pacing_gain = b.pacing_gain
    out.min_rtt_us = b.min_rtt_us
    return True


cdef CCOps BBR_CC_OPS
BBR_CC_OPS.init = bbr_init
BBR_CC_OPS.close = bbr_close
BBR_CC_OPS.on_ack = bbr_on_ack
BBR_CC_OPS.on_loss = bbr_on_loss
BBR_CC_OPS.on_timeout = NULL
BBR_CC_OPS.on_pkt_sent = bbr_on_pkt_sent
BBR_CC_OPS.on_pkt_received = NULL
BBR_CC_OPS.on_custom = NULL
BBR_CC_OPS.report = bbr_report


cdef const CCOps* bbr_cc_ops() noexcept nogil:
    return &BBR_CC_OPS
