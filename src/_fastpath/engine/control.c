/* control.c: the channels between the control plane and the workers (part of
 * the unity build engine.c). Orders go to a worker as commands on its list,
 * with an eventfd to wake it; a synchronous order is also a barrier (the
 * worker runs commands after the events of its round). What the workers have
 * to say goes back as records, batched per round into the engine's queue, with
 * an eventfd the asyncio loop watches. */

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
}

static void drain_eventfd(int fd)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

static void post(ls_worker *W, ls_cmd *c)
{
    c->next = NULL;
    pthread_mutex_lock(&W->cmd_lock);
    if (W->cmd_tail)
        W->cmd_tail->next = c;
    else
        W->cmd_head = c;
    W->cmd_tail = c;
    pthread_mutex_unlock(&W->cmd_lock);
    wake(W->cmdfd);
}

/* Run a command on every worker and wait for all of them; returns the sum of
 * their results. */
static int post_all_sync(ls_engine *e, int type, ls_listener *L, int slot, int reason)
{
    ls_cmd *cmds = calloc((size_t)e->nworkers, sizeof *cmds);
    if (!cmds)
        return -ENOMEM;
    for (int i = 0; i < e->nworkers; i++) {
        cmds[i].type = type;
        cmds[i].L = L;
        cmds[i].slot = slot;
        cmds[i].reason = reason;
        cmds[i].sync = 1;
        post(&e->workers[i], &cmds[i]);
    }
    int total = 0;
    pthread_mutex_lock(&e->sync_lock);
    for (int i = 0; i < e->nworkers; i++) {
        while (!cmds[i].done)
            pthread_cond_wait(&e->sync_cond, &e->sync_lock);
        total += cmds[i].result;
    }
    pthread_mutex_unlock(&e->sync_lock);
    free(cmds);
    return total;
}

static void run_commands(ls_worker *W)
{
    pthread_mutex_lock(&W->cmd_lock);
    ls_cmd *c = W->cmd_head;
    W->cmd_head = W->cmd_tail = NULL;
    pthread_mutex_unlock(&W->cmd_lock);
    ls_cmd *acks = NULL;
    while (c) {
        ls_cmd *next = c->next;
        c->result = 0;
        switch (c->type) {
        case CMD_SHUTDOWN: {
            ls_list *pos, *tmp;
            LS_LIST_FOR_EACH_SAFE(pos, tmp, &W->sessions) {
                ls_session *s = LS_LIST_ELEM(pos, ls_session, alink);
                if (s->L == c->L && (c->slot < 0 || s->slot == c->slot)) {
                    finish(W, s, LS_END_SHUTDOWN, c->reason);
                    c->result++;
                }
            }
            if (c->L->proto->drop_idle)
                c->L->proto->drop_idle(W, c->L, c->slot);
            break;
        }
        case CMD_STOP_IDLE:
            if (c->L->proto->stop_idle)
                c->result = c->L->proto->stop_idle(W, c->L);
            break;
        case CMD_ADMIT:
            admit_arrived(W, c->s);
            free(c);
            c = NULL;
            break;
        case CMD_STOP:
            W->stop = 1;
            break;
        default: /* CMD_BARRIER */
            break;
        }
        if (c && c->sync) {
            c->next = acks;
            acks = c;
        }
        c = next;
    }
    if (!acks)
        return;
    /* The records of what a command did reach the queue before its caller
     * wakes, so that it can read them at once (the session log on stop). */
    flush_records(W);
    pthread_mutex_lock(&W->e->sync_lock);
    for (c = acks; c; c = c->next)
        c->done = 1;
    pthread_cond_broadcast(&W->e->sync_cond);
    pthread_mutex_unlock(&W->e->sync_lock);
}

static ls_record *new_record(ls_worker *W)
{
    if (W->nrecs == W->caprecs) {
        int cap = W->caprecs ? W->caprecs * 2 : 64;
        ls_record *r = realloc(W->recs, (size_t)cap * sizeof *r);
        if (!r)
            return NULL;
        W->recs = r;
        W->caprecs = cap;
    }
    ls_record *r = &W->recs[W->nrecs++];
    memset(r, 0, offsetof(ls_record, client));
    r->client[0] = 0;
    return r;
}

/* The bytes of `r` that mean something: the HTTP fields, the request target's
 * 1 KiB above all, only in an HTTP record, and of the target its length. In the
 * close scenario copying whole records was 1.3 KiB per logged tcp session. */
static size_t record_used(const ls_record *r)
{
    if (r->type != LS_REC_HTTP)
        return offsetof(ls_record, status);
    return offsetof(ls_record, target) + r->target_len;
}

static void flush_records(ls_worker *W)
{
    if (!W->nrecs)
        return;
    ls_engine *e = W->e;
    pthread_mutex_lock(&e->rec_lock);
    int was_empty = e->nrecs == 0;
    if (!e->recs && e->spare_recs) {
        e->recs = e->spare_recs;
        e->caprecs = e->spare_cap;
        e->spare_recs = NULL;
    }
    if (e->nrecs + W->nrecs > e->caprecs) {
        int cap = e->caprecs ? e->caprecs : 256;
        while (cap < e->nrecs + W->nrecs)
            cap *= 2;
        ls_record *r = realloc(e->recs, (size_t)cap * sizeof *r);
        if (r) {
            e->recs = r;
            e->caprecs = cap;
        }
    }
    if (e->nrecs + W->nrecs <= e->caprecs) {
        for (int i = 0; i < W->nrecs; i++)
            memcpy(&e->recs[e->nrecs + i], &W->recs[i], record_used(&W->recs[i]));
        e->nrecs += W->nrecs;
    }
    pthread_mutex_unlock(&e->rec_lock);
    W->nrecs = 0;
    if (was_empty)
        wake(e->recfd);
}

ls_record *ls_take_records(ls_engine *e, int *n)
{
    drain_eventfd(e->recfd);
    pthread_mutex_lock(&e->rec_lock);
    ls_record *r = e->recs;
    *n = e->nrecs;
    e->recs = NULL;
    e->taken_cap = e->caprecs;
    e->nrecs = e->caprecs = 0;
    pthread_mutex_unlock(&e->rec_lock);
    return r;
}

void ls_records_done(ls_engine *e, ls_record *r)
{
    pthread_mutex_lock(&e->rec_lock);
    if (!e->spare_recs && e->taken_cap <= LS_SPARE_RECORDS_MAX) {
        e->spare_recs = r;
        e->spare_cap = e->taken_cap;
        r = NULL;
    }
    pthread_mutex_unlock(&e->rec_lock);
    free(r);
}
