# The engine's Prometheus counters (engine_metrics.h), for relay.pyx.
from libc.stdint cimport int16_t, int64_t, uint64_t

from includes.engine cimport ls_engine

cdef extern from "engine_metrics.h" nogil:
    int LS_HIST_BOUNDS
    int LS_HTTP_TRACKED
    int LS_HTTP_NCODES
    ctypedef struct ls_hist:
        uint64_t n[17]
        uint64_t sum_us
    ctypedef struct ls_lmetrics:
        ls_hist request
        ls_hist connect
        uint64_t codes[40]
    const int64_t ls_hist_bounds_us[]
    const int16_t ls_http_tracked[]
    void ls_listener_metrics(ls_engine *e, int lid, ls_lmetrics *out)
    void ls_server_codes(ls_engine *e, int lid, int slot, uint64_t *out)
