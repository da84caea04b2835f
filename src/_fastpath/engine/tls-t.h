/* tls-t.h: the types of TLS termination in the engine (tls.c). A TLS
 * listener has an ls_tls; each of its configurations (one per reload) is an
 * ls_tls_ctx, shared by the sessions that started their handshake under it
 * and freed with the last of them; a TLS session has an ls_tls_conn. */
#ifndef LS_TLS_T_H
#define LS_TLS_T_H

#include "engine-t.h"
#include "tls.h"

#include <openssl/ssl.h>

typedef struct ls_tls_ticket_key {
    unsigned char name[16], aes[32], hmac[32];
} ls_tls_ticket_key;

/* The engine's session-ticket keys, shared by every listener and worker. */
typedef struct ls_tls_keys {
    pthread_rwlock_t lock;
    int n; /* key[0] encrypts; all decrypt */
    ls_tls_ticket_key key[LS_TLS_MAX_TICKET_KEYS];
} ls_tls_keys;

/* One configuration of a listener's TLS: a context per certificate (ctx[0],
 * the default, takes every ClientHello; the SNI callback moves a connection to
 * the certificate its name matches). */
typedef struct ls_tls_ctx {
    int refs; /* the listener's (while current) + one per session (atomic) */
    int n;
    SSL_CTX **ctx;
    char **names; /* SNI names, in matching order, and their certificates */
    int32_t *name_cert;
    int nnames;
    unsigned char *alpn;
    int alpn_len;
    int64_t handshake_ms;
    struct ls_tls *owner;
} ls_tls_ctx;

/* A listener's TLS: the configuration new handshakes use, and the counters. */
typedef struct ls_tls {
    pthread_mutex_t lock;
    ls_tls_ctx *cur; /* under lock; NULL: TLS turned off by a reload */
    ls_tls_keys *keys;
    uint64_t handshakes, resumed; /* atomic */
    int nfailures;                /* under lock */
    char failure[LS_TLS_MAX_FAILURE_KINDS][LS_TLS_REASON_MAX];
    uint64_t failures[LS_TLS_MAX_FAILURE_KINDS];
} ls_tls;

/* A session's TLS, on its client side. */
typedef struct ls_tls_conn {
    SSL *ssl;
    ls_tls_ctx *cfg;
    uint8_t read_wants_write; /* SSL_read waits for the socket to be writable */
    uint8_t write_wants_read; /* SSL_write waits for it to be readable */
    uint8_t fatal;            /* an error: no more SSL calls but SSL_free */
    uint8_t closed;           /* close_notify sent */
    struct ls_tls_client *client; /* on a server side: its settings (tls_upstream.c) */
    const char *why;              /* on a server side: why its handshake failed (static) */
    uint8_t verify_failed;        /* ... because the certificate did not verify */
} ls_tls_conn;

/* TLS to one server: the context of its settings and the session the last
 * handshake with it left, which the next connection offers (resumption). */
typedef struct ls_tls_client {
    int refs; /* the listener's (while current) + one per connection (atomic) */
    SSL_CTX *ctx;
    char *name; /* verified, and sent as SNI unless an address; NULL: none */
    uint8_t verify, name_is_ip;
    pthread_mutex_t lock; /* session */
    SSL_SESSION *session;
} ls_tls_client;

/* A listener's TLS to its servers, by slot (under the listener's lock). */
typedef struct ls_tls_upstreams {
    int n;
    ls_tls_client **by_slot;
} ls_tls_upstreams;

#endif
