/* spin_selftest.c: a check of global.poll_spin's budget (worker.c
 * spin_credit, spin_paid) without a clock, for the tests (relay.spin_selftest;
 * part of the unity build engine.c).
 *
 * The budget's promise: a worker spins at most a quarter of the time its
 * rounds took (LS_SPIN_BUDGET_SHARE), plus the purse it starts with (four
 * spins: LS_SPIN_CREDIT_SPINS), whatever its spins find. A spin is timed by the
 * clock and its events come from peers, so an engine run can only show it
 * loosely; here the dearest case is played out exactly: after every round of
 * `worked_us` the worker spins its whole window and finds nothing. Without the
 * budget it would spin spin_us after every round (30,000 us in the first case
 * below, against a budget of 2,120). */

/* `rounds` rounds of worked_us, each followed by a spin of its whole window
 * that finds nothing; the microseconds spun. */
static uint64_t spin_rounds(ls_worker *W, int spin_us, int64_t worked_us, int rounds)
{
    uint64_t before = W->spun_us;
    for (int i = 0; i < rounds; i++)
        spin_paid(W, spin_credit(W, spin_us, worked_us), 0);
    return W->spun_us - before;
}

/* NULL, or what broke the budget (a static string). */
const char *ls_spin_selftest(void)
{
    static char why[200];
    static const struct {
        int spin_us;
        int64_t worked_us;
        int rounds;
    } cases[] = {
        {30, 8, 1000},      /* short rounds: the share, 2 us a round, is all it spins */
        {30, 0, 1000},      /* no work at all: the first purse, then nothing */
        {200, 50, 500},     /* a long spin: 12 us a round */
        {5, 100, 1000},     /* a share above the spin: capped at one spin a round */
        {30, 1000000, 100}, /* long rounds: the purse is capped, never more than a spin */
    };
    ls_worker *W = calloc(1, sizeof *W);
    if (!W)
        return "spin self-test: out of memory";
    const char *failed = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] && !failed; i++) {
        memset(W, 0, sizeof *W);
        int spin = cases[i].spin_us, rounds = cases[i].rounds;
        int64_t worked = cases[i].worked_us;
        uint64_t spun = spin_rounds(W, spin, worked, rounds);
        uint64_t budget = (uint64_t)LS_SPIN_CREDIT_SPINS * (uint64_t)spin +
                          (uint64_t)rounds * (uint64_t)(worked / LS_SPIN_BUDGET_SHARE);
        uint64_t most = (uint64_t)rounds * (uint64_t)spin; /* a spin every round */
        uint64_t expected = budget < most ? budget : most;
        const char *verdict = NULL;
        uint64_t against = budget;
        if (spun > budget || W->wasted_us != spun) {
            verdict = "over the budget of";
        } else if (spun + (uint64_t)spin < expected) { /* the budget is there to be used */
            verdict = "short of its due of";
            against = expected;
        }
        if (verdict) {
            snprintf(why, sizeof why,
                     "spin budget: %d us spins after %d rounds of %lld us spun %llu us, %s %llu us",
                     spin, rounds, (long long)worked, (unsigned long long)spun, verdict,
                     (unsigned long long)against);
            failed = why;
        }
    }
    if (!failed) { /* a long idle round fills the purse to four spins, no more */
        memset(W, 0, sizeof *W);
        uint64_t spun = spin_rounds(W, 30, 10 * 1000 * 1000, 1) + spin_rounds(W, 30, 0, 100);
        if (spun != (uint64_t)LS_SPIN_CREDIT_SPINS * 30)
            failed = "spin budget: an idle second gave more (or less) than four spins";
    }
    if (!failed) { /* an empty purse, then a new setting: a full purse for it */
        if (spin_credit(W, 50, 0) != 50 || W->spin_credit_us != LS_SPIN_CREDIT_SPINS * 50)
            failed = "spin budget: a new poll_spin did not start with a full purse";
    }
    if (!failed) { /* a spin that found events: a hit, not wasted, and paid */
        int64_t credit = W->spin_credit_us;
        uint64_t wasted = W->wasted_us;
        spin_paid(W, 10, 1);
        if (W->spin_hits != 1 || W->wasted_us != wasted || W->spin_credit_us != credit - 10)
            failed = "spin budget: a spin with events was not counted as a hit and paid";
    }
    free(W);
    return failed;
}
