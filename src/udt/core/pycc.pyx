# cython: language_level=3
"""The trampoline from the engine's CC callback table into a udt.cc.CongestionControl instance.

Each callback takes the GIL for this one connection, copies the engine's inputs onto the
object, calls the method, and reads the knobs back.  Exceptions are reported through
sys.unraisablehook and leave the knobs as they were.  Its own unit: the engine reaches it only
through the CCOps table, an indirect call either way.
"""
import sys as _sys
import types as _types

from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from udt.core.ccapi cimport CCOps, CCState
from udt.core.packet cimport LOSS_RANGE_FLAG
from udt.core.seq cimport SEQ_MAX


cdef void _py_cc_report(object obj, BaseException exc):
    """Hand a user CC exception to sys.unraisablehook (it cannot propagate into the engine)."""
    try:
        _sys.unraisablehook(_types.SimpleNamespace(
            exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__,
            err_msg="Exception ignored in udt congestion control callback", object=obj))
    except BaseException:
        pass


cdef void _py_cc_push(object obj, CCState* cc):
    obj.rtt_us = cc.rtt_us
    obj.rttvar_us = cc.rttvar_us
    obj.rcv_rate = cc.rcv_rate
    obj.bandwidth = cc.bandwidth
    obj.mss = cc.mss
    obj.max_cwnd = cc.max_cwnd
    obj.snd_curr_seq = cc.snd_curr_seq
    obj.period_us = cc.period_us
    obj.cwnd = cc.cwnd


cdef void _py_cc_pull(object obj, CCState* cc):
    cc.period_us = float(obj.period_us)
    cc.cwnd = float(obj.cwnd)
    cc.ack_interval = int(obj.ack_interval)
    cc.ack_period_us = int(obj.ack_period_us)
    cc.rto_us = int(obj.rto_us)


cdef void _py_cc_init(CCState* cc, int64_t now) noexcept nogil:
    with gil:
        obj = <object>cc.user
        Py_INCREF(obj)
        try:
            cc.want_pkt_sent = bool(getattr(obj, "_wants_packet_sent", False))
            cc.want_pkt_received = bool(getattr(obj, "_wants_packet_received", False))
            _py_cc_push(obj, cc)
            obj.init()
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef void _py_cc_close(CCState* cc) noexcept nogil:
    with gil:
        obj = <object>cc.user
        try:
            obj.close()
        except BaseException as exc:
            _py_cc_report(obj, exc)
        Py_DECREF(obj)


cdef void _py_cc_on_ack(CCState* cc, int32_t ack, int64_t now) noexcept nogil:
    with gil:
        obj = <object>cc.user
        try:
            _py_cc_push(obj, cc)
            obj.on_ack(ack)
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef void _py_cc_on_loss(CCState* cc, const int32_t* loss, int count, int64_t now) noexcept nogil:
    cdef int i = 0
    cdef uint32_t w
    with gil:
        obj = <object>cc.user
        try:
            ranges = []
            while i < count:
                w = <uint32_t>loss[i]
                if (w & LOSS_RANGE_FLAG) and i + 1 < count:
                    ranges.append((<int32_t>(w & SEQ_MAX), loss[i + 1]))
                    i += 2
                else:
                    ranges.append((<int32_t>(w & SEQ_MAX), <int32_t>(w & SEQ_MAX)))
                    i += 1
            _py_cc_push(obj, cc)
            obj.on_loss(ranges)
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef void _py_cc_on_timeout(CCState* cc, int64_t now) noexcept nogil:
    with gil:
        obj = <object>cc.user
        try:
            _py_cc_push(obj, cc)
            obj.on_timeout()
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef void _py_cc_on_pkt_sent(CCState* cc, int32_t seq, int size, int64_t now) noexcept nogil:
    with gil:
        obj = <object>cc.user
        try:
            _py_cc_push(obj, cc)
            obj.on_packet_sent(seq, size)
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef void _py_cc_on_pkt_received(CCState* cc, int32_t seq, int size, int64_t now) noexcept nogil:
    with gil:
        obj = <object>cc.user
        try:
            _py_cc_push(obj, cc)
            obj.on_packet_received(seq, size)
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef void _py_cc_on_custom(CCState* cc, const uint8_t* data, int size, int64_t now) noexcept nogil:
    with gil:
        obj = <object>cc.user
        try:
            _py_cc_push(obj, cc)
            obj.on_custom_message((<const char*>data)[:size])
            _py_cc_pull(obj, cc)
        except BaseException as exc:
            _py_cc_report(obj, exc)


cdef CCOps PYTHON_CC_OPS
PYTHON_CC_OPS.init = _py_cc_init
PYTHON_CC_OPS.close = _py_cc_close
PYTHON_CC_OPS.on_ack = _py_cc_on_ack
PYTHON_CC_OPS.on_loss = _py_cc_on_loss
PYTHON_CC_OPS.on_timeout = _py_cc_on_timeout
PYTHON_CC_OPS.on_pkt_sent = _py_cc_on_pkt_sent
PYTHON_CC_OPS.on_pkt_received = _py_cc_on_pkt_received
PYTHON_CC_OPS.on_custom = _py_cc_on_custom
PYTHON_CC_OPS.report = NULL


cdef const CCOps* python_cc_ops() noexcept nogil:
    return &PYTHON_CC_OPS
