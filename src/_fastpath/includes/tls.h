/* loadstone native data plane: TLS termination, the part of the engine's
 * interface that concerns it (engine/tls.c implements it; relay.pyx calls it).
 *
 * The control plane validates every certificate, key and CA file first
 * (loadstone.tls.certificates); the engine only turns the material it is given
 * into OpenSSL contexts. Handshakes and records then run in the workers. */
#ifndef LS_TLS_H
#define LS_TLS_H

#include "engine.h"

#include <stdint.h>

#define LS_TLS_TICKET_KEY_BYTES 80 /* name (16), AES-256 key (32), HMAC-SHA256 key (32) */
#define LS_TLS_MAX_TICKET_KEYS 8
#define LS_TLS_MAX_FAILURE_KINDS 32 /* distinct failure reasons counted per listener */
#define LS_TLS_REASON_MAX 48

/* One certificate: its PEM chain (leaf first) and its PEM private key. */
typedef struct ls_tls_cert {
    const char *chain;
    int32_t chain_len;
    const char *key;
    int32_t key_len;
} ls_tls_cert;

/* One SNI name of a certificate: exact ("api.example") or one-label wildcard
 * ("*.example"), lower case, in the order the control plane matches them. */
typedef struct ls_tls_name {
    const char *name;
    int32_t cert;
} ls_tls_name;

typedef struct ls_tls_config {
    const ls_tls_cert *certs; /* the first is the default */
    int32_t ncerts;
    const ls_tls_name *names;
    int32_t nnames;
    const unsigned char *alpn; /* wire format (length-prefixed), NULL: no ALPN */
    int32_t alpn_len;
    int32_t min_version;    /* TLS1_2_VERSION or TLS1_3_VERSION */
    const char *ciphers;      /* TLS 1.2 cipher list */
    const char *ciphersuites; /* TLS 1.3 ciphersuites, NULL: OpenSSL's */
    const char *client_ca;    /* CA file for client certificates, NULL: none */
    int32_t verify_client;    /* 0 none, 1 optional, 2 required */
    int64_t handshake_ms;
    const char *session_context; /* the same across reloads: the listener's name */
} ls_tls_config;

/* A listener's TLS counters (summed by the engine, read without a per-connection call). */
typedef struct ls_tls_stats {
    uint64_t handshakes, resumed;
    int32_t nfailures;
    char failure[LS_TLS_MAX_FAILURE_KINDS][LS_TLS_REASON_MAX];
    uint64_t failures[LS_TLS_MAX_FAILURE_KINDS];
} ls_tls_stats;

/* New handshakes of the listener use this configuration (cfg NULL: plain TCP
 * from now on); sessions already open keep theirs. 0, or -1 with OpenSSL's
 * reason in err. */
int ls_listener_set_tls(ls_engine *e, int lid, const ls_tls_config *cfg, char *err, int errlen);
/* The session-ticket keys of every TLS listener of the engine: n keys of
 * LS_TLS_TICKET_KEY_BYTES, the first encrypts, all decrypt. */
int ls_engine_set_ticket_keys(ls_engine *e, const unsigned char *keys, int n);
void ls_listener_tls_stats(ls_engine *e, int lid, ls_tls_stats *out);

/* TLS to one server (re-encryption; engine/tls_upstream.c): the settings the
 * control plane validated (loadstone.tls.upstream, the pure path's). */
typedef struct ls_tls_upstream_config {
    int32_t verify;            /* 1: the certificate and name must check out; 0: none */
    const char *ca_file;       /* trusted CAs, NULL: the system's */
    const char *name;          /* the name verified (and sent as SNI), NULL: none */
    int32_t name_is_ip;        /* name is an address: verified, never sent */
    const unsigned char *alpn; /* wire format, NULL: no ALPN */
    int32_t alpn_len;
    ls_tls_cert client;        /* the client certificate, chain NULL: none */
} ls_tls_upstream_config;

/* Connections to the listener's server `slot` from now on use TLS with these
 * settings (cfg NULL: plain TCP); those open keep theirs. 0, or -1 with
 * OpenSSL's reason in err. */
int ls_server_set_tls(ls_engine *e, int lid, int slot, const ls_tls_upstream_config *cfg,
                      char *err, int errlen);

#endif
