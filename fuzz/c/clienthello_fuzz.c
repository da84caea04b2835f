/* clienthello_fuzz.c: a libFuzzer harness of the engine's ClientHello reader
 * (src/_fastpath/engine/clienthello.c, the very file SNI passthrough runs).
 *
 * Input: the bytes a client sends, as they are (the seeds are the Python
 * reader's corpus, fuzz/corpus/client_hello). The reader is fed them whole,
 * then again in pieces cut at points drawn from a hash of the input (so a
 * mutation moves them too), the way reads bring them. Its oracle, beyond ASan
 * and UBSan: both feeds give the same outcome (the same ClientHello or the same
 * reason), as the Python twin promises (fuzz/targets_tls.py); a server name is
 * lower-case printable ASCII without a trailing dot; every pointer of the
 * result lies in the reader's own copy; the size is at most the input's.
 * Build and run: scripts/fuzz-c --target clienthello. */
#include "clienthello.c"

#include <assert.h>
#include <stdint.h>
#include <string.h>

typedef struct fz_outcome {
    int r, reason, has_name;
    char name[512];
    size_t name_len, alpn_len, nversions, size;
    uint8_t alpn[512], versions[512];
} fz_outcome;

static void fz_keep(const ls_ch_reader *rd, int r, const ls_ch_hello *h, fz_outcome *o)
{
    memset(o, 0, sizeof *o);
    o->r = r;
    if (r == LS_CH_ERROR) {
        assert(rd->reason >= 0 && rd->reason < LS_CH_NREASONS);
        o->reason = rd->reason;
    }
    if (r != LS_CH_DONE)
        return;
    const uint8_t *lo = rd->hs, *hi = rd->hs + rd->hs_len;
    o->has_name = h->has_server_name;
    o->size = h->size;
    if (h->has_server_name) {
        assert(h->server_name_len == 0 ||
               ((const uint8_t *)h->server_name >= lo && (const uint8_t *)h->server_name + h->server_name_len <= hi));
        for (size_t i = 0; i < h->server_name_len; i++) {
            char c = h->server_name[i];
            assert(c > 0x20 && c < 0x7F && !(c >= 'A' && c <= 'Z'));
        }
        assert(h->server_name_len == 0 || h->server_name[h->server_name_len - 1] != '.' ||
               h->server_name[h->server_name_len] == '.'); /* one dot removed at most */
        o->name_len = h->server_name_len < sizeof o->name ? h->server_name_len : sizeof o->name;
        memcpy(o->name, h->server_name, o->name_len);
    }
    if (h->alpn_len) {
        assert(h->alpn >= lo && h->alpn + h->alpn_len <= hi);
        o->alpn_len = h->alpn_len < sizeof o->alpn ? h->alpn_len : sizeof o->alpn;
        memcpy(o->alpn, h->alpn, o->alpn_len);
    }
    assert(h->nversions >= 1);
    o->nversions = h->nversions;
    size_t vb = 2 * h->nversions < sizeof o->versions ? 2 * h->nversions : sizeof o->versions;
    memcpy(o->versions, h->versions, vb);
}

static int fz_read(const uint8_t *data, size_t size, uint32_t seed, fz_outcome *o)
{
    ls_ch_reader rd;
    ls_ch_hello h;
    ls_ch_init(&rd);
    int r = LS_CH_MORE;
    size_t at = 0;
    if (!seed) {
        r = ls_ch_feed(&rd, data, size, &h);
    } else {
        while (at < size && r == LS_CH_MORE) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            size_t n = 1 + seed % 97;
            at = at + n < size ? at + n : size;
            r = ls_ch_feed(&rd, data, at, &h); /* every byte so far, as the engine keeps them */
        }
    }
    fz_keep(&rd, r, &h, o);
    if (r == LS_CH_DONE)
        assert(h.size <= size);
    ls_ch_free(&rd);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_outcome whole, split;
    uint32_t seed = 2166136261u; /* FNV-1a of the input: the split points */
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    fz_read(data, size, 0, &whole);
    fz_read(data, size, seed | 1, &split);
    assert(whole.r == split.r);
    assert(whole.r != LS_CH_ERROR || whole.reason == split.reason);
    assert(memcmp(&whole, &split, sizeof whole) == 0);
    return 0;
}
