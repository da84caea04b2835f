/* engine_metrics.h: the engine's Prometheus counters (engine/metrics.c), read
 * by the control plane in bulk at scrape time (loadstone/metrics.py).
 *
 * The workers count, with plain stores into their own rows, what a scrape
 * needs per request and per connect: HTTP responses by status code (per
 * listener and per server) and two histograms per listener, the request
 * duration (HTTP) and the connect time (tcp and http). Nothing here costs a
 * Python call, a record or a lock per request. The bucket bounds and the codes
 * counted one by one are the same lists as loadstone/metrics_buckets.py (the
 * pure path's), which a unit test keeps equal.
 */
#ifndef LS_ENGINE_METRICS_H
#define LS_ENGINE_METRICS_H

#include <stdint.h>

#define LS_HIST_BOUNDS 16 /* upper bounds; one more bucket counts what is above */
#define LS_HTTP_TRACKED 34 /* codes counted one by one */
/* the counters of a code row: the tracked codes, then one "other" per class
 * [1xx, 2xx, 3xx, 4xx, 5xx, outside 100-599] */
#define LS_HTTP_NCODES (LS_HTTP_TRACKED + 6)

typedef struct ls_hist {
    uint64_t n[LS_HIST_BOUNDS + 1]; /* per bucket, not cumulative */
    uint64_t sum_us;
} ls_hist;

typedef struct ls_lmetrics {
    ls_hist request; /* mode http: a request's total time (the log's Ta) */
    ls_hist connect; /* a new server connection's connect time */
    uint64_t codes[LS_HTTP_NCODES];
} ls_lmetrics;

typedef struct ls_engine ls_engine;

extern const int64_t ls_hist_bounds_us[LS_HIST_BOUNDS];
extern const int16_t ls_http_tracked[LS_HTTP_TRACKED];

/* Summed over the workers; all zero for an unknown listener or slot. */
void ls_listener_metrics(ls_engine *e, int lid, ls_lmetrics *out);
void ls_server_codes(ls_engine *e, int lid, int slot, uint64_t *out /* [LS_HTTP_NCODES] */);

#endif
