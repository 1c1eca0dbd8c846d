/* Worker threads: their stack size, what happens to a worker's own table before its stop hook,
 * asyncify_pool_close, and shutdown joining every worker (this test also runs under valgrind with no
 * suppression file and possible leaks counted as errors: a worker left unjoined would show). */
#define _GNU_SOURCE
#include <limits.h>
#include <sys/resource.h>

#include "test_util.h"

static struct asyncify_pool *pool_with_stack(size_t stack_size)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 1;
    o.stack_size = stack_size;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));
    return pool;
}

static size_t stack_size_on(struct asyncify_pool *pool)
{
    size_t size = 0;
    wait_ok_release(submit_to(pool, report_stack_size, &size));
    return size;
}

static void test_stack_size(void)
{
    /* 0 (the default) is what pthread_create gives a thread without attributes: on glibc it follows
     * RLIMIT_STACK (8 MiB on most systems), not Rust's 2 MiB. */
    size_t platform = default_thread_stack_size();
    struct asyncify_pool *pool = pool_with_stack(0);
    size_t got = stack_size_on(pool);
    CHECK(got >= platform && got <= platform + 64 * 1024);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* The default pool too. */
    size_t on_default = 0;
    wait_ok_release(submit_to(NULL, report_stack_size, &on_default));
    CHECK(on_default >= platform && on_default <= platform + 64 * 1024);

    pool = pool_with_stack(16u << 20);
    got = stack_size_on(pool);
    CHECK(got >= (16u << 20) && got <= (16u << 20) + 64 * 1024);
    CHECK_OK(asyncify_pool_free(pool, -1));

    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.stack_size = PTHREAD_STACK_MIN - 1;
    struct asyncify_pool *refused = (struct asyncify_pool *)&o;
    CHECK_ERR(asyncify_pool_new_ex(&o, &refused), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(refused == (struct asyncify_pool *)&o);
}

/* A worker's own table: an on_done callback (which runs on the worker, outside any task) sets a
 * pointer value; its release function must have run when the stop hook runs. */
static atomic_int released;
static atomic_int released_before_stop = -1;

static void release_marker(void *p)
{
    (void)p;
    atomic_store(&released, 1);
}

static void on_done_sets_own_value(void *data, asyncify_handle h, asyncify_status status, void *result,
                                   int32_t code)
{
    (void)h, (void)result, (void)code;
    CHECK(status == ASYNCIFY_OK); /* so on the worker, after the task */
    static int marker;
    CHECK_OK(asyncify_override_set_ptr("worker-own", &marker, release_marker));
    atomic_store((atomic_int *)data, 1);
}

static void stop_hook(void *data)
{
    (void)data;
    atomic_store(&released_before_stop, atomic_load(&released));
}

static void test_own_table_cleared_before_stop_hook(void)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 1;
    o.on_thread_stop = stop_hook;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));
    asyncify_submit_options so = options_for(pool);
    static atomic_int done;
    so.on_done = on_done_sets_own_value;
    so.on_done_data = &done;
    so.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_OK(asyncify_submit(noop_task, NULL, &so, NULL));
    WAIT_FOR(atomic_load(&done) == 1, TEST_PATIENCE_MS);
    CHECK(atomic_load(&released) == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&released_before_stop) == 1);
}

static atomic_int gate;

static int32_t wait_for_gate(void *arg, void **out)
{
    (void)arg, (void)out;
    gate_wait(&gate);
    return 0;
}

struct close_from_worker {
    struct asyncify_pool *pool;
    asyncify_status got;
};

static int32_t close_own_pool(void *arg, void **out)
{
    (void)out;
    struct close_from_worker *c = arg;
    c->got = asyncify_pool_close(c->pool, 0);
    return 0;
}

static void test_pool_close(void)
{
    struct asyncify_pool *pool = new_pool(2);
    asyncify_handle running = submit_to(pool, wait_for_gate, NULL);
    WAIT_FOR(stats_of(pool).running == 1, TEST_PATIENCE_MS);

    struct close_from_worker c = { pool, 0 };
    asyncify_handle from_worker = submit_to(pool, close_own_pool, &c);
    wait_ok_release(from_worker);
    CHECK(c.got == ASYNCIFY_E_WOULD_DEADLOCK);

    /* Waits in slices without consuming the pool: each slice times out while the task runs. */
    CHECK_EQ_STATUS(asyncify_pool_close(pool, 0), ASYNCIFY_TIMEOUT);
    CHECK_EQ_STATUS(asyncify_pool_close(pool, 20), ASYNCIFY_TIMEOUT);
    asyncify_handle refused = 0;
    CHECK_ERR(asyncify_submit(noop_task, NULL, &(asyncify_submit_options){ .struct_size = 0 }, &refused),
              ASYNCIFY_E_INVALID_ARGUMENT);
    asyncify_submit_options so = options_for(pool);
    CHECK_ERR(asyncify_submit(noop_task, NULL, &so, &refused), ASYNCIFY_E_SHUT_DOWN);
    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.running == 1);

    gate_open(&gate);
    int64_t start = now_ms();
    while (asyncify_pool_close(pool, 10) == ASYNCIFY_TIMEOUT) {
        CHECK(now_ms() - start < TEST_PATIENCE_MS);
    }
    s = stats_of(pool);
    CHECK(s.running == 0 && s.threads == 0);
    CHECK_OK(asyncify_pool_close(pool, 0)); /* again: still OK */
    wait_ok_release(running);
    start = now_ms();
    CHECK_OK(asyncify_pool_free(pool, 0)); /* frees at once */
    CHECK(now_ms() - start < 1000);
    CHECK_ERR(asyncify_pool_close(NULL, 0), ASYNCIFY_E_NULL);
}

/* Workers that left on keep-alive are joined by later starts; shutdown joins the rest. Under valgrind
 * (no suppressions, possible leaks fatal) an unjoined thread's stack and control block would show. */
static void test_keep_alive_workers_are_joined(void)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 4;
    o.keep_alive_ms = 5;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));
    for (int round = 0; round < 5; round++) {
        asyncify_handle hs[4];
        for (int i = 0; i < 4; i++) {
            hs[i] = submit_to(pool, noop_task, NULL);
        }
        for (int i = 0; i < 4; i++) {
            wait_ok_release(hs[i]);
        }
        WAIT_FOR(stats_of(pool).threads == 0, TEST_PATIENCE_MS);
    }
    CHECK_OK(asyncify_pool_free(pool, -1));
}

int main(void)
{
    test_stack_size();
    test_own_table_cleared_before_stop_hook();
    test_pool_close();
    test_keep_alive_workers_are_joined();
    CHECK_OK(asyncify_shutdown(-1));
    TEST_PASS("test_workers");
    return 0;
}
