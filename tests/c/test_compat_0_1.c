/* Built against the 0.1 header (compat/0.1/asyncify.h comes first on the include path), run against
 * this library: the 0.1 sizes of the versioned structs are accepted, and the fields they lack take
 * their defaults (here: the worker stack size follows the platform's default). */
#define _GNU_SOURCE
#include "test_util.h"

#if ASYNCIFY_VERSION_MINOR != 1
#error "this test must be compiled against the 0.1 header"
#endif

static void on_done_count(void *data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)h, (void)result, (void)code;
    CHECK(status == ASYNCIFY_OK);
    atomic_fetch_add((atomic_int *)data, 1);
}

int main(void)
{
    asyncify_pool_options o;
    memset(&o, 0xAB, sizeof o);
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    CHECK(o.struct_size == sizeof o && o.max_workers == 8);
    o.max_workers = 2;
    o.thread_name = "compat";
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));

    set_str("model", "m-0.1");
    static atomic_int done;
    size_t stack = 0;
    asyncify_submit_options so;
    CHECK_OK(asyncify_submit_options_init(&so, sizeof so));
    so.pool = pool;
    so.on_done = on_done_count;
    so.on_done_data = &done;
    asyncify_handle h = 0;
    CHECK_OK(asyncify_submit(report_stack_size, &stack, &so, &h));
    wait_ok_release(h);
    CHECK(atomic_load(&done) == 1);

    size_t platform = default_thread_stack_size();
    CHECK(stack >= platform);

    asyncify_pool_stats s = stats_of(pool);
    CHECK(s.submitted == 1 && s.completed == 1);

    /* One byte short of the 0.1 layout is still refused, with a message. */
    o.struct_size = (uint32_t)sizeof o - 1;
    struct asyncify_pool *refused = NULL;
    CHECK_ERR(asyncify_pool_new_ex(&o, &refused), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(refused == NULL);

    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("test_compat_0_1");
    return 0;
}
