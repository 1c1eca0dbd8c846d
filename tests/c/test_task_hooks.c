/* on_task_start and on_task_end: called on the worker around each work function, with the task's table
 * installed (so the submitter's trace id is there), the status the task gets (OK, FAILED, or CANCELLED for an
 * abandoned one), its queue wait and run time; the end hook comes before on_done; inline runs are hooked too.
 */
#include "test_util.h"

struct seen {
    atomic_int starts, ends, ok, failed, cancelled, pending_at_start, trace_seen, before_done;
    atomic_uint_fast64_t max_run_ns;
};

static struct seen seen;
static atomic_int done_calls;

static void on_start(void *data, asyncify_handle h, asyncify_status status, uint64_t queue_wait_ns,
                     uint64_t run_ns)
{
    (void)h, (void)queue_wait_ns;
    CHECK(data == &seen);
    atomic_fetch_add(&seen.starts, 1);
    if (status == ASYNCIFY_PENDING && run_ns == 0) {
        atomic_fetch_add(&seen.pending_at_start, 1);
    }
    if (key_is("trace", "t-1")) {
        atomic_fetch_add(&seen.trace_seen, 1);
    }
}

static void on_end(void *data, asyncify_handle h, asyncify_status status, uint64_t queue_wait_ns,
                   uint64_t run_ns)
{
    (void)h, (void)queue_wait_ns;
    CHECK(data == &seen);
    atomic_fetch_add(&seen.ends, 1);
    atomic_fetch_add(status == ASYNCIFY_OK       ? &seen.ok
                     : status == ASYNCIFY_FAILED ? &seen.failed
                                                 : &seen.cancelled,
                     1);
    if (key_is("trace", "t-1") && key_is("set-in-task", "yes")) {
        atomic_fetch_add(&seen.trace_seen, 1);
    }
    if (status != ASYNCIFY_CANCELLED && atomic_load(&done_calls) == 0) {
        atomic_fetch_add(&seen.before_done, 1);
    }
    if (run_ns > atomic_load(&seen.max_run_ns)) {
        atomic_store(&seen.max_run_ns, run_ns);
    }
}

static void count_done(void *data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)data, (void)h, (void)status, (void)result, (void)code;
    atomic_fetch_add(&done_calls, 1);
}

static atomic_int gate;
static atomic_int running;

static int32_t sets_and_sleeps(void *arg, void **out)
{
    (void)out;
    set_str("set-in-task", "yes");
    atomic_store(&running, 1);
    if (arg != NULL) {
        gate_wait(&gate);
    } else {
        sleep_ms(20);
    }
    return 0;
}

static int32_t fails(void *arg, void **out)
{
    (void)arg, (void)out;
    set_str("set-in-task", "yes");
    return 7;
}

static struct asyncify_pool *hooked_pool(void)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 1;
    o.on_task_start = on_start;
    o.on_task_end = on_end;
    o.hook_data = &seen;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));
    return pool;
}

static struct asyncify_pool *inline_pool;
static int32_t waits_for_a_queued_task(void *arg, void **out)
{
    (void)arg, (void)out;
    asyncify_handle inner = submit_to(inline_pool, fails, NULL); /* queued behind this one: runs inline */
    wait_status(inner, ASYNCIFY_FAILED);
    CHECK_OK(asyncify_release(inner));
    return 0;
}

int main(void)
{
    struct asyncify_pool *pool = hooked_pool();
    set_str("trace", "t-1");
    asyncify_submit_options so = options_for(pool);
    so.on_done = count_done;

    asyncify_handle ok = submit_opts(sets_and_sleeps, NULL, &so);
    wait_ok_release(ok);
    asyncify_handle failed = submit_opts(fails, NULL, &so);
    CHECK(wait_status(failed, ASYNCIFY_FAILED) == 7);
    CHECK_OK(asyncify_release(failed));

    /* Abandoned: cancelled while running; its end hook says CANCELLED when the function returns. */
    atomic_store(&running, 0);
    asyncify_handle abandoned = submit_to(pool, sets_and_sleeps, (void *)1);
    WAIT_FOR(atomic_load(&running) == 1, TEST_PATIENCE_MS);
    CHECK_EQ_STATUS(asyncify_cancel(abandoned), ASYNCIFY_CANCELLED);
    gate_open(&gate);
    WAIT_FOR(atomic_load(&seen.ends) == 3, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_release(abandoned));
    CHECK_OK(asyncify_pool_free(pool, -1));

    CHECK(atomic_load(&seen.starts) == 3 && atomic_load(&seen.pending_at_start) == 3);
    CHECK(atomic_load(&seen.ok) == 1 && atomic_load(&seen.failed) == 1 && atomic_load(&seen.cancelled) == 1);
    CHECK(atomic_load(&seen.trace_seen) == 6); /* every hook saw the submitter's table (and the task's) */
    CHECK(atomic_load(&seen.before_done) >= 1);
    CHECK(atomic_load(&seen.max_run_ns) >= 19000000u);
    CHECK(key_is("trace", "t-1") && key_absent("set-in-task"));

    /* A task run inline by a waiting worker of its pool is hooked too. */
    memset(&seen, 0, sizeof seen);
    inline_pool = hooked_pool();
    wait_ok_release(submit_to(inline_pool, waits_for_a_queued_task, NULL));
    CHECK_OK(asyncify_pool_free(inline_pool, -1));
    CHECK(atomic_load(&seen.starts) == 2 && atomic_load(&seen.ends) == 2);
    CHECK(atomic_load(&seen.ok) == 1 && atomic_load(&seen.failed) == 1);

    TEST_PASS("test_task_hooks");
    return 0;
}
