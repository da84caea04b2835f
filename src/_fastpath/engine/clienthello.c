/* clienthello.c: the ClientHello reader of SNI passthrough, sans-IO (part of
 * the unity build engine.c, and built alone by fuzz/c/clienthello_fuzz.c).
 *
 * The twin of loadstone/tls/clienthello.py, step for step, so that both data
 * paths give the same outcome for the same bytes: read that module's
 * docstring for the wire layout. Two layers:
 *
 *   records   -> handshake bytes  (each whole record's header checked and
 *                                  stripped, its fragment appended to r->hs)
 *   handshake -> ClientHello      (parsed in one go once the handshake
 *                                  header's length is all there)
 *
 * The caller keeps every byte (the session's buffer) and gives them all at
 * each call; the reader resumes after the last whole record (r->scanned), so
 * a client that trickles its bytes costs a header check per read, not a
 * re-parse. Checks come in the Python reader's order: the first error it would
 * raise is the one reported. */

#include "clienthello.h"

#include <stdlib.h>
#include <string.h>

#define CH_CONTENT_HANDSHAKE 22
#define CH_HANDSHAKE_CLIENT_HELLO 1
#define CH_EXT_SERVER_NAME 0
#define CH_EXT_ALPN 16
#define CH_EXT_SUPPORTED_VERSIONS 43
#define CH_NAME_TYPE_HOST 0

const char *const ls_ch_reasons[LS_CH_NREASONS] = {
    "ClientHello too large",
    "not TLS (record version)",
    "bad record length",
    "first handshake message is not a ClientHello",
    "SSLv2 hello",
    "not TLS (plain text)",
    "not TLS (record type)",
    "truncated ClientHello field",
    "session id longer than 32 bytes",
    "bad cipher suite list",
    "no compression method",
    "extension sent twice",
    "bad server_name extension",
    "two host names in server_name",
    "bad host name in server_name",
    "bad alpn extension",
    "empty alpn protocol name",
    "bad supported_versions extension",
    "out of memory",
};

#define CH_OK (-1) /* the checks below return a reason, or this */
/* ch_hello_if_whole's answers besides a reason (reasons start at 0) */
#define CH_WHOLE (-2)
#define CH_PARTIAL (-3)

void ls_ch_init(ls_ch_reader *r) { memset(r, 0, sizeof *r); }

void ls_ch_free(ls_ch_reader *r)
{
    free(r->hs);
    r->hs = NULL;
    r->hs_len = r->hs_cap = 0;
}

static unsigned ch_be16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

static int ch_is_alpha(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* A record header, or the start of one (n < 5), that cannot carry a
 * ClientHello: its reason (clienthello._check_record_header). */
static int ch_check_record_header(const uint8_t *h, size_t n)
{
    if (n == 0)
        return CH_OK;
    if (h[0] != CH_CONTENT_HANDSHAKE) {
        if (h[0] & 0x80)
            return LS_CH_SSLV2; /* a two-byte SSLv2 header has the high bit set */
        return ch_is_alpha(h[0]) ? LS_CH_PLAIN_TEXT : LS_CH_RECORD_TYPE;
    }
    if (n >= 2 && h[1] != 3)
        return LS_CH_RECORD_VERSION;
    if (n >= LS_CH_RECORD_HEADER) {
        unsigned length = ch_be16(h + 3);
        if (length == 0 || length > LS_CH_MAX_RECORD)
            return LS_CH_RECORD_LENGTH;
    }
    return CH_OK;
}

/* _Cursor: length-prefixed vectors of a TLS structure; a short read is an error. */
typedef struct ch_cursor {
    const uint8_t *p;
    size_t n, pos;
} ch_cursor;

static size_t ch_remaining(const ch_cursor *c) { return c->n - c->pos; }

static int ch_take(ch_cursor *c, size_t k, const uint8_t **out)
{
    if (k > c->n - c->pos)
        return LS_CH_TRUNCATED_FIELD;
    if (out)
        *out = c->p + c->pos;
    c->pos += k;
    return CH_OK;
}

static int ch_number(ch_cursor *c, size_t size, size_t *out)
{
    const uint8_t *p;
    int e = ch_take(c, size, &p);
    if (e != CH_OK)
        return e;
    size_t v = 0;
    for (size_t i = 0; i < size; i++)
        v = (v << 8) | p[i];
    *out = v;
    return CH_OK;
}

static int ch_vector(ch_cursor *c, size_t length_size, ch_cursor *out)
{
    size_t k;
    int e = ch_number(c, length_size, &k);
    if (e != CH_OK)
        return e;
    const uint8_t *p;
    e = ch_take(c, k, &p);
    if (e != CH_OK)
        return e;
    out->p = p;
    out->n = k;
    out->pos = 0;
    return CH_OK;
}

/* server_name (RFC 6066 section 3): the host_name, lower-cased in place (the
 * reader's own copy of the handshake, never the client's bytes). */
static int ch_server_name(ch_cursor *data, ls_ch_hello *out)
{
    ch_cursor names, name;
    size_t type;
    int e = ch_vector(data, 2, &names);
    if (e != CH_OK)
        return e;
    if (ch_remaining(data))
        return LS_CH_BAD_SERVER_NAME;
    out->has_server_name = 0;
    out->server_name = NULL;
    out->server_name_len = 0;
    while (ch_remaining(&names)) {
        if ((e = ch_number(&names, 1, &type)) != CH_OK || (e = ch_vector(&names, 2, &name)) != CH_OK)
            return e;
        if (type != CH_NAME_TYPE_HOST)
            continue; /* no other type is defined; skipped rather than guessed */
        if (out->has_server_name)
            return LS_CH_TWO_HOST_NAMES;
        if (name.n == 0)
            return LS_CH_BAD_HOST_NAME;
        for (size_t i = 0; i < name.n; i++)
            if (name.p[i] <= 0x20 || name.p[i] >= 0x7F) /* also: not ASCII */
                return LS_CH_BAD_HOST_NAME;
        uint8_t *host = (uint8_t *)name.p;
        for (size_t i = 0; i < name.n; i++)
            if (host[i] >= 'A' && host[i] <= 'Z')
                host[i] = (uint8_t)(host[i] + 32);
        out->has_server_name = 1;
        out->server_name = (const char *)host;
        out->server_name_len = name.n - (host[name.n - 1] == '.');
    }
    return CH_OK;
}

static int ch_alpn(ch_cursor *data, ls_ch_hello *out)
{
    ch_cursor protocols, name;
    int e = ch_vector(data, 2, &protocols);
    if (e != CH_OK)
        return e;
    if (ch_remaining(data) || !ch_remaining(&protocols))
        return LS_CH_BAD_ALPN;
    out->alpn = protocols.p;
    out->alpn_len = protocols.n;
    while (ch_remaining(&protocols)) {
        if ((e = ch_vector(&protocols, 1, &name)) != CH_OK)
            return e;
        if (name.n == 0)
            return LS_CH_EMPTY_ALPN;
    }
    return CH_OK;
}

static int ch_versions(ch_cursor *data, ls_ch_hello *out)
{
    ch_cursor listed;
    int e = ch_vector(data, 1, &listed);
    if (e != CH_OK)
        return e;
    if (ch_remaining(data) || !ch_remaining(&listed) || ch_remaining(&listed) % 2)
        return LS_CH_BAD_VERSIONS;
    out->versions = listed.p;
    out->nversions = listed.n / 2;
    return CH_OK;
}

/* parse_client_hello: the handshake body (after its 4-byte header). */
static int ch_parse(ls_ch_reader *r, uint8_t *body, size_t n, ls_ch_hello *out)
{
    ch_cursor hello = {body, n, 0}, v;
    const uint8_t *legacy;
    int e;
    memset(out, 0, sizeof *out);
    if ((e = ch_take(&hello, 2, &legacy)) != CH_OK || (e = ch_take(&hello, 32, NULL)) != CH_OK)
        return e;
    r->legacy[0] = legacy[0];
    r->legacy[1] = legacy[1];
    out->versions = r->legacy;
    out->nversions = 1;
    if ((e = ch_vector(&hello, 1, &v)) != CH_OK)
        return e;
    if (v.n > 32)
        return LS_CH_SESSION_ID;
    if ((e = ch_vector(&hello, 2, &v)) != CH_OK)
        return e;
    if (v.n < 2 || v.n % 2)
        return LS_CH_CIPHER_SUITES;
    if ((e = ch_vector(&hello, 1, &v)) != CH_OK)
        return e;
    if (v.n == 0)
        return LS_CH_COMPRESSION;
    if (ch_remaining(&hello)) {
        ch_cursor extensions, data;
        /* extension types seen (one bit each): at most 16k extensions fit */
        uint64_t seen[65536 / 64];
        memset(seen, 0, sizeof seen);
        if ((e = ch_vector(&hello, 2, &extensions)) != CH_OK)
            return e;
        while (ch_remaining(&extensions)) {
            size_t kind;
            if ((e = ch_number(&extensions, 2, &kind)) != CH_OK ||
                (e = ch_vector(&extensions, 2, &data)) != CH_OK)
                return e;
            if (seen[kind / 64] & (1ull << (kind % 64)))
                return LS_CH_EXTENSION_TWICE; /* RFC 8446 section 4.2 */
            seen[kind / 64] |= 1ull << (kind % 64);
            if (kind == CH_EXT_SERVER_NAME)
                e = ch_server_name(&data, out);
            else if (kind == CH_EXT_ALPN)
                e = ch_alpn(&data, out);
            else if (kind == CH_EXT_SUPPORTED_VERSIONS)
                e = ch_versions(&data, out);
            if (e != CH_OK)
                return e;
        }
    }
    out->size = r->records_size;
    return CH_OK;
}

/* _hello_if_whole: CH_WHOLE (parsed into *out), CH_PARTIAL, or a reason. */
static int ch_hello_if_whole(ls_ch_reader *r, ls_ch_hello *out)
{
    if (r->hs_len < LS_CH_HANDSHAKE_HEADER)
        return CH_PARTIAL;
    if (r->hs[0] != CH_HANDSHAKE_CLIENT_HELLO)
        return LS_CH_NOT_CLIENT_HELLO;
    size_t length = ((size_t)r->hs[1] << 16) | ((size_t)r->hs[2] << 8) | r->hs[3];
    if (length > LS_CH_MAX_CLIENT_HELLO)
        return LS_CH_TOO_LARGE;
    if (r->hs_len < LS_CH_HANDSHAKE_HEADER + length)
        return CH_PARTIAL;
    int e = ch_parse(r, r->hs + LS_CH_HANDSHAKE_HEADER, length, out);
    return e == CH_OK ? CH_WHOLE : e;
}

static int ch_append(ls_ch_reader *r, const uint8_t *p, size_t n)
{
    if (r->hs_len + n > r->hs_cap) {
        size_t cap = r->hs_cap ? r->hs_cap : 1024;
        while (cap < r->hs_len + n)
            cap *= 2;
        uint8_t *hs = realloc(r->hs, cap);
        if (!hs)
            return -1;
        r->hs = hs;
        r->hs_cap = cap;
    }
    memcpy(r->hs + r->hs_len, p, n);
    r->hs_len += n;
    return 0;
}

static int ch_fail(ls_ch_reader *r, int reason)
{
    r->done = 1;
    r->reason = reason;
    return LS_CH_ERROR;
}

int ls_ch_feed(ls_ch_reader *r, const uint8_t *data, size_t len, ls_ch_hello *out)
{
    if (r->done)
        return ch_fail(r, r->reason);
    const uint8_t *buffer = data + r->scanned;
    size_t n = len - r->scanned, offset = 0;
    while (n - offset >= LS_CH_RECORD_HEADER) {
        int e = ch_check_record_header(buffer + offset, LS_CH_RECORD_HEADER);
        if (e != CH_OK)
            return ch_fail(r, e);
        size_t end = offset + LS_CH_RECORD_HEADER + ch_be16(buffer + offset + 3);
        if (end > n)
            break;
        if (ch_append(r, buffer + offset + LS_CH_RECORD_HEADER, end - offset - LS_CH_RECORD_HEADER))
            return ch_fail(r, LS_CH_NO_MEMORY);
        r->records_size += end - offset;
        r->scanned += end - offset;
        offset = end;
        int w = ch_hello_if_whole(r, out);
        if (w == CH_WHOLE) {
            r->done = 1;
            return LS_CH_DONE;
        }
        if (w != CH_PARTIAL)
            return ch_fail(r, w);
    }
    /* A record header not yet whole is judged on the bytes it has: what
     * already cannot be TLS (plain HTTP, an SSLv2 hello) is refused now, not at
     * the timeout, however the reads fell. */
    int e = ch_check_record_header(buffer + offset, n - offset);
    if (e != CH_OK)
        return ch_fail(r, e);
    if ((n - offset) + r->hs_len > LS_CH_MAX_CLIENT_HELLO)
        return ch_fail(r, LS_CH_TOO_LARGE);
    return LS_CH_MORE;
}
