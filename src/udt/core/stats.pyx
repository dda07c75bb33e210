# cython: language_level=3
"""Perfmon: conn_stats fills a Stats struct; stats_dict turns one into the public perfmon dict
(the one table of its keys), INVALID_REASONS names the InvalidReason enum."""
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from udt._core cimport INVALID_REASON_COUNT, CCReport, Conn, Stats
from udt.core.seq cimport seq_off
from udt.core.connutil cimport _is_live, _pacing_period


cdef void conn_stats(Conn* c, Stats* out, bint clear, int64_t now) noexcept nogil:
    cdef Stats* s = &c.stats
    cdef Stats* z = &c.stats_at_clear
    cdef int64_t interval = now - c.last_clear_time
    cdef int64_t busy = s.us_snd_duration_total
    if c.snd_busy_since > 0:
        busy += now - c.snd_busy_since
    memcpy(out, s, sizeof(Stats))
    out.ms_timestamp = (now - c.start_time) // 1000
    out.us_snd_duration_total = busy
    out.pkt_sent = s.pkt_sent_total - z.pkt_sent_total
    out.pkt_recv = s.pkt_recv_total - z.pkt_recv_total
    out.pkt_snd_loss = s.pkt_snd_loss_total - z.pkt_snd_loss_total
    out.pkt_rcv_loss = s.pkt_rcv_loss_total - z.pkt_rcv_loss_total
    out.pkt_retrans = s.pkt_retrans_total - z.pkt_retrans_total
    out.pkt_sent_ack = s.pkt_sent_ack_total - z.pkt_sent_ack_total
    out.pkt_recv_ack = s.pkt_recv_ack_total - z.pkt_recv_ack_total
    out.pkt_sent_nak = s.pkt_sent_nak_total - z.pkt_sent_nak_total
    out.pkt_recv_nak = s.pkt_recv_nak_total - z.pkt_recv_nak_total
    out.us_snd_duration = busy - z.us_snd_duration_total
    if interval > 0:
        out.mbps_send_rate = <double>(s.bytes_sent_total - z.bytes_sent_total) * 8.0 / <double>interval
        out.mbps_recv_rate = <double>(s.bytes_recv_total - z.bytes_recv_total) * 8.0 / <double>interval
    else:
        out.mbps_send_rate = 0
        out.mbps_recv_rate = 0
    out.us_pkt_snd_period = _pacing_period(c)
    out.pkt_flow_window = c.flow_window
    out.pkt_congestion_window = <int64_t>c.cc.cwnd
    out.pkt_flight_size = seq_off(c.snd_last_ack, c.snd_next_seq) if _is_live(c) else 0
    out.ms_rtt = c.rtt_us / 1000.0
    out.mbps_bandwidth = <double>c.bandwidth * c.payload_size * 8.0 / 1e6
    if c.buffers_ready:
        out.byte_avail_snd_buf = <int64_t>(c.snd.limit - c.snd.count if c.snd.limit > c.snd.count
                                           else 0) * c.payload_size
        out.byte_avail_rcv_buf = (c.rcv.limit - seq_off(c.rcv.read_seq, c.rcv.frontier_seq)) \
            * <int64_t>c.rcv.slot_size
    else:
        out.byte_avail_snd_buf = 0
        out.byte_avail_rcv_buf = 0
    out.mss = c.mss
    out.pmtud_max_mss = c.pmtud_max
    out.pmtud_probes_sent = c.pmtud_probes_sent
    out.pmtud_probes_confirmed = c.pmtud_probes_confirmed
    out.pmtud_probes_lost = c.pmtud_probes_lost
    out.pmtud_black_holes = c.pmtud_black_holes
    out.pmtud_fragments_sent = c.pmtud_fragments_sent
    out.pmtud_fragments_received = c.pmtud_fragments_received
    out.cc_reported = (c.cc.ops != NULL and c.cc.ops.report != NULL
                       and c.cc.ops.report(&c.cc, &out.cc))
    out.cc_payload_size = c.payload_size
    if clear:
        memcpy(z, s, sizeof(Stats))
        z.us_snd_duration_total = busy
        c.last_clear_time = now


# Names of the InvalidReason enum (_core.pxd), indexed by its values: the one place they are
# spelled (perfmon keys invalid_<name>, packet_peek's errors in the test shim).
INVALID_REASONS = (
    "too_short", "control_type", "length", "handshake", "ack_range", "nak_range", "ack2",
    "data_seq", "data_length", "drop_request", "state", "wrong_peer", "cookie", "buffer_full",
)


# Names of the states in CCReport.state, indexed by its values
CC_STATES = ("startup", "drain", "probe_bw")


cdef dict _cc_report_dict(const CCReport* r, int64_t payload_size):
    """The controller's model as perfmon keys (protocol.md, perfmon): rates in Mbit/s of payload,
    as mbps_bandwidth, windows in packets."""
    cdef double mbit = <double>payload_size * 8.0 / 1e6
    return {
        "bbr_state": CC_STATES[r.state] if 0 <= r.state < 3 else "",
        "bbr_rounds_startup": r.rounds[0],
        "bbr_rounds_drain": r.rounds[1],
        "bbr_rounds_probe_bw": r.rounds[2],
        "bbr_startup_exit_plateau": r.startup_exit_plateau,
        "bbr_startup_exit_queue": r.startup_exit_queue,
        "bbr_startup_exit_loss": r.startup_exit_loss,
        "bbr_startup_resumes": r.startup_resumes,
        "bbr_pacing_lag_events": r.pacing_lag_events,
        "bbr_pkt_pacing_lag": r.pacing_lag_packets,
        "bbr_loss_rounds": r.loss_rounds,
        "bbr_congestion_rounds": r.congestion_rounds,
        "bbr_overflow_rounds": r.overflow_rounds,
        "bbr_probes_skipped": r.probes_skipped,
        "bbr_pkt_spurious_loss": r.spurious_losses,
        "bbr_mbps_btl_bw": r.btl_bw * mbit,
        "bbr_mbps_bw_lo": r.bw_lo * mbit,
        "bbr_pkt_inflight_hi": r.inflight_hi,
        "bbr_pkt_model_cwnd": r.model_cwnd,
        "bbr_pacing_gain": r.pacing_gain,
        "bbr_ms_min_rtt": r.min_rtt_us / 1000.0,
    }


cdef dict stats_dict(const Stats* s):
    result = {
        "ms_timestamp": s.ms_timestamp,
        "pkt_sent_total": s.pkt_sent_total,
        "pkt_recv_total": s.pkt_recv_total,
        "pkt_snd_loss_total": s.pkt_snd_loss_total,
        "pkt_rcv_loss_total": s.pkt_rcv_loss_total,
        "pkt_retrans_total": s.pkt_retrans_total,
        "pkt_sent_ack_total": s.pkt_sent_ack_total,
        "pkt_recv_ack_total": s.pkt_recv_ack_total,
        "pkt_sent_nak_total": s.pkt_sent_nak_total,
        "pkt_recv_nak_total": s.pkt_recv_nak_total,
        "us_snd_duration_total": s.us_snd_duration_total,
        "bytes_sent_total": s.bytes_sent_total,
        "bytes_recv_total": s.bytes_recv_total,
        "pkt_dropped_total": s.pkt_dropped_total,
        "pkt_sent": s.pkt_sent,
        "pkt_recv": s.pkt_recv,
        "pkt_snd_loss": s.pkt_snd_loss,
        "pkt_rcv_loss": s.pkt_rcv_loss,
        "pkt_retrans": s.pkt_retrans,
        "pkt_sent_ack": s.pkt_sent_ack,
        "pkt_recv_ack": s.pkt_recv_ack,
        "pkt_sent_nak": s.pkt_sent_nak,
        "pkt_recv_nak": s.pkt_recv_nak,
        "us_snd_duration": s.us_snd_duration,
        "mbps_send_rate": s.mbps_send_rate,
        "mbps_recv_rate": s.mbps_recv_rate,
        "us_pkt_snd_period": s.us_pkt_snd_period,
        "pkt_flow_window": s.pkt_flow_window,
        "pkt_congestion_window": s.pkt_congestion_window,
        "pkt_flight_size": s.pkt_flight_size,
        "ms_rtt": s.ms_rtt,
        "mbps_bandwidth": s.mbps_bandwidth,
        "byte_avail_snd_buf": s.byte_avail_snd_buf,
        "byte_avail_rcv_buf": s.byte_avail_rcv_buf,
        "pkt_duplicate_total": s.duplicate_packets,
        "pkt_late_total": s.late_packets,
        "mss": s.mss,
        "pmtud_max_mss": s.pmtud_max_mss,
        "pmtud_probes_sent": s.pmtud_probes_sent,
        "pmtud_probes_confirmed": s.pmtud_probes_confirmed,
        "pmtud_probes_lost": s.pmtud_probes_lost,
        "pmtud_black_holes": s.pmtud_black_holes,
        "pmtud_fragments_sent": s.pmtud_fragments_sent,
        "pmtud_fragments_received": s.pmtud_fragments_received,
    }
    cdef int64_t total = 0
    cdef int i
    if s.cc_reported:
        result.update(_cc_report_dict(&s.cc, s.cc_payload_size))
    for i in range(INVALID_REASON_COUNT):
        result["invalid_" + INVALID_REASONS[i]] = s.invalid[i]
        total += s.invalid[i]
    result["invalid_total"] = total
    return result
