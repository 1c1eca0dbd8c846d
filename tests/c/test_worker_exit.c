/* A work function, thread hook, on_done or release function that ends its worker thread with
 * pthread_exit (as an embedding interpreter does to threads that try to re-enter it while it
 * finalizes) must not abort the process: the forced unwind crosses no Rust frame with anything to
 * drop. The task stays unpublished (its slot held, its handle valid, PENDING), the pool keeps serving
 * with its other workers, and the process exits normally. */
#include "test_util.h"

static atomic_int in_call;

static int32_t exits_its_thread(void *arg, void **out)
{
    (void)arg, (void)out;
    /* Something the thread's frame holds while the call runs, as an interpreter's would. */
    CHECK_OK(asyncify_override_set("inside", "yes", 3));
    atomic_fetch_add(&in_call, 1);
    pthread_exit(NULL);
}

static atomic_int stop_hooks;

static void stop_hook_exits(void *data)
{
    (void)data;
    atomic_fetch_add(&stop_hooks, 1);
    pthread_exit(NULL);
}

static atomic_int done_calls;

static void on_done_exits(void *data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)data, (void)h, (void)status, (void)result, (void)code;
    atomic_fetch_add(&done_calls, 1);
    pthread_exit(NULL);
}

static atomic_int releases;

static void release_exits(void *p)
{
    (void)p;
    atomic_fetch_add(&releases, 1);
    pthread_exit(NULL);
}

/* Sets a pointer value in the task's own table: released on the worker when the task's table is
 * dropped, after the work function returned. */
static int32_t sets_a_value_that_exits_when_released(void *arg, void **out)
{
    (void)arg, (void)out;
    static int marker;
    CHECK_OK(asyncify_override_set_ptr("exits-when-released", &marker, release_exits));
    return 0;
}

/* One task whose callback ends its worker: the process goes on, the task is never published. */
static void test_callback_ends_its_worker(const char *what, asyncify_work_fn fn, asyncify_done_fn on_done,
                                          atomic_int *calls)
{
    struct asyncify_pool *pool = new_pool(2);
    asyncify_submit_options so = options_for(pool);
    so.on_done = on_done;
    asyncify_handle h = submit_opts(fn, NULL, &so);
    WAIT_FOR(atomic_load(calls) == 1, TEST_PATIENCE_MS);
    sleep_ms(50);
    if (asyncify_poll(h, NULL, NULL) != ASYNCIFY_PENDING) {
        test_fail(__FILE__, __LINE__, "%s: the task was published after its worker ended", what);
    }
    wait_ok_release(submit_to(pool, noop_task, NULL)); /* the other slot serves */
    CHECK_EQ_STATUS(asyncify_pool_free(pool, 50), ASYNCIFY_TIMEOUT);
}

int main(void)
{
    test_callback_ends_its_worker("on_done", noop_task, on_done_exits, &done_calls);
    test_callback_ends_its_worker("release", sets_a_value_that_exits_when_released, NULL, &releases);

    struct asyncify_pool *pool = new_pool(2);
    set_str("caller", "value");
    asyncify_handle h = submit_to(pool, exits_its_thread, NULL);
    WAIT_FOR(atomic_load(&in_call) == 1, TEST_PATIENCE_MS);
    sleep_ms(50);
    asyncify_status s = asyncify_poll(h, NULL, NULL);
    CHECK(s == ASYNCIFY_PENDING);
    CHECK(stats_of(pool).running == 1);

    /* The other slot still serves. */
    wait_ok_release(submit_to(pool, noop_task, NULL));
    CHECK_EQ_STATUS(asyncify_pool_free(pool, 50), ASYNCIFY_TIMEOUT);

    /* A stop hook that ends its thread. */
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 1;
    o.on_thread_stop = stop_hook_exits;
    struct asyncify_pool *hooked = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &hooked));
    wait_ok_release(submit_to(hooked, noop_task, NULL));
    CHECK_EQ_STATUS(asyncify_pool_free(hooked, 300), ASYNCIFY_TIMEOUT);
    CHECK(atomic_load(&stop_hooks) == 1);

    CHECK(key_is("caller", "value"));
    TEST_PASS("test_worker_exit");
    return 0;
}
