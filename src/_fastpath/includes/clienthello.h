/* loadstone native data plane: the sans-IO ClientHello reader of SNI
 * passthrough (engine/clienthello.c), the twin of loadstone/tls/clienthello.py.
 *
 * Same outcomes for the same bytes, whatever the reads: a ClientHello (its
 * server name, ALPN list, versions offered, size), "more bytes needed", or an
 * error whose reason is the Python reader's word for word (ls_ch_reasons).
 * tests/unit/test_clienthello_twin.py feeds both the same vectors and the fuzz
 * corpus and asserts equal outcomes; fuzz/c/clienthello_fuzz.c fuzzes it.
 *
 * The reader never changes the bytes it is given: the caller keeps them and
 * forwards them untouched. It needs no allocation but the handshake bytes it
 * gathers (bounded by LS_CH_MAX_CLIENT_HELLO plus one record). */
#ifndef LS_CLIENTHELLO_H
#define LS_CLIENTHELLO_H

#include <stddef.h>
#include <stdint.h>

#define LS_CH_RECORD_HEADER 5
#define LS_CH_HANDSHAKE_HEADER 4
#define LS_CH_MAX_RECORD (1 << 14)          /* TLSPlaintext.length */
#define LS_CH_MAX_CLIENT_HELLO (64 * 1024)  /* clienthello.MAX_CLIENT_HELLO */

/* ls_ch_feed's answers */
enum { LS_CH_ERROR = -1, LS_CH_MORE = 0, LS_CH_DONE = 1 };

/* Why bytes are not a ClientHello: indexes of ls_ch_reasons, in the Python
 * reader's words (ClientHelloError.reason). LS_CH_NO_MEMORY has no Python twin. */
enum {
    LS_CH_TOO_LARGE = 0,
    LS_CH_RECORD_VERSION,
    LS_CH_RECORD_LENGTH,
    LS_CH_NOT_CLIENT_HELLO,
    LS_CH_SSLV2,
    LS_CH_PLAIN_TEXT,
    LS_CH_RECORD_TYPE,
    LS_CH_TRUNCATED_FIELD,
    LS_CH_SESSION_ID,
    LS_CH_CIPHER_SUITES,
    LS_CH_COMPRESSION,
    LS_CH_EXTENSION_TWICE,
    LS_CH_BAD_SERVER_NAME,
    LS_CH_TWO_HOST_NAMES,
    LS_CH_BAD_HOST_NAME,
    LS_CH_BAD_ALPN,
    LS_CH_EMPTY_ALPN,
    LS_CH_BAD_VERSIONS,
    LS_CH_NO_MEMORY,
    LS_CH_NREASONS,
};
extern const char *const ls_ch_reasons[LS_CH_NREASONS];

/* A parsed ClientHello; its pointers are into the reader (valid until
 * ls_ch_free). */
typedef struct ls_ch_hello {
    int has_server_name;      /* 0: no host_name (Python: server_name None) */
    const char *server_name;  /* lower case, one trailing dot removed; not NUL-terminated */
    size_t server_name_len;
    const uint8_t *alpn;      /* protocol_name_list (each name 1-byte length prefixed) */
    size_t alpn_len;          /* 0: no alpn extension */
    const uint8_t *versions;  /* big-endian uint16 each: supported_versions, else legacy_version */
    size_t nversions;
    size_t size;              /* bytes of the records that carried it */
} ls_ch_hello;

typedef struct ls_ch_reader {
    size_t scanned;      /* input bytes taken by whole records */
    size_t records_size;
    uint8_t *hs;         /* the handshake records' fragments so far */
    size_t hs_len, hs_cap;
    uint8_t legacy[2];   /* legacy_version, the versions of a hello without supported_versions */
    int done;
    int reason;          /* after LS_CH_ERROR: LS_CH_* */
} ls_ch_reader;

void ls_ch_init(ls_ch_reader *r);
void ls_ch_free(ls_ch_reader *r);

/* `data` holds every byte the client sent so far: what the previous call was
 * given, and more after it. LS_CH_DONE with *out filled, LS_CH_MORE, or
 * LS_CH_ERROR with r->reason set; after DONE or ERROR, do not feed again. */
int ls_ch_feed(ls_ch_reader *r, const uint8_t *data, size_t len, ls_ch_hello *out);

#endif
