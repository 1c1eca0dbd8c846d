/* Limiters and start deadlines: a cap shared by several pools and threads, a rate kept without any
 * submit to drive it, raising and pausing, cancelling waiters, a limiter freed while tasks hold it,
 * shutdown of a pool whose tasks wait for a limiter; deadlines that expire on time in a paused pool
 * and while waiting for a limiter, a running task never interrupted, an inline run that expires
 * instead of running; the stats identity with `expired`; bad input.
 *
 * Expiry and rate admissions are observed through on_done and counters while the test only sleeps:
 * nothing here waits on a handle to make the library progress. Every pool is freed at the end, so the
 * timer thread is joined (valgrind_unsuppressed_test_limiter checks that). */
#include <math.h>

#include "test_util.h"

/* --- a callable that counts how many of its kind run at once --- */

typedef struct {
    atomic_int now;
    atomic_int max;
    atomic_int ran;
    int sleep_ms;
    atomic_llong started_ms[64];
} counted;

static int32_t counted_work(void *arg, void **out)
{
    (void)out;
    counted *c = arg;
    int n = atomic_fetch_add(&c->now, 1) + 1;
    int seen = atomic_load(&c->max);
    while (n > seen && !atomic_compare_exchange_weak(&c->max, &seen, n)) {
    }
    int i = atomic_fetch_add(&c->ran, 1);
    if (i < 64) {
        atomic_store(&c->started_ms[i], (long long)now_ms());
    }
    sleep_ms(c->sleep_ms);
    atomic_fetch_sub(&c->now, 1);
    return 0;
}

static struct asyncify_limiter *new_limiter(uint32_t max_running, double rate, uint32_t burst)
{
    asyncify_limiter_options o;
    CHECK_OK(asyncify_limiter_options_init(&o, sizeof o));
    CHECK(o.max_running == UINT32_MAX && o.rate_per_s == 0.0 && o.burst == 0 && o.name == NULL);
    o.max_running = max_running;
    o.rate_per_s = rate;
    o.burst = burst;
    o.name = "test";
    struct asyncify_limiter *lim = NULL;
    CHECK_OK(asyncify_limiter_new(&o, &lim));
    CHECK(lim != NULL);
    return lim;
}

static asyncify_limiter_stats limiter_stats(const struct asyncify_limiter *lim)
{
    asyncify_limiter_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(asyncify_limiter_stats_get(lim, &s));
    CHECK(s.struct_size == sizeof s);
    return s;
}

/* on_done records: how many, with which status, and when. */
typedef struct {
    atomic_int done;
    atomic_int by_status[8];
    atomic_llong last_ms;
    atomic_int freed;
} outcomes;

static void record_done(void *data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)h, (void)result, (void)code;
    outcomes *o = data;
    if (status >= 0 && status < 8) {
        atomic_fetch_add(&o->by_status[status], 1);
    }
    atomic_store(&o->last_ms, (long long)now_ms());
    atomic_fetch_add(&o->done, 1);
}

/* Options for a detached task of `pool` with limiter `lim` (NULL: none) that reports to `out`. */
static asyncify_submit_options reporting_to(struct asyncify_pool *pool, struct asyncify_limiter *lim,
                                            outcomes *out)
{
    asyncify_submit_options opts = options_for(pool);
    opts.limiter = lim;
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    opts.on_done = record_done;
    opts.on_done_data = out;
    return opts;
}

static void count_free(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static int32_t must_not_run(void *arg, void **out)
{
    (void)arg, (void)out;
    test_fail(__FILE__, __LINE__, "a task that should never run ran");
}

static void check_identity(struct asyncify_pool *pool)
{
    /* A slot goes back just after the task's callbacks returned: wait for the pool to be quiet. */
    WAIT_FOR(stats_of(pool).queued == 0 && stats_of(pool).running == 0, TEST_PATIENCE_MS);
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.submitted == s.completed + s.failed + s.cancelled + s.abandoned + s.expired);
}

/* --- limiter: one cap over 3 pools and 4 submitting threads --- */

typedef struct {
    struct asyncify_pool **pools;
    struct asyncify_limiter *lim;
    counted *limited;
    outcomes *out;
    int index;
} submitter;

static void *submit_limited(void *arg)
{
    submitter *s = arg;
    for (int i = 0; i < 6; i++) {
        asyncify_submit_options opts = reporting_to(s->pools[(s->index + i) % 3], s->lim, s->out);
        CHECK_OK(asyncify_submit(counted_work, s->limited, &opts, NULL));
    }
    return NULL;
}

static void test_cap_across_pools(void)
{
    struct asyncify_pool *pools[3] = { new_pool(4), new_pool(4), new_pool(4) };
    struct asyncify_limiter *lim = new_limiter(2, 0, 0);
    counted limited = { .sleep_ms = 30 };
    counted free_running = { .sleep_ms = 30 };
    outcomes out = { 0 };
    submitter subs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        subs[i] = (submitter){ pools, lim, &limited, &out, i };
        threads[i] = start_thread(submit_limited, &subs[i]);
    }
    for (int i = 0; i < 4; i++) {
        join_thread(threads[i]);
    }
    /* 24 limited tasks of 30 ms, 2 at a time: about 360 ms. Tasks without the limiter run meanwhile. */
    asyncify_handle others[4];
    for (int i = 0; i < 4; i++) {
        others[i] = submit_to(pools[i % 3], counted_work, &free_running);
    }
    for (int i = 0; i < 4; i++) {
        wait_ok_release(others[i]);
    }
    asyncify_limiter_stats mid = limiter_stats(lim);
    CHECK(mid.waiting > 0); /* the others did not wait behind the limited ones */
    WAIT_FOR(atomic_load(&out.done) == 24, TEST_PATIENCE_MS);
    CHECK(atomic_load(&limited.max) == 2);
    CHECK(atomic_load(&out.by_status[ASYNCIFY_OK]) == 24);
    asyncify_limiter_stats end = limiter_stats(lim);
    CHECK(end.max_running == 2 && end.admitted == 24 && end.waiting == 0);
    WAIT_FOR(limiter_stats(lim).running == 0, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_limiter_free(lim));
    for (int i = 0; i < 3; i++) {
        check_identity(pools[i]);
        CHECK_OK(asyncify_pool_free(pools[i], -1));
    }
    TEST_PASS("cap_across_pools");
}

/* --- limiter: a rate of 20/s with a bucket of 1 spaces 40 starts evenly, without any submit --- */

static void test_rate(void)
{
    struct asyncify_pool *pool = new_pool(8);
    struct asyncify_limiter *lim = new_limiter(UINT32_MAX, 20.0, 1);
    counted c = { .sleep_ms = 0 };
    outcomes out = { 0 };
    int64_t t0 = now_ms();
    for (int i = 0; i < 40; i++) {
        asyncify_submit_options opts = reporting_to(pool, lim, &out);
        CHECK_OK(asyncify_submit(counted_work, &c, &opts, NULL));
    }
    WAIT_FOR(atomic_load(&out.done) == 40, TEST_PATIENCE_MS);
    double took = (double)(atomic_load(&out.last_ms) - t0) / 1000.0;
    /* The first start spends the full bucket, then one every 50 ms: 1.95 s. */
    int64_t shortest = INT64_MAX, longest = 0;
    for (int i = 1; i < 40; i++) {
        int64_t gap = atomic_load(&c.started_ms[i]) - atomic_load(&c.started_ms[i - 1]);
        shortest = gap < shortest ? gap : shortest;
        longest = gap > longest ? gap : longest;
    }
    printf("rate 20/s: 40 tasks in %.2f s; gaps between starts %lld..%lld ms\n", took, (long long)shortest,
           (long long)longest);
    CHECK(took >= 1.85 && took < 4.0);
    CHECK(shortest >= 25); /* evenly spaced: never a burst */
    CHECK(limiter_stats(lim).admitted == 40);
    CHECK_OK(asyncify_limiter_free(lim));
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("rate");
}

/* --- limiter: paused, raised at once; cancelling waiters; freed while held --- */

static void test_raise_cancel_free(void)
{
    struct asyncify_pool *pool = new_pool(8);
    struct asyncify_limiter *lim = new_limiter(0, 0, 0); /* paused */
    counted c = { .sleep_ms = 1 };
    atomic_int freed = 0;
    asyncify_handle hs[8];
    for (int i = 0; i < 8; i++) {
        asyncify_submit_options opts = options_for(pool);
        opts.limiter = lim;
        opts.free_arg = count_free;
        hs[i] = submit_opts(i < 3 ? must_not_run : counted_work, i < 3 ? (void *)&freed : (void *)&c, &opts);
    }
    sleep_ms(50);
    CHECK(atomic_load(&c.ran) == 0);
    CHECK(limiter_stats(lim).waiting == 8 && stats_of(pool).queued == 8);
    /* A task waiting for its limiter never runs once cancelled. */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_STATUS(asyncify_cancel(hs[i]), ASYNCIFY_CANCELLED);
        CHECK_EQ_STATUS(asyncify_poll(hs[i], NULL, NULL), ASYNCIFY_CANCELLED);
        CHECK_OK(asyncify_release(hs[i]));
    }
    CHECK(atomic_load(&freed) == 3);
    asyncify_limiter_stats s = limiter_stats(lim);
    CHECK(s.cancelled_waiting == 3 && s.waiting == 5 && s.admitted == 0);
    /* Raising the cap admits at once, with nothing else happening. */
    int64_t t0 = now_ms();
    CHECK_OK(asyncify_limiter_set(lim, 5, 0, 0));
    WAIT_FOR(atomic_load(&c.ran) == 5, TEST_PATIENCE_MS);
    CHECK(now_ms() - t0 < 1000);
    for (int i = 3; i < 8; i++) {
        wait_ok_release(hs[i]);
    }
    /* Freed while its tasks hold it: they still run, one at a time. */
    CHECK_OK(asyncify_limiter_set(lim, 1, 0, 0));
    counted one = { .sleep_ms = 20 };
    for (int i = 0; i < 4; i++) {
        asyncify_submit_options opts = options_for(pool);
        opts.limiter = lim;
        hs[i] = submit_opts(counted_work, &one, &opts);
    }
    CHECK_OK(asyncify_limiter_free(lim));
    for (int i = 0; i < 4; i++) {
        wait_ok_release(hs[i]);
    }
    CHECK(atomic_load(&one.max) == 1 && atomic_load(&one.ran) == 4);
    check_identity(pool);
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("raise_cancel_free");
}

/* --- limiter: a pool's shutdown cancels its tasks that wait for a limiter --- */

static void test_shutdown_cancels_waiting(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct asyncify_limiter *lim = new_limiter(0, 0, 0);
    outcomes out = { 0 };
    atomic_int freed = 0;
    for (int i = 0; i < 3; i++) {
        asyncify_submit_options opts = reporting_to(pool, lim, &out);
        opts.free_arg = count_free;
        CHECK_OK(asyncify_submit(must_not_run, &freed, &opts, NULL));
    }
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&out.by_status[ASYNCIFY_CANCELLED]) == 3 && atomic_load(&freed) == 3);
    asyncify_limiter_stats s = limiter_stats(lim);
    CHECK(s.waiting == 0 && s.cancelled_waiting == 3 && s.running == 0);
    /* Raising it now admits nothing: those tasks are gone. */
    CHECK_OK(asyncify_limiter_set(lim, 10, 0, 0));
    CHECK(limiter_stats(lim).admitted == 0);
    CHECK_OK(asyncify_limiter_free(lim));
    TEST_PASS("shutdown_cancels_waiting");
}

/* --- deadlines: a paused pool's tasks expire on time, observed while the test only sleeps --- */

static void test_deadline_paused_pool(void)
{
    struct asyncify_pool *pool = new_pool(0);
    outcomes out = { 0 };
    atomic_int freed = 0;
    asyncify_handle hs[10];
    int64_t t0 = now_ms();
    for (int i = 0; i < 10; i++) {
        asyncify_submit_options opts = options_for(pool);
        opts.start_within_ms = 50;
        opts.on_done = record_done;
        opts.on_done_data = &out;
        opts.free_arg = count_free;
        hs[i] = submit_opts(must_not_run, &freed, &opts);
    }
    while (atomic_load(&out.done) < 10 && now_ms() - t0 < TEST_PATIENCE_MS) {
        sleep_ms(5);
    }
    int64_t took = atomic_load(&out.last_ms) - t0;
    printf("10 tasks with start_within_ms = 50 in a paused pool: all expired after %lld ms\n",
           (long long)took);
    CHECK(atomic_load(&out.by_status[ASYNCIFY_EXPIRED]) == 10 && atomic_load(&out.done) == 10);
    CHECK(took >= 50 && took < 1000);
    CHECK(atomic_load(&freed) == 10);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ_STATUS(asyncify_poll(hs[i], NULL, NULL), ASYNCIFY_EXPIRED);
        CHECK_EQ_STATUS(asyncify_cancel(hs[i]), ASYNCIFY_EXPIRED);
        CHECK_EQ_STATUS(asyncify_wait(hs[i], 0, NULL, NULL), ASYNCIFY_EXPIRED);
        CHECK_OK(asyncify_release(hs[i]));
    }
    CHECK(atomic_load(&freed) == 10); /* free_arg once each */
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.expired == 10 && s.cancelled == 0 && s.submitted == 10 && s.queued == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("deadline_paused_pool");
}

/* --- deadlines while waiting for a limiter; a running task is never interrupted --- */

static void test_deadline_with_limiter(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct asyncify_limiter *lim = new_limiter(0, 0, 0);
    outcomes out = { 0 };
    atomic_int freed = 0;
    for (int i = 0; i < 4; i++) {
        asyncify_submit_options opts = reporting_to(pool, lim, &out);
        opts.start_within_ms = 40;
        opts.free_arg = count_free;
        CHECK_OK(asyncify_submit(must_not_run, &freed, &opts, NULL));
    }
    while (atomic_load(&out.done) < 4) {
        sleep_ms(5);
    }
    CHECK(atomic_load(&out.by_status[ASYNCIFY_EXPIRED]) == 4 && atomic_load(&freed) == 4);
    asyncify_limiter_stats ls = limiter_stats(lim);
    CHECK(ls.expired == 4 && ls.waiting == 0 && ls.admitted == 0 && ls.running == 0);

    /* One worker: A (500 ms) starts at once and runs to its end although its deadline passes; B, queued
     * behind it, expires at about 50 ms while A still runs. */
    counted a = { .sleep_ms = 500 };
    asyncify_submit_options opts = options_for(pool);
    opts.start_within_ms = 50;
    asyncify_handle ha = submit_opts(counted_work, &a, &opts);
    WAIT_FOR(atomic_load(&a.ran) == 1, TEST_PATIENCE_MS);
    int64_t t0 = now_ms();
    asyncify_handle hb = submit_opts(must_not_run, NULL, &opts);
    while (asyncify_poll(hb, NULL, NULL) == ASYNCIFY_PENDING) {
        sleep_ms(2);
    }
    CHECK_EQ_STATUS(asyncify_poll(hb, NULL, NULL), ASYNCIFY_EXPIRED);
    CHECK(atomic_load(&a.now) == 1); /* A still runs */
    CHECK(now_ms() - t0 >= 50);
    wait_ok_release(ha);
    CHECK_OK(asyncify_release(hb));
    CHECK_OK(asyncify_limiter_free(lim));
    check_identity(pool);
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("deadline_with_limiter");
}

/* --- inline runs: a waiting worker never runs a task its limiter has not admitted, and expires an
 * overdue one instead of running it --- */

typedef struct {
    struct asyncify_pool *pool;
    struct asyncify_limiter *lim;
} nested;

static int32_t wait_for_limited_inner(void *arg, void **out)
{
    (void)out;
    nested *n = arg;
    asyncify_submit_options opts = options_for(n->pool);
    opts.limiter = n->lim;
    asyncify_handle inner = submit_opts(must_not_run, NULL, &opts);
    CHECK_EQ_STATUS(asyncify_wait(inner, 100, NULL, NULL), ASYNCIFY_TIMEOUT);
    CHECK_EQ_STATUS(asyncify_cancel(inner), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(inner));

    opts = options_for(n->pool);
    opts.start_within_ms = 20;
    inner = submit_opts(must_not_run, NULL, &opts);
    sleep_ms(60);
    /* The timer may have expired it already; either way it never runs. */
    CHECK_EQ_STATUS(asyncify_wait(inner, TEST_PATIENCE_MS, NULL, NULL), ASYNCIFY_EXPIRED);
    CHECK_OK(asyncify_release(inner));
    return 0;
}

static void test_inline_runs(void)
{
    nested n = { new_pool(1), new_limiter(0, 0, 0) };
    wait_ok_release(submit_to(n.pool, wait_for_limited_inner, &n));
    CHECK_OK(asyncify_limiter_free(n.lim));
    check_identity(n.pool);
    CHECK_OK(asyncify_pool_free(n.pool, -1));
    TEST_PASS("inline_runs");
}

/* --- latency per limiter --- */

static void test_limiter_latency(void)
{
    struct asyncify_pool *pool = new_recording_pool(4);
    struct asyncify_limiter *lim = new_limiter(1, 0, 0);
    asyncify_latency l;
    l.struct_size = sizeof l;
    CHECK_OK(asyncify_limiter_latency(lim, ASYNCIFY_LATENCY_RUN, &l));
    CHECK(l.count == 0);
    /* A limit of 1 through the limiter (the pool has 4): 10 tasks of 20 ms wait about 0..180 ms. */
    counted c = { .sleep_ms = 20 };
    asyncify_handle hs[10];
    for (int i = 0; i < 10; i++) {
        asyncify_submit_options opts = options_for(pool);
        opts.limiter = lim;
        hs[i] = submit_opts(counted_work, &c, &opts);
    }
    for (int i = 0; i < 10; i++) {
        wait_ok_release(hs[i]);
    }
    asyncify_latency wait, run;
    wait.struct_size = run.struct_size = sizeof wait;
    CHECK_OK(asyncify_limiter_latency(lim, ASYNCIFY_LATENCY_QUEUE_WAIT, &wait));
    CHECK_OK(asyncify_limiter_latency(lim, ASYNCIFY_LATENCY_RUN, &run));
    printf("limiter queue wait p50 %.1f ms, run p50 %.1f ms\n", wait.p50_ns / 1e6, run.p50_ns / 1e6);
    CHECK(wait.count == 10 && run.count == 10);
    CHECK(wait.p50_ns >= 60000000 && wait.p50_ns <= 400000000);
    CHECK(run.p50_ns >= 19000000 && run.p50_ns <= 200000000);
    CHECK_EQ_STATUS(asyncify_limiter_latency(lim, 7, &wait), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_EQ_STATUS(asyncify_limiter_latency(NULL, ASYNCIFY_LATENCY_RUN, &wait), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_limiter_free(lim));
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("limiter_latency");
}

/* --- bad input: a clear status and message, nothing made or changed --- */

static void test_bad_input(void)
{
    asyncify_limiter_options o;
    struct asyncify_limiter *lim = NULL;
    CHECK_EQ_STATUS(asyncify_limiter_options_init(NULL, sizeof o), ASYNCIFY_E_NULL);
    CHECK_EQ_STATUS(asyncify_limiter_options_init(&o, 3), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_EQ_STATUS(asyncify_limiter_new(NULL, &lim), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_limiter_options_init(&o, sizeof o));
    CHECK_EQ_STATUS(asyncify_limiter_new(&o, NULL), ASYNCIFY_E_NULL);
    const double bad[] = { -1.0, NAN, INFINITY };
    for (int i = 0; i < 3; i++) {
        o.rate_per_s = bad[i];
        CHECK_EQ_STATUS(asyncify_limiter_new(&o, &lim), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK(lim == NULL);
        CHECK(last_error_size() > 1);
    }
    o.rate_per_s = 0;
    o.name = "\xff";
    CHECK_EQ_STATUS(asyncify_limiter_new(&o, &lim), ASYNCIFY_E_INVALID_ARGUMENT);
    o.name = NULL;
    o.struct_size = 8;
    CHECK_EQ_STATUS(asyncify_limiter_new(&o, &lim), ASYNCIFY_E_INVALID_ARGUMENT);
    o.struct_size = sizeof o;
    lim = new_limiter(3, 5.0, 2);
    CHECK_EQ_STATUS(asyncify_limiter_set(lim, 1, NAN, 1), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(limiter_stats(lim).max_running == 3); /* nothing changed */
    CHECK_EQ_STATUS(asyncify_limiter_set(NULL, 1, 0, 0), ASYNCIFY_E_NULL);
    CHECK_EQ_STATUS(asyncify_limiter_stats_get(lim, NULL), ASYNCIFY_E_NULL);
    CHECK_EQ_STATUS(asyncify_limiter_free(NULL), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_limiter_free(lim));

    /* A program built before limiters and deadlines passes the shorter submit options: still accepted. */
    asyncify_submit_options old;
    CHECK_OK(asyncify_submit_options_init(&old, offsetof(asyncify_submit_options, limiter)));
    CHECK(old.struct_size == offsetof(asyncify_submit_options, limiter));
    struct asyncify_pool *pool = new_pool(1);
    old.pool = pool;
    wait_ok_release(submit_opts(noop_task, NULL, &old));
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("bad_input");
}

/* --- the default pool: its shutdown cancels a task waiting for a limiter and keeps nothing of it (under
 * valgrind with no suppression file, a map kept aside for such tasks once showed as "possibly lost") --- */

static void test_default_pool_shutdown(void)
{
    struct asyncify_limiter *lim = new_limiter(0, 0, 0);
    outcomes out = { 0 };
    asyncify_submit_options opts = reporting_to(NULL, lim, &out);
    CHECK_OK(asyncify_submit(must_not_run, NULL, &opts, NULL));
    CHECK_OK(asyncify_shutdown(-1));
    CHECK(atomic_load(&out.by_status[ASYNCIFY_CANCELLED]) == 1);
    CHECK(limiter_stats(lim).cancelled_waiting == 1);
    CHECK_OK(asyncify_limiter_free(lim));
    TEST_PASS("default_pool_shutdown");
}

/* --- the timer thread is joined once the pools that used it are gone, also when a submit with a deadline was
 * refused (it once counted as a user for good) and when a pool was freed before it was quiet (the last of its
 * workers gives the timer back); valgrind_unsuppressed_test_limiter sees a thread left running --- */

static int32_t start_then_sleep_100ms(void *arg, void **out)
{
    (void)out;
    atomic_store((atomic_int *)arg, 1);
    sleep_ms(100);
    return 0;
}

static void test_timer_given_back(void)
{
    asyncify_submit_options opts = options_for(NULL); /* the default pool, shut down by now */
    opts.start_within_ms = 1000;
    asyncify_handle h = 0;
    CHECK_EQ_STATUS(asyncify_submit(noop_task, NULL, &opts, &h), ASYNCIFY_E_SHUT_DOWN);
    struct asyncify_pool *pool = new_pool(1);
    opts.pool = pool;
    wait_ok_release(submit_opts(noop_task, NULL, &opts));
    CHECK_OK(asyncify_pool_free(pool, -1));

    struct asyncify_pool *busy = new_pool(1);
    opts.pool = busy;
    atomic_int started = 0;
    asyncify_handle running = submit_opts(start_then_sleep_100ms, &started, &opts);
    WAIT_FOR(atomic_load(&started) == 1, TEST_PATIENCE_MS);
    CHECK_EQ_STATUS(asyncify_pool_free(busy, 0), ASYNCIFY_TIMEOUT);
    wait_ok_release(running);
    sleep_ms(300); /* its worker leaves and gives the timer back */
    TEST_PASS("timer_given_back");
}

/* ---- plain submits through a limiter ---------------------------------------------------------- */

/* From a pool's first task with a limiter on, a submit whose only option beyond on_done is a limiter
 * takes the plain path: its place is held until its callable returns, and a submit the pool refuses
 * gives its place back. */
static void test_plain_submits_through_a_limiter(void)
{
    asyncify_pool_options po;
    CHECK_OK(asyncify_pool_options_init(&po, sizeof po));
    po.max_workers = 0; /* paused: the tasks stay queued, holding their places */
    po.max_queued = 2;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&po, &pool));
    struct asyncify_limiter *lim = new_limiter(10, 0.0, 0);
    outcomes out;
    memset(&out, 0, sizeof out);
    asyncify_submit_options opts = reporting_to(pool, lim, &out);
    counted c = { .sleep_ms = 0 };
    CHECK_OK(asyncify_submit(counted_work, &c, &opts, NULL)); /* the pool's first: the general path */
    CHECK_OK(asyncify_submit(counted_work, &c, &opts, NULL)); /* the plain path */
    asyncify_limiter_stats s = limiter_stats(lim);
    CHECK(s.running == 2 && s.admitted == 2 && s.waiting == 0);
    CHECK_ERR(asyncify_submit(counted_work, &c, &opts, NULL), ASYNCIFY_E_BUSY);
    s = limiter_stats(lim);
    CHECK(s.running == 2 && s.admitted == 2); /* the refused task gave its place back */
    CHECK_OK(asyncify_set_max_workers(pool, 4));
    WAIT_FOR(atomic_load(&out.done) == 2, TEST_PATIENCE_MS);
    CHECK(atomic_load(&c.ran) == 2 && atomic_load(&out.by_status[ASYNCIFY_OK]) == 2);
    s = limiter_stats(lim);
    CHECK(s.running == 0 && s.admitted == 2 && s.waiting == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_limiter_free(lim));
}

int main(void)
{
    test_bad_input();
    test_cap_across_pools();
    test_rate();
    test_raise_cancel_free();
    test_shutdown_cancels_waiting();
    test_deadline_paused_pool();
    test_deadline_with_limiter();
    test_inline_runs();
    test_limiter_latency();
    test_default_pool_shutdown(); /* the default pool stays shut down */
    test_timer_given_back();
    test_plain_submits_through_a_limiter();
    TEST_PASS("test_limiter");
    return 0;
}
