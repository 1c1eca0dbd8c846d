/* Pool options, wait_any and stats, plus a scenario of three
 * event loops, each with its own completion queue, sharing one pool of limit 2. */
#define _GNU_SOURCE /* pthread_getname_np */
#include <poll.h>
#include <stddef.h>

#include "test_util.h"

/* A failing call: its status, and a message for asyncify_last_error. */
static asyncify_pool_options pool_options(void)
{
    asyncify_pool_options o;
    memset(&o, 0xAB, sizeof o);
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    return o;
}

static struct asyncify_pool *new_pool_ex(const asyncify_pool_options *o)
{
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(o, &pool));
    CHECK(pool != NULL);
    return pool;
}

/* A task that marks itself started, waits for its gate, then marks itself finished. */
struct gated {
    atomic_int gate;
    atomic_int started;
    atomic_int finished;
    atomic_int start_seq; /* order of start among tasks sharing a sequence counter */
    atomic_int finish_seq;
    atomic_int *seq;
    int32_t code;
    char thread_name[32];
};

static int32_t gated_task(void *arg, void **out_result)
{
    (void)out_result;
    struct gated *g = arg;
    if (g->seq != NULL) {
        atomic_store(&g->start_seq, atomic_fetch_add(g->seq, 1) + 1);
    }
    atomic_store(&g->started, 1);
    gate_wait(&g->gate);
    if (g->seq != NULL) {
        atomic_store(&g->finish_seq, atomic_fetch_add(g->seq, 1) + 1);
    }
    atomic_store(&g->finished, 1);
    return g->code;
}

static int32_t quick_task(void *arg, void **out_result)
{
    (void)out_result;
    struct gated *g = arg;
    if (g != NULL) {
        atomic_store(&g->started, 1);
        atomic_store(&g->finished, 1);
        return g->code;
    }
    return 0;
}

static atomic_int free_arg_calls;
static void count_free_arg(void *p)
{
    (void)p;
    atomic_fetch_add(&free_arg_calls, 1);
}

static atomic_int on_done_calls;
static void count_on_done(void *user_data, asyncify_handle h, asyncify_status s, void *result, int32_t code)
{
    (void)user_data;
    (void)h;
    (void)s;
    (void)result;
    (void)code;
    atomic_fetch_add(&on_done_calls, 1);
}

/* ---- asyncify_pool_options_init and asyncify_pool_new_ex argument checks ---------------------- */

static void test_options_init_and_checks(void)
{
    /* Defaults. */
    asyncify_pool_options o;
    memset(&o, 0xAB, sizeof o);
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    CHECK(o.struct_size == sizeof o);
    CHECK(o.max_workers == 8);
    CHECK(o.max_queued == 0);
    CHECK(o.keep_alive_ms == 0);
    CHECK(o.flags == 0);
    CHECK(o.thread_name == NULL);
    CHECK(o.on_thread_start == NULL);
    CHECK(o.on_thread_stop == NULL);
    CHECK(o.hook_data == NULL);

    /* NULL and sizes too small: refused, the struct untouched. */
    CHECK_ERR(asyncify_pool_options_init(NULL, sizeof o), ASYNCIFY_E_NULL);
    const size_t v0_1 = offsetof(asyncify_pool_options, hook_data) + sizeof(void *); /* the 0.1 layout */
    const size_t small[] = { 0, 1, 4, v0_1 - 1 };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        memset(&o, 0xAB, sizeof o);
        CHECK_ERR(asyncify_pool_options_init(&o, small[i]), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK(o.struct_size == 0xABABABABu);
        CHECK(o.max_workers == 0xABABABABu);
    }

    /* A bigger (newer) struct: zeroed to its end and accepted as long as the extra bytes stay zero. */
    struct {
        asyncify_pool_options o;
        unsigned char extra[24];
    } big;
    memset(&big, 0xAB, sizeof big);
    CHECK_OK(asyncify_pool_options_init(&big.o, sizeof big));
    CHECK(big.o.struct_size == sizeof big);
    CHECK(big.o.max_workers == 8);
    for (size_t i = 0; i < sizeof big.extra; i++) {
        CHECK(big.extra[i] == 0);
    }
    struct asyncify_pool *pool = new_pool_ex(&big.o);
    uint32_t n = 0;
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 8);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* Non-zero bytes beyond what the library knows: refused, *out untouched. */
    struct asyncify_pool *untouched = (struct asyncify_pool *)&big;
    big.extra[5] = 1;
    pool = untouched;
    CHECK_ERR(asyncify_pool_new_ex(&big.o, &pool), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(pool == untouched);
    big.extra[5] = 0;
    big.extra[sizeof big.extra - 1] = 0x80;
    CHECK_ERR(asyncify_pool_new_ex(&big.o, &pool), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(pool == untouched);

    /* NULL options: the defaults. */
    pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(NULL, &pool));
    CHECK(pool != NULL);
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 8);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* NULL out. */
    o = pool_options();
    CHECK_ERR(asyncify_pool_new_ex(&o, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_pool_new(1, NULL), ASYNCIFY_E_NULL);

    /* struct_size smaller than the first published (0.1) layout. */
    const uint32_t v0_1_end = (uint32_t)(offsetof(asyncify_pool_options, hook_data) + sizeof(void *));
    const uint32_t bad_sizes[] = { 0, 4, v0_1_end - 1 };
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        o = pool_options();
        o.struct_size = bad_sizes[i];
        pool = untouched;
        CHECK_ERR(asyncify_pool_new_ex(&o, &pool), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK(pool == untouched);
    }

    /* The 0.1 layout's size (a program built against that header): accepted, stack_size defaulted
     * even when the bytes after the 0.1 fields hold something else. */
    o = pool_options();
    o.struct_size = v0_1_end;
    o.stack_size = 12345;
    pool = untouched;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));
    CHECK(pool != untouched);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* Unknown flags. */
    const uint32_t bad_flags[] = { 4, 8, 0x80000000u, ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON | 8 };
    for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        o = pool_options();
        o.flags = bad_flags[i];
        pool = untouched;
        CHECK_ERR(asyncify_pool_new_ex(&o, &pool), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK(pool == untouched);
    }

    /* A thread name that is not UTF-8. */
    o = pool_options();
    o.thread_name = "bad\xff\xfe";
    pool = untouched;
    CHECK_ERR(asyncify_pool_new_ex(&o, &pool), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(pool == untouched);

    /* The fields are used: max_workers. */
    o = pool_options();
    o.max_workers = 3;
    pool = new_pool_ex(&o);
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 3);
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.limit == 3);
    CHECK(s.threads == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* stats / pool_free NULL checks. */
    CHECK_ERR(asyncify_stats(NULL, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_pool_free(NULL, -1), ASYNCIFY_E_NULL);
}

/* ---- max_queued --------------------------------------------------------------------------------- */

static void test_max_queued(void)
{
    asyncify_pool_options o = pool_options();
    o.max_workers = 1;
    o.max_queued = 2;
    struct asyncify_pool *pool = new_pool_ex(&o);

    struct gated running = { .code = 0 };
    asyncify_handle hr = submit_to(pool, gated_task, &running);
    WAIT_FOR(atomic_load(&running.started), TEST_PATIENCE_MS); /* running: no longer queued */

    struct gated q1 = { .code = 0 }, q2 = { .code = 0 }, refused = { .code = 0 };
    asyncify_handle h1 = submit_to(pool, quick_task, &q1);
    asyncify_handle h2 = submit_to(pool, quick_task, &q2);
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.queued == 2);
    CHECK(s.running == 1);

    /* Full: E_BUSY, nothing runs, no callback, the handle untouched. */
    atomic_store(&free_arg_calls, 0);
    atomic_store(&on_done_calls, 0);
    asyncify_submit_options opts = options_for(pool);
    opts.free_arg = count_free_arg;
    opts.on_done = count_on_done;
    asyncify_handle hx = 777;
    CHECK_ERR(asyncify_submit(quick_task, &refused, &opts, &hx), ASYNCIFY_E_BUSY);
    CHECK(hx == 777);
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_ERR(asyncify_submit(quick_task, &refused, &opts, NULL), ASYNCIFY_E_BUSY);
    s = stats_of(pool);
    CHECK(s.queued == 2);
    CHECK(s.submitted == 3);

    gate_open(&running.gate);
    wait_ok_release(hr);
    wait_ok_release(h1);
    wait_ok_release(h2);
    CHECK(atomic_load(&q1.finished) && atomic_load(&q2.finished));
    sleep_ms(50);
    CHECK(atomic_load(&refused.started) == 0);
    CHECK(atomic_load(&free_arg_calls) == 0);
    CHECK(atomic_load(&on_done_calls) == 0);

    /* The queue drained: accepted again, and up to the bound. */
    struct gated again = { .code = 0 };
    asyncify_handle ha = submit_to(pool, quick_task, &again);
    wait_ok_release(ha);
    CHECK(atomic_load(&again.finished) == 1);
    struct gated b1 = { .code = 0 }, b2 = { .code = 0 }, b3 = { .code = 0 };
    hr = submit_to(pool, gated_task, &b1);
    WAIT_FOR(atomic_load(&b1.started), TEST_PATIENCE_MS);
    h1 = submit_to(pool, quick_task, &b2);
    h2 = submit_to(pool, quick_task, &b3);
    hx = 0;
    opts.flags = 0;
    CHECK_ERR(asyncify_submit(quick_task, &refused, &opts, &hx), ASYNCIFY_E_BUSY);
    gate_open(&b1.gate);
    wait_ok_release(hr);
    wait_ok_release(h1);
    wait_ok_release(h2);
    s = stats_of(pool);
    CHECK(s.submitted == 7);
    CHECK(s.completed == 7);
    CHECK(atomic_load(&refused.started) == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- keep_alive_ms ------------------------------------------------------------------------------ */

static void run_four_at_once(struct asyncify_pool *pool)
{
    struct gated g[4];
    memset(g, 0, sizeof g);
    asyncify_handle h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = submit_to(pool, gated_task, &g[i]);
    }
    for (int i = 0; i < 4; i++) {
        WAIT_FOR(atomic_load(&g[i].started), TEST_PATIENCE_MS);
    }
    CHECK(stats_of(pool).threads == 4);
    for (int i = 0; i < 4; i++) {
        gate_open(&g[i].gate);
    }
    for (int i = 0; i < 4; i++) {
        wait_ok_release(h[i]);
    }
}

static void test_keep_alive(void)
{
    asyncify_pool_options o = pool_options();
    o.max_workers = 4;
    o.keep_alive_ms = 100;
    struct asyncify_pool *fast = new_pool_ex(&o);
    o.keep_alive_ms = 0; /* the default: 10 s */
    struct asyncify_pool *slow = new_pool_ex(&o);

    run_four_at_once(fast);
    run_four_at_once(slow);
    int64_t t0 = now_ms();
    sleep_ms(700);
    WAIT_FOR(stats_of(fast).threads == 0, 2000);
    CHECK(stats_of(fast).idle_threads == 0);
    /* The default keep-alive is 10 s: the other pool's workers are still there. */
    asyncify_pool_stats s = stats_of(slow);
    CHECK(now_ms() - t0 < 8000);
    CHECK(s.threads == 4);
    CHECK(s.idle_threads == 4);

    /* The pool works again after its workers left. */
    struct gated g = { .code = 0 };
    wait_ok_release(submit_to(fast, quick_task, &g));
    CHECK(atomic_load(&g.finished) == 1);
    CHECK(stats_of(fast).threads <= 1);

    CHECK_OK(asyncify_pool_free(fast, -1));
    CHECK_OK(asyncify_pool_free(slow, -1));
}

/* ---- thread_name -------------------------------------------------------------------------------- */

static int32_t name_task(void *arg, void **out_result)
{
    (void)out_result;
    struct gated *g = arg;
    CHECK(pthread_getname_np(pthread_self(), g->thread_name, sizeof g->thread_name) == 0);
    atomic_store(&g->finished, 1);
    return 0;
}

static void test_thread_name(void)
{
    asyncify_pool_options o = pool_options();
    o.max_workers = 2;
    char prefix[16] = "tpx";
    o.thread_name = prefix;
    struct asyncify_pool *pool = new_pool_ex(&o);
    memset(prefix, 'Z', 3); /* copied at creation: a later change of the caller's buffer is invisible */

    struct gated g = { .code = 0 };
    wait_ok_release(submit_to(pool, name_task, &g));
    printf("worker name with prefix \"tpx\": \"%s\"\n", g.thread_name);
    CHECK(strncmp(g.thread_name, "tpx", 3) == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* NULL: "asyncify". */
    o = pool_options();
    pool = new_pool_ex(&o);
    memset(&g, 0, sizeof g);
    wait_ok_release(submit_to(pool, name_task, &g));
    printf("worker name by default: \"%s\"\n", g.thread_name);
    CHECK(strncmp(g.thread_name, "asyncify", 8) == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* A prefix longer than the OS allows (15 bytes on Linux): the pool works, the prefix is cut so
     * that the worker's number still fits: "a-very-long-w-1". */
    const char *long_prefix = "a-very-long-worker-thread-prefix";
    o = pool_options();
    o.thread_name = long_prefix;
    pool = new_pool_ex(&o);
    memset(&g, 0, sizeof g);
    wait_ok_release(submit_to(pool, name_task, &g));
    printf("worker name with a long prefix: \"%s\"\n", g.thread_name);
    size_t name_len = strlen(g.thread_name);
    const char *dash = strrchr(g.thread_name, '-');
    CHECK(name_len > 0 && name_len <= 15);
    CHECK(dash != NULL && dash[1] >= '1' && dash[1] <= '9');
    CHECK(strncmp(g.thread_name, long_prefix, (size_t)(dash - g.thread_name)) == 0);
    CHECK((size_t)(dash - g.thread_name) >= 10);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- on_thread_start / on_thread_stop ----------------------------------------------------------- */

struct hooks {
    atomic_int starts;
    atomic_int stops;
    atomic_int bad_data;
    atomic_int stop_without_start; /* a stop hook on a thread whose start hook did not run */
    atomic_int task_without_start; /* a task on a thread whose start hook did not run */
    atomic_int tasks;
};

static _Thread_local struct hooks *hooked_by;

static struct hooks the_hooks;

static void on_start(void *data)
{
    if (data != &the_hooks) {
        atomic_fetch_add(&the_hooks.bad_data, 1);
    }
    hooked_by = data;
    sleep_ms(5); /* a slow start hook: no task may start before it returns */
    atomic_fetch_add(&the_hooks.starts, 1);
}

static void on_stop(void *data)
{
    if (data != &the_hooks) {
        atomic_fetch_add(&the_hooks.bad_data, 1);
    }
    if (hooked_by != data) {
        atomic_fetch_add(&the_hooks.stop_without_start, 1);
    }
    hooked_by = NULL;
    sleep_ms(20); /* a slow stop hook: pool_free must still wait for it */
    atomic_fetch_add(&the_hooks.stops, 1);
}

static int32_t hooked_task(void *arg, void **out_result)
{
    (void)out_result;
    struct gated *g = arg;
    if (hooked_by != &the_hooks) {
        atomic_fetch_add(&the_hooks.task_without_start, 1);
    }
    atomic_fetch_add(&the_hooks.tasks, 1);
    atomic_store(&g->started, 1);
    gate_wait(&g->gate);
    atomic_store(&g->finished, 1);
    return 0;
}

static void test_thread_hooks(void)
{
    asyncify_pool_options o = pool_options();
    o.max_workers = 3;
    o.keep_alive_ms = 100;
    o.on_thread_start = on_start;
    o.on_thread_stop = on_stop;
    o.hook_data = &the_hooks;
    struct asyncify_pool *pool = new_pool_ex(&o);

    /* Three workers at once: three starts, each before its thread's task. */
    struct gated g[3];
    memset(g, 0, sizeof g);
    asyncify_handle h[3];
    for (int i = 0; i < 3; i++) {
        h[i] = submit_to(pool, hooked_task, &g[i]);
    }
    for (int i = 0; i < 3; i++) {
        WAIT_FOR(atomic_load(&g[i].started), TEST_PATIENCE_MS);
    }
    CHECK(atomic_load(&the_hooks.starts) == 3);
    CHECK(atomic_load(&the_hooks.stops) == 0);
    for (int i = 0; i < 3; i++) {
        gate_open(&g[i].gate);
        wait_ok_release(h[i]);
    }

    /* Keep-alive expiry: every worker leaves and runs its stop hook. */
    WAIT_FOR(stats_of(pool).threads == 0 && atomic_load(&the_hooks.stops) == 3, 3000);
    CHECK(atomic_load(&the_hooks.starts) == 3);

    /* Fresh workers after that start with the hook again. Many short tasks on the same threads: one
     * start per thread, not per task. */
    asyncify_handle many[50];
    struct gated mg[50];
    memset(mg, 0, sizeof mg);
    for (int i = 0; i < 50; i++) {
        gate_open(&mg[i].gate);
        many[i] = submit_to(pool, hooked_task, &mg[i]);
    }
    for (int i = 0; i < 50; i++) {
        wait_ok_release(many[i]);
    }

    /* pool_free: once it returned OK, every worker has run its stop hook and no hook of the pool runs
     * any more ("after OK, no callback of that pool fires"): the caller may free hook_data now. */
    CHECK_OK(asyncify_pool_free(pool, -1));
    int starts_at_return = atomic_load(&the_hooks.starts);
    int stops_at_return = atomic_load(&the_hooks.stops);
    sleep_ms(300);
    printf("hooks: %d starts and %d stops when pool_free returned OK; %d starts and %d stops 300 ms later\n",
           starts_at_return, stops_at_return, atomic_load(&the_hooks.starts), atomic_load(&the_hooks.stops));
    CHECK(starts_at_return >= 4 && starts_at_return <= 3 + 20); /* per thread, not per task */
    CHECK(atomic_load(&the_hooks.starts) == starts_at_return);
    CHECK(atomic_load(&the_hooks.stops) == stops_at_return);
    CHECK(stops_at_return == starts_at_return);
    CHECK(atomic_load(&the_hooks.tasks) == 53);
    CHECK(atomic_load(&the_hooks.bad_data) == 0);
    CHECK(atomic_load(&the_hooks.stop_without_start) == 0);
    CHECK(atomic_load(&the_hooks.task_without_start) == 0);
}

/* ---- ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON -------------------------------------------------------- */

static void run_abandon(bool release_slot)
{
    asyncify_pool_options o = pool_options();
    o.max_workers = 1;
    o.flags = release_slot ? ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON : 0;
    struct asyncify_pool *pool = new_pool_ex(&o);

    atomic_int seq = 0;
    struct gated longer = { .seq = &seq }, next = { .seq = &seq };
    asyncify_handle hl = submit_to(pool, gated_task, &longer);
    WAIT_FOR(atomic_load(&longer.started), TEST_PATIENCE_MS);
    gate_open(&next.gate);
    asyncify_handle hn = submit_to(pool, gated_task, &next);
    sleep_ms(50);
    CHECK(atomic_load(&next.started) == 0); /* limit 1 */

    CHECK_EQ_STATUS(asyncify_cancel(hl), ASYNCIFY_CANCELLED);
    if (release_slot) {
        /* The slot is given back at once: the next task starts while the abandoned one still runs. */
        WAIT_FOR(atomic_load(&next.started), TEST_PATIENCE_MS);
        CHECK(atomic_load(&longer.finished) == 0);
        wait_ok(hn);
        /* The abandoned callable still counts as running (once the next task's worker is done). */
        WAIT_FOR(stats_of(pool).running == 1, TEST_PATIENCE_MS);
        CHECK(atomic_load(&longer.finished) == 0);
        CHECK(stats_of(pool).abandoned == 1);
        gate_open(&longer.gate);
        WAIT_FOR(stats_of(pool).running == 0, TEST_PATIENCE_MS);
        CHECK(atomic_load(&next.start_seq) < atomic_load(&longer.finish_seq));
    } else {
        /* The slot stays with the abandoned callable until it returns. */
        sleep_ms(300);
        CHECK(atomic_load(&next.started) == 0);
        CHECK(stats_of(pool).running == 1);
        CHECK(stats_of(pool).queued == 1);
        gate_open(&longer.gate);
        wait_ok(hn);
        CHECK(atomic_load(&longer.finish_seq) < atomic_load(&next.start_seq));
    }
    CHECK_EQ_STATUS(asyncify_wait(hl, 0, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(hl));
    CHECK_OK(asyncify_release(hn));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&longer.finished) == 1);
}

static void test_release_slot_on_abandon(void)
{
    run_abandon(true);
    run_abandon(false);
}

/* ---- asyncify_wait_any -------------------------------------------------------------------------- */

static void test_wait_any(void)
{
    struct asyncify_pool *pool = new_pool(3);
    struct gated a = { .code = 0 }, b = { .code = 4 }, c = { .code = 0 };
    asyncify_handle hs[3];
    hs[0] = submit_to(pool, gated_task, &a);
    hs[1] = submit_to(pool, gated_task, &b);
    hs[2] = submit_to(pool, gated_task, &c);

    /* None finished: TIMEOUT after about the time given; the index untouched. */
    size_t index = 99;
    int64_t t0 = now_ms();
    CHECK_EQ_STATUS(asyncify_wait_any(hs, 3, 150, &index), ASYNCIFY_TIMEOUT);
    int64_t waited = now_ms() - t0;
    CHECK(waited >= 140 && waited < 5000);
    CHECK(index == 99);
    CHECK_EQ_STATUS(asyncify_wait_any(hs, 3, 0, &index), ASYNCIFY_TIMEOUT);
    CHECK(index == 99);

    /* One finishes (a failure counts as finished) while the wait is under way. */
    gate_open(&b.gate);
    CHECK_OK(asyncify_wait_any(hs, 3, TEST_PATIENCE_MS, &index));
    CHECK(index == 1);
    CHECK_EQ_STATUS(asyncify_poll(hs[0], NULL, NULL), ASYNCIFY_PENDING);
    CHECK_EQ_STATUS(asyncify_poll(hs[2], NULL, NULL), ASYNCIFY_PENDING);
    /* Nothing was received or released: the handle still gives its status and code. */
    int32_t code = 0;
    CHECK_EQ_STATUS(asyncify_poll(hs[1], NULL, &code), ASYNCIFY_FAILED);
    CHECK(code == 4);

    /* The first terminal one in list order. */
    gate_open(&c.gate);
    wait_ok(hs[2]);
    asyncify_handle order[3] = { hs[0], hs[2], hs[1] };
    CHECK_OK(asyncify_wait_any(order, 3, -1, &index));
    CHECK(index == 1);

    /* A cancelled task is terminal too. */
    asyncify_handle only_a[1] = { hs[0] };
    CHECK_EQ_STATUS(asyncify_wait_any(only_a, 1, 50, &index), ASYNCIFY_TIMEOUT);
    CHECK_EQ_STATUS(asyncify_cancel(hs[0]), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_wait_any(only_a, 1, TEST_PATIENCE_MS, &index));
    CHECK(index == 0);
    gate_open(&a.gate);

    /* Argument checks. */
    CHECK_ERR(asyncify_wait_any(hs, 0, 0, &index), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_wait_any(NULL, 3, 0, &index), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_wait_any(hs, 3, 0, NULL), ASYNCIFY_E_NULL);
    asyncify_handle with_zero[2] = { hs[1], 0 };
    index = 99;
    CHECK_ERR(asyncify_wait_any(with_zero, 2, 0, &index), ASYNCIFY_E_INVALID_HANDLE);
    CHECK(index == 99);

    /* A stale (released) handle in the list. */
    struct gated d = { .code = 0 };
    asyncify_handle hd = submit_to(pool, gated_task, &d);
    asyncify_handle stale = hs[2];
    CHECK_OK(asyncify_release(stale));
    asyncify_handle with_stale[3] = { hd, stale, hs[1] };
    CHECK_ERR(asyncify_wait_any(with_stale, 3, 1000, &index), ASYNCIFY_E_INVALID_HANDLE);
    CHECK(index == 99);
    asyncify_handle forged[2] = { hd, hd ^ 0x5a5a000000000000ull };
    CHECK_ERR(asyncify_wait_any(forged, 2, 0, &index), ASYNCIFY_E_INVALID_HANDLE);

    gate_open(&d.gate);
    wait_ok_release(hd);
    CHECK_OK(asyncify_release(hs[0]));
    CHECK_OK(asyncify_release(hs[1]));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- asyncify_stats ------------------------------------------------------------------------------ */

static void test_stats(void)
{
    struct asyncify_pool *pool = new_pool(1);
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.limit == 1 && s.threads == 0 && s.idle_threads == 0 && s.queued == 0 && s.running == 0);
    CHECK(s.submitted == 0 && s.completed == 0 && s.failed == 0 && s.cancelled == 0 && s.abandoned == 0);

    /* 3 OK, 2 failed. */
    for (int i = 0; i < 3; i++) {
        struct gated g = { .code = 0 };
        wait_ok_release(submit_to(pool, quick_task, &g));
    }
    for (int i = 0; i < 2; i++) {
        struct gated g = { .code = 5 };
        asyncify_handle h = submit_to(pool, quick_task, &g);
        CHECK(wait_status(h, ASYNCIFY_FAILED) == 5);
        CHECK_OK(asyncify_release(h));
    }
    /* One running and two queued: the queued ones cancelled, the running one abandoned. */
    struct gated run = { .code = 0 }, q1 = { .code = 0 }, q2 = { .code = 0 };
    asyncify_handle hr = submit_to(pool, gated_task, &run);
    WAIT_FOR(atomic_load(&run.started), TEST_PATIENCE_MS);
    asyncify_handle h1 = submit_to(pool, quick_task, &q1);
    asyncify_handle h2 = submit_to(pool, quick_task, &q2);
    s = stats_of(pool);
    CHECK(s.queued == 2);
    CHECK(s.running == 1);
    CHECK(s.threads == 1);
    CHECK(s.idle_threads == 0);
    CHECK(s.submitted == 8);
    CHECK_EQ_STATUS(asyncify_cancel(h1), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_cancel(h2), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_cancel(hr), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_cancel(hr), ASYNCIFY_CANCELLED); /* twice: counted once */
    s = stats_of(pool);
    CHECK(s.queued == 0);
    gate_open(&run.gate);
    WAIT_FOR(atomic_load(&run.finished) && stats_of(pool).running == 0, TEST_PATIENCE_MS);
    WAIT_FOR(stats_of(pool).idle_threads == 1, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_release(hr));
    CHECK_OK(asyncify_release(h1));
    CHECK_OK(asyncify_release(h2));

    s = stats_of(pool);
    printf("stats: limit %u threads %u idle %u queued %" PRIu64 " running %" PRIu64 " submitted %" PRIu64
           " completed %" PRIu64 " failed %" PRIu64 " cancelled %" PRIu64 " abandoned %" PRIu64 "\n",
           s.limit, s.threads, s.idle_threads, s.queued, s.running, s.submitted, s.completed, s.failed,
           s.cancelled, s.abandoned);
    CHECK(s.limit == 1);
    CHECK(s.threads == 1);
    CHECK(s.idle_threads == 1);
    CHECK(s.queued == 0);
    CHECK(s.running == 0);
    CHECK(s.submitted == 8);
    CHECK(s.completed == 3);
    CHECK(s.failed == 2);
    CHECK(s.cancelled == 2);
    CHECK(s.abandoned == 1);

    /* A refused submit is not counted. */
    asyncify_submit_options bad = options_for(pool);
    asyncify_handle hbad = 0;
    CHECK_ERR(asyncify_submit(NULL, NULL, &bad, &hbad), ASYNCIFY_E_NULL);
    bad.flags = 0x100;
    CHECK_ERR(asyncify_submit(quick_task, NULL, &bad, &hbad), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(stats_of(pool).submitted == 8);

    /* struct_size: 0 and NULL refused; a smaller struct gets only what fits; a bigger one gets ours. */
    struct {
        asyncify_pool_stats s;
        unsigned char after[32];
    } buf;
    memset(&buf, 0xCD, sizeof buf);
    buf.s.struct_size = 0;
    CHECK_ERR(asyncify_stats(pool, &buf.s), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(buf.s.limit == 0xCDCDCDCDu);
    buf.s.struct_size = 3;
    CHECK_ERR(asyncify_stats(pool, &buf.s), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_stats(pool, NULL), ASYNCIFY_E_NULL);

    const size_t partial = offsetof(asyncify_pool_stats, queued); /* struct_size..idle_threads */
    memset(&buf, 0xCD, sizeof buf);
    buf.s.struct_size = (uint32_t)partial;
    CHECK_OK(asyncify_stats(pool, &buf.s));
    CHECK(buf.s.struct_size == partial);
    CHECK(buf.s.limit == 1);
    CHECK(buf.s.threads == 1);
    const unsigned char *bytes = (const unsigned char *)&buf;
    for (size_t i = partial; i < sizeof buf; i++) {
        CHECK(bytes[i] == 0xCD);
    }

    memset(&buf, 0xCD, sizeof buf);
    buf.s.struct_size = 4;
    CHECK_OK(asyncify_stats(pool, &buf.s));
    CHECK(buf.s.struct_size == 4);
    for (size_t i = 4; i < sizeof buf; i++) {
        CHECK(bytes[i] == 0xCD);
    }

    memset(&buf, 0xCD, sizeof buf);
    buf.s.struct_size = (uint32_t)sizeof buf;
    CHECK_OK(asyncify_stats(pool, &buf.s));
    CHECK(buf.s.struct_size == sizeof(asyncify_pool_stats));
    CHECK(buf.s.abandoned == 1);
    for (size_t i = 0; i < sizeof buf.after; i++) {
        CHECK(buf.after[i] == 0xCD);
    }

    /* NULL pool: the default pool. */
    uint32_t default_limit = 0;
    CHECK_OK(asyncify_get_max_workers(NULL, &default_limit));
    CHECK(stats_of(NULL).limit == default_limit);

    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- the scenario: three event loops, one pool of limit 2 ---------------------------------- */

#define LOOPS 3
#define TASKS_PER_LOOP 200

static atomic_int now_running;
static atomic_int max_running;
static atomic_int total_ran;

static int32_t short_task(void *arg, void **out_result)
{
    int now = atomic_fetch_add(&now_running, 1) + 1;
    int seen = atomic_load(&max_running);
    while (now > seen && !atomic_compare_exchange_weak(&max_running, &seen, now)) {
    }
    sleep_ms(1);
    atomic_fetch_add(&total_ran, 1);
    atomic_fetch_sub(&now_running, 1);
    *out_result = arg;
    return 0;
}

struct loop {
    struct asyncify_pool *pool;
    pthread_barrier_t *barrier;
    int id;
    int completions;
    int wakeups;
    int bad_records;
    int64_t ms;
};

static void *event_loop(void *arg)
{
    struct loop *l = arg;
    struct asyncify_cq *cq = NULL;
    CHECK_OK(asyncify_cq_new(&cq));
    int fd = -1;
    CHECK_OK(asyncify_cq_fd(cq, &fd));
    CHECK(fd >= 0);
    asyncify_submit_options opts = options_for(l->pool);
    opts.cq = cq;
    opts.on_done_data = l;
    static char tags[LOOPS][TASKS_PER_LOOP];

    int rc = pthread_barrier_wait(l->barrier);
    CHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD);
    int64_t t0 = now_ms();
    for (int i = 0; i < TASKS_PER_LOOP; i++) {
        (void)submit_opts(short_task, &tags[l->id][i], &opts);
    }
    asyncify_completion batch[64];
    while (l->completions < TASKS_PER_LOOP) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, TEST_PATIENCE_MS);
        CHECK(n == 1);
        CHECK(p.revents & POLLIN);
        l->wakeups++;
        size_t got = 0;
        do {
            CHECK_OK(asyncify_cq_drain(cq, batch, 64, &got));
            for (size_t i = 0; i < got; i++) {
                const char *tag = batch[i].result;
                if (batch[i].status != ASYNCIFY_OK || batch[i].user_data != l || tag == NULL ||
                    tag < &tags[l->id][0] || tag >= &tags[l->id][TASKS_PER_LOOP]) {
                    l->bad_records++;
                }
                CHECK_OK(asyncify_release(batch[i].handle));
            }
            l->completions += (int)got;
        } while (got == 64);
    }
    l->ms = now_ms() - t0;
    CHECK_OK(asyncify_cq_free(cq));
    return NULL;
}

static void test_three_loops_one_pool(void)
{
    struct asyncify_pool *pool = new_pool(2);
    pthread_barrier_t barrier;
    CHECK(pthread_barrier_init(&barrier, NULL, LOOPS) == 0);
    struct loop loops[LOOPS];
    pthread_t threads[LOOPS];
    int64_t t0 = now_ms();
    for (int i = 0; i < LOOPS; i++) {
        loops[i] = (struct loop){ .pool = pool, .barrier = &barrier, .id = i };
        threads[i] = start_thread(event_loop, &loops[i]);
    }
    for (int i = 0; i < LOOPS; i++) {
        join_thread(threads[i]);
    }
    int64_t elapsed = now_ms() - t0;
    CHECK(pthread_barrier_destroy(&barrier) == 0);
    int total = 0;
    for (int i = 0; i < LOOPS; i++) {
        printf("loop %d: %d completions in %d wake-ups, %lld ms\n", i, loops[i].completions, loops[i].wakeups,
               (long long)loops[i].ms);
        CHECK(loops[i].completions == TASKS_PER_LOOP);
        CHECK(loops[i].bad_records == 0);
        total += loops[i].completions;
    }
    printf("three loops: %d completions, max concurrency %d, %lld ms\n", total, atomic_load(&max_running),
           (long long)elapsed);
    CHECK(total == LOOPS * TASKS_PER_LOOP);
    CHECK(atomic_load(&total_ran) == LOOPS * TASKS_PER_LOOP);
    CHECK(atomic_load(&max_running) == 2);
    CHECK(elapsed < 20000);
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.submitted == LOOPS * TASKS_PER_LOOP);
    CHECK(s.completed == LOOPS * TASKS_PER_LOOP);
    CHECK(s.threads <= 2);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

int main(void)
{
    test_options_init_and_checks();
    test_max_queued();
    test_keep_alive();
    test_thread_name();
    test_release_slot_on_abandon();
    test_wait_any();
    test_stats();
    test_three_loops_one_pool();
    test_thread_hooks();
    TEST_PASS("test_pool_options");
    return 0;
}
