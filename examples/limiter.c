/*
 * examples/limiter.c - a cap and a rate per model, a start deadline, and the
 * time work spent queued.
 *
 * Two "models" share one pool of 8 workers. Calls to "big" go through a
 * limiter of at most 2 at once and at most 10 starts a second; calls to
 * "small" through one of at most 4 at once. Each call states which model it
 * uses in the override table, so the work function sees it. Calls that
 * cannot start within 400 ms expire instead of running late. At the end the
 * program reads how long the calls waited (the pool and each limiter record
 * queue wait and run time).
 *
 * Build and run:  make demo
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncify.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                                          \
    do {                                                                                                     \
        asyncify_status st_ = (call);                                                                        \
        if (st_ != ASYNCIFY_OK) {                                                                            \
            char msg_[256] = "";                                                                             \
            asyncify_last_error(msg_, sizeof msg_, NULL);                                                    \
            fprintf(stderr, "limiter.c:%d: %s: %s (%s)\n", __LINE__, #call, asyncify_status_str(st_), msg_); \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* A model call: 50 ms of "inference". */
static int32_t call_model(void *arg, void **out)
{
    (void)arg, (void)out;
    sleep_ms(50);
    return 0;
}

static atomic_int done, by_status[8];

static void on_done(void *data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    (void)data, (void)h, (void)result, (void)code;
    atomic_fetch_add(&by_status[status], 1);
    atomic_fetch_add(&done, 1);
}

static struct asyncify_limiter *limiter_for(const char *model, uint32_t max_running, double rate)
{
    asyncify_limiter_options o;
    CHECK(asyncify_limiter_options_init(&o, sizeof o));
    o.max_running = max_running; /* at most this many calls at once, on any pool */
    o.rate_per_s = rate; /* and at most this many starts a second (0: no rate cap) */
    o.burst = 1;
    o.name = model;
    struct asyncify_limiter *lim = NULL;
    CHECK(asyncify_limiter_new(&o, &lim));
    return lim;
}

static void print_latency(const char *what, asyncify_latency l)
{
    printf("  %-22s %2llu calls, queue wait p50 %5.1f ms, p90 %5.1f ms, max %5.1f ms\n", what,
           (unsigned long long)l.count, l.p50_ns / 1e6, l.p90_ns / 1e6, l.max_ns / 1e6);
}

int main(void)
{
    asyncify_pool_options po;
    CHECK(asyncify_pool_options_init(&po, sizeof po));
    po.max_workers = 8;
    po.flags = ASYNCIFY_POOL_RECORD_LATENCY;
    struct asyncify_pool *pool = NULL;
    CHECK(asyncify_pool_new_ex(&po, &pool));

    struct asyncify_limiter *big = limiter_for("big", 2, 10.0);
    struct asyncify_limiter *small = limiter_for("small", 4, 0.0);

    /* 10 calls to each model, submitted at once. */
    for (int i = 0; i < 20; i++) {
        const char *model = i % 2 ? "small" : "big";
        CHECK(asyncify_override_set("model", model, strlen(model)));
        asyncify_submit_options opts;
        CHECK(asyncify_submit_options_init(&opts, sizeof opts));
        opts.pool = pool;
        opts.limiter = i % 2 ? small : big;
        opts.start_within_ms = 400; /* not started by then: ASYNCIFY_EXPIRED, never runs */
        opts.flags = ASYNCIFY_SUBMIT_DETACHED;
        opts.on_done = on_done;
        CHECK(asyncify_submit(call_model, NULL, &opts, NULL));
    }
    while (atomic_load(&done) < 20) {
        sleep_ms(10);
    }
    printf("20 calls: %d ran, %d expired (big starts at most 10/s, so some of its calls could not start "
           "within 400 ms)\n",
           atomic_load(&by_status[ASYNCIFY_OK]), atomic_load(&by_status[ASYNCIFY_EXPIRED]));

    asyncify_latency l = { .struct_size = sizeof l };
    CHECK(asyncify_pool_latency(pool, ASYNCIFY_LATENCY_QUEUE_WAIT, &l));
    print_latency("the pool:", l);
    CHECK(asyncify_limiter_latency(big, ASYNCIFY_LATENCY_QUEUE_WAIT, &l));
    print_latency("calls to \"big\":", l);
    CHECK(asyncify_limiter_latency(small, ASYNCIFY_LATENCY_QUEUE_WAIT, &l));
    print_latency("calls to \"small\":", l);
    asyncify_limiter_stats s = { .struct_size = sizeof s };
    CHECK(asyncify_limiter_stats_get(big, &s));
    printf("  \"big\": %llu admitted, %llu expired while waiting for it\n", (unsigned long long)s.admitted,
           (unsigned long long)s.expired);

    CHECK(asyncify_limiter_free(big));
    CHECK(asyncify_limiter_free(small));
    CHECK(asyncify_pool_free(pool, -1));
    return 0;
}
