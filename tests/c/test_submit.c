/* Submitting work and observing completion (contract sections 3, 4 and 5.4).
 * Scenarios 1, 9 and 11 of section 7, plus result ownership, on_done and handle lifetime. */
#include "test_util.h"

/* A result object that counts how often free_result was called on it. */
struct result {
    atomic_int freed;
    int id;
};

static void free_result_counted(void *p)
{
    atomic_fetch_add(&((struct result *)p)->freed, 1);
}

/* A task that waits for a gate, then returns `result` and `code`. */
struct gated {
    atomic_int gate;
    atomic_int started;
    atomic_int finished;
    struct result *result;
    int32_t code;
    pthread_t thread;
};

static int32_t gated_task(void *arg, void **out_result)
{
    struct gated *g = arg;
    g->thread = pthread_self();
    atomic_store(&g->started, 1);
    gate_wait(&g->gate);
    *out_result = g->result;
    atomic_store(&g->finished, 1);
    return g->code;
}

static int32_t quick_task(void *arg, void **out_result)
{
    struct gated *g = arg;
    g->thread = pthread_self();
    atomic_store(&g->started, 1);
    *out_result = g->result;
    atomic_store(&g->finished, 1);
    return g->code;
}

/* ---- scenario 1: the snapshot is taken at submit --------------------------------------------- */

struct seen_k {
    atomic_int started;
    atomic_int go;
    char k[16];
};

static int32_t read_k_task(void *arg, void **out_result)
{
    (void)out_result;
    struct seen_k *s = arg;
    atomic_store(&s->started, 1);
    gate_wait(&s->go);
    size_t len = 0;
    CHECK_OK(asyncify_override_get("k", s->k, sizeof s->k - 1, &len));
    s->k[len] = '\0';
    return 0;
}

static void test_snapshot_at_submit(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(1);

    /* Still queued: the pool's only slot is busy. */
    struct gated blocker = { .code = 0 };
    asyncify_handle hb = submit_to(pool, gated_task, &blocker);
    WAIT_FOR(atomic_load(&blocker.started), TEST_PATIENCE_MS);
    set_str("k", "1");
    struct seen_k queued = { .go = 1 };
    asyncify_handle hq = submit_to(pool, read_k_task, &queued);
    set_str("k", "2");
    sleep_ms(20);
    CHECK(atomic_load(&queued.started) == 0);
    gate_open(&blocker.gate);
    wait_ok_release(hb);
    wait_ok_release(hq);
    CHECK(strcmp(queued.k, "1") == 0);

    /* Already running when the submitter changes k. */
    set_str("k", "3");
    struct seen_k running = { .go = 0 };
    asyncify_handle hr = submit_to(pool, read_k_task, &running);
    WAIT_FOR(atomic_load(&running.started), TEST_PATIENCE_MS);
    set_str("k", "4");
    CHECK_OK(asyncify_override_remove("k"));
    gate_open(&running.go);
    wait_ok_release(hr);
    CHECK(strcmp(running.k, "3") == 0);

    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- poll / wait outcomes and moving the result ---------------------------------------------- */

static void test_outcomes_and_result_moves_once(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct result r_ok = { .id = 1 }, r_fail = { .id = 2 };

    /* OK: pending while gated, then OK with code 0. */
    struct gated ok = { .result = &r_ok, .code = 0 };
    asyncify_submit_options opts = options_for(pool);
    opts.free_result = free_result_counted;
    asyncify_handle h = submit_opts(gated_task, &ok, &opts);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_PENDING);
    gate_open(&ok.gate);
    int32_t code = -1;
    CHECK_OK(asyncify_wait(h, TEST_PATIENCE_MS, NULL, &code)); /* no out_result: nothing moves */
    CHECK(code == 0);
    void *res = NULL;
    code = -1;
    CHECK_OK(asyncify_poll(h, &res, &code)); /* the first taker gets it */
    CHECK(res == &r_ok);
    CHECK(code == 0);
    res = &r_fail;
    CHECK_OK(asyncify_poll(h, &res, NULL)); /* later takers get NULL */
    CHECK(res == NULL);
    res = &r_fail;
    CHECK_OK(asyncify_wait(h, -1, &res, &code)); /* a terminal status stays; still NULL */
    CHECK(res == NULL);
    CHECK(code == 0);
    CHECK_OK(asyncify_release(h));
    sleep_ms(20);
    CHECK(atomic_load(&r_ok.freed) == 0); /* it was moved: not ours to free */

    /* FAILED with its code; the result of a failed task moves too. */
    struct gated fail = { .result = &r_fail, .code = 42 };
    h = submit_opts(quick_task, &fail, &opts);
    res = NULL;
    code = 0;
    CHECK_EQ_STATUS(asyncify_wait(h, TEST_PATIENCE_MS, &res, &code), ASYNCIFY_FAILED);
    CHECK(code == 42);
    CHECK(res == &r_fail);
    code = 0;
    res = &r_ok;
    CHECK_EQ_STATUS(asyncify_poll(h, &res, &code), ASYNCIFY_FAILED);
    CHECK(code == 42);
    CHECK(res == NULL);
    CHECK_OK(asyncify_release(h));
    sleep_ms(20);
    CHECK(atomic_load(&r_fail.freed) == 0);

    /* A negative code is a failure too, delivered as is. */
    struct gated neg = { .result = NULL, .code = -7 };
    h = submit_to(pool, quick_task, &neg);
    code = 0;
    CHECK_EQ_STATUS(asyncify_wait(h, TEST_PATIENCE_MS, NULL, &code), ASYNCIFY_FAILED);
    CHECK(code == -7);
    CHECK_OK(asyncify_release(h));

    /* A wait with a timeout that is long enough returns the outcome. */
    struct gated fast = { .result = NULL, .code = 0 };
    h = submit_to(pool, quick_task, &fast);
    CHECK_OK(asyncify_wait(h, 60000, NULL, NULL));
    CHECK_OK(asyncify_release(h));

    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- results nobody received go to free_result, exactly once --------------------------------- */

static void test_free_result(void)
{
    struct asyncify_pool *pool = new_pool(2);
    asyncify_submit_options opts = options_for(pool);
    opts.free_result = free_result_counted;

    /* Finished, never taken, released. */
    struct result r1 = { .id = 1 };
    struct gated t1 = { .result = &r1, .code = 0 };
    asyncify_handle h = submit_opts(quick_task, &t1, &opts);
    wait_ok(h);
    CHECK(atomic_load(&r1.freed) == 0); /* still receivable */
    CHECK_OK(asyncify_release(h));
    WAIT_FOR(atomic_load(&r1.freed) == 1, TEST_PATIENCE_MS);

    /* Failed, never taken, released. */
    struct result r2 = { .id = 2 };
    struct gated t2 = { .result = &r2, .code = 3 };
    h = submit_opts(quick_task, &t2, &opts);
    CHECK(wait_status(h, ASYNCIFY_FAILED) == 3);
    CHECK_OK(asyncify_release(h));
    WAIT_FOR(atomic_load(&r2.freed) == 1, TEST_PATIENCE_MS);

    /* Released while still pending: the task still runs; its result is freed when it ends. */
    struct result r3 = { .id = 3 };
    struct gated t3 = { .result = &r3, .code = 0 };
    h = submit_opts(gated_task, &t3, &opts);
    WAIT_FOR(atomic_load(&t3.started), TEST_PATIENCE_MS);
    CHECK_OK(asyncify_release(h));
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    sleep_ms(20);
    CHECK(atomic_load(&r3.freed) == 0);
    gate_open(&t3.gate);
    WAIT_FOR(atomic_load(&r3.freed) == 1, TEST_PATIENCE_MS);
    CHECK(atomic_load(&t3.finished) == 1);

    /* Released while queued (the pool is paused): it still runs once the pool is resumed. */
    struct asyncify_pool *paused = new_pool(0);
    asyncify_submit_options popts = options_for(paused);
    popts.free_result = free_result_counted;
    struct result r4 = { .id = 4 };
    struct gated t4 = { .result = &r4, .code = 0 };
    h = submit_opts(quick_task, &t4, &popts);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_set_max_workers(paused, 1));
    WAIT_FOR(atomic_load(&r4.freed) == 1, TEST_PATIENCE_MS);
    CHECK(atomic_load(&t4.finished) == 1);
    CHECK_OK(asyncify_pool_free(paused, -1));

    /* DETACHED without an out_handle: runs, and its result is freed. */
    struct result r5 = { .id = 5 };
    struct gated t5 = { .result = &r5, .code = 0 };
    asyncify_submit_options dopts = opts;
    dopts.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_OK(asyncify_submit(quick_task, &t5, &dopts, NULL));
    WAIT_FOR(atomic_load(&r5.freed) == 1, TEST_PATIENCE_MS);
    CHECK(atomic_load(&t5.finished) == 1);

    /* DETACHED with an out_handle: the handle releases itself once terminal. */
    struct result r6 = { .id = 6 };
    struct gated t6 = { .result = &r6, .code = 0 };
    h = 0;
    CHECK_OK(asyncify_submit(gated_task, &t6, &dopts, &h));
    CHECK(h != 0);
    gate_open(&t6.gate);
    WAIT_FOR(atomic_load(&r6.freed) == 1, TEST_PATIENCE_MS);
    WAIT_FOR(asyncify_poll(h, NULL, NULL) == ASYNCIFY_E_INVALID_HANDLE, TEST_PATIENCE_MS);

    CHECK_OK(asyncify_pool_free(pool, -1));
    sleep_ms(50);
    CHECK(atomic_load(&r1.freed) == 1 && atomic_load(&r2.freed) == 1 && atomic_load(&r3.freed) == 1);
    CHECK(atomic_load(&r4.freed) == 1 && atomic_load(&r5.freed) == 1 && atomic_load(&r6.freed) == 1);
}

/* ---- on_done --------------------------------------------------------------------------------- */

struct done_record {
    atomic_int calls;
    asyncify_handle handle;
    asyncify_status status;
    void *result;
    int32_t code;
    pthread_t thread;
    size_t table_count_inside;
    bool k_absent_inside;
    asyncify_status own_poll_inside;
    atomic_int returned; /* set as the very last thing on_done does */
    int64_t sleep_inside_ms;
};

static void record_done(void *user_data, asyncify_handle handle, asyncify_status status, void *result,
                        int32_t code)
{
    struct done_record *d = user_data;
    atomic_fetch_add(&d->calls, 1);
    d->handle = handle;
    d->status = status;
    d->result = result;
    d->code = code;
    d->thread = pthread_self();
    d->table_count_inside = table_count();
    d->k_absent_inside = key_absent("k");
    d->own_poll_inside = asyncify_poll(handle, NULL, NULL);
    if (d->sleep_inside_ms > 0) {
        sleep_ms(d->sleep_inside_ms);
    }
    atomic_store(&d->returned, 1);
}

static void test_on_done(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(1);
    set_str("k", "parent");
    set_str("j", "parent");
    set_str("m", "parent");

    /* OK: on_done gets the result, on the worker, with the worker's own (empty) table back. */
    struct result r = { .id = 1 };
    struct gated t = { .result = &r, .code = 0 };
    struct done_record d = { .sleep_inside_ms = 150, .own_poll_inside = 12345 };
    asyncify_submit_options opts = options_for(pool);
    opts.on_done = record_done;
    opts.on_done_data = &d;
    opts.free_result = free_result_counted;
    asyncify_handle h = submit_opts(quick_task, &t, &opts);
    void *res = &d;
    int32_t code = -1;
    CHECK_OK(asyncify_wait(h, TEST_PATIENCE_MS, &res, &code));
    /* A terminal status only after on_done returned. */
    CHECK(atomic_load(&d.returned) == 1);
    CHECK(atomic_load(&d.calls) == 1);
    CHECK(d.handle == h);
    CHECK(d.status == ASYNCIFY_OK);
    CHECK(d.result == &r);
    CHECK(d.code == 0);
    CHECK(res == NULL); /* the result went to on_done */
    CHECK(code == 0);
    CHECK(pthread_equal(d.thread, t.thread)); /* on the worker that ran fn */
    CHECK(!pthread_equal(d.thread, pthread_self()));
    CHECK(d.table_count_inside == 0);
    CHECK(d.k_absent_inside);
    CHECK_EQ_STATUS(d.own_poll_inside, ASYNCIFY_PENDING);
    CHECK_OK(asyncify_release(h));
    sleep_ms(50);
    CHECK(atomic_load(&d.calls) == 1);
    CHECK(atomic_load(&r.freed) == 0); /* delivered to on_done: not freed by the library */

    /* FAILED: on_done gets the status and code, exactly once. */
    struct result r2 = { .id = 2 };
    struct gated t2 = { .result = &r2, .code = 9 };
    struct done_record d2 = { .own_poll_inside = 12345 };
    opts.on_done_data = &d2;
    h = submit_opts(quick_task, &t2, &opts);
    CHECK(wait_status(h, ASYNCIFY_FAILED) == 9);
    CHECK(atomic_load(&d2.calls) == 1);
    CHECK(d2.status == ASYNCIFY_FAILED && d2.code == 9 && d2.result == &r2);
    CHECK(d2.table_count_inside == 0);
    CHECK_OK(asyncify_release(h));

    /* DETACHED with no out_handle: on_done still fires once, with a real handle value. */
    struct gated t3 = { .result = NULL, .code = 0 };
    struct done_record d3 = { .own_poll_inside = 12345 };
    opts.on_done_data = &d3;
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_OK(asyncify_submit(quick_task, &t3, &opts, NULL));
    WAIT_FOR(atomic_load(&d3.returned) == 1, TEST_PATIENCE_MS);
    CHECK(d3.handle != 0);
    CHECK(d3.status == ASYNCIFY_OK);
    sleep_ms(50);
    CHECK(atomic_load(&d3.calls) == 1);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* on_done may call back into the library: here it submits another task and polls its own handle. */
struct reentry {
    struct asyncify_pool *pool;
    atomic_uint_fast64_t follow_up;
    atomic_int follow_up_ran;
    asyncify_status own_poll;
};

static int32_t follow_up_task(void *arg, void **out_result)
{
    (void)out_result;
    atomic_store(&((struct reentry *)arg)->follow_up_ran, 1);
    return 0;
}

static void reentrant_done(void *user_data, asyncify_handle handle, asyncify_status status, void *result,
                           int32_t code)
{
    (void)result;
    (void)code;
    struct reentry *re = user_data;
    CHECK(status == ASYNCIFY_OK);
    re->own_poll = asyncify_poll(handle, NULL, NULL);
    asyncify_handle next = submit_to(re->pool, follow_up_task, re);
    atomic_store(&re->follow_up, next);
}

static void test_on_done_reentry(void)
{
    struct reentry re = { .pool = new_pool(1), .own_poll = 12345 };
    asyncify_submit_options opts = options_for(re.pool);
    opts.on_done = reentrant_done;
    opts.on_done_data = &re;
    asyncify_handle h = submit_opts(noop_task, NULL, &opts);
    wait_ok(h);
    CHECK_EQ_STATUS(re.own_poll, ASYNCIFY_PENDING);
    asyncify_handle next = (asyncify_handle)atomic_load(&re.follow_up);
    CHECK(next != 0);
    wait_ok_release(next);
    CHECK(atomic_load(&re.follow_up_ran) == 1);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_pool_free(re.pool, -1));
}

/* ---- EMPTY_CONTEXT and the default pool ------------------------------------------------------- */

struct table_view {
    size_t count;
    bool k_is_parent;
};

static int32_t view_task(void *arg, void **out_result)
{
    (void)out_result;
    struct table_view *v = arg;
    v->count = table_count();
    v->k_is_parent = key_is("k", "parent");
    return 0;
}

static void test_empty_context_and_default_pool(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "parent");
    set_str("j", "parent");
    struct asyncify_pool *pool = new_pool(1);

    struct table_view v = { .count = 99, .k_is_parent = true };
    asyncify_submit_options opts = options_for(pool);
    opts.flags = ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
    wait_ok_release(submit_opts(view_task, &v, &opts));
    CHECK(v.count == 0);
    CHECK(!v.k_is_parent);

    /* Control: without the flag the same task sees the parent's table. */
    v = (struct table_view){ .count = 99, .k_is_parent = false };
    wait_ok_release(submit_to(pool, view_task, &v));
    CHECK(v.count == 2);
    CHECK(v.k_is_parent);

    /* NULL options: the defaults, on the default pool. */
    v = (struct table_view){ .count = 99, .k_is_parent = false };
    asyncify_handle h = 0;
    CHECK_OK(asyncify_submit(view_task, &v, NULL, &h));
    CHECK(h != 0);
    wait_ok_release(h);
    CHECK(v.count == 2);
    CHECK(v.k_is_parent);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* ---- scenario 9: a wait can time out and be repeated ------------------------------------------ */

static void test_wait_timeout(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct result r = { .id = 9 };
    struct gated t = { .result = &r, .code = 0 };
    asyncify_handle h = submit_to(pool, gated_task, &t);

    int64_t t0 = now_ms();
    CHECK_EQ_STATUS(asyncify_wait(h, 100, NULL, NULL), ASYNCIFY_TIMEOUT);
    int64_t waited = now_ms() - t0;
    CHECK(waited >= 90);
    CHECK(waited < 5000);
    CHECK_EQ_STATUS(asyncify_wait(h, 0, NULL, NULL), ASYNCIFY_TIMEOUT);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_PENDING);
    CHECK(atomic_load(&t.finished) == 0); /* the task goes on */

    gate_open(&t.gate);
    void *res = NULL;
    int32_t code = -1;
    CHECK_OK(asyncify_wait(h, -1, &res, &code));
    CHECK(res == &r);
    CHECK(code == 0);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- scenario 11: waiting on a queued task of one's own pool runs it inline -------------------- */

struct inline_run {
    struct asyncify_pool *pool;
    pthread_t outer_thread, inner_thread;
    atomic_int inner_ran;
    asyncify_status inner_status;
    void *inner_result;
};

static int32_t inline_inner(void *arg, void **out_result)
{
    struct inline_run *st = arg;
    st->inner_thread = pthread_self();
    atomic_store(&st->inner_ran, 1);
    *out_result = st;
    return 0;
}

static int32_t inline_outer(void *arg, void **out_result)
{
    (void)out_result;
    struct inline_run *st = arg;
    st->outer_thread = pthread_self();
    asyncify_handle inner = submit_to(st->pool, inline_inner, st);
    st->inner_status = asyncify_wait(inner, -1, &st->inner_result, NULL);
    CHECK_OK(asyncify_release(inner));
    return 0;
}

static void test_inline_run(void)
{
    struct inline_run st = { .pool = new_pool(1), .inner_status = 12345 };
    asyncify_handle h = submit_to(st.pool, inline_outer, &st);
    wait_ok_release(h);
    CHECK_EQ_STATUS(st.inner_status, ASYNCIFY_OK);
    CHECK(atomic_load(&st.inner_ran) == 1);
    CHECK(st.inner_result == &st);
    CHECK(pthread_equal(st.outer_thread, st.inner_thread)); /* inline: on the waiter's own thread */
    CHECK_OK(asyncify_pool_free(st.pool, -1));
}

/* ---- a task waiting on its own handle --------------------------------------------------------- */

struct self_wait {
    atomic_uint_fast64_t own;
    asyncify_status wait_status;
    asyncify_status poll_status;
};

static int32_t self_wait_task(void *arg, void **out_result)
{
    (void)out_result;
    struct self_wait *st = arg;
    WAIT_FOR(atomic_load(&st->own) != 0, TEST_PATIENCE_MS);
    asyncify_handle own = (asyncify_handle)atomic_load(&st->own);
    st->poll_status = asyncify_poll(own, NULL, NULL);
    st->wait_status = asyncify_wait(own, -1, NULL, NULL);
    return 0;
}

static void test_self_wait(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct self_wait st = { .wait_status = 12345, .poll_status = 12345 };
    asyncify_handle h = submit_to(pool, self_wait_task, &st);
    atomic_store(&st.own, h);
    wait_ok_release(h);
    CHECK_EQ_STATUS(st.poll_status, ASYNCIFY_PENDING);
    CHECK_EQ_STATUS(st.wait_status, ASYNCIFY_E_WOULD_DEADLOCK);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- handles outlive their pool ---------------------------------------------------------------- */

static void test_handles_outlive_pool(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct result r = { .id = 1 };
    struct gated ok = { .result = &r, .code = 0 };
    struct gated fail = { .result = NULL, .code = 3 };
    asyncify_submit_options opts = options_for(pool);
    opts.free_result = free_result_counted;
    asyncify_handle h_ok = submit_opts(quick_task, &ok, &opts);
    asyncify_handle h_fail = submit_opts(quick_task, &fail, &opts);
    wait_ok(h_ok); /* the result is not taken yet */
    CHECK(wait_status(h_fail, ASYNCIFY_FAILED) == 3);

    struct asyncify_pool *paused = new_pool(0);
    struct gated never = { .result = NULL, .code = 0 };
    asyncify_handle h_cancelled = submit_to(paused, quick_task, &never);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_pool_free(paused, -1));

    void *res = NULL;
    int32_t code = -1;
    CHECK_OK(asyncify_poll(h_ok, &res, &code));
    CHECK(res == &r && code == 0);
    code = 0;
    CHECK_EQ_STATUS(asyncify_poll(h_fail, NULL, &code), ASYNCIFY_FAILED);
    CHECK(code == 3);
    CHECK_EQ_STATUS(asyncify_wait(h_fail, -1, NULL, NULL), ASYNCIFY_FAILED);
    CHECK_EQ_STATUS(asyncify_poll(h_cancelled, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_wait(h_cancelled, 1000, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&never.started) == 0);

    CHECK_OK(asyncify_release(h_ok));
    CHECK_OK(asyncify_release(h_fail));
    CHECK_OK(asyncify_release(h_cancelled));
    CHECK_EQ_STATUS(asyncify_poll(h_ok, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_EQ_STATUS(asyncify_poll(h_cancelled, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    CHECK(atomic_load(&r.freed) == 0);
}

/* ---- handles on cache lines of their own ----------------------------------------------------- */

/* A submit reads its pool, limiter and queue handles; workers write the
 * caller's own data (a completion counter, say). A handle sharing a cache
 * line with such data would cost the submitting thread a cache miss per task,
 * so each of these long-lived handles starts a line pair (128 bytes) of its
 * own. (Contexts, often captured per call, are left to the allocator.) */
static void test_handles_own_their_cache_lines(void)
{
    asyncify_pool *pool = NULL;
    asyncify_limiter *lim = NULL;
    asyncify_cq *cq = NULL;
    asyncify_limiter_options lo;
    CHECK_OK(asyncify_pool_new(2, &pool));
    CHECK_OK(asyncify_limiter_options_init(&lo, sizeof lo));
    CHECK_OK(asyncify_limiter_new(&lo, &lim));
    CHECK_OK(asyncify_cq_new(&cq));
    CHECK((uintptr_t)pool % 128 == 0);
    CHECK((uintptr_t)lim % 128 == 0);
    CHECK((uintptr_t)cq % 128 == 0);
    CHECK_OK(asyncify_cq_free(cq));
    CHECK_OK(asyncify_limiter_free(lim));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

int main(void)
{
    test_snapshot_at_submit();
    test_outcomes_and_result_moves_once();
    test_free_result();
    test_on_done();
    test_on_done_reentry();
    test_empty_context_and_default_pool();
    test_wait_timeout();
    test_inline_run();
    test_self_wait();
    test_handles_outlive_pool();
    test_handles_own_their_cache_lines();
    TEST_PASS("test_submit");
    return 0;
}
