/* queue.c: admission under maxconn and the listener's queue, as HAProxy's
 * (part of the unity build engine.c). The count of admitted sessions and the
 * queue are shared by the workers, under the listener's lock; a session taken
 * off the queue by another worker reaches its own by a command (CMD_ADMIT) or,
 * when it is the same worker, by its admit list. */

static void admit(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    pthread_mutex_lock(&L->lock);
    if (L->active < L->cfg.maxconn && ls_list_empty(&L->queue)) {
        L->active++;
        pthread_mutex_unlock(&L->lock);
        s->proto->admitted(W, s);
        return;
    }
    /* Over maxconn: wait for a slot, as HAProxy's queue, bounded by timeouts.queue. */
    s->state = ST_QUEUED;
    ls_list_push_back(&L->queue, &s->qlink);
    L->nqueued++;
    int64_t queue_ms = L->cfg.queue_ms;
    pthread_mutex_unlock(&L->lock);
    timer_set(W, s, W->now_us + queue_ms * 1000);
}

/* A session taken off the queue reached its worker (CMD_ADMIT, or the worker's
 * admit list): go on, unless it was closed meanwhile. */
static void admit_arrived(ls_worker *W, ls_session *s)
{
    if (s->admit_pending) {
        sess_free(s); /* closed while the order was on its way */
    } else if (s->state == ST_ADMITTING) {
        timer_del(W, s);
        s->state = ST_PICKING;
        s->proto->admitted(W, s);
    }
}

/* timeouts.queue passed: out of the queue and ended, unless another worker
 * took it off first (ADMITTING: its admission is on its way). */
static void queue_expired(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    timer_del(W, s);
    pthread_mutex_lock(&L->lock);
    if (s->state == ST_QUEUED) {
        queue_remove(L, s);
        s->state = ST_EXPIRED;
    }
    pthread_mutex_unlock(&L->lock);
    if (s->state == ST_EXPIRED) {
        if (s->proto->queue_expired)
            s->proto->queue_expired(W, s);
        else
            finish(W, s, LS_END_QUEUE_TIMEOUT, 0);
    }
}

/* Take sessions off the listener queue while slots are free (lock held);
 * returns them as a list linked through rnext. */
static ls_session *dequeue_admissible(ls_listener *L)
{
    ls_session *out = NULL, **tail = &out;
    ls_session *q;
    while (L->active < L->cfg.maxconn && (q = LS_LIST_FIRST(&L->queue, ls_session, qlink))) {
        ls_list_del(&q->qlink);
        L->nqueued--;
        L->active++;
        __atomic_store_n(&q->state, ST_ADMITTING, __ATOMIC_RELAXED);
        q->rnext = NULL;
        *tail = q;
        tail = &q->rnext;
    }
    return out;
}

/* Hand admitted sessions to their workers (W: the calling worker or NULL). */
static void dispatch_admitted(ls_worker *W, ls_session *list)
{
    while (list) {
        ls_session *q = list;
        list = q->rnext;
        q->rnext = NULL;
        if (q->W == W) {
            q->rnext = W->admit;
            W->admit = q;
        } else {
            ls_cmd *c = calloc(1, sizeof *c);
            if (!c)
                abort();
            c->type = CMD_ADMIT;
            c->s = q;
            post(q->W, c);
        }
    }
}

static void queue_remove(ls_listener *L, ls_session *s)
{
    ls_list_del(&s->qlink);
    L->nqueued--;
}
