/* tls_upstream.c: TLS to servers (re-encryption) in the workers (part of the
 * unity build engine.c, after tls.c whose record layer it shares).
 *
 * A server slot with TLS settings has an ls_tls_client (an SSL_CTX built from
 * the settings loadstone.tls.upstream validated, as the pure path's context).
 * A connection to it gets an SSL client once the TCP connect is up; its
 * handshake is part of the connect (state ST_TLS_CONNECT, under the connect
 * timeout), and a failed one (a certificate that does not verify, a server
 * that speaks no TLS) is a failed connect: connect_failed() retries or
 * redispatches it as it would a refused one. From then on the server side's
 * bytes go through sess_recv/sess_send (tls_io, side 1), never splice.
 *
 * Resumption: the client context caches the newest session a server gave
 * (the new-session callback, so TLS 1.3 tickets that come after the
 * handshake count), and the next connection to that server offers it.
 */

static void tls_client_unref(struct ls_tls_client *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    SSL_SESSION_free(c->session);
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->lock);
    free(c->name);
    free(c);
}

/* A server gave a session: keep it for the next connection (1: taken). */
static int client_new_session(SSL *ssl, SSL_SESSION *sess)
{
    ls_tls_client *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!SSL_SESSION_is_resumable(sess))
        return 0;
    pthread_mutex_lock(&c->lock);
    SSL_SESSION *old = c->session;
    c->session = sess;
    pthread_mutex_unlock(&c->lock);
    SSL_SESSION_free(old);
    return 1;
}

static ls_tls_client *new_client(const ls_tls_upstream_config *cfg, char *err, int errlen)
{
    ls_tls_client *c = calloc(1, sizeof *c);
    SSL_CTX *ctx = c ? SSL_CTX_new(TLS_client_method()) : NULL;
    if (!ctx) {
        free(c);
        openssl_reason(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    c->refs = 1;
    c->ctx = ctx;
    c->verify = cfg->verify != 0;
    c->name_is_ip = cfg->name_is_ip != 0;
    pthread_mutex_init(&c->lock, NULL);
    SSL_CTX_set_app_data(ctx, c);
    /* as the pure path's ssl.PROTOCOL_TLS_CLIENT context: TLS 1.2 at least */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, client_new_session);
    const char *what = NULL;
    if (c->verify) {
        int ok = cfg->ca_file ? SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL)
                              : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1)
            what = "ca_file";
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    /* SSL_CTX_set_alpn_protos returns 0 on success */
    if (!what && cfg->alpn_len > 0 &&
        SSL_CTX_set_alpn_protos(ctx, cfg->alpn, (unsigned)cfg->alpn_len) != 0)
        what = "alpn";
    if (!what && cfg->name && !(c->name = strdup(cfg->name)))
        what = "out of memory";
    if (what) {
        openssl_reason(err, errlen, what);
        tls_client_unref(c);
        return NULL;
    }
    if (cfg->client.chain && use_pem(ctx, &cfg->client, err, errlen) < 0) {
        tls_client_unref(c);
        return NULL;
    }
    return c;
}

int ls_server_set_tls(ls_engine *e, int lid, int slot, const ls_tls_upstream_config *cfg,
                      char *err, int errlen)
{
    ls_listener *L = get_listener(e, lid);
    if (!L || slot < 0 || slot >= L->nslots) {
        snprintf(err, (size_t)errlen, "no listener %d or slot %d", lid, slot);
        return -1;
    }
    ls_tls_client *c = NULL;
    if (cfg && !(c = new_client(cfg, err, errlen)))
        return -1;
    pthread_mutex_lock(&L->lock);
    ls_tls_upstreams *U = L->tls_up;
    if (!U && c)
        U = L->tls_up = calloc(1, sizeof *U);
    if (U && slot >= U->n && c) {
        int n = slot + 16;
        ls_tls_client **by = realloc(U->by_slot, (size_t)n * sizeof *by);
        if (by) {
            memset(by + U->n, 0, (size_t)(n - U->n) * sizeof *by);
            U->by_slot = by;
            U->n = n;
        }
    }
    ls_tls_client *old = NULL;
    int ok = !c || (U && slot < U->n);
    if (ok && U && slot < U->n) {
        old = U->by_slot[slot];
        U->by_slot[slot] = c;
    }
    pthread_mutex_unlock(&L->lock);
    if (!ok) {
        tls_client_unref(c);
        snprintf(err, (size_t)errlen, "out of memory");
        return -1;
    }
    tls_client_unref(old); /* freed with the last connection that uses it */
    return 0;
}

static void tls_upstream_listener_free(ls_listener *L)
{
    ls_tls_upstreams *U = L->tls_up;
    if (!U)
        return;
    for (int i = 0; i < U->n; i++)
        tls_client_unref(U->by_slot[i]);
    free(U->by_slot);
    free(U);
    L->tls_up = NULL;
}

/* The server side's SSL, without close_notify (a failed connect, a dropped
 * idle connection, the session's end after tls_upstream_close). */
static void tls_upstream_free(ls_session *s) { tls_conn_free(&s->stls); }

/* close_notify to the server, when the connection is sound. */
static void tls_upstream_close(ls_session *s) { tls_conn_close(s->stls); }

static void tls_upstream_step(ls_worker *W, ls_session *s)
{
    ls_tls_conn *t = s->stls;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        s->state = ST_CONNECTING; /* what proto->connected finds after a plain connect */
        s->rd[1] = s->wr[1] = 1;  /* bytes after the Finished may wait in the kernel */
        metrics_connected(W, s);
        s->proto->connected(W, s);
        return;
    }
    int err = SSL_get_error(t->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return;
    /* a certificate that does not verify, no TLS spoken: a failed connect,
     * logged with OpenSSL's reason as the pure path's ("certificate verify
     * failed: ..."; upstream.handshake_error_text) */
    t->fatal = 1;
    long verified = SSL_get_verify_result(t->ssl);
    unsigned long e = ERR_peek_last_error();
    if (err == SSL_ERROR_SSL && verified != X509_V_OK) {
        t->why = X509_verify_cert_error_string(verified);
        t->verify_failed = 1;
    }
    else if (err == SSL_ERROR_SSL && e && ERR_reason_error_string(e) != NULL)
        t->why = ERR_reason_error_string(e);
    else
        t->why = "closed";
    ERR_clear_error();
    timer_del(W, s);
    connect_failed(W, s, EPROTO);
}

/* The TCP connect to the session's server is up: start its TLS handshake if
 * the server has TLS settings (1: the connect goes on in ST_TLS_CONNECT, or
 * it failed), else 0 (connected). */
static int tls_upstream_begin(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    if (!L->tls_up)
        return 0;
    pthread_mutex_lock(&L->lock);
    ls_tls_upstreams *U = L->tls_up;
    ls_tls_client *c = s->slot < U->n ? U->by_slot[s->slot] : NULL;
    if (c)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&L->lock);
    if (!c)
        return 0;
    ls_tls_conn *t = calloc(1, sizeof *t);
    SSL *ssl = t ? SSL_new(c->ctx) : NULL;
    int ok = ssl && SSL_set_fd(ssl, s->fd[1]) == 1;
    if (ok && c->name) {
        if (c->verify)
            ok = c->name_is_ip
                     ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->name) == 1
                     : SSL_set1_host(ssl, c->name) == 1;
        if (ok && !c->name_is_ip)
            ok = SSL_set_tlsext_host_name(ssl, c->name) == 1;
    }
    if (ok) {
        pthread_mutex_lock(&c->lock);
        if (c->session)
            SSL_set_session(ssl, c->session); /* offered; a refusal is a full handshake */
        pthread_mutex_unlock(&c->lock);
    }
    if (!ok) {
        SSL_free(ssl);
        free(t);
        tls_client_unref(c);
        ERR_clear_error();
        timer_del(W, s);
        connect_failed(W, s, ENOMEM);
        return 1;
    }
    SSL_set_connect_state(ssl);
    t->ssl = ssl;
    t->client = c;
    s->stls = t;
    s->dir[0].splice = s->dir[1].splice = 0; /* records cannot be spliced */
    if (s->state != ST_CONNECTING) /* connected at once: the deadline starts now */
        timer_set(W, s, W->now_us + L->cfg.connect_ms * 1000);
    s->state = ST_TLS_CONNECT;
    tls_upstream_step(W, s);
    return 1;
}
