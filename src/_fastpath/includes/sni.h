/* loadstone native data plane: SNI passthrough, the part of the engine's
 * interface that concerns it (engine/sni.c implements it; relay.pyx calls it
 * for loadstone/datapath/sni_native.py).
 *
 * A tcp listener with a passthrough setting reads each admitted client's
 * ClientHello (engine/clienthello.c) before it picks a server, chooses a pool
 * by its server name, and relays the bytes read, untouched, first. Pools are
 * numbered by the control plane (ids stable for the listener's life) and each
 * has its own published server table. */
#ifndef LS_SNI_H
#define LS_SNI_H

#include "clienthello.h"
#include "engine.h"

#include <stdint.h>

#define LS_SNI_MAX_POOLS 64 /* pool ids of one listener: 0 .. 63 */
/* refusal counts: the reader's reasons (LS_CH_*), then the inspect timeout */
#define LS_SNI_TIMEOUT LS_CH_NREASONS
#define LS_SNI_NREFUSED (LS_CH_NREASONS + 1)

/* One name routed to a pool: exact ("a.example"), or a suffix (".example",
 * from "*.example", matching any name that ends with it). */
typedef struct ls_sni_route {
    const char *name;
    int32_t pool;
    int32_t suffix;
} ls_sni_route;

/* The listener's passthrough from its next admitted session on: routes in the
 * order written (an exact name wins over a suffix; the first of each wins),
 * the pool of a hello no route names or without SNI, the time the whole
 * ClientHello may take. n < 0: no passthrough. 0, or -1 (bad pool id, out of
 * memory). */
int ls_listener_set_sni(ls_engine *e, int lid, int64_t inspect_ms, int default_pool,
                        const ls_sni_route *routes, int n);

/* A pool's server table, as ls_listener_publish's. */
int ls_listener_publish_pool(ls_engine *e, int lid, int pool, int alg, const ls_tserver *servers,
                             int n, const uint64_t *ring_pos, const int32_t *ring_owner,
                             int nring);

/* Connections routed by pool id, and refused by reason (LS_CH_*, LS_SNI_TIMEOUT). */
void ls_listener_sni_stats(ls_engine *e, int lid, uint64_t routed[LS_SNI_MAX_POOLS],
                           uint64_t refused[LS_SNI_NREFUSED]);

#endif
