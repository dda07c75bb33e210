# cython: language_level=3
"""The port's listening endpoint as the socket layer sees it."""
from udt._muxcore cimport MuxCore, MuxListener
from udt._net cimport Channel


cdef class Listener:
    cdef MuxListener* l
    cdef MuxCore* m              # the multiplexer's state, alive as long as `mux` is
    cdef Channel channel
    cdef object mux              # the Multiplexer (a Python reference: it is in a later unit)
    cdef object _cc_class        # keeps MuxListener.cc_class alive
