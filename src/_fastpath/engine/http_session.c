/* http_session.c: an HTTP client connection as the engine sees it (part of
 * the unity build engine.c): its set-up at accept, the protocol hooks through
 * which the generic engine drives it (proto_http), and the control plane's
 * calls about HTTP listeners. */

static int in_net(const ls_hnet *n, int family, const uint8_t *addr)
{
    if (n->family != family)
        return 0;
    int bits = n->prefix, i = 0;
    for (; bits >= 8; bits -= 8, i++)
        if (n->addr[i] != addr[i])
            return 0;
    if (bits) {
        uint8_t mask = (uint8_t)(0xff << (8 - bits));
        if ((n->addr[i] & mask) != (addr[i] & mask))
            return 0;
    }
    return 1;
}

static size_t put_str(char *out, const char *str)
{
    size_t n = strlen(str);
    memcpy(out, str, n);
    return n;
}

/* RequestPolicy.connection_lines: X-Forwarded-For, -Port and -Proto, once per
 * connection. The address is written as Python prints it (an IPv4-mapped IPv6
 * address as plain IPv4). They are kept in an allocation of their size (60
 * bytes or so): a fixed 320 in ls_http was 2 % of an idle TLS connection's
 * memory. Written without printf (and an IPv4 address without inet_ntop,
 * which prints with sprintf): its formatting was 2 % of the worker's time
 * with a new connection per request. 0, or -1 (out of memory). */
static int connection_lines(ls_session *s, ls_http *h)
{
    const ls_hconfig *c = s->L->hcfg;
    char ip[INET6_ADDRSTRLEN];
    size_t ip_len = 0;
    int family = 0;
    uint8_t raw[16];
    if (s->client.sa.sa_family == AF_INET) {
        family = AF_INET;
        memcpy(raw, &s->client.in4.sin_addr, 4);
    } else if (s->client.sa.sa_family == AF_INET6) {
        const uint8_t *a = (const uint8_t *)&s->client.in6.sin6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            family = AF_INET;
            memcpy(raw, a + 12, 4);
        } else {
            family = AF_INET6;
            memcpy(raw, a, 16);
            ip_len = (size_t)(put_ipv6(ip, raw) - ip); /* addr_text.c: inet_ntop's text */
        }
    }
    if (family == AF_INET)
        ip_len = (size_t)(put_ipv4(ip, raw) - ip); /* addr_text.c */
    /* at most 63 + 2 + 45 + 2, 25 and 95 bytes: no bound to check */
    char lines[320];
    size_t n = 0;
    if (c->forwardfor[0] && family) {
        int excepted = 0;
        for (int i = 0; i < c->nexcept && !excepted; i++)
            excepted = in_net(&c->except[i], family, raw);
        if (!excepted) {
            n += put_str(lines + n, c->forwardfor);
            memcpy(lines + n, ": ", 2);
            memcpy(lines + n + 2, ip, ip_len);
            memcpy(lines + n + 2 + ip_len, "\r\n", 2);
            n += ip_len + 4;
        }
    }
    if (c->forwarded_port) {
        ls_addr local;
        socklen_t len = sizeof local;
        if (getsockname(s->fd[0], &local.sa, &len) == 0) {
            unsigned port = local.sa.sa_family == AF_INET ? ntohs(local.in4.sin_port)
                                                           : ntohs(local.in6.sin6_port);
            n += put_str(lines + n, "X-Forwarded-Port: ");
            n = (size_t)(put_dec(lines + n, port) - lines);
            memcpy(lines + n, "\r\n", 2);
            n += 2;
        }
    }
    n += put_str(lines + n, c->proto_line);
    char *copy = n ? malloc(n) : NULL;
    if (n && !copy)
        return -1;
    if (n)
        memcpy(copy, lines, n);
    free(h->extra);
    h->extra = copy;
    h->extra_len = (int)n;
    return 0;
}

/* An HTTP listener's new connection gets its state (proto_http.accepted); 0 or -1. */
static int http_accepted(ls_session *s)
{
    ls_http *h = spare_take(&spare_https, sizeof *h);
    if (!h)
        return -1;
    s->http = h;
    h->sess = s;
    llhttp_init(&h->req, HTTP_REQUEST, &req_settings);
    h->req.data = s;
    h->log_slot = -1;
    h->t_connect = -1;
    if (connection_lines(s, h) < 0) {
        s->http = NULL;
        free(h);
        return -1;
    }
    return 0;
}

static void http_free(struct ls_http *h)
{
    if (!h)
        return;
    free(h->conn); /* only at engine free: a finished session has none */
    buf_free(&h->in);
    buf_free(&h->head);
    buf_free(&h->rhead);
    buf_free(&h->out);
    buf_free(&h->cout);
    buf_free(&h->rhold);
    free(h->fields);
    free(h->extra);
    spare_give(&spare_https, h);
}

/* ---------------------------------------------------------------------------------- */
/* the protocol hooks (proto_http): how the engine drives an HTTP session             */

/* admitted past maxconn: wait for a head (a server is picked per request) */
static void http_admitted(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    s->state = ST_HTTP;
    h->t_wait = s->start_us < W->now_us - 1000 ? secs(W->now_us - s->start_us) : 0.0;
    h->tkind = T_HEAD;
    timer_set(W, s, W->now_us + s->L->hcfg->request_ms * 1000);
    http_progress(W, s);
}

static void http_timeout(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    timer_del(W, s);
    switch (h->tkind) {
    case T_IDLE:
        if (!h->parsing) {
            finish(W, s, LS_END_CLIENT_TIMEOUT, 0); /* keep-alive timeout: silent */
            return;
        }
        /* fall through: a head started */
    case T_HEAD:
        if (!h->exchange) {
            own_exchange(W, s);
            http_answer(W, s, 408, LS_HEND_REQUEST_TIMEOUT, 0);
        } else {
            http_abort(W, s, LS_HEND_REQUEST_TIMEOUT);
        }
        return;
    case T_CLIENT:
        if (h->response_started)
            http_abort(W, s, LS_HEND_CLIENT_TIMEOUT);
        else
            http_answer(W, s, 408, LS_HEND_CLIENT_TIMEOUT, 0);
        return;
    case T_SERVER:
        if (h->response_started)
            http_abort(W, s, LS_HEND_SERVER_TIMEOUT);
        else
            http_answer(W, s, 504, LS_HEND_SERVER_TIMEOUT, 0);
        return;
    case T_LINGER: /* http_linger.c: the bound of the lingering close */
        finish(W, s, LS_END_CLIENT_CLOSE, 0);
        return;
    default: /* T_CLOSING: the client does not take our last bytes */
        finish(W, s, LS_END_CLIENT_TIMEOUT, 0);
        return;
    }
}

/* finish(), before the descriptors close (proto_http.ended): what an HTTP connection
 * leaves behind (the record of an exchange cut short, the server's count). */
static void http_finish(ls_worker *W, ls_session *s, int reason, int arg)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    flush_cancel(s);
    if (h->conn) {
        h->conn->fd[1] = -1; /* finish() closes it as the session's */
        conn_free(W, h->conn);
        h->conn = NULL;
    }
    if (h->exchange && !h->logged) {
        int end;
        switch (reason) {
        case LS_END_CLIENT_TIMEOUT:
        case LS_END_SERVER_TIMEOUT:
            end = h->tunnel ? LS_HEND_TUNNEL_TIMEOUT : LS_HEND_CLIENT_TIMEOUT;
            break;
        case LS_END_CLIENT_RESET:
            end = LS_HEND_CLIENT_RESET;
            break;
        case LS_END_SERVER_RESET:
            end = LS_HEND_SERVER_RESET;
            break;
        case LS_END_SERVER_CLOSE:
            end = LS_HEND_SERVER_CLOSE;
            break;
        case LS_END_SHUTDOWN:
            end = LS_HEND_SHUTDOWN;
            break;
        default:
            end = LS_HEND_CLIENT_CLOSE;
            break;
        }
        if (h->tunnel)
            h->log_slot = s->slot >= 0 ? s->slot : h->log_slot;
        http_log(W, s, end, reason == LS_END_SHUTDOWN ? arg : 0);
    }
    if (s->slot >= 0) {
        __atomic_fetch_sub(&slot_shared(L, s->slot)->live, 1, __ATOMIC_RELAXED);
        s->slot = -1;
    }
    if (h->requests == 0)
        L->wstats[W->id].denied++;
}

/* timeouts.queue passed (queue.c): the 503, then the close lingers as after
 * any answer of ours (http_linger.c: its client may be sending its request
 * still, none of which was read). The session stays EXPIRED meanwhile: it
 * never had a maxconn place and takes none; its linger's timer and events
 * come here all the same (worker.c, http_event). The 503 goes in one send,
 * to a socket that has sent nothing yet; if it cannot, the close is at once. */
static void http_queue_expired(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    size_t len = answers[503].data ? (size_t)answers[503].len : 0;
    if (!len || sess_send(s, 0, answers[503].data, len, 0) != (ssize_t)len) {
        finish(W, s, LS_END_QUEUE_TIMEOUT, 0);
        return;
    }
    h->closing = 1;
    close_client(W, s);
}

/* CMD_STOP_IDLE: close the connections waiting between requests. */
static int http_stop_idle(ls_worker *W, ls_listener *L)
{
    int closed = 0;
    ls_list *pos, *tmp;
    LS_LIST_FOR_EACH_SAFE(pos, tmp, &W->sessions) {
        ls_session *s = LS_LIST_ELEM(pos, ls_session, alink);
        if (s->L == L && s->http &&
            ((s->state == ST_HTTP && !s->http->exchange && !s->http->parsing &&
              !s->http->in.len) ||
             s->http->lingering)) {
            finish(W, s, LS_END_CLIENT_CLOSE, 0);
            closed++;
        }
    }
    http_pool_shutdown(W, L, -1);
    return closed;
}

static void http_unserved(ls_worker *W, ls_session *s, int end, int arg)
{
    http_answer(W, s, 503, end == LS_END_NO_SERVER ? LS_HEND_NO_SERVER : LS_HEND_CONNECT_FAILED,
                arg);
}

static void http_session_event(ls_worker *W, ls_session *s, int side, uint32_t ev)
{
    if (s->state == ST_POOLED)
        conn_event(W, s, ev); /* a server connection object */
    else if (s->state == ST_RELAY || s->state == ST_QUEUED || s->state == ST_ADMITTING)
        relay_event(W, s, side, ev); /* after an upgrade, or not admitted yet */
    else
        http_event(W, s, side, ev);
}

static void http_session_progress(ls_worker *W, ls_session *s)
{
    if (s->state == ST_RELAY)
        pump_both(W, s, 0);
    else
        http_progress(W, s);
}

static void http_session_timeout(ls_worker *W, ls_session *s)
{
    if (s->state == ST_POOLED) {
        timer_del(W, s);
        pool_drop(W, s); /* idle for http_keep_alive */
        return;
    }
    http_timeout(W, s);
}

/* an HTTP session relays only after an upgrade: timeouts.tunnel */
static int64_t http_tunnel_idle_ms(const ls_session *s) { return s->L->hcfg->tunnel_ms; }

static void http_release(ls_session *s) { http_free(s->http); }

static const ls_proto proto_http = {
    .accepted = http_accepted,
    .admitted = http_admitted,
    .take_pooled = http_take_pooled,
    .connected = http_connected,
    .unserved = http_unserved,
    .event = http_session_event,
    .progress = http_session_progress,
    .timeout = http_session_timeout,
    .relay_idle_ms = http_tunnel_idle_ms,
    .ended = http_finish,
    .release = http_release,
    .stop_idle = http_stop_idle,
    .drop_idle = http_pool_shutdown,
    .queue_expired = http_queue_expired,
};

/* ---------------------------------------------------------------------------------- */
/* the control plane's side                                                           */


void ls_http_set_answer(int status, const char *data, int len)
{
    if (status < 100 || status >= 600 || len <= 0)
        return;
    char *copy = malloc((size_t)len);
    if (!copy)
        return;
    memcpy(copy, data, (size_t)len);
    free(answers[status].data);
    answers[status].data = copy;
    answers[status].len = len;
}

void ls_listener_configure_http(ls_engine *e, int lid, const ls_hconfig *cfg)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return;
    ls_hconfig *next = malloc(sizeof *next);
    if (!next)
        return; /* the listener keeps its settings */
    *next = *cfg;
    if (!llhttp_ready)
        next->enabled = 0;
    /* The workers read the block without a lock: a reload that changes it swaps
     * in a copy rather than writing over the header rules a worker may be
     * copying into a head at this moment. */
    ls_hconfig *old = L->hcfg;
    int changed = memcmp(old, next, sizeof *next) != 0;
    if (changed)
        __atomic_store_n(&L->hcfg, next, __ATOMIC_RELEASE);
    pthread_mutex_lock(&L->lock);
    L->http_stopping = 0;
    L->proto = next->enabled ? &proto_http : &proto_tcp;
    pthread_mutex_unlock(&L->lock);
    if (!changed) {
        free(next);
        return;
    }
    /* After the barrier no worker is inside a round that loaded the old block
     * (each pass reads L->hcfg afresh); without it (out of memory) keep it. */
    if (post_all_sync(e, CMD_BARRIER, L, -1, 0) >= 0)
        free(old);
}

int ls_http_stop(ls_engine *e, int lid)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return 0;
    L->http_stopping = 1;
    return post_all_sync(e, CMD_STOP_IDLE, L, -1, 0);
}

/* Leaving (global.stop_delay): every response from now on says Connection:
 * close, but idle connections stay: a client may be sending on one right now,
 * and it learns of the close with its next answer instead. */
void ls_http_close_after_response(ls_engine *e, int lid)
{
    ls_listener *L = get_listener(e, lid);
    if (L)
        L->http_stopping = 1;
}

int64_t ls_http_idle_server_conns(ls_engine *e, int lid)
{
    ls_listener *L = get_listener(e, lid);
    return L ? __atomic_load_n(&L->http_pooled, __ATOMIC_RELAXED) : 0;
}
