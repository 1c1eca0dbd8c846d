/*
 * examples/demo.c - a guided tour of asyncify's C API.
 *
 * asyncify runs blocking work on a bounded pool of worker threads and carries
 * the caller's per-thread "override table" (key -> bytes or pointer) along:
 * at submit time the caller's table is snapshotted, and the task runs with
 * that snapshot installed on the worker thread.
 *
 * What the demo shows, one numbered section each:
 *   1. overrides: bytes values ("model", "trace_id") and an opaque pointer
 *      value with a release function that the library calls exactly once;
 *   2. 16 tasks on an 8-worker pool: each task sees its submitter's table as
 *      it was at submit time, and at most 8 run at once;
 *   3. cancellation: a queued task never runs; a running task is abandoned
 *      and can stop early by checking asyncify_cancel_requested();
 *   4. polling a task until it is done, then taking its result (once);
 *   5. an on_done callback, run on the worker with its own table restored;
 *   6. error handling: status names and asyncify_last_error();
 *   7. clean shutdown.
 *
 * Every call is checked: if the library misbehaves the demo says so and
 * exits with status 1.
 *
 * Build and run:  make demo
 */
#define _POSIX_C_SOURCE 200809L

#include <asyncify.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

/* Prints a failed call with the library's status name and message, exits 1. */
static void fail_call(const char *what, asyncify_status got, asyncify_status want, int line)
{
    char msg[256] = "";
    asyncify_last_error(msg, sizeof msg, NULL); /* this thread's last error */
    fprintf(stderr,
            "demo.c:%d: %s\n  returned %d (%s), expected %d (%s)\n"
            "  asyncify_last_error: \"%s\"\n",
            line, what, got, asyncify_status_str(got), want, asyncify_status_str(want), msg);
    exit(1);
}

/* EXPECT(call, status): the call must return exactly that status. */
#define EXPECT(call, want)                           \
    do {                                             \
        asyncify_status st_ = (call);                \
        if (st_ != (want))                           \
            fail_call(#call, st_, (want), __LINE__); \
    } while (0)

/* CHECK(call): the call must succeed with ASYNCIFY_OK. */
#define CHECK(call) EXPECT(call, ASYNCIFY_OK)

/* DEMO_ASSERT(cond): a property the demo relies on must hold. */
#define DEMO_ASSERT(cond)                                                 \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "demo.c:%d: expected %s\n", __LINE__, #cond); \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) { /* resume after a signal */
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Waits (bounded) until *flag reaches want; false on timeout. */
static bool wait_for(atomic_int *flag, int want, long timeout_ms)
{
    for (long waited = 0; atomic_load(flag) < want; waited++) {
        if (waited >= timeout_ms)
            return false;
        sleep_ms(1);
    }
    return true;
}

/* A small number per thread, for printing: main sets 0, workers get 1, 2, ... */
static _Thread_local int thread_no = -1;
static atomic_int next_thread_no = 1;
static int this_thread(void)
{
    if (thread_no < 0)
        thread_no = atomic_fetch_add(&next_thread_no, 1);
    return thread_no;
}

/* Reads a bytes override as a NUL-terminated string ("" if unset). */
static void get_string(const char *key, char *buf, size_t cap)
{
    size_t len = 0;
    asyncify_status st = asyncify_override_get(key, buf, cap - 1, &len);
    if (st == ASYNCIFY_E_NOT_FOUND)
        len = 0;
    else if (st != ASYNCIFY_OK)
        fail_call("asyncify_override_get", st, ASYNCIFY_OK, __LINE__);
    buf[len] = '\0';
}

/* ------------------------------------------------------------------------ */
/* 1. The shared config: an opaque pointer value                             */
/* ------------------------------------------------------------------------ */

struct config {
    const char *name;
    int retries;
};

static atomic_int config_releases;
static atomic_int running_now, running_max; /* tasks of section 2 in their sleep */

/* The release function: the library calls it once, when no table or task
   holds the pointer any more. */
static void config_release(void *ptr)
{
    struct config *cfg = ptr;
    int n = atomic_fetch_add(&config_releases, 1) + 1;
    printf("  [config_release] \"%s\" released (call #%d) on %s thread %d, "
           "%d task(s) still running\n",
           cfg->name, n, this_thread() == 0 ? "main" : "worker", this_thread(), atomic_load(&running_now));
    free(cfg);
}

/* ------------------------------------------------------------------------ */
/* 2. A batch of tasks that record what they saw                             */
/* ------------------------------------------------------------------------ */

enum { BATCH = 16, WIDTH = 8, TASK_MS = 100 };

struct seen { /* one per task, filled in by the task */
    char model[32];
    unsigned char trace[8];
    size_t trace_len;
    const void *cfg; /* the pointer the task got */
    char cfg_name[32]; /* read through it while the task ran */
    int thread;
    double start_ms;
};

static struct seen seen[BATCH];
static double batch_t0;

static int32_t batch_task(void *arg, void **out_result)
{
    struct seen *s = arg;
    (void)out_result;

    /* Read the overrides: this is the submitter's table, as of submit time. */
    get_string("model", s->model, sizeof s->model);
    CHECK(asyncify_override_get("trace_id", s->trace, sizeof s->trace, &s->trace_len));
    void *cfg = NULL;
    CHECK(asyncify_override_get_ptr("config", &cfg));
    s->cfg = cfg;
    snprintf(s->cfg_name, sizeof s->cfg_name, "%s", ((struct config *)cfg)->name);
    s->thread = this_thread();
    s->start_ms = now_ms() - batch_t0;

    /* Count how many tasks run at once. */
    int now = atomic_fetch_add(&running_now, 1) + 1;
    int max = atomic_load(&running_max);
    while (now > max && !atomic_compare_exchange_weak(&running_max, &max, now)) {
    }

    sleep_ms(TASK_MS); /* the "blocking work" */

    atomic_fetch_sub(&running_now, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 3. Jobs for the cancellation section                                      */
/* ------------------------------------------------------------------------ */

enum { LONG_STEPS = 50, STEP_MS = 20 };

struct job { /* a heap-allocated argument */
    const char *name;
    atomic_int *freed; /* bumped by job_free */
};

static atomic_int quick_ran, quick_freed; /* the queued job */
static atomic_int long_started, long_steps; /* the running job */
static atomic_int long_freed, long_result_freed;

static void job_free(void *ptr)
{ /* free_arg */
    struct job *j = ptr;
    atomic_fetch_add(j->freed, 1);
    free(j);
}

static void partial_result_free(void *ptr)
{ /* free_result */
    atomic_fetch_add(&long_result_freed, 1);
    free(ptr);
}

static struct job *new_job(const char *name, atomic_int *freed)
{
    struct job *j = malloc(sizeof *j);
    DEMO_ASSERT(j != NULL);
    j->name = name;
    j->freed = freed;
    return j;
}

static int32_t quick_job(void *arg, void **out_result)
{
    (void)arg;
    (void)out_result;
    atomic_store(&quick_ran, 1);
    return 0;
}

static int32_t long_job(void *arg, void **out_result)
{
    (void)arg;
    atomic_store(&long_started, 1);
    for (int i = 0; i < LONG_STEPS; i++) {
        if (asyncify_cancel_requested())
            break; /* abandoned: stop early */
        sleep_ms(STEP_MS);
        atomic_fetch_add(&long_steps, 1);
    }
    /* A result nobody can receive any more: the library hands it to free_result. */
    *out_result = malloc(16);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 4. A task with a result, for polling                                      */
/* ------------------------------------------------------------------------ */

static int32_t slow_sum(void *arg, void **out_result)
{
    int n = *(const int *)arg;
    long long *sum = malloc(sizeof *sum);
    if (sum == NULL)
        return 1; /* a failure code */
    *sum = 0;
    for (int i = 1; i <= n; i++) {
        *sum += i;
        if (i % (n / 8) == 0)
            sleep_ms(15); /* be slow on purpose */
    }
    *out_result = sum; /* moves to whoever asks first */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 5. A task with an on_done callback                                        */
/* ------------------------------------------------------------------------ */

struct done_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

static int32_t greet(void *arg, void **out_result)
{
    (void)arg;
    char model[32];
    get_string("model", model, sizeof model);
    /* Changes made inside a task stay inside the task. */
    CHECK(asyncify_override_set("scratch", "x", 1));
    char *msg = malloc(64);
    if (msg == NULL)
        return 1;
    snprintf(msg, 64, "hello from thread %d, model=%s", this_thread(), model);
    *out_result = msg;
    return 0;
}

static void on_done(void *user_data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    struct done_state *ds = user_data;
    (void)h;
    size_t count = 99;
    CHECK(asyncify_override_count(&count));
    printf("  on_done on worker thread %d: status %d (%s), code %d, result \"%s\"\n", this_thread(), status,
           asyncify_status_str(status), (int)code, result ? (const char *)result : "(none)");
    printf("  on_done: asyncify_override_count() = %zu (the worker's own table is back)\n", count);
    DEMO_ASSERT(status == ASYNCIFY_OK && count == 0 && this_thread() != 0);
    free(result); /* on_done received the result */

    pthread_mutex_lock(&ds->lock);
    ds->done = true;
    pthread_cond_signal(&ds->cond);
    pthread_mutex_unlock(&ds->lock);
}

/* ------------------------------------------------------------------------ */

int main(void)
{
    thread_no = 0; /* main is thread 0 */
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("asyncify %s demo\n", asyncify_version());

    /* ---- 1 ---------------------------------------------------------- */
    printf("\n== 1. Overrides on the main thread ==\n");
    static const unsigned char trace_id[8] = { 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x2a };
    CHECK(asyncify_override_set("model", "gpt-4o", strlen("gpt-4o")));
    CHECK(asyncify_override_set("trace_id", trace_id, sizeof trace_id)); /* any bytes */

    struct config *cfg = malloc(sizeof *cfg);
    DEMO_ASSERT(cfg != NULL);
    cfg->name = "shared-config";
    cfg->retries = 3;
    /* From here on the tables own cfg; config_release frees it. */
    CHECK(asyncify_override_set_ptr("config", cfg, config_release));

    size_t count = 0;
    CHECK(asyncify_override_count(&count));
    printf("  set model=\"gpt-4o\", trace_id=deadbeef0000002a (8 bytes), config=%p\n", (void *)cfg);
    printf("  main's table now has %zu keys\n", count);

    /* ---- 2 ---------------------------------------------------------- */
    printf("\n== 2. %d tasks of %d ms on a pool of %d workers ==\n", BATCH, TASK_MS, WIDTH);
    asyncify_pool *pool = NULL;
    CHECK(asyncify_pool_new(WIDTH, &pool));

    asyncify_submit_options opts;
    CHECK(asyncify_submit_options_init(&opts, sizeof opts));
    opts.pool = pool;

    asyncify_handle batch[BATCH];
    uint64_t scope = 0;
    batch_t0 = now_ms();
    for (int i = 0; i < BATCH; i++) {
        if (i == BATCH / 2) {
            /* Halfway: change the model inside a scope (like dspy.context). */
            CHECK(asyncify_scope_enter(&scope));
            CHECK(asyncify_override_set("model", "gpt-4o-mini", strlen("gpt-4o-mini")));
        }
        CHECK(asyncify_submit(batch_task, &seen[i], &opts, &batch[i]));
    }
    /* Leave the scope while tasks 8..15 are still queued: they keep the
       snapshot taken when they were submitted. */
    CHECK(asyncify_scope_exit(scope));
    char model[32];
    get_string("model", model, sizeof model);
    printf("  submitted 0-7 with model=gpt-4o, 8-15 inside a scope with model=gpt-4o-mini\n");
    printf("  scope left while 8-15 are still queued; main's model is \"%s\" again\n", model);
    DEMO_ASSERT(strcmp(model, "gpt-4o") == 0);

    /* Main drops its own reference to config; the 16 tasks still hold it. */
    CHECK(asyncify_override_remove("config"));
    printf("  main removed \"config\" from its table; releases so far: %d\n", atomic_load(&config_releases));
    DEMO_ASSERT(atomic_load(&config_releases) == 0);

    for (int i = 0; i < BATCH; i++) {
        int32_t code = -1;
        CHECK(asyncify_wait(batch[i], -1, NULL, &code));
        DEMO_ASSERT(code == 0);
        CHECK(asyncify_release(batch[i]));
    }
    double total = now_ms() - batch_t0;

    for (int i = 0; i < BATCH; i++) {
        const struct seen *s = &seen[i];
        printf("  task %2d: model=%-11s trace_id=%02x%02x..%02x config=%s "
               "(thread %d, started at +%.0f ms)\n",
               i, s->model, s->trace[0], s->trace[1], s->trace[s->trace_len - 1], s->cfg_name, s->thread,
               s->start_ms);
        DEMO_ASSERT(strcmp(s->model, i < BATCH / 2 ? "gpt-4o" : "gpt-4o-mini") == 0);
        DEMO_ASSERT(s->trace_len == sizeof trace_id && memcmp(s->trace, trace_id, sizeof trace_id) == 0);
        DEMO_ASSERT(s->cfg == (void *)cfg); /* the same pointer, not a copy */
    }
    printf("  max running at once: %d (limit %d)\n", atomic_load(&running_max), WIDTH);
    printf("  total time: %.0f ms (%d x %d ms at width %d: ideal %d ms)\n", total, BATCH, TASK_MS, WIDTH,
           BATCH / WIDTH * TASK_MS);
    DEMO_ASSERT(atomic_load(&running_max) <= WIDTH);

    /* The last task holding config is gone, so it has been released, once
       (on the worker that ran the last task; allow a moment to be safe). */
    DEMO_ASSERT(wait_for(&config_releases, 1, 1000));

    /* ---- 3 ---------------------------------------------------------- */
    printf("\n== 3. Cancellation on a pool of 1 worker ==\n");
    asyncify_pool *pool1 = NULL;
    CHECK(asyncify_pool_new(1, &pool1));
    asyncify_submit_options o1;
    CHECK(asyncify_submit_options_init(&o1, sizeof o1));
    o1.pool = pool1;
    o1.free_arg = job_free;
    o1.free_result = partial_result_free;

    asyncify_handle long_h = 0, quick_h = 0;
    CHECK(asyncify_submit(long_job, new_job("long", &long_freed), &o1, &long_h));
    CHECK(asyncify_submit(quick_job, new_job("quick", &quick_freed), &o1, &quick_h));
    DEMO_ASSERT(wait_for(&long_started, 1, 2000)); /* the long job holds the slot */
    printf("  submitted a long job (%d x %d ms) and a quick job queued behind it\n", LONG_STEPS, STEP_MS);

    /* (a) The quick job is still queued behind it: cancelling it means it never runs. */
    EXPECT(asyncify_cancel(quick_h), ASYNCIFY_CANCELLED);
    EXPECT(asyncify_poll(quick_h, NULL, NULL), ASYNCIFY_CANCELLED);
    printf("  queued job: cancel -> CANCELLED, ran=%s, free_arg called %d time(s)\n",
           atomic_load(&quick_ran) ? "yes" : "no", atomic_load(&quick_freed));
    DEMO_ASSERT(!atomic_load(&quick_ran) && atomic_load(&quick_freed) == 1);
    CHECK(asyncify_release(quick_h));

    /* (b) The long job is running: cancelling abandons it. */
    sleep_ms(3 * STEP_MS + STEP_MS / 2);
    EXPECT(asyncify_cancel(long_h), ASYNCIFY_CANCELLED);
    double t = now_ms();
    EXPECT(asyncify_wait(long_h, -1, NULL, NULL), ASYNCIFY_CANCELLED);
    printf("  running job: cancel -> CANCELLED, a waiter sees CANCELLED after %.0f ms\n", now_ms() - t);
    /* The work function notices asyncify_cancel_requested() and returns;
       then the library frees its result and its arg. */
    DEMO_ASSERT(wait_for(&long_freed, 1, 2000));
    printf("  it stopped early after %d of %d steps; free_result called %d, "
           "free_arg called %d\n",
           atomic_load(&long_steps), LONG_STEPS, atomic_load(&long_result_freed), atomic_load(&long_freed));
    DEMO_ASSERT(atomic_load(&long_steps) < LONG_STEPS);
    DEMO_ASSERT(atomic_load(&long_result_freed) == 1 && atomic_load(&long_freed) == 1);
    EXPECT(asyncify_poll(long_h, NULL, NULL), ASYNCIFY_CANCELLED); /* stays CANCELLED */
    CHECK(asyncify_release(long_h));

    /* ---- 4 ---------------------------------------------------------- */
    printf("\n== 4. Polling until done ==\n");
    static int n = 1000000;
    asyncify_handle sum_h = 0;
    CHECK(asyncify_submit(slow_sum, &n, &opts, &sum_h));
    void *result = NULL;
    int32_t code = -1;
    int polls = 1;
    asyncify_status st;
    printf("  polling ");
    while ((st = asyncify_poll(sum_h, &result, &code)) == ASYNCIFY_PENDING) {
        putchar('.');
        fflush(stdout);
        sleep_ms(10);
        polls++;
    }
    printf(" done after %d polls: %s\n", polls, asyncify_status_str(st));
    if (st != ASYNCIFY_OK)
        fail_call("asyncify_poll", st, ASYNCIFY_OK, __LINE__);
    DEMO_ASSERT(result != NULL && code == 0);
    printf("  result: sum(1..%d) = %lld\n", n, *(long long *)result);
    DEMO_ASSERT(*(long long *)result == (long long)n * (n + 1) / 2);
    free(result); /* the result moved to us: we own it */

    void *again = (void *)1;
    CHECK(asyncify_poll(sum_h, &again, NULL));
    printf("  polling again: still OK, result %s (it moves only once)\n",
           again ? "delivered twice!" : "NULL");
    DEMO_ASSERT(again == NULL);
    CHECK(asyncify_release(sum_h));

    /* ---- 5 ---------------------------------------------------------- */
    printf("\n== 5. A completion callback ==\n");
    struct done_state ds = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
    asyncify_submit_options o5;
    CHECK(asyncify_submit_options_init(&o5, sizeof o5));
    o5.pool = pool;
    o5.on_done = on_done;
    o5.on_done_data = &ds;
    asyncify_handle greet_h = 0;
    CHECK(asyncify_submit(greet, NULL, &o5, &greet_h));

    pthread_mutex_lock(&ds.lock);
    while (!ds.done)
        pthread_cond_wait(&ds.cond, &ds.lock);
    pthread_mutex_unlock(&ds.lock);

    /* After on_done has returned, the handle shows the terminal status; the
       result already went to on_done. */
    result = (void *)1;
    CHECK(asyncify_wait(greet_h, -1, &result, NULL));
    DEMO_ASSERT(result == NULL);
    CHECK(asyncify_release(greet_h));
    size_t scratch_len = 0;
    EXPECT(asyncify_override_get("scratch", NULL, 0, &scratch_len), ASYNCIFY_E_NOT_FOUND);
    CHECK(asyncify_override_count(&count));
    printf("  main thread %d: wait -> OK; main's table still has %zu keys, no \"scratch\"\n", this_thread(),
           count);

    /* ---- 6 ---------------------------------------------------------- */
    printf("\n== 6. Errors ==\n");
    /* A failing call returns a negative status; asyncify_status_str names it
       and asyncify_last_error has this thread's detailed message. */
    char msg[256];
    st = asyncify_release(0);
    CHECK(asyncify_last_error(msg, sizeof msg, NULL));
    printf("  asyncify_release(0) -> %d (%s)\n    last error: \"%s\"\n", st, asyncify_status_str(st), msg);
    DEMO_ASSERT(st == ASYNCIFY_E_INVALID_HANDLE);
    st = asyncify_release(greet_h); /* released in section 5: a stale handle */
    DEMO_ASSERT(st == ASYNCIFY_E_INVALID_HANDLE);
    printf("  asyncify_release(<already released handle>) -> %d, also refused\n", st);
    void *not_a_ptr = NULL;
    st = asyncify_override_get_ptr("model", &not_a_ptr); /* "model" holds bytes */
    CHECK(asyncify_last_error(msg, sizeof msg, NULL));
    printf("  asyncify_override_get_ptr(\"model\") -> %d (%s)\n    last error: \"%s\"\n", st,
           asyncify_status_str(st), msg);
    DEMO_ASSERT(st == ASYNCIFY_E_INVALID_ARGUMENT && not_a_ptr == NULL);

    /* ---- 7 ---------------------------------------------------------- */
    printf("\n== 7. Shutdown ==\n");
    CHECK(asyncify_pool_free(pool1, -1));
    CHECK(asyncify_pool_free(pool, -1));
    CHECK(asyncify_override_clear());
    printf("  asyncify_pool_free(pool, -1) -> OK for both pools; main's table cleared\n");
    printf("  config was released %d time in all\n", atomic_load(&config_releases));
    DEMO_ASSERT(atomic_load(&config_releases) == 1);
    printf("done.\n");
    return 0;
}
