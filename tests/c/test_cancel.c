/* Cancellation (contract sections 4 and 5, 5.1 to 5.3). Scenario 8 and a shorter scenario 10 of
 * section 7. */
#include "test_util.h"

/* Everything the library does to one task, counted. The callbacks all get a pointer to this. */
struct probe {
    atomic_int gate; /* the work function waits for this, unless `no_gate` */
    bool no_gate;
    int64_t run_ms; /* or runs this long instead, when > 0 */
    atomic_int started;
    atomic_int finished;
    atomic_int arg_freed;
    atomic_int result_freed;
    atomic_int done_calls;
    atomic_int sequence; /* orders free_arg against on_done */
    int arg_freed_at, done_at;
    asyncify_status done_status;
    pthread_t done_thread;
    atomic_int cancel_seen_at_start;
    atomic_int cancel_seen_at_end;
    int64_t finished_at_ms;
    int32_t code;
};

static void probe_free_arg(void *p)
{
    struct probe *pr = p;
    pr->arg_freed_at = atomic_fetch_add(&pr->sequence, 1);
    atomic_fetch_add(&pr->arg_freed, 1);
}

static void probe_free_result(void *p)
{
    atomic_fetch_add(&((struct probe *)p)->result_freed, 1);
}

static void probe_done(void *user_data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)h;
    (void)result;
    (void)code;
    struct probe *pr = user_data;
    pr->done_at = atomic_fetch_add(&pr->sequence, 1);
    pr->done_status = status;
    pr->done_thread = pthread_self();
    atomic_fetch_add(&pr->done_calls, 1);
}

static int32_t probe_task(void *arg, void **out_result)
{
    struct probe *pr = arg;
    atomic_store(&pr->cancel_seen_at_start, asyncify_cancel_requested() ? 1 : 0);
    atomic_store(&pr->started, 1);
    if (pr->run_ms > 0) {
        sleep_ms(pr->run_ms);
    } else if (!pr->no_gate) {
        gate_wait(&pr->gate);
    }
    atomic_store(&pr->cancel_seen_at_end, asyncify_cancel_requested() ? 1 : 0);
    *out_result = pr; /* the result is the probe itself, so free_result can count on it */
    pr->finished_at_ms = now_ms();
    atomic_store(&pr->finished, 1);
    return pr->code;
}

static asyncify_handle submit_probe(struct asyncify_pool *pool, struct probe *pr)
{
    asyncify_submit_options opts = options_for(pool);
    opts.on_done = probe_done;
    opts.on_done_data = pr;
    opts.free_arg = probe_free_arg;
    opts.free_result = probe_free_result;
    return submit_opts(probe_task, pr, &opts);
}

/* ---- 5.1: cancel a queued task ----------------------------------------------------------------- */

static void check_cancelled_before_start(struct probe *pr)
{
    CHECK(atomic_load(&pr->started) == 0);
    CHECK(atomic_load(&pr->arg_freed) == 1);
    CHECK(atomic_load(&pr->done_calls) == 1);
    CHECK(pr->done_status == ASYNCIFY_CANCELLED);
    CHECK(pr->arg_freed_at < pr->done_at); /* free_arg, then on_done */
    CHECK(pthread_equal(pr->done_thread, pthread_self())); /* on the cancelling thread */
    CHECK(atomic_load(&pr->result_freed) == 0);
}

static void test_cancel_queued_on_paused_pool(void)
{
    struct asyncify_pool *pool = new_pool(0);
    struct probe pr = { .no_gate = true };
    asyncify_handle h = submit_probe(pool, &pr);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_PENDING);

    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED);
    /* free_arg and on_done ran inside asyncify_cancel, so this is already true when it returns. */
    check_cancelled_before_start(&pr);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_wait(h, -1, NULL, NULL), ASYNCIFY_CANCELLED);

    /* Twice is harmless: same answer, no second callback. */
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED);
    check_cancelled_before_start(&pr);

    /* Resuming the pool does not run it. */
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    struct probe later = { .no_gate = true };
    asyncify_handle h2 = submit_probe(pool, &later);
    wait_ok(h2); /* FIFO: had the cancelled task still been queued, it would have run first */
    sleep_ms(50);
    check_cancelled_before_start(&pr);
    CHECK(atomic_load(&later.done_calls) == 1 && later.done_status == ASYNCIFY_OK);
    CHECK(atomic_load(&later.arg_freed) == 0); /* it ran normally: the arg was the task's to use */

    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_release(h2));
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_OK(asyncify_pool_free(pool, -1));
    check_cancelled_before_start(&pr);
}

static void test_cancel_queued_behind_busy_slot(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct probe blocker = { .code = 0 };
    asyncify_handle hb = submit_probe(pool, &blocker);
    WAIT_FOR(atomic_load(&blocker.started), TEST_PATIENCE_MS);

    struct probe queued = { .no_gate = true };
    asyncify_handle hq = submit_probe(pool, &queued);
    struct probe after = { .no_gate = true };
    asyncify_handle ha = submit_probe(pool, &after);

    CHECK_EQ_STATUS(asyncify_cancel(hq), ASYNCIFY_CANCELLED);
    check_cancelled_before_start(&queued);

    gate_open(&blocker.gate);
    wait_ok(hb);
    wait_ok(ha);
    sleep_ms(50);
    check_cancelled_before_start(&queued);
    CHECK(atomic_load(&blocker.done_calls) == 1 && atomic_load(&after.done_calls) == 1);

    CHECK_OK(asyncify_release(hb));
    CHECK_OK(asyncify_release(hq));
    CHECK_OK(asyncify_release(ha));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- 5.2: cancel a running task ---------------------------------------------------------------- */

struct waiter {
    asyncify_handle h;
    atomic_int waiting;
    asyncify_status status;
    atomic_llong returned_at_ms;
};

static void *waiter_thread(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->waiting, 1);
    w->status = asyncify_wait(w->h, -1, NULL, NULL);
    atomic_store(&w->returned_at_ms, now_ms());
    return NULL;
}

/* Starts only after the abandoned task's fn returned, if the slot is held as the contract says. */
struct follower {
    struct probe *abandoned;
    atomic_int started;
    int abandoned_finished_when_started;
};

static int32_t follower_task(void *arg, void **out_result)
{
    (void)out_result;
    struct follower *f = arg;
    f->abandoned_finished_when_started = atomic_load(&f->abandoned->finished);
    atomic_store(&f->started, 1);
    return 0;
}

static void test_cancel_running(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct probe pr = { .run_ms = 2500 };
    asyncify_handle h = submit_probe(pool, &pr);
    WAIT_FOR(atomic_load(&pr.started), TEST_PATIENCE_MS);
    CHECK(atomic_load(&pr.cancel_seen_at_start) == 0);

    struct waiter w = { .h = h, .status = 12345 };
    pthread_t wt = start_thread(waiter_thread, &w);
    WAIT_FOR(atomic_load(&w.waiting), TEST_PATIENCE_MS);
    sleep_ms(100); /* let it block inside asyncify_wait */
    CHECK(atomic_load(&w.returned_at_ms) == 0);

    int64_t cancelled_at = now_ms();
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&pr.finished) == 0); /* abandoned, not finished: fn still has ~2 s to go */
    /* on_done with CANCELLED ran inside cancel, on this thread; arg and result wait for fn. */
    CHECK(atomic_load(&pr.done_calls) == 1);
    CHECK(pr.done_status == ASYNCIFY_CANCELLED);
    CHECK(pthread_equal(pr.done_thread, pthread_self()));
    CHECK(atomic_load(&pr.arg_freed) == 0);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_CANCELLED);

    /* The waiter is released at once, long before fn returns. */
    join_thread(wt);
    CHECK_EQ_STATUS(w.status, ASYNCIFY_CANCELLED);
    int64_t waiter_latency = atomic_load(&w.returned_at_ms) - cancelled_at;
    CHECK(waiter_latency < 1000);
    CHECK(atomic_load(&pr.finished) == 0);

    /* The slot stays held: a new task on this limit-1 pool waits for the abandoned fn. */
    struct follower f = { .abandoned = &pr, .abandoned_finished_when_started = -1 };
    asyncify_handle hf = submit_to(pool, follower_task, &f);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED); /* twice: harmless */

    WAIT_FOR(atomic_load(&pr.finished), TEST_PATIENCE_MS);
    CHECK(atomic_load(&pr.cancel_seen_at_end) == 1); /* asyncify_cancel_requested() inside */
    WAIT_FOR(atomic_load(&pr.result_freed) == 1 && atomic_load(&pr.arg_freed) == 1, TEST_PATIENCE_MS);
    wait_ok_release(hf);
    CHECK(f.abandoned_finished_when_started == 1);

    sleep_ms(50);
    CHECK(atomic_load(&pr.done_calls) == 1);
    CHECK(atomic_load(&pr.result_freed) == 1);
    CHECK(atomic_load(&pr.arg_freed) == 1);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_CANCELLED);
    void *res = &f;
    CHECK_EQ_STATUS(asyncify_wait(h, -1, &res, NULL), ASYNCIFY_CANCELLED);
    CHECK(res != &pr); /* an abandoned task's result is never delivered */
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&pr.result_freed) == 1 && atomic_load(&pr.arg_freed) == 1);
}

/* A work function that stops early when cancelled, as the contract invites long work to do. */
struct cooperative {
    atomic_int started;
    atomic_int stopped_early;
};

static int32_t cooperative_task(void *arg, void **out_result)
{
    (void)out_result;
    struct cooperative *c = arg;
    atomic_store(&c->started, 1);
    int64_t deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        if (asyncify_cancel_requested()) {
            atomic_store(&c->stopped_early, 1);
            return 1;
        }
        sleep_ms(2);
    }
    return 0;
}

static void test_cancel_requested_lets_work_stop(void)
{
    struct asyncify_pool *pool = new_pool(1);
    CHECK(!asyncify_cancel_requested()); /* outside any task */
    struct cooperative c = { .started = 0 };
    asyncify_handle h = submit_to(pool, cooperative_task, &c);
    WAIT_FOR(atomic_load(&c.started), TEST_PATIENCE_MS);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED);
    WAIT_FOR(atomic_load(&c.stopped_early), TEST_PATIENCE_MS);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- cancel after the task finished ------------------------------------------------------------- */

static void test_cancel_after_finish(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct probe ok = { .no_gate = true, .code = 0 };
    asyncify_handle h = submit_probe(pool, &ok);
    wait_ok(h);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_OK);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_OK);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_OK);
    CHECK(atomic_load(&ok.done_calls) == 1 && ok.done_status == ASYNCIFY_OK);
    CHECK(atomic_load(&ok.arg_freed) == 0);
    CHECK_OK(asyncify_release(h));

    struct probe failed = { .no_gate = true, .code = 5 };
    h = submit_probe(pool, &failed);
    CHECK(wait_status(h, ASYNCIFY_FAILED) == 5);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_FAILED);
    int32_t code = 0;
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, &code), ASYNCIFY_FAILED);
    CHECK(code == 5);
    CHECK(atomic_load(&failed.done_calls) == 1 && failed.done_status == ASYNCIFY_FAILED);
    CHECK(atomic_load(&failed.arg_freed) == 0);
    CHECK_OK(asyncify_release(h));

    /* Without on_done the result is still there to take after a too-late cancel. */
    struct probe plain = { .no_gate = true, .code = 0 };
    asyncify_submit_options opts = options_for(pool);
    opts.free_result = probe_free_result;
    h = submit_opts(probe_task, &plain, &opts);
    wait_ok(h);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_OK);
    void *res = NULL;
    CHECK_OK(asyncify_poll(h, &res, NULL));
    CHECK(res == &plain);
    CHECK_OK(asyncify_release(h));
    sleep_ms(20);
    CHECK(atomic_load(&plain.result_freed) == 0);

    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- scenario 10, shorter: races of submit, cancel and release, from several threads ----------- */

#define RACE_THREADS 3
#define RACE_PER_THREAD 1500

struct race_task {
    atomic_int ran;
    atomic_int arg_freed;
    atomic_int result_freed;
    atomic_int done_calls;
    atomic_int done_status;
    atomic_int moved; /* the result reached a poll/wait of ours */
    bool with_on_done;
    int cancel_status; /* what asyncify_cancel returned; 1000 when not called */
    int observed_status; /* what a wait returned before release; 1000 when none */
    int spin;
    int32_t code;
};

static struct race_task race_tasks[RACE_THREADS][RACE_PER_THREAD];
static atomic_int race_done_total;

static void race_free_arg(void *p)
{
    atomic_fetch_add(&((struct race_task *)p)->arg_freed, 1);
}

static void race_free_result(void *p)
{
    atomic_fetch_add(&((struct race_task *)p)->result_freed, 1);
}

static void race_done(void *user_data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)h;
    (void)code;
    struct race_task *t = user_data;
    if (status == ASYNCIFY_OK || status == ASYNCIFY_FAILED) {
        CHECK(result == t); /* the result moves to on_done */
    } else {
        CHECK(status == ASYNCIFY_CANCELLED);
        CHECK(result == NULL);
    }
    atomic_store(&t->done_status, status);
    atomic_fetch_add(&t->done_calls, 1);
    atomic_fetch_add(&race_done_total, 1);
}

static int32_t race_work(void *arg, void **out_result)
{
    struct race_task *t = arg;
    atomic_store(&t->ran, 1);
    for (volatile int i = 0; i < t->spin; i++) {
    }
    *out_result = t;
    return t->code;
}

struct race_thread {
    struct asyncify_pool *pool;
    int index;
};

static uint32_t next_random(uint32_t *state)
{
    *state = *state * 1103515245u + 12345u;
    return (*state >> 16) & 0x7fff;
}

static void *race_thread(void *arg)
{
    struct race_thread *rt = arg;
    uint32_t rng = 0x9e3779b9u * (uint32_t)(rt->index + 1);
    for (int i = 0; i < RACE_PER_THREAD; i++) {
        struct race_task *t = &race_tasks[rt->index][i];
        uint32_t r = next_random(&rng);
        t->with_on_done = (r & 1) != 0;
        t->spin = (int)(next_random(&rng) % 4) * 2000;
        t->code = (i % 5 == 0) ? 7 : 0;
        t->cancel_status = 1000;
        t->observed_status = 1000;

        asyncify_submit_options opts = options_for(rt->pool);
        opts.free_arg = race_free_arg;
        opts.free_result = race_free_result;
        if (t->with_on_done) {
            opts.on_done = race_done;
            opts.on_done_data = t;
        }
        int action = (int)((r >> 1) % 7);
        if (action == 5) {
            t->spin = 20000; /* long enough to be caught running */
        }
        if (action == 6) {
            opts.flags = ASYNCIFY_SUBMIT_DETACHED;
            CHECK_OK(asyncify_submit(race_work, t, &opts, NULL));
            continue;
        }
        asyncify_handle h = submit_opts(race_work, t, &opts);
        void *res = NULL;
        switch (action) {
        case 0: /* cancel at once, then release */
            t->cancel_status = asyncify_cancel(h);
            break;
        case 1: /* release at once: detached while pending */
            break;
        case 2: /* cancel after a moment, then wait */
            for (volatile int s = 0; s < (int)(r % 3000); s++) {
            }
            t->cancel_status = asyncify_cancel(h);
            t->observed_status = asyncify_wait(h, TEST_PATIENCE_MS, &res, NULL);
            break;
        case 3: /* wait for the outcome, taking the result, then a too-late cancel */
            t->observed_status = asyncify_wait(h, TEST_PATIENCE_MS, &res, NULL);
            t->cancel_status = asyncify_cancel(h);
            break;
        case 4: /* cancel twice */
            t->cancel_status = asyncify_cancel(h);
            CHECK_EQ_STATUS(asyncify_cancel(h), t->cancel_status);
            break;
        default: /* cancel once it runs (or soon after submit): abandon, racing with its end */
            for (int s = 0; s < 200000 && !atomic_load(&t->ran); s++) {
            }
            t->cancel_status = asyncify_cancel(h);
            break;
        }
        if (res != NULL) {
            CHECK(res == t);
            atomic_fetch_add(&t->moved, 1);
        }
        CHECK_OK(asyncify_release(h));
        CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    }
    return NULL;
}

static void test_races(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct race_thread rts[RACE_THREADS];
    pthread_t threads[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        rts[i] = (struct race_thread){ .pool = pool, .index = i };
        threads[i] = start_thread(race_thread, &rts[i]);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        join_thread(threads[i]);
    }
    /* Shutdown waits for every running callable, abandoned ones included, and their callbacks. */
    CHECK_OK(asyncify_pool_free(pool, -1));

    int with_on_done = 0, never_ran = 0, abandoned = 0, completed = 0;
    for (int ti = 0; ti < RACE_THREADS; ti++) {
        for (int i = 0; i < RACE_PER_THREAD; i++) {
            struct race_task *t = &race_tasks[ti][i];
            int ran = atomic_load(&t->ran);
            int arg_freed = atomic_load(&t->arg_freed);
            int result_freed = atomic_load(&t->result_freed);
            int moved = atomic_load(&t->moved);
            int done_calls = atomic_load(&t->done_calls);
            int status = atomic_load(&t->done_status);
            bool cancelled;
            if (t->with_on_done) {
                with_on_done++;
                if (done_calls != 1) {
                    test_fail(__FILE__, __LINE__, "task [%d][%d]: on_done called %d times", ti, i,
                              done_calls);
                }
                cancelled = status == ASYNCIFY_CANCELLED;
                if (!cancelled && !ran) {
                    test_fail(__FILE__, __LINE__, "task [%d][%d]: status %d but fn never ran", ti, i, status);
                }
            } else {
                CHECK(done_calls == 0);
                cancelled = t->cancel_status == ASYNCIFY_CANCELLED;
            }
            /* cancel never returns PENDING, and agrees with what a wait saw afterwards. */
            CHECK(t->cancel_status == 1000 || t->cancel_status == ASYNCIFY_CANCELLED ||
                  t->cancel_status == ASYNCIFY_OK || t->cancel_status == ASYNCIFY_FAILED);
            if (t->cancel_status == ASYNCIFY_CANCELLED && t->observed_status != 1000) {
                CHECK(t->observed_status == ASYNCIFY_CANCELLED);
            }
            if (t->with_on_done && t->cancel_status != 1000) {
                CHECK((t->cancel_status == ASYNCIFY_CANCELLED) == cancelled);
            }
            if (t->with_on_done && t->observed_status != 1000) {
                CHECK(t->observed_status == status); /* one outcome, whoever looks */
            }
            if (t->observed_status != 1000) {
                CHECK(t->observed_status == ASYNCIFY_OK || t->observed_status == ASYNCIFY_FAILED ||
                      t->observed_status == ASYNCIFY_CANCELLED);
            }
            if (t->observed_status == ASYNCIFY_OK || t->observed_status == ASYNCIFY_FAILED) {
                CHECK(ran);
                CHECK(t->observed_status == (t->code == 0 ? ASYNCIFY_OK : ASYNCIFY_FAILED));
            }
            /* free_arg: exactly when fn never ran or was abandoned. */
            int want_arg_freed = (!ran || cancelled) ? 1 : 0;
            if (arg_freed != want_arg_freed) {
                test_fail(__FILE__, __LINE__,
                          "task [%d][%d]: free_arg called %d times, expected %d (ran %d, cancelled %d)", ti,
                          i, arg_freed, want_arg_freed, ran, (int)cancelled);
            }
            /* The result (non-NULL whenever fn returned) goes to exactly one place. */
            int receivers = result_freed + moved + ((t->with_on_done && !cancelled) ? 1 : 0);
            if (receivers != (ran ? 1 : 0)) {
                test_fail(__FILE__, __LINE__, "task [%d][%d]: result freed %d, moved %d, on_done %d; ran %d",
                          ti, i, result_freed, moved, (t->with_on_done && !cancelled) ? 1 : 0, ran);
            }
            if (cancelled) {
                CHECK(moved == 0);
            }
            never_ran += !ran;
            abandoned += ran && cancelled;
            completed += ran && !cancelled;
        }
    }
    printf("races: %d tasks never ran, %d were abandoned while running, %d completed\n", never_ran, abandoned,
           completed);
    CHECK(atomic_load(&race_done_total) == with_on_done);
}

int main(void)
{
    test_cancel_queued_on_paused_pool();
    test_cancel_queued_behind_busy_slot();
    test_cancel_running();
    test_cancel_requested_lets_work_stop();
    test_cancel_after_finish();
    test_races();
    TEST_PASS("test_cancel");
    return 0;
}
