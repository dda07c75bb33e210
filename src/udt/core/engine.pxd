# cython: language_level=3
"""The engine's whole C API in one namespace: ``cimport udt.core.engine as core``.

Declarations only.  The types, constants and the packet paths are in udt/_core.pxd; the rest of
the engine is split by job into units that each declare their own functions (a unit cannot
re-export through udt/_core.pxd: the units cimport its types, and Cython rejects pxd cycles).
The multiplexer and the test shim reach the engine through this header.
"""
from udt._core cimport *
from udt.core.app cimport *
from udt.core.ccnames cimport native_cc_by_name
from udt.core.lifecycle cimport (conn_abort, conn_accept, conn_close, conn_connect, conn_free,
                                 conn_init, conn_options_default, conn_set_max_bandwidth,
                                 conn_shutdown_write)
from udt.core.hsext cimport CAP_HALF_CLOSE, CAPS_LOCAL
from udt.core.listener cimport *
from udt.core.stats cimport *
