/* tls.c: TLS termination in the workers (part of the unity build engine.c),
 * with the system's OpenSSL; no call here takes the GIL or waits.
 *
 * A TLS listener's accepted connection gets an SSL (tls_attach) and runs its
 * handshake before it is admitted (state ST_TLS_HANDSHAKE, under its own
 * timeout); from then on the rest of the engine reads and writes the client
 * through sess_recv/sess_send, which behave as recv/send on a non-blocking
 * socket (-1 with EAGAIN when OpenSSL wants the socket). Two rules keep the
 * edge-triggered loop right:
 *  - a read returns less than asked only when the socket is drained (or at
 *    the end), so "a short read means wait for the next edge" stays true;
 *    a write likewise returns less only when the socket is full;
 *  - an SSL_read that needs to write (or SSL_write that needs to read) is
 *    remembered, and the opposite edge re-arms it (tls_note_event).
 * splice(2) cannot move TLS records: a TLS session copies through the worker.
 *
 * Certificates and keys come validated from the control plane
 * (loadstone.tls.native builds the configuration); a reload installs a new
 * configuration for new handshakes, and sessions keep theirs (refcounted).
 * Session tickets are encrypted with the engine's keys (ls_engine_set_ticket_keys),
 * which the control plane makes, rotates and keeps across reloads.
 */

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>

/* ---------------------------------------------------------------------------------- */
/* configurations                                                                     */

static void tls_ctx_unref(ls_tls_ctx *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (int i = 0; i < c->n; i++)
        SSL_CTX_free(c->ctx[i]);
    for (int i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->ctx);
    free(c->names);
    free(c->name_cert);
    free(c->alpn);
    free(c);
}

static ls_tls_keys *tls_keys(ls_engine *e)
{
    if (!e->tls_keys) {
        ls_tls_keys *K = calloc(1, sizeof *K);
        if (!K)
            return NULL;
        pthread_rwlock_init(&K->lock, NULL);
        /* a key of its own until the control plane gives the shared ones */
        if (RAND_bytes((unsigned char *)&K->key[0], sizeof K->key[0]) == 1)
            K->n = 1;
        e->tls_keys = K;
    }
    return e->tls_keys;
}

static int ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    ls_tls_ctx *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    ls_tls_keys *K = c->owner->keys;
    int ret = 0;
    pthread_rwlock_rdlock(&K->lock);
    const ls_tls_ticket_key *k = NULL;
    if (enc) {
        if (K->n && RAND_bytes(iv, 16) == 1) {
            k = &K->key[0];
            memcpy(name, k->name, 16);
            ret = 1;
        }
    } else {
        for (int i = 0; i < K->n; i++) {
            if (memcmp(name, K->key[i].name, 16) == 0) {
                k = &K->key[i];
                /* 2: renew the ticket. A TLS 1.3 client uses a ticket once, so a
                 * resumed connection that got no new one would make the next a
                 * full handshake; a TLS 1.2 ticket is renewed once its key is
                 * no longer the newest. */
                ret = i == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
                break;
            }
        }
    }
    if (k) {
        unsigned char hmac[32];
        memcpy(hmac, k->hmac, sizeof hmac);
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, hmac, sizeof hmac),
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        int ok = enc ? EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv)
                     : EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv);
        if (!ok || !EVP_MAC_CTX_set_params(hctx, params))
            ret = -1;
    }
    pthread_rwlock_unlock(&K->lock);
    return ret;
}

/* The certificate for the name the client sent: the first certificate with a
 * matching name (exact, or a wildcard for exactly one label), as
 * loadstone.tls.certificates.Certificate.matches; the default otherwise. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    ls_tls_ctx *c = arg;
    const char *sent = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!sent || c->n < 2)
        return SSL_TLSEXT_ERR_OK;
    char name[256];
    size_t len = strlen(sent);
    if (len >= sizeof name)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < len; i++)
        name[i] = (char)((sent[i] >= 'A' && sent[i] <= 'Z') ? sent[i] + 32 : sent[i]);
    if (len && name[len - 1] == '.')
        len--;
    name[len] = 0;
    const char *parent = strchr(name, '.');
    for (int i = 0; i < c->nnames; i++) {
        const char *n = c->names[i];
        int hit = strcmp(n, name) == 0 ||
                  (n[0] == '*' && n[1] == '.' && parent && strcmp(n + 2, parent + 1) == 0);
        if (hit) {
            if (c->name_cert[i] > 0)
                SSL_set_SSL_CTX(ssl, c->ctx[c->name_cert[i]]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    ls_tls_ctx *c = arg;
    unsigned char *chosen;
    if (SSL_select_next_proto(&chosen, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no protocol in common: go on without ALPN */
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

static void openssl_reason(char *err, int errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, (size_t)errlen, "%s: %s", what, r ? r : "refused by OpenSSL");
    ERR_clear_error();
}

static int use_pem(SSL_CTX *ctx, const ls_tls_cert *cert, char *err, int errlen)
{
    BIO *b = BIO_new_mem_buf(cert->chain, cert->chain_len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int ok = x && SSL_CTX_use_certificate(ctx, x) == 1;
    X509_free(x);
    while (ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) { /* takes x on success */
            X509_free(x);
            ok = 0;
        }
    }
    BIO_free(b);
    if (!ok) {
        openssl_reason(err, errlen, "certificate");
        return -1;
    }
    ERR_clear_error(); /* the end of the chain */
    b = BIO_new_mem_buf(cert->key, cert->key_len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    ok = k && SSL_CTX_use_PrivateKey(ctx, k) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(k);
    BIO_free(b);
    if (!ok) {
        openssl_reason(err, errlen, "private key");
        return -1;
    }
    return 0;
}

static SSL_CTX *new_server_ctx(const ls_tls_config *cfg, const ls_tls_cert *cert, ls_tls_ctx *c,
                               char *err, int errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    /* No client-initiated renegotiation (a CPU-exhaustion vector), the server's
     * cipher order (Mozilla intermediate), and a TCP close without close_notify
     * taken as the end (most HTTP clients do so). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    /* Partial writes: SSL_write behaves as send(); buffers are dropped while a
     * connection is idle (memory per idle client). */
    /* Read ahead: one read() takes every record the socket holds (a record is
     * otherwise two, its header then its body; counted with strace, a
     * keep-alive request costs 2 reads instead of 3). tls_io reads until
     * OpenSSL's buffer and the socket are both empty, so nothing waits unseen. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    const char *what = NULL;
    if (SSL_CTX_set_min_proto_version(ctx, cfg->min_version) != 1)
        what = "min_version";
    else if (SSL_CTX_set_cipher_list(ctx, cfg->ciphers) != 1)
        what = "ciphers";
    else if (cfg->ciphersuites && SSL_CTX_set_ciphersuites(ctx, cfg->ciphersuites) != 1)
        what = "ciphersuites";
    if (what) {
        openssl_reason(err, errlen, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (use_pem(ctx, cert, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* The same context id across reloads: sessions stay resumable. */
    unsigned char sid[SSL_MAX_SID_CTX_LENGTH];
    size_t sidlen = strlen(cfg->session_context);
    if (sidlen > sizeof sid)
        sidlen = sizeof sid;
    memcpy(sid, cfg->session_context, sidlen);
    SSL_CTX_set_session_id_context(ctx, sid, (unsigned)sidlen);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    if (cfg->client_ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, cfg->client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            openssl_reason(err, errlen, "client_ca");
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    int verify = cfg->verify_client == 0   ? SSL_VERIFY_NONE
                 : cfg->verify_client == 1 ? SSL_VERIFY_PEER
                                           : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, verify, NULL);
    if (c->alpn)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, c);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, c);
    SSL_CTX_set_app_data(ctx, c);
    return ctx;
}

static ls_tls *listener_tls(ls_listener *L)
{
    if (!L->tls) {
        ls_tls *T = calloc(1, sizeof *T);
        if (!T)
            return NULL;
        pthread_mutex_init(&T->lock, NULL);
        T->keys = tls_keys(L->e);
        if (!T->keys) {
            free(T);
            return NULL;
        }
        L->tls = T;
    }
    return L->tls;
}

int ls_listener_set_tls(ls_engine *e, int lid, const ls_tls_config *cfg, char *err, int errlen)
{
    ls_listener *L = get_listener(e, lid);
    if (!L) {
        snprintf(err, (size_t)errlen, "no listener %d", lid);
        return -1;
    }
    pthread_mutex_lock(&e->ctl_lock);
    ls_tls *T = cfg || L->tls ? listener_tls(L) : NULL;
    pthread_mutex_unlock(&e->ctl_lock);
    if (!cfg) {
        if (T) {
            pthread_mutex_lock(&T->lock);
            ls_tls_ctx *old = T->cur;
            T->cur = NULL;
            pthread_mutex_unlock(&T->lock);
            tls_ctx_unref(old);
        }
        return 0;
    }
    ls_tls_ctx *c = T ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        snprintf(err, (size_t)errlen, "out of memory");
        return -1;
    }
    c->refs = 1;
    c->owner = T;
    c->handshake_ms = cfg->handshake_ms;
    c->ctx = calloc((size_t)cfg->ncerts, sizeof *c->ctx);
    c->names = calloc((size_t)cfg->nnames + 1, sizeof *c->names);
    c->name_cert = calloc((size_t)cfg->nnames + 1, sizeof *c->name_cert);
    if (cfg->alpn_len > 0 && (c->alpn = malloc((size_t)cfg->alpn_len)) != NULL) {
        memcpy(c->alpn, cfg->alpn, (size_t)cfg->alpn_len);
        c->alpn_len = cfg->alpn_len;
    }
    int failed = !c->ctx || !c->names || !c->name_cert || (cfg->alpn_len > 0 && !c->alpn);
    if (failed)
        snprintf(err, (size_t)errlen, "out of memory");
    for (int i = 0; i < cfg->nnames && !failed; i++) {
        c->names[i] = strdup(cfg->names[i].name);
        c->name_cert[i] = cfg->names[i].cert;
        c->nnames = i + 1;
        failed = !c->names[i] || cfg->names[i].cert < 0 || cfg->names[i].cert >= cfg->ncerts;
        if (failed)
            snprintf(err, (size_t)errlen, "bad SNI name %d", i);
    }
    for (int i = 0; i < cfg->ncerts && !failed; i++) {
        c->ctx[i] = new_server_ctx(cfg, &cfg->certs[i], c, err, errlen);
        c->n = i + 1;
        failed = !c->ctx[i];
    }
    if (failed || cfg->ncerts < 1) {
        if (!failed)
            snprintf(err, (size_t)errlen, "no certificate");
        tls_ctx_unref(c);
        return -1;
    }
    pthread_mutex_lock(&T->lock);
    ls_tls_ctx *old = T->cur;
    T->cur = c;
    pthread_mutex_unlock(&T->lock);
    tls_ctx_unref(old); /* freed with the last session that uses it */
    return 0;
}

int ls_engine_set_ticket_keys(ls_engine *e, const unsigned char *keys, int n)
{
    if (n < 1 || n > LS_TLS_MAX_TICKET_KEYS)
        return -1;
    pthread_mutex_lock(&e->ctl_lock);
    ls_tls_keys *K = tls_keys(e);
    pthread_mutex_unlock(&e->ctl_lock);
    if (!K)
        return -1;
    pthread_rwlock_wrlock(&K->lock);
    memcpy(K->key, keys, (size_t)n * sizeof K->key[0]);
    K->n = n;
    pthread_rwlock_unlock(&K->lock);
    return 0;
}

void ls_listener_tls_stats(ls_engine *e, int lid, ls_tls_stats *out)
{
    memset(out, 0, sizeof *out);
    ls_listener *L = get_listener(e, lid);
    ls_tls *T = L ? L->tls : NULL;
    if (!T)
        return;
    out->handshakes = __atomic_load_n(&T->handshakes, __ATOMIC_RELAXED);
    out->resumed = __atomic_load_n(&T->resumed, __ATOMIC_RELAXED);
    pthread_mutex_lock(&T->lock);
    out->nfailures = T->nfailures;
    memcpy(out->failure, T->failure, sizeof out->failure);
    memcpy(out->failures, T->failures, sizeof out->failures);
    pthread_mutex_unlock(&T->lock);
}

static void tls_listener_free(ls_listener *L)
{
    if (!L->tls)
        return;
    tls_ctx_unref(L->tls->cur);
    pthread_mutex_destroy(&L->tls->lock);
    free(L->tls);
    L->tls = NULL;
}

static void tls_engine_free(ls_engine *e)
{
    if (e->tls_keys) {
        pthread_rwlock_destroy(&e->tls_keys->lock);
        OPENSSL_cleanse(e->tls_keys, sizeof *e->tls_keys);
        free(e->tls_keys);
        e->tls_keys = NULL;
    }
}

/* ---------------------------------------------------------------------------------- */
/* a session's TLS                                                                    */

/* A TLS listener's new connection gets its SSL; 0, or -1 (close it). */
static int tls_attach(ls_session *s)
{
    ls_tls *T = s->L->tls;
    if (!T)
        return 0;
    pthread_mutex_lock(&T->lock);
    ls_tls_ctx *c = T->cur;
    if (c)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&T->lock);
    if (!c)
        return 0; /* TLS turned off by a reload */
    ls_tls_conn *t = calloc(1, sizeof *t);
    SSL *ssl = t ? SSL_new(c->ctx[0]) : NULL;
    if (!ssl || SSL_set_fd(ssl, s->fd[0]) != 1) {
        SSL_free(ssl);
        free(t);
        tls_ctx_unref(c);
        ERR_clear_error();
        return -1;
    }
    SSL_set_accept_state(ssl);
    t->ssl = ssl;
    t->cfg = c;
    s->tls = t;
    /* records cannot be spliced */
    s->dir[0].splice = s->dir[1].splice = 0;
    return 0;
}

static void tls_client_unref(struct ls_tls_client *c); /* tls_upstream.c */

/* One side's TLS (the client's, or a server's: tls_upstream.c), freed; NULL after. */
static void tls_conn_free(ls_tls_conn **side)
{
    ls_tls_conn *t = *side;
    if (!t)
        return;
    SSL_free(t->ssl);
    tls_ctx_unref(t->cfg);
    tls_client_unref(t->client);
    free(t);
    *side = NULL;
}

static void tls_free(ls_session *s)
{
    tls_conn_free(&s->stls);
    tls_conn_free(&s->tls);
}

/* Before a descriptor closes: close_notify, when the connection is sound. */
static void tls_conn_close(ls_tls_conn *t)
{
    if (!t || t->fatal || t->closed || !SSL_is_init_finished(t->ssl))
        return;
    t->closed = 1;
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}

static void tls_close(ls_session *s) { tls_conn_close(s->tls); }

/* The session's write side to the client ends (the server's FIN relayed). */
static void tls_shutdown_write(ls_session *s) { tls_close(s); }

/* A short, bounded label for a failed handshake, the pure path's words
 * (loadstone.tls.termination.failure_reason): OpenSSL's reason in lower case
 * with underscores, "closed" when the client went away, "timeout". */
static void failure_label(int sslerr, char *out, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = sslerr == SSL_ERROR_SSL && e ? ERR_reason_error_string(e) : NULL;
    if (!r || strcmp(r, "unexpected eof while reading") == 0)
        r = "closed";
    size_t i = 0;
    for (; r[i] && i + 1 < size; i++)
        out[i] = r[i] == ' ' ? '_' : (char)((r[i] >= 'A' && r[i] <= 'Z') ? r[i] + 32 : r[i]);
    out[i] = 0;
}

static void count_failure(ls_tls *T, const char *label)
{
    pthread_mutex_lock(&T->lock);
    int i = 0;
    for (; i < T->nfailures; i++)
        if (strcmp(T->failure[i], label) == 0)
            break;
    if (i == T->nfailures) {
        if (i < LS_TLS_MAX_FAILURE_KINDS - 1) {
            snprintf(T->failure[i], sizeof T->failure[i], "%s", label);
            T->nfailures++;
        } else { /* the last kind takes the rest: a bounded metrics label set */
            i = LS_TLS_MAX_FAILURE_KINDS - 1;
            snprintf(T->failure[i], sizeof T->failure[i], "other");
            T->nfailures = LS_TLS_MAX_FAILURE_KINDS;
        }
    }
    T->failures[i]++;
    pthread_mutex_unlock(&T->lock);
}

static void handshake_failed(ls_worker *W, ls_session *s, const char *label)
{
    s->tls->fatal = 1;
    count_failure(s->L->tls, label);
    ERR_clear_error();
    ls_record *r = new_record(W); /* the pure path's log line: who, and why */
    if (r) {
        r->type = LS_REC_TLS_FAILED;
        r->listener = s->L->id;
        r->slot = -1;
        r->duration = (double)(W->now_us - s->start_us) / 1e6;
        format_addr(&s->client, r->client, sizeof r->client);
        snprintf(r->tls, sizeof r->tls, "%s", label);
    }
    finish(W, s, LS_END_CLIENT_RESET, 0);
}

static void tls_handshake_step(ls_worker *W, ls_session *s)
{
    ls_tls_conn *t = s->tls;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        ls_tls *T = s->L->tls;
        __atomic_fetch_add(&T->handshakes, 1, __ATOMIC_RELAXED);
        if (SSL_session_reused(t->ssl))
            __atomic_fetch_add(&T->resumed, 1, __ATOMIC_RELAXED);
        timer_del(W, s);
        s->L->wstats[W->id].sessions_total++; /* a session from now on, as on the pure path */
        s->state = ST_PICKING;
        /* what the client sent after its Finished may wait in the kernel, past
         * the edge the handshake took */
        s->rd[0] = s->wr[0] = 1;
        admit(W, s);
        return;
    }
    int err = SSL_get_error(t->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return; /* the next edge goes on */
    char label[LS_TLS_REASON_MAX];
    failure_label(err, label, sizeof label);
    handshake_failed(W, s, label);
}

/* After accept (the session is in the worker's epoll): the handshake runs
 * before admission, under its own timeout. */
static void tls_begin(ls_worker *W, ls_session *s)
{
    s->state = ST_TLS_HANDSHAKE;
    timer_set(W, s, W->now_us + s->tls->cfg->handshake_ms * 1000);
    tls_handshake_step(W, s);
}

static void tls_handshake_event(ls_worker *W, ls_session *s, uint32_t ev)
{
    (void)ev; /* an error or a hang-up shows in the handshake's own result */
    tls_handshake_step(W, s);
}

static void tls_timeout(ls_worker *W, ls_session *s)
{
    timer_del(W, s);
    handshake_failed(W, s, "timeout");
}

/* An epoll event of the client socket of a TLS session: an edge in one
 * direction re-arms an operation of the other that waits for it. */
static void tls_note_event(ls_session *s, int side, uint32_t ev)
{
    ls_tls_conn *t = side ? s->stls : s->tls;
    if ((ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && t->read_wants_write)
        s->rd[side] = 1;
    if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && t->write_wants_read)
        s->wr[side] = 1;
}

/* SSL_read (writing: SSL_write) until len bytes are moved, OpenSSL waits for
 * the socket (-1, EAGAIN; what it waits for is remembered) or the end (a read
 * returns 0 after what came before it; a write fails). */
static ssize_t tls_io(ls_session *s, int side, int writing, char *buf, size_t len)
{
    ls_tls_conn *t = side ? s->stls : s->tls;
    int broken = writing ? EPIPE : ECONNRESET;
    if (t->fatal || (writing && t->closed)) {
        errno = broken;
        return -1;
    }
    uint8_t *waits_other = writing ? &t->write_wants_read : &t->read_wants_write;
    int other = writing ? SSL_ERROR_WANT_READ : SSL_ERROR_WANT_WRITE;
    size_t done = 0;
    *waits_other = 0;
    while (done < len) {
        int want = len - done > INT_MAX ? INT_MAX : (int)(len - done);
        int n = writing ? SSL_write(t->ssl, buf + done, want) : SSL_read(t->ssl, buf + done, want);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        int err = SSL_get_error(t->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            *waits_other = err == other;
            if (done)
                return (ssize_t)done;
            errno = EAGAIN;
            return -1;
        }
        /* a bad record, a renegotiation attempt, a reset; a read's clean end
         * (close_notify, or a FIN: SSL_OP_IGNORE_UNEXPECTED_EOF) is not one */
        if (writing || err != SSL_ERROR_ZERO_RETURN)
            t->fatal = 1;
        ERR_clear_error();
        if (done) {
            if (!writing)
                s->rdhup[side] = 1; /* the end comes with the next read, not an edge */
            return (ssize_t)done;
        }
        if (t->fatal) {
            errno = broken;
            return -1;
        }
        return 0;
    }
    return (ssize_t)done;
}

/* recv/send on one side of a session (0: the client), through its TLS if any
 * (the client's: tls; the server's: stls, tls_upstream.c). */
static inline ssize_t sess_recv(ls_session *s, int side, void *buf, size_t len)
{
    if (side ? s->stls != NULL : s->tls != NULL)
        return tls_io(s, side, 0, buf, len);
    return recv(s->fd[side], buf, len, 0);
}

static inline ssize_t sess_send(ls_session *s, int side, const void *data, size_t len, int flags)
{
    if (side ? s->stls != NULL : s->tls != NULL)
        return tls_io(s, side, 1, (char *)data, len); /* SSL_write does not write to it */
    return send(s->fd[side], data, len, MSG_NOSIGNAL | MSG_DONTWAIT | flags);
}

/* `version/cipher/sni` of a TLS session for its log line ("" without TLS). */
static void tls_log_fields(const ls_session *s, char *out, size_t size)
{
    out[0] = 0;
    if (!s->tls || !SSL_is_init_finished(s->tls->ssl))
        return;
    SSL *ssl = s->tls->ssl;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int n = snprintf(out, size, "%s/%s/", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    if (n < 0 || (size_t)n >= size)
        return;
    /* the client's bytes: only what a host name holds goes into a log line */
    size_t i = (size_t)n, k = 0;
    if (!sni || !sni[0])
        sni = "-";
    for (; sni[k] && i + 1 < size; k++, i++) {
        char c = sni[k];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_' || c == '*';
        out[i] = ok ? c : '?';
    }
    out[i] = 0;
}
