/* A work function or thread hook that ends its thread with pthread_exit (as an embedding interpreter
 * does to threads that try to re-enter it while it finalizes) must not abort the process: the forced
 * unwind crosses no Rust frame with anything to drop. The task stays running (its slot held, its handle
 * valid, PENDING), the pool keeps serving with its other workers, and the process exits normally. */
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

int main(void)
{
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
