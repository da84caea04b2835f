/* http-i.h: what each part of the HTTP engine offers the others (see
 * engine-i.h). Types are in http-t.h. The generic engine reaches HTTP through
 * proto_http alone, but for two lists each worker owns: worker.c calls
 * http_flush_round at the end of each round and http_pool_shutdown when the
 * engine is freed. */
#ifndef LS_HTTP_I_H
#define LS_HTTP_I_H

#include "http-t.h"

/* http_parse.c */
static void copy_str(char *dst, size_t size, const char *src);
static void parsers_init(void);
static int rule_drops(const ls_hrules *r, const char *name, size_t n);
static int request_buffered(const ls_http *h);

/* http_io.c */
static void buf_free(ls_buf *b);
static int buf_append(ls_buf *b, const void *data, size_t n);
static void flush_later(ls_worker *W, ls_session *s);
static void flush_cancel(ls_session *s);
static void to_client(ls_worker *W, ls_session *s, const char *data, size_t n);
static int last_before_eof(const ls_http *h);
static void http_progress(ls_worker *W, ls_session *s);
static void http_flush_round(ls_worker *W);
static void http_event(ls_worker *W, ls_session *s, int side, uint32_t ev);

/* http_linger.c */
static void close_client(ls_worker *W, ls_session *s);
static void linger_progress(ls_worker *W, ls_session *s);

/* http_pool.c */
static void worker_rand_seed(ls_worker *W);
static int conn_max_requests(ls_worker *W, int max);
static void conn_free(ls_worker *W, ls_session *p);
static void pool_drop(ls_worker *W, ls_session *p);
static void conn_event(ls_worker *W, ls_session *p, uint32_t ev);
static void drop_server_conn(ls_worker *W, ls_session *s);
static void release_server(ls_worker *W, ls_session *s, int reusable);
static int http_take_pooled(ls_worker *W, ls_session *s);
static void http_pool_shutdown(ls_worker *W, ls_listener *L, int slot);

/* http_exchange.c */
static double secs(int64_t us);
static void http_log(ls_worker *W, ls_session *s, int end, int arg);
static void http_answer(ls_worker *W, ls_session *s, int status, int end, int arg);
static void http_abort(ls_worker *W, ls_session *s, int end);
static void response_done(ls_worker *W, ls_session *s);
static void start_exchange(ls_worker *W, ls_session *s);
static void http_connected(ls_worker *W, ls_session *s);
static void server_lost(ls_worker *W, ls_session *s, int reset);
static void own_exchange(ls_worker *W, ls_session *s);
static void parse_failed(ls_worker *W, ls_session *s);
static void start_tunnel(ls_worker *W, ls_session *s, const char *resp, size_t n);

#endif
