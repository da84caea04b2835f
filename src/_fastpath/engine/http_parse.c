/* http_parse.c: the HTTP engine's parsing (part of the unity build engine.c):
 * llhttp's callbacks for requests and responses, and the checks and rebuilt
 * head of RequestPolicy.prepare (loadstone/http/request.py). No HTTP grammar
 * is written here: llhttp (vendor/llhttp) parses. */

/* Set by the first ls_http_init (http_selftest.c) that passes: until then no
 * listener may be HTTP. */
static volatile int llhttp_ready;

static llhttp_settings_t req_settings, resp_settings, scan_settings;

static inline ls_http *H(llhttp_t *p) { return ((ls_session *)p->data)->http; }

static int req_message_begin(llhttp_t *p)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    h->parsing = 1;
    h->head_done = h->req_complete = h->in_value = 0;
    h->head.off = h->head.len = 0;
    h->nfields = 0;
    h->url_len = 0;
    h->flags = 0;
    h->head_bytes = 0;
    h->method[0] = 0;
    h->t_begin = s->W->now_us;
    h->t_head = -1;
    if (!h->exchange) {
        h->tkind = T_HEAD;
        timer_set(s->W, s, s->W->now_us + s->L->hcfg->request_ms * 1000);
    }
    return 0;
}

static int req_url(llhttp_t *p, const char *at, size_t n)
{
    ls_http *h = H(p);
    if (buf_append(&h->head, at, n) < 0)
        return -1;
    h->url_len += (uint32_t)n;
    return 0;
}

static int req_field(llhttp_t *p, const char *at, size_t n)
{
    ls_http *h = H(p);
    if (h->head_done)
        return 0; /* trailers: not forwarded (the body is re-framed) */
    if (h->in_value || h->nfields == 0) {
        ls_session *s = p->data;
        if (h->nfields >= s->L->hcfg->max_headers) {
            h->bad_status = 431;
            h->bad_reason = "too many header fields";
            return -1;
        }
        if (h->nfields == h->capfields) {
            int cap = h->capfields ? h->capfields * 2 : 32;
            ls_field *f = realloc(h->fields, (size_t)cap * sizeof *f);
            if (!f)
                return -1;
            h->fields = f;
            h->capfields = cap;
        }
        ls_field *f = &h->fields[h->nfields++];
        f->name = h->head.len;
        f->name_len = 0;
        f->value = 0;
        f->value_len = 0;
        h->in_value = 0;
    }
    ls_field *f = &h->fields[h->nfields - 1];
    if (buf_append(&h->head, at, n) < 0)
        return -1;
    f->name_len += (uint32_t)n;
    return 0;
}

static int req_value(llhttp_t *p, const char *at, size_t n)
{
    ls_http *h = H(p);
    if (h->head_done || h->nfields == 0)
        return 0;
    ls_field *f = &h->fields[h->nfields - 1];
    if (!h->in_value) {
        h->in_value = 1;
        f->value = h->head.len;
    }
    if (buf_append(&h->head, at, n) < 0)
        return -1;
    f->value_len += (uint32_t)n;
    return 0;
}

static int ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

/* a value without its surrounding whitespace */
static void strip(const char **v, size_t *n)
{
    while (*n && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

/* Hop-by-hop fields (RFC 9110 section 7.6.1) and those whose value the proxy sets. */
static int dropped(const ls_hconfig *c, const char *name, size_t n)
{
    return ieq(name, n, "keep-alive") || ieq(name, n, "proxy-connection") || ieq(name, n, "te") ||
           ieq(name, n, "http2-settings") ||
           (c->proto_line[0] && ieq(name, n, "x-forwarded-proto")) ||
           (c->forwarded_port && ieq(name, n, "x-forwarded-port"));
}

#define MAX_NAMED 16

/* A field a header rule removes (a set or a delete of its name). */
static int rule_drops(const ls_hrules *r, const char *name, size_t n)
{
    for (int k = 0; k < r->ndrop; k++)
        if (ieq(name, n, r->drop[k]))
            return 1;
    return 0;
}

/* RFC 9112 section 3.2.2: a server takes the host of an absolute-form target
 * ("http://authority/path") and ignores Host, while loadstone routes by Host.
 * 1 when the target is absolute-form and its authority is not the Host value:
 * refused (400) as HAProxy does, else route and server follow different hosts. */
static int authority_differs(const char *url, size_t n, const char *host, size_t hn)
{
    if (n == 0 || url[0] == '/' || url[0] == '*')
        return 0; /* origin-form or asterisk-form: Host alone names the host */
    const char *sep = memmem(url, n, "://", 3);
    if (!sep)
        return 0;
    const char *a = sep + 3, *end = url + n, *e = a;
    while (e < end && *e != '/' && *e != '?' && *e != '#')
        e++;
    strip(&host, &hn);
    return !((size_t)(e - a) == hn && hn && strncasecmp(a, host, hn) == 0);
}

/* RequestPolicy.prepare: check the parsed head and build the one for the
 * server in h->rhead. 0, or -1 with bad_status/bad_reason set. */
static int build_head(ls_session *s, ls_http *h)
{
    const ls_hconfig *c = s->L->hcfg;
    const char *base = h->head.p + h->head.off;
    if (h->nfields > c->max_headers) {
        h->bad_status = 431;
        h->bad_reason = "too many header fields";
        return -1;
    }
    int hosts = 0, ka10 = 0, nnamed = 0;
    const char *host = NULL;
    size_t host_len = 0;
    struct {
        const char *p;
        size_t n;
    } named[MAX_NAMED];
    uint8_t *keep = h->nfields ? alloca((size_t)h->nfields) : NULL;
    size_t size = strlen(h->method) + h->url_len + 12;
    for (int i = 0; i < h->nfields; i++) {
        ls_field *f = &h->fields[i];
        const char *name = base + f->name, *value = base + f->value;
        size_t nl = f->name_len, vl = f->value_len;
        size += nl + vl + 4;
        keep[i] = 1;
        if (ieq(name, nl, "host")) {
            hosts++;
            host = value;
            host_len = vl;
        } else if (ieq(name, nl, "content-length")) {
            const char *v = value;
            size_t n = vl;
            strip(&v, &n);
            if (!(n == 1 && v[0] == '0'))
                h->flags |= H_HAS_BODY;
        } else if (ieq(name, nl, "transfer-encoding")) {
            const char *v = value;
            size_t n = vl;
            strip(&v, &n);
            if (h->http10) {
                h->bad_status = 400;
                h->bad_reason = "Transfer-Encoding in an HTTP/1.0 request";
                return -1;
            }
            if (!ieq(v, n, "chunked")) {
                h->bad_status = 400;
                h->bad_reason = "unsupported Transfer-Encoding";
                return -1;
            }
            h->flags |= H_CHUNKED | H_HAS_BODY;
        } else if (ieq(name, nl, "connection")) {
            keep[i] = 0; /* hop-by-hop: ours is written below */
            const char *v = value, *end = value + vl;
            while (v < end) {
                const char *comma = memchr(v, ',', (size_t)(end - v));
                const char *e = comma ? comma : end;
                const char *o = v;
                size_t on = (size_t)(e - v);
                strip(&o, &on);
                if (ieq(o, on, "keep-alive"))
                    ka10 = 1;
                /* Host and the framing fields stay whatever Connection names
                 * (hop-by-hop abuse: without them the body forwarded would be
                 * read as the next request), as in loadstone/http/request.py */
                else if (on && !ieq(o, on, "close") && !ieq(o, on, "upgrade") &&
                         !ieq(o, on, "host") && !ieq(o, on, "content-length") &&
                         !ieq(o, on, "transfer-encoding") && nnamed < MAX_NAMED) {
                    named[nnamed].p = o;
                    named[nnamed].n = on;
                    nnamed++;
                }
                v = e + 1;
            }
        } else if (ieq(name, nl, "upgrade")) {
            keep[i] = h->upgrade;
        } else if (dropped(c, name, nl)) {
            keep[i] = 0;
        }
        if (keep[i] && c->req_rules.ndrop && rule_drops(&c->req_rules, name, nl))
            keep[i] = 0; /* request_headers: set or delete */
    }
    if (size > (size_t)c->max_head_size) {
        h->bad_status = 431;
        h->bad_reason = "request head too large";
        return -1;
    }
    if (hosts > 1) {
        h->bad_status = 400;
        h->bad_reason = "more than one Host header";
        return -1;
    }
    if (hosts == 0 && !h->http10) {
        h->bad_status = 400;
        h->bad_reason = "no Host header in an HTTP/1.1 request";
        return -1;
    }
    if (host && authority_differs(base, h->url_len, host, host_len)) {
        h->bad_status = 400;
        h->bad_reason = "absolute-form target and Host name different hosts";
        return -1;
    }
    h->has_host = host != NULL;
    h->host = host ? (uint32_t)(host - base) : 0;
    h->host_len = (uint32_t)host_len;
    ls_buf *o = &h->rhead;
    o->off = o->len = 0;
    int err = buf_append(o, h->method, strlen(h->method));
    err |= buf_append(o, " ", 1);
    err |= buf_append(o, base, h->url_len);
    err |= buf_append(o, h->http10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n", 11);
    for (int i = 0; i < h->nfields; i++) {
        if (!keep[i])
            continue;
        ls_field *f = &h->fields[i];
        int gone = 0;
        for (int k = 0; k < nnamed && !gone; k++)
            gone = f->name_len == named[k].n &&
                   strncasecmp(base + f->name, named[k].p, named[k].n) == 0;
        if (gone)
            continue; /* named in Connection: hop-by-hop too */
        err |= buf_append(o, base + f->name, f->name_len);
        err |= buf_append(o, ": ", 2);
        err |= buf_append(o, base + f->value, f->value_len);
        err |= buf_append(o, "\r\n", 2);
    }
    /* request_headers: the lines of the sets and adds, after the fields kept
     * and before the proxy's own (as RequestPolicy.prepare) */
    err |= buf_append(o, c->req_rules.lines, (size_t)c->req_rules.lines_len);
    err |= buf_append(o, h->extra, (size_t)h->extra_len);
    if (h->upgrade)
        err |= buf_append(o, "Connection: upgrade\r\n", 21);
    else if (h->http10 && ka10)
        err |= buf_append(o, "Connection: keep-alive\r\n", 24);
    err |= buf_append(o, "\r\n", 2);
    if (err) {
        h->bad_status = 500;
        h->bad_reason = "out of memory";
        return -1;
    }
    return 0;
}

/* strlcpy: snprintf's formatting showed in the profile of every request */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int req_headers_complete(llhttp_t *p)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    h->t_head = s->W->now_us;
    h->head_done = 1;
    const char *m = llhttp_method_name(llhttp_get_method(p));
    copy_str(h->method, sizeof h->method, m ? m : "");
    int major = llhttp_get_http_major(p), minor = llhttp_get_http_minor(p);
    h->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    h->upgrade = llhttp_get_upgrade(p) ? 1 : 0;
    h->http10 = major == 1 && minor == 0;
    if (llhttp_get_method(p) == HTTP_CONNECT) {
        h->bad_status = 501;
        h->bad_reason = "CONNECT is not supported";
        return -1;
    }
    if (major != 1 || minor > 1) {
        h->bad_status = 400;
        h->bad_reason = "HTTP version not supported";
        return -1;
    }
    if (build_head(s, h) < 0)
        return -1;
    return buf_append(&h->out, h->rhead.p + h->rhead.off, h->rhead.len) < 0 ? -1 : 0;
}

static int req_body(llhttp_t *p, const char *at, size_t n)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    if (h->flags & H_CHUNKED) {
        char size[24];
        int k = snprintf(size, sizeof size, "%zx\r\n", n);
        if (buf_append(&h->out, size, (size_t)k) < 0 || buf_append(&h->out, at, n) < 0 ||
            buf_append(&h->out, "\r\n", 2) < 0)
            return -1;
    } else if (buf_append(&h->out, at, n) < 0) {
        return -1;
    }
    if (h->tkind == T_CLIENT)
        timer_set(s->W, s, s->W->now_us + s->L->hcfg->client_ms * 1000);
    return 0;
}

static int req_message_complete(llhttp_t *p)
{
    ls_http *h = H(p);
    h->req_complete = 1;
    h->parsing = 0;
    if (h->flags & H_CHUNKED && buf_append(&h->out, "0\r\n\r\n", 5) < 0)
        return -1;
    /* An upgrade stops llhttp by itself (HPE_PAUSED_UPGRADE) right after this;
     * anything else: stop here, the next pipelined request waits its turn. */
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
}

static int resp_headers_complete(llhttp_t *p)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    int status = llhttp_get_status_code(p);
    if (status < 100 || status > 599)
        return -1; /* not a status code (RFC 9110 15: 100 to 599); a 0xx would
                      pass for interim below (found by scripts/fuzz-c) */
    if (status < 200 && status != 101) {
        h->interim = 1; /* 100 Continue, 103 Early Hints: relayed as they are */
        return 0;
    }
    if (status == 101 && !h->upgrade)
        return -1; /* a 101 to a request that did not ask to upgrade */
    h->status = status;
    h->resp_head = 1;
    h->t_response = s->W->now_us;
    int head = strcmp(h->method, "HEAD") == 0;
    h->resp_keep = llhttp_should_keep_alive(p) ? 1 : 0;
    h->resp_eof = !head && llhttp_message_needs_eof(p) ? 1 : 0;
    if (!h->resp_keep && !h->resp_first)
        h->keep_client = 0; /* the head came in more than one read: it goes on
                               as it is, its close with it (else head_for_client) */
    return head; /* 1: no body follows */
}

static int resp_message_complete(llhttp_t *p)
{
    ls_http *h = H(p);
    if (h->interim) {
        h->interim = 0;
        return 0;
    }
    h->resp_done = 1;
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
}

/* The scan of request_buffered: it stops at the end of the first message. */
static int scan_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

/* Once the client has shut its side, is there a request in `in` (all it will
 * ever get now) to answer after the one in flight: a complete one, or one
 * llhttp refuses (answered 400 in its turn, as the pure path answers a bad
 * pipelined one)? Not one its FIN cut short: that can never end. A scratch
 * parser over the buffered bytes (at most IN_LIMIT and a read), stopping at
 * the end of the first message; the request parser, paused at the end of the
 * one in flight, is left as it is. */
static int request_buffered(const ls_http *h)
{
    if (!h->in.len)
        return 0;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &scan_settings);
    return llhttp_execute(&p, h->in.p + h->in.off, h->in.len) != HPE_OK;
}

/* The callbacks of the request and response parsers (once, by ls_http_init). */
static void parsers_init(void)
{
    llhttp_settings_init(&req_settings);
    req_settings.on_message_begin = req_message_begin;
    req_settings.on_url = req_url;
    req_settings.on_header_field = req_field;
    req_settings.on_header_value = req_value;
    req_settings.on_headers_complete = req_headers_complete;
    req_settings.on_body = req_body;
    req_settings.on_message_complete = req_message_complete;
    llhttp_settings_init(&resp_settings);
    resp_settings.on_headers_complete = resp_headers_complete;
    resp_settings.on_message_complete = resp_message_complete;
    llhttp_settings_init(&scan_settings);
    scan_settings.on_message_complete = scan_message_complete;
}
