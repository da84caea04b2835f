/* metrics.c: the workers' Prometheus counters (part of the unity build
 * engine.c; the interface is includes/engine_metrics.h).
 *
 * Each worker has its own row per listener (L->metrics[worker], cache-line
 * aligned) and per server slot (the chunk's `codes`), written with plain
 * increments by that worker alone; the control plane sums the rows when it is
 * scraped. A listener or chunk whose rows could not be allocated is simply not
 * counted (the pointers are NULL): metrics never fail a session.
 */
#include "engine_metrics.h"

const int64_t ls_hist_bounds_us[LS_HIST_BOUNDS] = {
    500,    1000,    2500,    5000,    10000,   25000,   50000,    100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};

/* relay.pyx and engine_metrics.pxd size a code row as 40 */
_Static_assert(LS_HTTP_NCODES == 40, "a code row is 40 counters");

const int16_t ls_http_tracked[LS_HTTP_TRACKED] = {
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307,
    308, 400, 401, 403, 404, 405, 408, 409, 410, 413, 414, 415,
    421, 422, 429, 431, 500, 501, 502, 503, 504, 505,
};

typedef struct ls_lmetrics_w {
    ls_lmetrics m;
} __attribute__((aligned(64))) ls_lmetrics_w;

/* status -> its counter in a code row; filled once at load */
static uint8_t code_row[600];

__attribute__((constructor)) static void metrics_init_codes(void)
{
    for (int st = 0; st < 600; st++)
        code_row[st] = (uint8_t)(LS_HTTP_TRACKED + (st >= 100 ? st / 100 - 1 : 5));
    for (int i = 0; i < LS_HTTP_TRACKED; i++)
        code_row[ls_http_tracked[i]] = (uint8_t)i;
}

static inline int code_index(int status)
{
    return status >= 100 && status < 600 ? code_row[status] : LS_HTTP_TRACKED + 5;
}

static ls_lmetrics_w *metrics_listener_alloc(int workers)
{
    ls_lmetrics_w *m = NULL;
    if (posix_memalign((void **)&m, 64, (size_t)workers * sizeof *m) != 0)
        return NULL;
    memset(m, 0, (size_t)workers * sizeof *m);
    return m;
}

static uint64_t *metrics_codes_alloc(int workers)
{
    return calloc((size_t)workers * LS_SLOTS_PER_CHUNK * LS_HTTP_NCODES, sizeof(uint64_t));
}

static uint64_t *slot_codes(ls_listener *L, int worker, int slot)
{
    ls_chunk *ch = L->chunks[slot / LS_SLOTS_PER_CHUNK];
    if (!ch || !ch->codes)
        return NULL;
    size_t row = (size_t)worker * LS_SLOTS_PER_CHUNK + (size_t)(slot % LS_SLOTS_PER_CHUNK);
    return ch->codes + row * LS_HTTP_NCODES;
}

static inline void hist_add(ls_hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int b = 0;
    while (b < LS_HIST_BOUNDS && us > ls_hist_bounds_us[b])
        b++;
    h->n[b]++;
    h->sum_us += (uint64_t)us;
}

/* The server connection of s is up: its connect began at s->connect_us. */
static void metrics_connected(ls_worker *W, ls_session *s)
{
    ls_lmetrics_w *m = s->L->metrics;
    if (m)
        hist_add(&m[W->id].m.connect, W->now_us - s->connect_us);
}

/* An HTTP request ended with `status` after `took_us`, served by `slot` (-1: none). */
static void metrics_http(ls_worker *W, ls_session *s, int status, int slot, int64_t took_us)
{
    ls_listener *L = s->L;
    int k = code_index(status);
    if (L->metrics) {
        ls_lmetrics *m = &L->metrics[W->id].m;
        m->codes[k]++;
        hist_add(&m->request, took_us);
    }
    if (slot >= 0 && slot < L->nslots) {
        uint64_t *row = slot_codes(L, W->id, slot);
        if (row)
            row[k]++;
    }
}

static void hist_sum(ls_hist *out, const ls_hist *h)
{
    for (int b = 0; b <= LS_HIST_BOUNDS; b++)
        out->n[b] += __atomic_load_n(&h->n[b], __ATOMIC_RELAXED);
    out->sum_us += __atomic_load_n(&h->sum_us, __ATOMIC_RELAXED);
}

void ls_listener_metrics(ls_engine *e, int lid, ls_lmetrics *out)
{
    memset(out, 0, sizeof *out);
    ls_listener *L = lid >= 0 && lid < e->nlisteners ? e->listeners[lid] : NULL;
    if (!L || !L->metrics)
        return;
    for (int i = 0; i < e->nworkers; i++) {
        const ls_lmetrics *m = &L->metrics[i].m;
        hist_sum(&out->request, &m->request);
        hist_sum(&out->connect, &m->connect);
        for (int k = 0; k < LS_HTTP_NCODES; k++)
            out->codes[k] += __atomic_load_n(&m->codes[k], __ATOMIC_RELAXED);
    }
}

void ls_server_codes(ls_engine *e, int lid, int slot, uint64_t *out)
{
    memset(out, 0, LS_HTTP_NCODES * sizeof *out);
    ls_listener *L = lid >= 0 && lid < e->nlisteners ? e->listeners[lid] : NULL;
    if (!L || slot < 0 || slot >= L->nslots)
        return;
    for (int i = 0; i < e->nworkers; i++) {
        const uint64_t *row = slot_codes(L, i, slot);
        if (!row)
            return;
        for (int k = 0; k < LS_HTTP_NCODES; k++)
            out[k] += __atomic_load_n(&row[k], __ATOMIC_RELAXED);
    }
}
