/* sni-t.h: the types of SNI passthrough in the engine (sni.c). A listener
 * with passthrough has an ls_sni: its routes (one ls_sni_config per reload,
 * the replaced ones kept until the listener goes), a server table per pool and
 * the counters; a session being inspected has an ls_sni_conn. */
#ifndef LS_SNI_T_H
#define LS_SNI_T_H

#include "engine-t.h"
#include "sni.h"

typedef struct ls_sni_name {
    char *name; /* lower case; a suffix starts with its dot */
    size_t len;
    int32_t pool;
    uint8_t suffix;
} ls_sni_name;

typedef struct ls_sni_config {
    int64_t inspect_ms;
    int32_t default_pool;
    int n;
    struct ls_sni_config *prev; /* in ls_sni.old: replaced, kept until the listener goes */
    ls_sni_name names[];        /* in the order written */
} ls_sni_config;

typedef struct ls_sni {
    ls_sni_config *volatile cfg;  /* NULL: no passthrough (written under the engine's ctl_lock) */
    ls_sni_config *old;
    ls_table *tables[LS_SNI_MAX_POOLS]; /* by pool id, under the listener's lock */
    uint64_t routed[LS_SNI_MAX_POOLS];  /* atomic */
    uint64_t refused[LS_SNI_NREFUSED];  /* atomic */
} ls_sni;

/* A session's ClientHello inspection, and once routed its log field. */
typedef struct ls_sni_conn {
    ls_ch_reader reader;
    char *buf; /* every byte the client sent so far; handed to dir[0] when routed */
    uint32_t len, cap;
    uint8_t eof; /* the client's FIN came */
    char log[96]; /* "version/passthrough/sni" (ls_record.tls) */
} ls_sni_conn;

#endif
