/* http_engine_fuzz.c: a libFuzzer harness of the native HTTP engine
 * (src/_fastpath/engine). It compiles the engine's one translation unit
 * (engine.c, so the very http_parse.c and http_io.c code the workers run) and
 * drives one client connection without sockets, the way a worker does:
 *
 *   client bytes, split at random points  -> read_client's buffering and
 *       parse_request (llhttp with the engine's callbacks: the checks and the
 *       head rebuilt for the server, the body re-framed into h->out);
 *   a complete request                    -> an exchange: the server's bytes,
 *       split at random points too, through the response parser and the
 *       head rewrite of read_server (head_for_client); then the
 *       keep-alive turn of response_done, and the next pipelined request;
 *   option 128: the client's FIN after its last byte (client_eof): the
 *       turn then goes on only while a request is buffered
 *       (last_before_eof's scan of h->in, request_buffered).
 *
 * The worker's socket calls are left out (to_client and flush_server write to
 * the descriptors): what would be sent to the server is checked instead. Its
 * oracle, beyond ASan and UBSan: every request forwarded must parse again,
 * strictly and as one message, with a fresh llhttp (no smuggling through the
 * rebuilt head or the re-framed body), a rewritten response head must
 * still parse as a response, and after the FIN a request the scan found
 * buffered must be one the request parser completes or refuses (else the
 * response before it said keep-alive to a client that sends no more).
 *
 * Input: byte 0 the listener's options, byte 1 the seed of the split points,
 * bytes 2-3 the length of the request stream (little-endian), then the
 * request stream, then the response stream. Build and run: scripts/fuzz-c. */
#include "engine.c"

#include <assert.h>
#include <stdint.h>

static ls_engine fz_engine;
static ls_listener fz_listener;
static ls_worker fz_worker;

/* a small xorshift: the split points, reproducible from the input's seed */
static uint32_t fz_rng;

static size_t fz_split(size_t left)
{
    fz_rng ^= fz_rng << 13;
    fz_rng ^= fz_rng >> 17;
    fz_rng ^= fz_rng << 5;
    size_t n = 1 + fz_rng % 64;
    if (fz_rng & 0x100000)
        n = left; /* often the whole rest at once, as a big read gives it */
    return n < left ? n : left;
}

typedef struct fz_check {
    int completes, heads, keep_alive;
    int no_body; /* a response to HEAD: its head is all of it, as the client knows */
} fz_check;

/* keep-alive read here: past the end of a message llhttp's flags are the next one's */
static int fz_head(llhttp_t *p)
{
    fz_check *c = p->data;
    c->heads++;
    if (c->no_body)
        p->flags |= F_SKIPBODY; /* what returning 1 does, before keep-alive is read */
    c->keep_alive = llhttp_should_keep_alive(p);
    return c->no_body;
}
static int fz_complete(llhttp_t *p) { ((fz_check *)p->data)->completes++; return 0; }

/* data parsed by a fresh, strict llhttp (a server's or a client's); its error */
static int fz_parse(llhttp_type_t type, const char *data, size_t n, fz_check *c, int no_body)
{
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_headers_complete = fz_head;
    st.on_message_complete = fz_complete;
    llhttp_t p;
    memset(c, 0, sizeof *c);
    c->no_body = no_body;
    llhttp_init(&p, type, &st);
    p.data = c;
    int err = llhttp_execute(&p, data, n);
    return err == HPE_PAUSED_UPGRADE ? HPE_OK : err;
}

/* What was forwarded for one request: one message, parsed as the server would.
 * complete: the client's request was complete. */
static void fz_check_forwarded(const char *data, size_t n, int complete, int http10)
{
    fz_check c;
    int err = fz_parse(HTTP_REQUEST, data, n, &c, 0);
    if (err != HPE_OK) {
        fprintf(stderr, "forwarded request does not parse: %s\n%.*s\n", llhttp_errno_name(err),
                (int)n, data);
        abort();
    }
    if (c.heads != 1 || c.completes > 1 || (complete && c.completes != 1 && !http10)) {
        fprintf(stderr, "forwarded bytes are %d heads, %d messages (complete %d)\n%.*s\n", c.heads,
                c.completes, complete, (int)n, data);
        abort();
    }
}

/* A head the proxy rewrote must parse as one response, and say what the client
 * connection will do: close when the proxy closes it after this response,
 * keep-alive when it keeps it open. */
static void fz_check_response_head(const char *data, size_t n, int keep_client, int head_request)
{
    fz_check c;
    int err = fz_parse(HTTP_RESPONSE, data, n, &c, head_request);
    if (err != HPE_OK || c.heads != 1 || (c.keep_alive != 0) != (keep_client != 0)) {
        fprintf(stderr, "rewritten response head does not parse as one saying %s: %s\n%.*s\n",
                keep_client ? "keep-alive" : "close", llhttp_errno_name(err), (int)n, data);
        abort();
    }
}

static void fz_setup(uint8_t options)
{
    if (!llhttp_ready) {
        char err[256];
        if (ls_http_init(err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            abort();
        }
    }
    static ls_hconfig fz_hcfg;
    memset(&fz_listener, 0, sizeof fz_listener);
    memset(&fz_hcfg, 0, sizeof fz_hcfg);
    fz_listener.e = &fz_engine;
    fz_listener.hcfg = &fz_hcfg;
    ls_hconfig *c = &fz_hcfg;
    c->enabled = 1;
    c->request_ms = c->keep_alive_ms = c->client_ms = c->server_ms = c->tunnel_ms = 1000;
    c->max_head_size = options & 8 ? 256 : 16384;
    c->max_headers = options & 16 ? 4 : 100;
    c->max_requests = 1000;
    if (options & 1)
        copy_str(c->forwardfor, sizeof c->forwardfor, "X-Forwarded-For");
    c->forwarded_port = options & 2 ? 1 : 0;
    if (options & 4)
        copy_str(c->proto_line, sizeof c->proto_line, "X-Forwarded-Proto: https\r\n");
    fz_listener.http_stopping = options & 32 ? 1 : 0;
    if (options & 64) { /* request_headers: a delete and a set (http_native.compile_rules) */
        ls_hrules *r = &c->req_rules;
        copy_str(r->drop[0], sizeof r->drop[0], "x-a");
        copy_str(r->drop[1], sizeof r->drop[1], "host");
        r->ndrop = 2;
        static const char lines[] = "Host: rule.example\r\nX-Rule: 1\r\n";
        memcpy(r->lines, lines, sizeof lines - 1);
        r->lines_len = sizeof lines - 1;
    }
    fz_worker.e = &fz_engine;
    fz_worker.heap_len = 0;
    fz_worker.now_us = 1000000;
}

/* The server's answer to the request of the exchange in flight: returns 1 if
 * the connection goes on to the next request. */
static int fz_respond(ls_session *s, const uint8_t *resp, size_t resp_len, size_t *pos)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    /* start_exchange, but for the connect */
    h->exchange = 1;
    h->requests++;
    h->status = 0;
    h->resp_head = h->resp_done = h->interim = h->resp_keep = h->resp_eof = 0;
    h->resp_first = 1;
    h->backend_reusable = 1;
    h->keep_client = !L->http_stopping;
    llhttp_init(&h->resp, HTTP_RESPONSE, &resp_settings);
    h->resp.data = s;
    while (!h->resp_done) {
        if (*pos >= resp_len) {
            /* the server closed: read_server's end of a body delimited by the close */
            if (h->resp_head && h->resp_eof)
                llhttp_finish(&h->resp);
            return 0;
        }
        size_t n = fz_split(resp_len - *pos);
        /* read_server parses out of the worker's buffer: a copy of exactly n
         * bytes, so that ASan sees any read past what was received */
        char *buf = malloc(n);
        memcpy(buf, resp + *pos, n);
        int err = llhttp_execute(&h->resp, buf, n);
        size_t used = n;
        if (err == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&h->resp) - buf);
        } else if (err != HPE_OK) {
            free(buf);
            return 0; /* 502 or an abort: the client connection ends */
        }
        *pos += used;
        if (h->resp_first && used) {
            h->resp_first = 0;
            size_t m;
            char *rewritten;
            if (h->resp_head && (rewritten = head_for_client(s, buf, used, &m)) != NULL) {
                /* head_for_client rewrites a server's keep-alive head only to
                 * close the client connection, and a closing one only to keep it */
                fz_check_response_head(rewritten, m, !h->resp_keep, !strcmp(h->method, "HEAD"));
                free(rewritten);
            }
        }
        free(buf);
        if (err == HPE_PAUSED_UPGRADE)
            return 0; /* a tunnel from here on */
    }
    /* response_done's keep-alive turn */
    h->exchange = 0;
    if (!(h->keep_client && h->keep_alive) || L->http_stopping || h->upgrade ||
        last_before_eof(h))
        return 0;
    h->req_paused = 0;
    llhttp_resume(&h->req);
    h->head_done = 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint8_t options = data[0];
    fz_setup(options);
    fz_rng = 0x9e3779b9u ^ (uint32_t)data[1] * 0x01000193u;
    size_t req_len = (size_t)data[2] | (size_t)data[3] << 8;
    data += 4;
    size -= 4;
    if (req_len > size)
        req_len = size;
    const uint8_t *req = data, *resp = data + req_len;
    size_t resp_len = size - req_len, rpos = 0, qpos = 0;

    ls_session s;
    memset(&s, 0, sizeof s);
    s.L = &fz_listener;
    s.W = &fz_worker;
    s.fd[0] = s.fd[1] = -1;
    s.heap_idx = -1;
    s.state = ST_HTTP;
    s.client.in4.sin_family = AF_INET;
    s.client.in4.sin_addr.s_addr = htonl(0x7f000001);
    if (http_accepted(&s) < 0)
        abort();
    ls_http *h = s.http;
    size_t forwarded_from = 0; /* where in h->out the request in flight starts */
    int fin = options & 128, after_fin = 0;
    for (;;) {
        /* read_client: buffered bytes first, then a new read */
        if (h->in.len && !h->req_paused && !h->parse_error) {
            size_t used = parse_request(&fz_worker, &s, h->in.p + h->in.off, h->in.len);
            buf_consume(&h->in, used);
            if (after_fin && !h->req_paused && !h->parse_error) {
                fprintf(stderr, "a request scanned as buffered at the FIN does not end\n");
                abort();
            }
            after_fin = 0;
        } else if (qpos < req_len && !h->upgrade_wait && h->in.len < IN_LIMIT) {
            size_t n = fz_split(req_len - qpos);
            buf_append(&h->in, req + qpos, n);
            qpos += n;
            if (fin && qpos == req_len)
                h->client_eof = 1; /* read_client's read of 0 */
            continue;
        } else {
            break; /* the client sent everything it had (or the parser waits) */
        }
        if (h->parse_error)
            break; /* the engine answers 400 (or 431, 501) and closes */
        if (h->req_paused) {
            /* a whole request: what went to the server is one message */
            fz_check_forwarded(h->out.p + h->out.off + forwarded_from,
                               h->out.len - forwarded_from, 1, h->http10);
            h->out.off = h->out.len = 0;
            forwarded_from = 0;
            if (!fz_respond(&s, resp, resp_len, &rpos))
                break;
            after_fin = h->client_eof;
        }
    }
    if (h->head_done && !h->req_paused && !h->parse_error && h->out.len)
        fz_check_forwarded(h->out.p + h->out.off, h->out.len, 0, h->http10);
    http_free(h);
    free(fz_worker.heap);
    fz_worker.heap = NULL;
    fz_worker.heap_cap = 0;
    return 0;
}
