/* http_selftest.c: the self-test of the llhttp built in, run before any
 * listener may be HTTP, and the set-up of the parsers' callbacks (part of the
 * unity build engine.c). */

typedef struct selftest {
    int begins, headers, completes, fields, values, body_len;
    char url[32];
    int url_len;
} selftest;

static int st_begin(llhttp_t *p) { ((selftest *)p->data)->begins++; return 0; }

static int st_url(llhttp_t *p, const char *at, size_t n)
{
    selftest *t = p->data;
    if (t->url_len + n < sizeof t->url) {
        memcpy(t->url + t->url_len, at, n);
        t->url_len += (int)n;
    }
    return 0;
}

static int st_field(llhttp_t *p, const char *at, size_t n) { ((selftest *)p->data)->fields++; return 0; }

static int st_value(llhttp_t *p, const char *at, size_t n) { ((selftest *)p->data)->values++; return 0; }

static int st_headers(llhttp_t *p) { ((selftest *)p->data)->headers++; return 0; }

static int st_body(llhttp_t *p, const char *at, size_t n) { ((selftest *)p->data)->body_len += (int)n; return 0; }

static int st_complete(llhttp_t *p) { ((selftest *)p->data)->completes++; return HPE_PAUSED; }

/* Parse a known request and response and check every callback, getter and
 * field this file relies on; NULL or what failed. A build of llhttp with other
 * defaults (lenient flags, another release) fails here, at start, rather than
 * mid-request. */
static const char *http_selftest(void)
{
    /* For tests only: makes the self-test fail, to show what a start with a
     * broken llhttp does (tests/integration/test_http_native.py). */
    if (getenv("LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL"))
        return "forced by LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL (a test setting)";
    static const char req[] = "POST /a?b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              "Connection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                              "HEAD / HTTP/1.0\r\n\r\n";
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                               "HTTP/1.1 204 No Content\r\n\r\n";
    static const char bad[] = "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n";
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = st_begin;
    st.on_url = st_url;
    st.on_header_field = st_field;
    st.on_header_value = st_value;
    st.on_headers_complete = st_headers;
    st.on_body = st_body;
    st.on_message_complete = st_complete;
    llhttp_t p;
    selftest t;
    memset(&t, 0, sizeof t);
    llhttp_init(&p, HTTP_REQUEST, &st);
    p.data = &t;
    int err = llhttp_execute(&p, req, sizeof req - 1);
    if (err != HPE_PAUSED)
        return "a request did not pause at its end";
    const char *pos = llhttp_get_error_pos(&p);
    if (!pos || pos < req || pos > req + sizeof req - 1)
        return "llhttp_get_error_pos out of the input";
    if (t.begins != 1 || t.headers != 1 || t.completes != 1 || t.fields != 3 || t.values != 3 ||
        t.body_len != 3 || t.url_len != 4 || memcmp(t.url, "/a?b", 4) != 0)
        return "request callbacks";
    if (strcmp(llhttp_method_name(llhttp_get_method(&p)), "POST") != 0 || llhttp_get_http_major(&p) != 1 ||
        llhttp_get_http_minor(&p) != 1 || !llhttp_should_keep_alive(&p) || llhttp_get_upgrade(&p))
        return "request getters";
    if (p.data != &t)
        return "llhttp_t layout (data)";
    llhttp_resume(&p);
    size_t rest = (size_t)(req + sizeof req - 1 - pos);
    err = llhttp_execute(&p, pos, rest);
    if (err != HPE_PAUSED || t.completes != 2 || llhttp_get_http_minor(&p) != 0 ||
        llhttp_get_method(&p) != HTTP_HEAD || llhttp_should_keep_alive(&p))
        return "a resumed request";
    memset(&t, 0, sizeof t);
    llhttp_init(&p, HTTP_RESPONSE, &st);
    p.data = &t;
    err = llhttp_execute(&p, resp, sizeof resp - 1);
    if (err != HPE_PAUSED || t.body_len != 2 || llhttp_get_status_code(&p) != 200 ||
        !llhttp_should_keep_alive(&p) || llhttp_message_needs_eof(&p))
        return "a response";
    pos = llhttp_get_error_pos(&p);
    llhttp_resume(&p);
    err = llhttp_execute(&p, pos, (size_t)(resp + sizeof resp - 1 - pos));
    if (err != HPE_PAUSED || llhttp_get_status_code(&p) != 204 || t.completes != 2)
        return "a second response";
    memset(&t, 0, sizeof t);
    llhttp_init(&p, HTTP_REQUEST, &st);
    p.data = &t;
    err = llhttp_execute(&p, bad, sizeof bad - 1);
    if (err == HPE_OK || err == HPE_PAUSED || t.headers != 0)
        return "Content-Length with Transfer-Encoding was not refused (lenient llhttp?)";
    if (!llhttp_get_error_reason(&p))
        return "llhttp_get_error_reason";
    return NULL;
}

#define LS_STR_(x) #x
#define LS_STR(x) LS_STR_(x)

const char *ls_llhttp_version(void)
{
    return LS_STR(LLHTTP_VERSION_MAJOR) "." LS_STR(LLHTTP_VERSION_MINOR) "." LS_STR(
        LLHTTP_VERSION_PATCH);
}

int ls_http_init(char *errbuf, int errlen)
{
    const char *failed = http_selftest();
    if (failed) {
        snprintf(errbuf, (size_t)errlen, "llhttp %s failed the engine's self-test: %s",
                 ls_llhttp_version(), failed);
        return -1;
    }
    if (llhttp_ready)
        return 0; /* settled once: workers may be parsing with the settings */
    parsers_init();
    llhttp_ready = 1;
    return 0;
}
