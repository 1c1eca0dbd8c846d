/* Small helpers shared by the C integration tests.
 *
 * Every check stops the program on failure with file:line, the expression and this thread's
 * asyncify_last_error() text, so a failing ctest run shows why without a debugger. Checks may be used
 * inside work functions and callbacks too: the process exits from whichever thread failed.
 */
#ifndef ASYNCIFY_TEST_UTIL_H
#define ASYNCIFY_TEST_UTIL_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asyncify.h"

/* How long a test is willing to wait for something that should happen "at once" or "soon". Generous
 * on purpose: the machines are noisy 2-core VMs and sanitizers slow everything down. */
#define TEST_PATIENCE_MS 10000

static inline void test_last_error_text(char *out, size_t cap)
{
    size_t len = 0;
    asyncify_status s = asyncify_last_error(out, cap, &len);
    if (s == ASYNCIFY_E_BUFFER_TOO_SMALL) {
        snprintf(out, cap, "(a message of %zu bytes, too long to show)", len);
    } else if (s < 0) {
        snprintf(out, cap, "(asyncify_last_error itself returned %d)", (int)s);
    }
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4), noreturn))
#endif
static inline void
test_fail(const char *file, int line, const char *fmt, ...)
{
    char last[1024] = "";
    test_last_error_text(last, sizeof last);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  asyncify_last_error on this thread: \"%s\"\n", last);
    fflush(stderr);
    fflush(stdout);
    /* _Exit rather than exit: a failing check may run on a worker thread while other threads are still
     * inside the library; skipping atexit handlers keeps the failure from turning into a hang. */
    _Exit(1);
}

#define CHECK(cond)                                            \
    do {                                                       \
        if (!(cond)) {                                         \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
        }                                                      \
    } while (0)

#define CHECK_EQ_STATUS(expr, expected)                                                                     \
    do {                                                                                                    \
        asyncify_status got_status_ = (expr);                                                               \
        asyncify_status want_status_ = (expected);                                                          \
        if (got_status_ != want_status_) {                                                                  \
            test_fail(__FILE__, __LINE__, "%s returned %d (%s), expected %d (%s)", #expr, (int)got_status_, \
                      asyncify_status_str(got_status_), (int)want_status_,                                  \
                      asyncify_status_str(want_status_));                                                   \
        }                                                                                                   \
    } while (0)

#define CHECK_OK(expr) CHECK_EQ_STATUS(expr, ASYNCIFY_OK)

/* Asserts that `cond` becomes true within `timeout_ms`, polling every millisecond. */
#define WAIT_FOR(cond, timeout_ms)                                                      \
    do {                                                                                \
        int64_t wait_deadline_ = now_ms() + (int64_t)(timeout_ms);                      \
        while (!(cond)) {                                                               \
            if (now_ms() > wait_deadline_) {                                            \
                test_fail(__FILE__, __LINE__, "timed out after %lld ms waiting for %s", \
                          (long long)(timeout_ms), #cond);                              \
            }                                                                           \
            sleep_ms(1);                                                                \
        }                                                                               \
    } while (0)

#define TEST_PASS(name)            \
    do {                           \
        printf("PASS %s\n", name); \
        fflush(stdout);            \
    } while (0)

/* A work function that does nothing and succeeds. */
static inline int32_t noop_task(void *arg, void **out_result)
{
    (void)arg;
    (void)out_result;
    return 0;
}

static inline int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* CPU time used by the whole process, in milliseconds. */
static inline double process_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* A one-shot gate: tasks block in gate_wait until the test calls gate_open. Bounded, so a library that
 * never runs or never releases a task fails the test instead of hanging it. */
static inline void gate_wait(atomic_int *gate)
{
    WAIT_FOR(atomic_load(gate) != 0, TEST_PATIENCE_MS);
}

static inline void gate_open(atomic_int *gate)
{
    atomic_store(gate, 1);
}

static inline pthread_t start_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fn, arg) == 0);
    return t;
}

static inline void join_thread(pthread_t t)
{
    CHECK(pthread_join(t, NULL) == 0);
}

static inline struct asyncify_pool *new_pool(uint32_t max_workers)
{
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new(max_workers, &pool));
    CHECK(pool != NULL);
    return pool;
}

#ifdef ASYNCIFY_POOL_RECORD_LATENCY /* not in the frozen 0.1 header test_compat_0_1 builds with */
/* A pool of `max_workers` that records queue wait and run time (ASYNCIFY_POOL_RECORD_LATENCY). */
static inline struct asyncify_pool *new_recording_pool(uint32_t max_workers)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = max_workers;
    o.flags = ASYNCIFY_POOL_RECORD_LATENCY;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));
    return pool;
}
#endif

static inline asyncify_submit_options options_for(struct asyncify_pool *pool)
{
    asyncify_submit_options opts;
    memset(&opts, 0, sizeof opts);
    CHECK_OK(asyncify_submit_options_init(&opts, sizeof opts));
    opts.pool = pool;
    return opts;
}

static inline asyncify_handle submit_opts(asyncify_work_fn fn, void *arg, const asyncify_submit_options *opts)
{
    asyncify_handle h = 0;
    CHECK_OK(asyncify_submit(fn, arg, opts, &h));
    CHECK(h != 0);
    return h;
}

/* A pool's stats (NULL: the default pool), checked to be filled at this header's size. */
static inline asyncify_pool_stats stats_of(struct asyncify_pool *pool)
{
    asyncify_pool_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(asyncify_stats(pool, &s));
    CHECK(s.struct_size == sizeof s);
    return s;
}

static inline asyncify_handle submit_to(struct asyncify_pool *pool, asyncify_work_fn fn, void *arg)
{
    asyncify_submit_options opts = options_for(pool);
    return submit_opts(fn, arg, &opts);
}

/* Waits (bounded) for a task and checks its status; returns the work function's code. */
static inline int32_t wait_status(asyncify_handle h, asyncify_status expected)
{
    int32_t code = -12345;
    CHECK_EQ_STATUS(asyncify_wait(h, TEST_PATIENCE_MS, NULL, &code), expected);
    return code;
}

static inline void wait_ok(asyncify_handle h)
{
    CHECK(wait_status(h, ASYNCIFY_OK) == 0);
}

static inline void wait_ok_release(asyncify_handle h)
{
    wait_ok(h);
    CHECK_OK(asyncify_release(h));
}

/* True when this thread's table holds `key` as exactly the bytes of the string `expected` (no NUL). */
static inline bool key_is(const char *key, const char *expected)
{
    char buf[256];
    size_t len = 0;
    if (asyncify_override_get(key, buf, sizeof buf, &len) != ASYNCIFY_OK) {
        return false;
    }
    return len == strlen(expected) && memcmp(buf, expected, len) == 0;
}

static inline bool key_absent(const char *key)
{
    size_t len = 0;
    return asyncify_override_get(key, NULL, 0, &len) == ASYNCIFY_E_NOT_FOUND;
}

static inline void set_str(const char *key, const char *value)
{
    CHECK_OK(asyncify_override_set(key, value, strlen(value)));
}

static inline size_t table_count(void)
{
    size_t n = (size_t)-1;
    CHECK_OK(asyncify_override_count(&n));
    return n;
}

/* The size of this thread's last error message (terminator included); 1 when it is empty. */
static inline size_t last_error_size(void)
{
    size_t n = 0;
    asyncify_status s = asyncify_last_error(NULL, 0, &n);
    CHECK(s == ASYNCIFY_OK || s == ASYNCIFY_E_BUFFER_TOO_SMALL);
    return n;
}

/* An error status, with a non-empty message for asyncify_last_error. */
#define CHECK_ERR(expr, expected)        \
    do {                                 \
        CHECK_EQ_STATUS(expr, expected); \
        CHECK(last_error_size() > 1);    \
    } while (0)

#ifdef _GNU_SOURCE
/* The stack size of the calling thread. */
static inline size_t this_thread_stack_size(void)
{
    pthread_attr_t attr;
    size_t size = 0;
    CHECK(pthread_getattr_np(pthread_self(), &attr) == 0);
    CHECK(pthread_attr_getstacksize(&attr, &size) == 0);
    pthread_attr_destroy(&attr);
    return size;
}

/* What pthread_create gives a thread started without attributes (on glibc: RLIMIT_STACK). */
static inline size_t default_thread_stack_size(void)
{
    pthread_attr_t attr;
    size_t size = 0;
    CHECK(pthread_attr_init(&attr) == 0);
    CHECK(pthread_attr_getstacksize(&attr, &size) == 0);
    pthread_attr_destroy(&attr);
    return size;
}

/* A work function that writes its thread's stack size to *(size_t *)arg. */
static inline int32_t report_stack_size(void *arg, void **out)
{
    (void)out;
    *(size_t *)arg = this_thread_stack_size();
    return 0;
}
#endif

#endif /* ASYNCIFY_TEST_UTIL_H */
