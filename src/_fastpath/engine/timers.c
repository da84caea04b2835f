/* timers.c: the clock and each worker's deadlines, a binary min-heap of
 * sessions (part of the unity build engine.c). A session is in the heap at most
 * once (heap_idx, -1 when not); what its deadline means depends on its state
 * (run_timers, worker.c). */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void heap_swap(ls_session **h, int a, int b)
{
    ls_session *t = h[a];
    h[a] = h[b];
    h[b] = t;
    h[a]->heap_idx = a;
    h[b]->heap_idx = b;
}

static void heap_up(ls_worker *W, int i)
{
    ls_session **h = W->heap;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p]->deadline_us <= h[i]->deadline_us)
            break;
        heap_swap(h, p, i);
        i = p;
    }
}

static void heap_down(ls_worker *W, int i)
{
    ls_session **h = W->heap;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < W->heap_len && h[l]->deadline_us < h[m]->deadline_us)
            m = l;
        if (r < W->heap_len && h[r]->deadline_us < h[m]->deadline_us)
            m = r;
        if (m == i)
            break;
        heap_swap(h, m, i);
        i = m;
    }
}

static void timer_set(ls_worker *W, ls_session *s, int64_t deadline)
{
    s->deadline_us = deadline;
    if (s->heap_idx >= 0) {
        heap_up(W, s->heap_idx);
        heap_down(W, s->heap_idx);
        return;
    }
    if (W->heap_len == W->heap_cap) {
        int cap = W->heap_cap ? W->heap_cap * 2 : 256;
        ls_session **h = realloc(W->heap, (size_t)cap * sizeof *h);
        if (!h)
            abort(); /* out of memory for a pointer array: nothing sane left to do */
        W->heap = h;
        W->heap_cap = cap;
    }
    s->heap_idx = W->heap_len;
    W->heap[W->heap_len++] = s;
    heap_up(W, s->heap_idx);
}

static void timer_del(ls_worker *W, ls_session *s)
{
    int i = s->heap_idx;
    if (i < 0)
        return;
    s->heap_idx = -1;
    W->heap_len--;
    if (i == W->heap_len)
        return;
    W->heap[i] = W->heap[W->heap_len];
    W->heap[i]->heap_idx = i;
    heap_up(W, i);
    heap_down(W, W->heap[i]->heap_idx);
}
