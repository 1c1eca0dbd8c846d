/* The limit, the pool and its shutdown (contract sections 5 and 6.1). Scenarios 6, 7 and 13 of
 * section 7. The default-pool shutdown runs last: it ends the default pool for this process. */
#include <dirent.h>

#include "test_util.h"

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Concurrency meter: how many instrumented tasks run at once, and the most ever seen. */
struct meter {
    atomic_int current;
    atomic_int max;
};

static void meter_enter(struct meter *m)
{
    int now = atomic_fetch_add(&m->current, 1) + 1;
    int seen = atomic_load(&m->max);
    while (now > seen && !atomic_compare_exchange_weak(&m->max, &seen, now)) {
    }
}

static void meter_leave(struct meter *m)
{
    atomic_fetch_sub(&m->current, 1);
}

struct timed {
    struct meter *meter;
    int64_t run_ms;
    atomic_int started;
    atomic_int finished;
};

static int32_t timed_task(void *arg, void **out_result)
{
    (void)out_result;
    struct timed *t = arg;
    meter_enter(t->meter);
    atomic_store(&t->started, 1);
    sleep_ms(t->run_ms);
    atomic_store(&t->finished, 1);
    meter_leave(t->meter);
    return 0;
}

/* A task that runs until told to stop (bounded), reporting whether it was ever asked to cancel. */
struct held {
    struct meter *meter;
    atomic_int started;
    atomic_int stop;
    atomic_int finished;
    atomic_int cancel_seen;
    atomic_int *started_counter; /* optional: shared count of started tasks */
};

static int32_t held_task(void *arg, void **out_result)
{
    (void)out_result;
    struct held *h = arg;
    if (h->meter) {
        meter_enter(h->meter);
    }
    atomic_store(&h->started, 1);
    if (h->started_counter) {
        atomic_fetch_add(h->started_counter, 1);
    }
    gate_wait(&h->stop);
    atomic_store(&h->cancel_seen, asyncify_cancel_requested() ? 1 : 0);
    atomic_store(&h->finished, 1);
    if (h->meter) {
        meter_leave(h->meter);
    }
    return 0;
}

/* ---- scenario 13: never more worker threads than the limit ------------------------------------- */

static void test_thread_count(void)
{
    struct asyncify_pool *pool = new_pool(3);
    int baseline = count_threads();
    struct meter m = { 0 };
    struct timed tasks[12];
    asyncify_handle hs[12];
    for (int i = 0; i < 12; i++) {
        tasks[i] = (struct timed){ .meter = &m, .run_ms = 60 };
        hs[i] = submit_to(pool, timed_task, &tasks[i]);
    }
    int most = baseline;
    int64_t deadline = now_ms() + TEST_PATIENCE_MS;
    while (asyncify_poll(hs[11], NULL, NULL) == ASYNCIFY_PENDING && now_ms() < deadline) {
        int n = count_threads();
        most = n > most ? n : most;
        sleep_ms(2);
    }
    for (int i = 0; i < 12; i++) {
        wait_ok_release(hs[i]);
    }
    int n = count_threads();
    most = n > most ? n : most;
    if (most - baseline > 3) {
        test_fail(__FILE__, __LINE__, "a limit-3 pool ran on %d threads (process: %d before, %d at most)",
                  most - baseline, baseline, most);
    }
    CHECK(most - baseline >= 1);
    CHECK(atomic_load(&m.max) == 3);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- scenario 6: limit 2, six tasks of 100 ms; FIFO at limit 1 --------------------------------- */

static void test_limit_two(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct meter m = { 0 };
    struct timed tasks[6];
    asyncify_handle hs[6];
    int64_t t0 = now_ms();
    for (int i = 0; i < 6; i++) {
        tasks[i] = (struct timed){ .meter = &m, .run_ms = 100 };
        hs[i] = submit_to(pool, timed_task, &tasks[i]);
    }
    for (int i = 0; i < 6; i++) {
        wait_ok_release(hs[i]);
    }
    int64_t elapsed = now_ms() - t0;
    CHECK(atomic_load(&m.max) == 2);
    if (elapsed < 250 || elapsed >= 1000) {
        test_fail(__FILE__, __LINE__, "six 100 ms tasks at limit 2 took %lld ms, expected about 300",
                  (long long)elapsed);
    }
    CHECK_OK(asyncify_pool_free(pool, -1));
}

struct fifo {
    atomic_int next;
    int order[20];
};

struct fifo_item {
    struct fifo *f;
    int index;
};

static int32_t fifo_task(void *arg, void **out_result)
{
    (void)out_result;
    struct fifo_item *it = arg;
    it->f->order[atomic_fetch_add(&it->f->next, 1)] = it->index;
    return 0;
}

static void test_fifo(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct meter m = { 0 };
    struct held blocker = { .meter = &m };
    asyncify_handle hb = submit_to(pool, held_task, &blocker);
    WAIT_FOR(atomic_load(&blocker.started), TEST_PATIENCE_MS);

    struct fifo f = { .next = 0 };
    struct fifo_item items[20];
    asyncify_handle hs[20];
    for (int i = 0; i < 20; i++) {
        items[i] = (struct fifo_item){ .f = &f, .index = i };
        hs[i] = submit_to(pool, fifo_task, &items[i]);
    }
    gate_open(&blocker.stop);
    wait_ok_release(hb);
    for (int i = 0; i < 20; i++) {
        wait_ok_release(hs[i]);
    }
    CHECK(atomic_load(&f.next) == 20);
    for (int i = 0; i < 20; i++) {
        if (f.order[i] != i) {
            test_fail(__FILE__, __LINE__, "start #%d was task %d: not FIFO", i, f.order[i]);
        }
    }
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- scenario 7: raising starts queued work at once; lowering interrupts nothing; 0 pauses ------ */

static void test_raise_and_lower(void)
{
    struct asyncify_pool *pool = new_pool(1);
    uint32_t n = 0;
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 1);

    struct meter m = { 0 };
    atomic_int queued_started = 0;
    struct held longest = { .meter = &m };
    asyncify_handle hl = submit_to(pool, held_task, &longest);
    WAIT_FOR(atomic_load(&longest.started), TEST_PATIENCE_MS);

    struct held q[3];
    asyncify_handle hq[3];
    for (int i = 0; i < 3; i++) {
        q[i] = (struct held){ .meter = &m, .started_counter = &queued_started };
        hq[i] = submit_to(pool, held_task, &q[i]);
    }
    sleep_ms(200);
    CHECK(atomic_load(&queued_started) == 0);

    /* Raise: the three queued tasks start without any new submission or completion. */
    int64_t t0 = now_ms();
    CHECK_OK(asyncify_set_max_workers(pool, 4));
    WAIT_FOR(atomic_load(&queued_started) == 3, 2000);
    int64_t latency = now_ms() - t0;
    CHECK(atomic_load(&longest.finished) == 0);
    CHECK(atomic_load(&m.current) == 4);
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 4);
    printf("raise to 4 started 3 queued tasks in %lld ms\n", (long long)latency);

    /* Lower to 1 while four run: all four keep running, and nothing new starts until they are
     * below the new limit. */
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 1);
    struct held x = { .meter = &m };
    asyncify_handle hx = submit_to(pool, held_task, &x);
    sleep_ms(200);
    CHECK(atomic_load(&m.current) == 4);
    CHECK(atomic_load(&x.started) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_STATUS(asyncify_poll(hq[i], NULL, NULL), ASYNCIFY_PENDING);
        gate_open(&q[i].stop);
    }
    for (int i = 0; i < 3; i++) {
        wait_ok_release(hq[i]);
        CHECK(atomic_load(&q[i].cancel_seen) == 0);
    }
    sleep_ms(200);
    CHECK(atomic_load(&x.started) == 0); /* `longest` still holds the one slot */
    gate_open(&longest.stop);
    wait_ok_release(hl);
    CHECK(atomic_load(&longest.cancel_seen) == 0);
    WAIT_FOR(atomic_load(&x.started), 2000);
    gate_open(&x.stop);
    wait_ok_release(hx);
    CHECK(atomic_load(&m.max) == 4);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

static void test_pause(void)
{
    /* Created paused: submissions queue, none start, until the limit is raised. */
    struct asyncify_pool *pool = new_pool(0);
    uint32_t n = 99;
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 0);
    struct meter m = { 0 };
    struct timed t[3];
    asyncify_handle hs[3];
    for (int i = 0; i < 3; i++) {
        t[i] = (struct timed){ .meter = &m, .run_ms = 1 };
        hs[i] = submit_to(pool, timed_task, &t[i]);
    }
    sleep_ms(200);
    for (int i = 0; i < 3; i++) {
        CHECK(atomic_load(&t[i].started) == 0);
        CHECK_EQ_STATUS(asyncify_poll(hs[i], NULL, NULL), ASYNCIFY_PENDING);
    }
    CHECK_OK(asyncify_set_max_workers(pool, 2));
    for (int i = 0; i < 3; i++) {
        wait_ok_release(hs[i]);
    }
    CHECK(atomic_load(&m.max) <= 2);

    /* Paused while running: the running task finishes; the next one waits for a resume. */
    struct held running = { .meter = &m };
    asyncify_handle hr = submit_to(pool, held_task, &running);
    WAIT_FOR(atomic_load(&running.started), TEST_PATIENCE_MS);
    CHECK_OK(asyncify_set_max_workers(pool, 0));
    struct timed next = { .meter = &m, .run_ms = 1 };
    asyncify_handle hn = submit_to(pool, timed_task, &next);
    gate_open(&running.stop);
    wait_ok_release(hr);
    CHECK(atomic_load(&running.cancel_seen) == 0);
    sleep_ms(200);
    CHECK(atomic_load(&next.started) == 0);
    CHECK_EQ_STATUS(asyncify_poll(hn, NULL, NULL), ASYNCIFY_PENDING);
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    wait_ok_release(hn);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

static void test_default_pool_limit(void)
{
    uint32_t n = 0;
    CHECK_OK(asyncify_get_max_workers(NULL, &n));
    const char *env = getenv("ASYNCIFY_MAX_WORKERS");
    if (env == NULL) {
        CHECK(n == 8);
    } else {
        printf("ASYNCIFY_MAX_WORKERS=%s: default limit %u\n", env, n);
    }
    uint32_t original = n;
    CHECK_OK(asyncify_set_max_workers(NULL, 3));
    CHECK_OK(asyncify_get_max_workers(NULL, &n));
    CHECK(n == 3);
    CHECK_OK(asyncify_set_max_workers(NULL, original));
    CHECK_OK(asyncify_get_max_workers(NULL, &n));
    CHECK(n == original);

    /* The default pool's limit is not a private pool's. */
    struct asyncify_pool *pool = new_pool(5);
    CHECK_OK(asyncify_set_max_workers(NULL, 2));
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 5);
    CHECK_OK(asyncify_set_max_workers(NULL, original));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

#define UNBOUNDED_TASKS 16

struct rendezvous {
    atomic_int arrived;
};

static int32_t rendezvous_task(void *arg, void **out_result)
{
    (void)out_result;
    struct rendezvous *r = arg;
    atomic_fetch_add(&r->arrived, 1);
    /* Returns only once every task has started: possible only if all run at once. */
    WAIT_FOR(atomic_load(&r->arrived) == UNBOUNDED_TASKS, TEST_PATIENCE_MS);
    return 0;
}

static void test_unbounded(void)
{
    struct asyncify_pool *pool = new_pool(UINT32_MAX);
    uint32_t n = 0;
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == UINT32_MAX);
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    CHECK_OK(asyncify_set_max_workers(pool, UINT32_MAX));
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == UINT32_MAX);

    struct rendezvous r = { .arrived = 0 };
    asyncify_handle hs[UNBOUNDED_TASKS];
    for (int i = 0; i < UNBOUNDED_TASKS; i++) {
        hs[i] = submit_to(pool, rendezvous_task, &r);
    }
    for (int i = 0; i < UNBOUNDED_TASKS; i++) {
        wait_ok_release(hs[i]);
    }
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- scenario 13: snapshots are O(1); released handles stay invalid ----------------------------- */

#define SNAPSHOT_SUBMITS 10000
#define BIG_TABLE_KEYS 100000

static asyncify_handle snapshot_handles[3][SNAPSHOT_SUBMITS];

static int32_t never_runs(void *arg, void **out_result)
{
    (void)arg;
    (void)out_result;
    test_fail(__FILE__, __LINE__, "a task on a paused pool ran");
}

static int64_t time_submits(struct asyncify_pool *paused, asyncify_handle *hs, asyncify_handle released)
{
    asyncify_submit_options opts = options_for(paused);
    int64_t t0 = now_ms();
    for (int i = 0; i < SNAPSHOT_SUBMITS; i++) {
        CHECK_OK(asyncify_submit(never_runs, NULL, &opts, &hs[i]));
    }
    int64_t elapsed = now_ms() - t0;
    for (int i = 0; i < SNAPSHOT_SUBMITS; i++) {
        CHECK(hs[i] != 0 && hs[i] != released);
        if (i % 1000 == 0) {
            CHECK_EQ_STATUS(asyncify_poll(released, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
        }
    }
    return elapsed;
}

struct big_view {
    size_t count;
    bool sample;
};

static int32_t big_view_task(void *arg, void **out_result)
{
    (void)out_result;
    struct big_view *v = arg;
    v->count = table_count();
    v->sample = key_is("key050000", "v50000");
    return 0;
}

static void test_snapshot_cost(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *live = new_pool(1);

    /* A handle released before everything below. */
    struct meter m = { 0 };
    struct timed quick = { .meter = &m, .run_ms = 1 };
    asyncify_handle released = submit_to(live, timed_task, &quick);
    wait_ok_release(released);
    CHECK_EQ_STATUS(asyncify_poll(released, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);

    struct asyncify_pool *paused = new_pool(0);
    int64_t small_ms = time_submits(paused, snapshot_handles[0], released);

    char key[16], value[16];
    for (int i = 0; i < BIG_TABLE_KEYS; i++) {
        snprintf(key, sizeof key, "key%06d", i);
        snprintf(value, sizeof value, "v%d", i);
        set_str(key, value);
    }
    CHECK(table_count() == BIG_TABLE_KEYS);
    int64_t big_ms = time_submits(paused, snapshot_handles[1], released);
    printf("10000 submits: %lld ms with 0 keys, %lld ms with %d keys\n", (long long)small_ms,
           (long long)big_ms, BIG_TABLE_KEYS);
    CHECK(small_ms < 1000);
    CHECK(big_ms < 1000);
    CHECK(big_ms <= 5 * small_ms + 200);

    /* Setting a key while a snapshot of the current big table is alive must not copy the table: each
     * set below follows a submit, so a copy-on-write of the whole map would copy 1,000 times. */
    asyncify_submit_options popts = options_for(paused);
    int64_t t0 = now_ms();
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(asyncify_submit(never_runs, NULL, &popts, &snapshot_handles[2][i]));
        snprintf(value, sizeof value, "w%d", i);
        set_str("key050001", value);
    }
    int64_t set_ms = now_ms() - t0;
    printf("1000 submit+set pairs on a table of %d keys: %lld ms\n", BIG_TABLE_KEYS, (long long)set_ms);
    CHECK(set_ms < 1000);

    /* The snapshot is really the whole table. */
    struct big_view v = { .count = 0 };
    wait_ok_release(submit_to(live, big_view_task, &v));
    CHECK(v.count == BIG_TABLE_KEYS);
    CHECK(v.sample);

    CHECK_OK(asyncify_pool_free(paused, -1)); /* cancels all 21,000 queued tasks */
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < (c < 2 ? SNAPSHOT_SUBMITS : 1000); i++) {
            CHECK_EQ_STATUS(asyncify_poll(snapshot_handles[c][i], NULL, NULL), ASYNCIFY_CANCELLED);
            CHECK_OK(asyncify_release(snapshot_handles[c][i]));
        }
    }
    CHECK_EQ_STATUS(asyncify_poll(released, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_EQ_STATUS(asyncify_release(released), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_OK(asyncify_pool_free(live, -1));
    CHECK_OK(asyncify_override_clear());
}

/* ---- scenario 13: wait(-1) sleeps, it does not spin --------------------------------------------- */

static void test_wait_burns_no_cpu(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct meter m = { 0 };
    struct timed t = { .meter = &m, .run_ms = 1000 };
    asyncify_handle h = submit_to(pool, timed_task, &t);
    WAIT_FOR(atomic_load(&t.started), TEST_PATIENCE_MS);
    double cpu0 = process_cpu_ms();
    int64_t t0 = now_ms();
    CHECK_OK(asyncify_wait(h, -1, NULL, NULL));
    int64_t wall = now_ms() - t0;
    double cpu = process_cpu_ms() - cpu0;
    printf("wait(-1) over %lld ms used %.1f ms of CPU\n", (long long)wall, cpu);
    CHECK(wall >= 800);
    CHECK(cpu < 200.0);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- shutdown of private pools ---------------------------------------------------------------- */

struct tracked_task {
    int64_t run_ms;
    atomic_int started;
    atomic_int finished;
    atomic_int arg_freed;
    atomic_int done_calls;
    asyncify_status done_status;
    pthread_t done_thread;
};

static void tracked_free_arg(void *p)
{
    atomic_fetch_add(&((struct tracked_task *)p)->arg_freed, 1);
}

static void tracked_done(void *user_data, asyncify_handle h, asyncify_status status, void *result,
                         int32_t code)
{
    (void)h;
    (void)result;
    (void)code;
    struct tracked_task *t = user_data;
    t->done_status = status;
    t->done_thread = pthread_self();
    atomic_fetch_add(&t->done_calls, 1);
}

static int32_t tracked_work(void *arg, void **out_result)
{
    (void)out_result;
    struct tracked_task *t = arg;
    atomic_store(&t->started, 1);
    sleep_ms(t->run_ms);
    atomic_store(&t->finished, 1);
    return 0;
}

static asyncify_handle submit_tracked(struct asyncify_pool *pool, struct tracked_task *t)
{
    asyncify_submit_options opts = options_for(pool);
    opts.on_done = tracked_done;
    opts.on_done_data = t;
    opts.free_arg = tracked_free_arg;
    return submit_opts(tracked_work, t, &opts);
}

/* One running task and three queued ones; shutdown cancels the queued ones on the calling thread and
 * waits for the running one, callbacks included. Works for the default pool too (pool NULL). */
static void check_shutdown(struct asyncify_pool *pool, asyncify_status (*shut)(struct asyncify_pool *))
{
    struct tracked_task running = { .run_ms = 300 };
    struct tracked_task queued[3] = { { .run_ms = 1 }, { .run_ms = 1 }, { .run_ms = 1 } };
    asyncify_handle hr = submit_tracked(pool, &running);
    WAIT_FOR(atomic_load(&running.started), TEST_PATIENCE_MS);
    asyncify_handle hq[3];
    for (int i = 0; i < 3; i++) {
        hq[i] = submit_tracked(pool, &queued[i]);
    }

    CHECK_OK(shut(pool));
    CHECK(atomic_load(&running.finished) == 1);
    CHECK(atomic_load(&running.done_calls) == 1 && running.done_status == ASYNCIFY_OK);
    CHECK(atomic_load(&running.arg_freed) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK(atomic_load(&queued[i].started) == 0);
        CHECK(atomic_load(&queued[i].arg_freed) == 1);
        CHECK(atomic_load(&queued[i].done_calls) == 1);
        CHECK(queued[i].done_status == ASYNCIFY_CANCELLED);
        CHECK(pthread_equal(queued[i].done_thread, pthread_self()));
        CHECK_EQ_STATUS(asyncify_poll(hq[i], NULL, NULL), ASYNCIFY_CANCELLED);
    }
    CHECK_OK(asyncify_poll(hr, NULL, NULL));

    /* After OK, no callback of that pool fires. */
    sleep_ms(100);
    CHECK(atomic_load(&running.done_calls) == 1);
    for (int i = 0; i < 3; i++) {
        CHECK(atomic_load(&queued[i].started) == 0);
        CHECK(atomic_load(&queued[i].arg_freed) == 1 && atomic_load(&queued[i].done_calls) == 1);
    }
    CHECK_OK(asyncify_release(hr));
    for (int i = 0; i < 3; i++) {
        CHECK_OK(asyncify_release(hq[i]));
    }
}

static asyncify_status free_private(struct asyncify_pool *pool)
{
    return asyncify_pool_free(pool, -1);
}

static asyncify_status shut_default(struct asyncify_pool *pool)
{
    (void)pool;
    return asyncify_shutdown(-1);
}

struct self_free {
    struct asyncify_pool *pool;
    asyncify_status status;
};

static int32_t self_free_task(void *arg, void **out_result)
{
    (void)out_result;
    struct self_free *sf = arg;
    sf->status = asyncify_pool_free(sf->pool, -1);
    return 0;
}

static void test_pool_free(void)
{
    check_shutdown(new_pool(1), free_private);

    /* A timeout: TIMEOUT while the task still runs; it finishes on its own, its handle stays usable. */
    struct asyncify_pool *pool = new_pool(1);
    struct tracked_task slow = { .run_ms = 1500 };
    asyncify_handle h = submit_tracked(pool, &slow);
    WAIT_FOR(atomic_load(&slow.started), TEST_PATIENCE_MS);
    int64_t t0 = now_ms();
    CHECK_EQ_STATUS(asyncify_pool_free(pool, 100), ASYNCIFY_TIMEOUT);
    int64_t took = now_ms() - t0;
    CHECK(took >= 90 && took < 1200);
    CHECK(atomic_load(&slow.finished) == 0);
    CHECK_OK(asyncify_wait(h, TEST_PATIENCE_MS, NULL, NULL));
    CHECK(atomic_load(&slow.finished) == 1);
    CHECK(atomic_load(&slow.done_calls) == 1 && slow.done_status == ASYNCIFY_OK);
    CHECK_OK(asyncify_release(h));

    /* From a thread of that pool: E_WOULD_DEADLOCK, and the pool still works. */
    struct self_free sf = { .pool = new_pool(1), .status = 12345 };
    wait_ok_release(submit_to(sf.pool, self_free_task, &sf));
    CHECK_EQ_STATUS(sf.status, ASYNCIFY_E_WOULD_DEADLOCK);
    struct meter m = { 0 };
    struct timed after = { .meter = &m, .run_ms = 1 };
    wait_ok_release(submit_to(sf.pool, timed_task, &after));
    CHECK(atomic_load(&after.finished) == 1);
    CHECK_OK(asyncify_pool_free(sf.pool, -1));
}

/* Last: it ends the default pool for the rest of the process. */
static void test_default_shutdown(void)
{
    CHECK_OK(asyncify_set_max_workers(NULL, 1));
    check_shutdown(NULL, shut_default);

    struct tracked_task never = { .run_ms = 1 };
    asyncify_handle h = 0xabcdef;
    CHECK_EQ_STATUS(asyncify_submit(tracked_work, &never, NULL, &h), ASYNCIFY_E_SHUT_DOWN);
    CHECK(h == 0xabcdef);
    asyncify_submit_options opts = options_for(NULL);
    opts.on_done = tracked_done;
    opts.on_done_data = &never;
    opts.free_arg = tracked_free_arg;
    CHECK_EQ_STATUS(asyncify_submit(tracked_work, &never, &opts, &h), ASYNCIFY_E_SHUT_DOWN);
    CHECK(h == 0xabcdef);
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_EQ_STATUS(asyncify_submit(tracked_work, &never, &opts, NULL), ASYNCIFY_E_SHUT_DOWN);
    sleep_ms(100);
    /* On failure nothing runs and no callback is called: the caller still owns arg. */
    CHECK(atomic_load(&never.started) == 0);
    CHECK(atomic_load(&never.arg_freed) == 0);
    CHECK(atomic_load(&never.done_calls) == 0);

    /* Private pools are not the default pool. */
    struct asyncify_pool *pool = new_pool(1);
    struct meter m = { 0 };
    struct timed t = { .meter = &m, .run_ms = 1 };
    wait_ok_release(submit_to(pool, timed_task, &t));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

int main(void)
{
    test_thread_count(); /* first, while no other pool has threads */
    test_limit_two();
    test_fifo();
    test_raise_and_lower();
    test_pause();
    test_default_pool_limit();
    test_unbounded();
    test_snapshot_cost();
    test_wait_burns_no_cpu();
    test_pool_free();
    test_default_shutdown();
    TEST_PASS("test_limit");
    return 0;
}
