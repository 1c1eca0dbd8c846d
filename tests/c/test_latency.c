/* Latency you can see: a pool made with ASYNCIFY_POOL_RECORD_LATENCY records each task's queue wait and run
 * time. One worker and 10 tasks of 20 ms: the queue waits are about 0, 20, ..., 180 ms (median about
 * 90 ms) and the runs about 20 ms, within the histogram's error plus generous scheduling slack. */
#include <stddef.h>

#include "test_util.h"

static int32_t sleep_20ms(void *arg, void **out)
{
    (void)arg, (void)out;
    sleep_ms(20);
    return 0;
}

static asyncify_latency latency_of(struct asyncify_pool *pool, uint32_t which)
{
    asyncify_latency l;
    memset(&l, 0, sizeof l);
    l.struct_size = sizeof l;
    CHECK_OK(asyncify_pool_latency(pool, which, &l));
    CHECK(l.struct_size == sizeof l);
    return l;
}

int main(void)
{
    struct asyncify_pool *pool = new_recording_pool(1);

    asyncify_latency empty = latency_of(pool, ASYNCIFY_LATENCY_QUEUE_WAIT);
    CHECK(empty.count == 0 && empty.p50_ns == 0 && empty.max_ns == 0);

    asyncify_handle hs[10];
    for (int i = 0; i < 10; i++) {
        hs[i] = submit_to(pool, sleep_20ms, NULL);
    }
    for (int i = 0; i < 10; i++) {
        wait_ok_release(hs[i]);
    }
    asyncify_latency wait = latency_of(pool, ASYNCIFY_LATENCY_QUEUE_WAIT);
    asyncify_latency run = latency_of(pool, ASYNCIFY_LATENCY_RUN);
    printf("queue wait: count %" PRIu64 ", p50 %.1f ms, p90 %.1f ms, max %.1f ms\n", wait.count,
           wait.p50_ns / 1e6, wait.p90_ns / 1e6, wait.max_ns / 1e6);
    printf("run: count %" PRIu64 ", p50 %.1f ms, p99 %.1f ms, sum %.1f ms\n", run.count, run.p50_ns / 1e6,
           run.p99_ns / 1e6, run.sum_ns / 1e6);
    CHECK(wait.count == 10 && run.count == 10);
    CHECK(wait.p50_ns >= 60000000 && wait.p50_ns <= 400000000);
    CHECK(wait.p90_ns >= wait.p50_ns && wait.max_ns >= wait.p90_ns);
    CHECK(run.p50_ns >= 19000000 && run.p50_ns <= 200000000);
    CHECK(run.sum_ns >= 10 * 19000000ull);
    CHECK(run.max_ns >= run.p99_ns);

    /* A caller built with a shorter struct gets the fields it knows. */
    asyncify_latency short_one;
    memset(&short_one, 0xAB, sizeof short_one);
    short_one.struct_size = offsetof(asyncify_latency, p50_ns);
    CHECK_OK(asyncify_pool_latency(pool, ASYNCIFY_LATENCY_RUN, &short_one));
    CHECK(short_one.struct_size == offsetof(asyncify_latency, p50_ns) && short_one.count == 10);
    CHECK(short_one.p50_ns == 0xABABABABABABABABull);

    CHECK_ERR(asyncify_pool_latency(pool, 3, &short_one), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_pool_latency(pool, ASYNCIFY_LATENCY_RUN, NULL), ASYNCIFY_E_NULL);
    short_one.struct_size = 2;
    CHECK_ERR(asyncify_pool_latency(pool, ASYNCIFY_LATENCY_RUN, &short_one), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* A task's start is read when a worker takes it, never earlier: a worker that found the queue empty and
     * then sat idle for 300 ms reads the next task's start afresh, so that task's run time is not the idle
     * time, nor its queue wait 0 by a start read before its submit. */
    struct asyncify_pool *idle = new_recording_pool(1);
    wait_ok_release(submit_to(idle, noop_task, NULL));
    asyncify_latency run1 = latency_of(idle, ASYNCIFY_LATENCY_RUN);
    asyncify_latency wait1 = latency_of(idle, ASYNCIFY_LATENCY_QUEUE_WAIT);
    sleep_ms(300);
    wait_ok_release(submit_to(idle, noop_task, NULL));
    asyncify_latency run2 = latency_of(idle, ASYNCIFY_LATENCY_RUN);
    asyncify_latency wait2 = latency_of(idle, ASYNCIFY_LATENCY_QUEUE_WAIT);
    CHECK(run1.count == 1 && run2.count == 2 && wait2.count == 2);
    printf("after 300 ms idle: run %.3f ms, queue wait %.3f ms\n", (run2.sum_ns - run1.sum_ns) / 1e6,
           (wait2.sum_ns - wait1.sum_ns) / 1e6);
    CHECK(run2.sum_ns - run1.sum_ns < 150000000);
    CHECK(wait2.sum_ns > wait1.sum_ns);
    CHECK_OK(asyncify_pool_free(idle, -1));

    /* A pool that does not record says so. */
    struct asyncify_pool *plain = new_pool(1);
    asyncify_latency none;
    none.struct_size = sizeof none;
    CHECK_ERR(asyncify_pool_latency(plain, ASYNCIFY_LATENCY_RUN, &none), ASYNCIFY_E_NOT_FOUND);
    CHECK_OK(asyncify_pool_free(plain, -1));
    TEST_PASS("test_latency");
    return 0;
}
