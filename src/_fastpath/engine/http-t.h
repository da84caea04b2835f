/* http-t.h: the HTTP engine's types (mode http; see http_exchange.c for how
 * an exchange runs). An HTTP session is an engine session with an ls_http
 * attached. */
#ifndef LS_HTTP_T_H
#define LS_HTTP_T_H

#include "engine-t.h"
#include "llhttp.h"

#define PENDING_LIMIT (256 * 1024) /* request bytes kept for the server (pure path's) */
#define IN_LIMIT (64 * 1024)       /* pipelined bytes read ahead, unparsed */
#define DIRECT_SEND_MIN (16 * 1024) /* a bulk read is written at once, not at the round's end */

enum { H_CHUNKED = 1, H_HAS_BODY = 2 };

/* what the session's timer is for */
enum { T_HEAD = 0, T_IDLE, T_CLIENT, T_SERVER, T_CLOSING, T_LINGER };

typedef struct ls_buf {
    char *p;
    uint32_t off, len, cap; /* bytes p[off .. off+len) */
} ls_buf;

typedef struct ls_field {
    uint32_t name, name_len, value, value_len; /* offsets into ls_http.head */
} ls_field;

struct ls_http {
    llhttp_t req, resp;
    ls_buf in;    /* client bytes read but not parsed (pipelined, or a paused parser) */
    ls_buf head;  /* target, field names and values of the head being parsed */
    ls_buf rhead; /* the head rebuilt for the server (kept for a resend) */
    ls_buf out;   /* to the server: rhead, then the re-framed body */
    ls_buf cout;  /* to the client: what it did not take yet */
    ls_buf rhold; /* response rules: the start of a response head not all read yet */
    ls_field *fields;
    int nfields, capfields;
    uint32_t url_len;
    char *extra; /* X-Forwarded-* lines of this connection (malloc'ed to their size) */
    int extra_len;
    /* per connection */
    int requests;
    uint8_t tkind, client_eof, closing, req_paused;
    /* the request being parsed */
    uint8_t parsing, head_done, in_value, req_complete, upgrade, http10, keep_alive, flags;
    uint8_t parse_error, upgrade_wait;
    int bad_status;
    const char *bad_reason;
    uint32_t head_bytes;
    uint32_t host, host_len; /* the Host value (offset into head), for a redirect */
    uint8_t has_host;
    char method[24];
    int64_t t_begin, t_head;
    /* the exchange in flight */
    uint8_t exchange, connected, head_written, req_sent, response_started, reused;
    uint8_t resp_head, resp_done, interim, resp_first, resp_keep, resp_eof, keep_client;
    uint8_t backend_reusable, tunnel, logged;
    ls_session *conn; /* the connection object of a pooled server connection in use */
    ls_session *sess;  /* the session this is the state of */
    ls_list flink;     /* on the worker's list of sessions with bytes to write */
    int status;
    int log_slot;
    int backend_requests; /* served on the server connection in use, this one included */
    int backend_max;      /* the requests that connection may serve (http_pool.c conn_max_requests) */
    double t_wait, t_connect;
    int64_t t_connect_start, t_sent, t_response;
    uint64_t bytes_in, bytes_out;
    /* the lingering close (http_linger.c) */
    uint8_t lingering; /* LINGER_DRAIN; LINGER_NOTIFY(_CLEAN): the close_notify waits */
    uint32_t linger_bytes;
    int64_t linger_end;
};

#endif
