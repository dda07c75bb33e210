# cython: language_level=3
"""The congestion-control contract: the state an algorithm reads and sets, and its callbacks.

Declarations only, shared by the engine (udt/_core.pxd re-exports them), the native DAIMD
(udt/core/cc.pyx) and the Python trampoline (udt/core/pycc.pyx).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef struct CCOps

cdef struct CCReport:
    # What a model-based controller shows in perfmon (the bbr_* keys, docs/engine.md "BBR"):
    # filled by ops.report; DAIMD and Python controllers have none.
    int state                   # 0 STARTUP, 1 DRAIN, 2 PROBE_BW
    int64_t rounds[3]           # round trips counted in each state
    int64_t startup_exit_plateau    # STARTUP ended: 3 rounds without 25 % growth
    int64_t startup_exit_queue      # STARTUP ended: RTT samples showed a queue building
    int64_t startup_exit_loss       # STARTUP ended: a round lost over the loss threshold
    int64_t startup_resumes         # an up phase found 25 % more: back to STARTUP
    int64_t pacing_lag_events       # the sender fell behind its pacing (a marking period began)
    int64_t pacing_lag_packets      # packets marked app-limited by those periods
    int64_t loss_rounds             # rounds with any loss
    int64_t congestion_rounds       # rounds whose loss rate read as congestion
    int64_t overflow_rounds         # rounds with loss and an RTT that shows the queue full
    int64_t probes_skipped          # up phases not begun: the queue outlived the draining phase
    int64_t spurious_losses         # NAKed packets whose first transmission arrived (reordering)
    double btl_bw               # bottleneck bandwidth estimate, packets/s
    double bw_lo                # congestion cap on it (0 = none)
    double inflight_hi          # congestion cap on the window, packets (0 = none)
    double model_cwnd           # the model's pipe, packets (cwnd less what holes hold back)
    double pacing_gain
    int64_t min_rtt_us

cdef struct CCState:
    # --- knobs the algorithm sets (read by the engine after every callback) ---
    double period_us            # µs between data packets (pacing); >= 0
    double cwnd                 # congestion window, packets
    int ack_interval            # receiver: full ACK every N data packets (0 = only the timer)
    int64_t ack_period_us       # receiver: full ACK timer (0 = SYN, 10 ms)
    int64_t rto_us              # sender: user-defined EXP timeout (0 = protocol.md §6 formula)
    # --- inputs maintained by the engine (read-only for the algorithm) ---
    int64_t rtt_us
    int64_t rttvar_us
    int64_t rcv_rate            # peer's packet receiving rate, pkts/s (smoothed from ACKs)
    int64_t bandwidth           # estimated link capacity, pkts/s (smoothed from ACKs)
    int mss
    int max_cwnd                # flight flag size negotiated (cap of the window)
    int32_t snd_curr_seq        # largest sequence number sent so far
    int64_t inflight            # packets sent past the cumulative ACK (what the window counts)
    int64_t unsent              # packets written by the application and not yet sent once
    double max_bw_period_us     # pacing floor from UDT_MAXBW (0 = none); the engine enforces it
    bint want_pkt_sent          # call ops.on_pkt_sent (set by the CC's init; off = no per-packet cost)
    bint want_pkt_received      # call ops.on_pkt_received
    # --- native DAIMD state (protocol.md §7) ---
    bint slow_start
    bint heard_ack              # a full ACK arrived: the path has answered at least once
    bint loss_since_increase
    int32_t last_ack            # last ACK seq seen by on_ack
    int32_t last_dec_seq
    int64_t last_dec_time       # when the last loss epoch began (epochs last at least RC)
    double last_dec_period
    int avg_nak
    int nak_count
    int dec_count
    int dec_random
    int64_t last_rc_time
    uint64_t rng
    # --- plumbing ---
    const CCOps* ops
    void* user                  # the algorithm's own object (the Python CC instance for python_cc_ops)

cdef struct CCOps:
    # Every entry may be NULL (= no reaction).  Called with the connection lock held.
    void (*init)(CCState* cc, int64_t now) noexcept nogil                 # connection established
    void (*close)(CCState* cc) noexcept nogil                             # from conn_free
    void (*on_ack)(CCState* cc, int32_t ack, int64_t now) noexcept nogil  # full ACK received
    # NAK received; `loss` is the list in wire encoding (a range is first|0x80000000, last)
    void (*on_loss)(CCState* cc, const int32_t* loss, int count, int64_t now) noexcept nogil
    void (*on_timeout)(CCState* cc, int64_t now) noexcept nogil           # EXP with unacked data
    void (*on_pkt_sent)(CCState* cc, int32_t seq, int size, int64_t now) noexcept nogil
    void (*on_pkt_received)(CCState* cc, int32_t seq, int size, int64_t now) noexcept nogil
    void (*on_custom)(CCState* cc, const uint8_t* data, int size, int64_t now) noexcept nogil
    # perfmon: fill *out and return 1, or 0 when there is nothing to show
    bint (*report)(CCState* cc, CCReport* out) noexcept nogil
