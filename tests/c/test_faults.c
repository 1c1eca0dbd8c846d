/* Fault injection: failing work functions, callbacks that call back into the library
 * (free_arg, free_result, on_done, a value's release function, at every point they can run), worker
 * threads that cannot be created, file descriptors running out, and allocation failure.
 *
 * Thread creation fails on demand: this program defines pthread_create itself, so the library's calls
 * (Rust std, dynamically linked against libc) reach it first, and it forwards to the real one unless
 * `fail_threads` is set. The tests that need it check first that the interposition works.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- pthread_create, failing on demand ---------------------------------------------------------- */

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static atomic_int fail_threads;
static atomic_int create_calls;
static atomic_int create_refused;

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static pthread_create_fn real;
    if (real == NULL) {
        real = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
        if (real == NULL) {
            abort();
        }
    }
    atomic_fetch_add(&create_calls, 1);
    if (atomic_load(&fail_threads)) {
        atomic_fetch_add(&create_refused, 1);
        return EAGAIN;
    }
    return real(t, attr, fn, arg);
}

/* ---- failing work functions --------------------------------------------------------------------- */

struct coded {
    int32_t code;
    atomic_int done_calls;
    asyncify_status done_status;
    int32_t done_code;
};

static int32_t return_code(void *arg, void **out_result)
{
    struct coded *c = arg;
    *out_result = c;
    return c->code;
}

static void coded_done(void *data, asyncify_handle h, asyncify_status s, void *result, int32_t code)
{
    (void)h;
    struct coded *c = data;
    CHECK(result == c);
    c->done_status = s;
    c->done_code = code;
    atomic_fetch_add(&c->done_calls, 1);
}

static void test_failing_work_functions(void)
{
    static const int32_t codes[] = { 0, 1, -1, 42, INT32_MIN, INT32_MAX };
    struct asyncify_pool *pool = new_pool(2);
    struct asyncify_cq *cq = NULL;
    CHECK_OK(asyncify_cq_new(&cq));
    struct coded c[6][3];
    uint64_t failed = 0;
    for (int i = 0; i < 6; i++) {
        for (int how = 0; how < 3; how++) {
            c[i][how] = (struct coded){ .code = codes[i] };
            asyncify_submit_options opts = options_for(pool);
            opts.on_done_data = &c[i][how];
            if (how == 1) {
                opts.on_done = coded_done;
            } else if (how == 2) {
                opts.cq = cq;
            }
            asyncify_handle h = submit_opts(return_code, &c[i][how], &opts);
            asyncify_status want = codes[i] == 0 ? ASYNCIFY_OK : ASYNCIFY_FAILED;
            failed += codes[i] != 0;
            int32_t code = 0;
            void *res = NULL;
            CHECK_EQ_STATUS(asyncify_wait(h, TEST_PATIENCE_MS, &res, &code), want);
            CHECK(code == codes[i]); /* the code is delivered whatever the path of the result */
            if (how == 0) {
                CHECK(res == &c[i][how]); /* a failed task's result moves like a successful one's */
            } else {
                CHECK(res == NULL);
            }
            if (how == 1) {
                CHECK(atomic_load(&c[i][how].done_calls) == 1);
                CHECK(c[i][how].done_status == want && c[i][how].done_code == codes[i]);
            }
            if (how == 2) {
                asyncify_completion done[2];
                size_t n = 0;
                CHECK_OK(asyncify_cq_drain(cq, done, 2, &n));
                CHECK(n == 1 && done[0].status == want && done[0].code == codes[i] &&
                      done[0].result == &c[i][how]);
            }
            CHECK_EQ_STATUS(asyncify_cancel(h), want); /* too late: the outcome stays */
            CHECK_OK(asyncify_release(h));
        }
    }
    asyncify_pool_stats st = stats_of(pool);
    CHECK(st.failed == failed && st.completed == 18 - failed);
    CHECK_OK(asyncify_cq_free(cq));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- callbacks that call back into the library -------------------------------------------------- */

struct reentrant {
    struct asyncify_pool *pool;
    atomic_ullong handle;
    atomic_int gate;
    atomic_int arg_freed;
    atomic_int result_freed;
    atomic_int done_calls;
    asyncify_status release_in_free_arg;
    asyncify_status poll_in_free_result;
    asyncify_status release_in_free_result;
    asyncify_status pool_free_in_on_done;
    asyncify_status wait_in_on_done;
    asyncify_status submit_in_callback;
    asyncify_handle submitted;
};

static int32_t quick(void *arg, void **out_result)
{
    *out_result = arg;
    return 0;
}

static int32_t gated(void *arg, void **out_result)
{
    struct reentrant *r = arg;
    gate_wait(&r->gate);
    *out_result = arg;
    return 0;
}

/* free_arg of a task cancelled while queued: it releases the task's own handle (cancel is still
 * reporting) and submits a new task. */
static void free_arg_reenters(void *p)
{
    struct reentrant *r = p;
    atomic_fetch_add(&r->arg_freed, 1);
    r->release_in_free_arg = asyncify_release(atomic_load(&r->handle));
    asyncify_submit_options opts = options_for(r->pool);
    r->submit_in_callback = asyncify_submit(quick, r, &opts, &r->submitted);
}

static void done_counts(void *p, asyncify_handle h, asyncify_status s, void *result, int32_t code)
{
    (void)h;
    (void)s;
    (void)result;
    (void)code;
    atomic_fetch_add(&((struct reentrant *)p)->done_calls, 1);
}

/* free_result of a task released after it finished: its handle is already gone. The count goes up last,
 * so a thread that sees it (a detached task's free_result runs on the worker) also sees the fields. */
static void free_result_reenters(void *p)
{
    struct reentrant *r = p;
    r->poll_in_free_result = asyncify_poll(atomic_load(&r->handle), NULL, NULL);
    r->release_in_free_result = asyncify_release(atomic_load(&r->handle));
    asyncify_submit_options opts = options_for(r->pool);
    r->submit_in_callback = asyncify_submit(quick, r, &opts, &r->submitted);
    atomic_fetch_add(&r->result_freed, 1);
}

/* on_done on a worker: freeing its own pool would wait for itself; waiting for another task is fine. */
static void on_done_reenters(void *p, asyncify_handle h, asyncify_status s, void *result, int32_t code)
{
    (void)s;
    (void)result;
    (void)code;
    struct reentrant *r = p;
    atomic_fetch_add(&r->done_calls, 1);
    r->pool_free_in_on_done = asyncify_pool_free(r->pool, 0);
    r->wait_in_on_done = asyncify_wait(h, 0, NULL, NULL); /* its own task: not yet published */
    asyncify_submit_options opts = options_for(r->pool);
    r->submit_in_callback = asyncify_submit(quick, r, &opts, &r->submitted);
}

/* A value's release function that uses the library: the table, submit, scopes. */
static atomic_int value_releases;
static atomic_int value_release_errors;
static char value_release_report[512];

static void note_release_call(const char *what, asyncify_status s)
{
    if (s != ASYNCIFY_OK) {
        char msg[256];
        test_last_error_text(msg, sizeof msg);
        if (atomic_fetch_add(&value_release_errors, 1) == 0) {
            snprintf(value_release_report, sizeof value_release_report,
                     "release #%d: %s returned %d (%s): %s", atomic_load(&value_releases), what, (int)s,
                     asyncify_status_str(s), msg);
        }
    }
}

static void release_reenters(void *p)
{
    (void)p;
    atomic_fetch_add(&value_releases, 1);
    size_t n = 0;
    note_release_call("asyncify_override_count", asyncify_override_count(&n));
    uint64_t token = 0;
    note_release_call("asyncify_scope_enter", asyncify_scope_enter(&token));
    note_release_call("asyncify_override_set", asyncify_override_set("from-release", "x", 1));
    note_release_call("asyncify_scope_exit", asyncify_scope_exit(token));
    asyncify_handle h = 0;
    asyncify_status s = asyncify_submit(quick, NULL, NULL, &h);
    note_release_call("asyncify_submit", s);
    if (s == ASYNCIFY_OK) {
        note_release_call("asyncify_release", asyncify_release(h));
    }
}

/* A task that sets a pointer value with that release function and returns: the value is released on
 * the worker while its own table is being restored. */
static int32_t sets_reentrant_value(void *arg, void **out_result)
{
    (void)arg;
    (void)out_result;
    CHECK_OK(asyncify_override_set_ptr("v", &value_releases, release_reenters));
    CHECK_OK(asyncify_override_set("mine", "1", 1));
    return 0;
}

/* The next task on that worker sees only its submitter's table. */
static int32_t sees_only_its_table(void *arg, void **out_result)
{
    (void)out_result;
    size_t want = (size_t)(uintptr_t)arg;
    return table_count() == want && key_absent("from-release") && key_absent("mine") ? 0 : 1;
}

static void *thread_with_reentrant_value(void *unused)
{
    (void)unused;
    CHECK_OK(asyncify_override_set_ptr("v", &value_releases, release_reenters));
    return NULL; /* released while the thread's locals are torn down */
}

static void test_reentrant_callbacks(void)
{
    /* free_arg, on a cancel of a queued task. */
    struct asyncify_pool *pool = new_pool(0);
    struct reentrant a = { .pool = pool };
    asyncify_submit_options opts = options_for(pool);
    opts.free_arg = free_arg_reenters;
    opts.on_done = done_counts;
    opts.on_done_data = &a;
    asyncify_handle h = submit_opts(quick, &a, &opts);
    atomic_store(&a.handle, h);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&a.arg_freed) == 1 && atomic_load(&a.done_calls) == 1);
    CHECK_OK(a.release_in_free_arg); /* releasing one's own handle from free_arg works */
    CHECK_OK(a.submit_in_callback);
    CHECK_EQ_STATUS(asyncify_release(h), ASYNCIFY_E_INVALID_HANDLE); /* and only once */
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    wait_ok_release(a.submitted);

    /* free_result, on a release after the task finished. */
    struct reentrant b = { .pool = pool };
    opts = options_for(pool);
    opts.free_result = free_result_reenters;
    h = submit_opts(quick, &b, &opts);
    atomic_store(&b.handle, h);
    wait_ok(h);
    CHECK_OK(asyncify_release(h));
    CHECK(atomic_load(&b.result_freed) == 1);
    CHECK_EQ_STATUS(b.poll_in_free_result, ASYNCIFY_E_INVALID_HANDLE);
    CHECK_EQ_STATUS(b.release_in_free_result, ASYNCIFY_E_INVALID_HANDLE);
    CHECK_OK(b.submit_in_callback);
    wait_ok_release(b.submitted);

    /* free_result while the worker publishes a detached task's orphan result. */
    struct reentrant c = { .pool = pool };
    opts = options_for(pool);
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    opts.free_result = free_result_reenters;
    h = submit_opts(gated, &c, &opts);
    atomic_store(&c.handle, h);
    gate_open(&c.gate);
    WAIT_FOR(atomic_load(&c.result_freed) == 1, TEST_PATIENCE_MS);
    /* A detached handle may still be valid here (it releases itself after this callback): either
     * outcome is fine, and either way it is released exactly once. */
    CHECK(c.release_in_free_result == ASYNCIFY_OK || c.release_in_free_result == ASYNCIFY_E_INVALID_HANDLE);
    WAIT_FOR(asyncify_poll(h, NULL, NULL) == ASYNCIFY_E_INVALID_HANDLE, TEST_PATIENCE_MS);
    CHECK_OK(c.submit_in_callback);
    wait_ok_release(c.submitted);

    /* on_done on the worker. */
    struct reentrant d = { .pool = pool };
    opts = options_for(pool);
    opts.on_done = on_done_reenters;
    opts.on_done_data = &d;
    h = submit_opts(quick, &d, &opts);
    wait_ok_release(h);
    CHECK(atomic_load(&d.done_calls) == 1);
    CHECK_EQ_STATUS(d.pool_free_in_on_done, ASYNCIFY_E_WOULD_DEADLOCK); /* and the pool is not freed */
    CHECK_EQ_STATUS(d.wait_in_on_done, ASYNCIFY_E_WOULD_DEADLOCK);
    CHECK_OK(d.submit_in_callback);
    wait_ok_release(d.submitted);

    /* A value's release function that uses the library: on replacement (this thread), on a task's
     * table restore (a worker, limit 1, so the next task uses the same thread) and at thread exit. */
    atomic_store(&value_releases, 0);
    CHECK_OK(asyncify_override_set_ptr("v", &value_releases, release_reenters));
    CHECK_OK(asyncify_override_set_ptr("v", &value_releases, release_reenters)); /* releases the first */
    CHECK(atomic_load(&value_releases) == 1);
    CHECK(key_absent("from-release")); /* its scope restored this thread's table exactly */
    CHECK_OK(asyncify_override_remove("v"));
    /* The task the first release submitted holds a snapshot with the second value until it ran. */
    WAIT_FOR(atomic_load(&value_releases) == 2, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    wait_ok_release(submit_to(pool, sets_reentrant_value, NULL));
    set_str("k", "1");
    wait_ok_release(submit_to(pool, sees_only_its_table, (void *)(uintptr_t)1));
    CHECK_OK(asyncify_override_remove("k"));
    WAIT_FOR(atomic_load(&value_releases) == 3, TEST_PATIENCE_MS);
    if (atomic_load(&value_release_errors) != 0) {
        test_fail(__FILE__, __LINE__, "a release function calling back into the library: %s",
                  value_release_report);
    }
    /* At thread exit the thread's table is being destroyed: the release function's calls must not crash
     * or hang. Each call there acts on an empty throwaway table (README, "Which thread sees what"), so a
     * scope entered by one call is not open for the next: scope_exit reports E_SCOPE_MISMATCH, and that
     * is the only call that fails. */
    join_thread(start_thread(thread_with_reentrant_value, NULL));
    WAIT_FOR(atomic_load(&value_releases) == 4, TEST_PATIENCE_MS);
    CHECK(atomic_load(&value_release_errors) == 1);
    CHECK(strstr(value_release_report, "asyncify_scope_exit returned -9") != NULL);

    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- worker threads that cannot be created ------------------------------------------------------ */

struct blocker {
    atomic_int gate;
    atomic_int started;
    atomic_int ran;
};

static int32_t blocks(void *arg, void **out_result)
{
    (void)out_result;
    struct blocker *b = arg;
    atomic_fetch_add(&b->started, 1);
    gate_wait(&b->gate);
    atomic_fetch_add(&b->ran, 1);
    return 0;
}

static int32_t counts_run(void *arg, void **out_result)
{
    (void)out_result;
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

static void test_thread_creation_fails_with_threads_alive(void)
{
    /* Two workers exist; then no more can be created. The queue is served by the two. */
    struct asyncify_pool *pool = new_pool(4);
    struct blocker b = { .gate = 0 };
    asyncify_handle first[2];
    for (int i = 0; i < 2; i++) {
        first[i] = submit_to(pool, blocks, &b);
    }
    WAIT_FOR(atomic_load(&b.started) == 2, TEST_PATIENCE_MS);
    int refused_before = atomic_load(&create_refused);
    atomic_store(&fail_threads, 1);
    atomic_int ran = 0;
    asyncify_handle more[10];
    for (int i = 0; i < 10; i++) {
        more[i] = submit_to(pool, counts_run, &ran); /* submit still works */
    }
    CHECK(atomic_load(&create_refused) > refused_before); /* the library did try to start more */
    CHECK_OK(asyncify_set_max_workers(pool, 8)); /* raising the limit tries again, fails again */
    gate_open(&b.gate);
    for (int i = 0; i < 10; i++) {
        wait_ok_release(more[i]);
    }
    for (int i = 0; i < 2; i++) {
        wait_ok_release(first[i]);
    }
    CHECK(atomic_load(&ran) == 10);
    asyncify_pool_stats st = stats_of(pool);
    CHECK(st.threads <= 2);
    CHECK(st.completed == 12);
    atomic_store(&fail_threads, 0);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

static void test_thread_creation_fails_with_no_thread(void)
{
    /* A new pool whose first worker cannot be created. Nothing may fail silently: submit
     * still works with the threads that exist or returns a clear error. So two outcomes are allowed: submit
     * refuses with an error, or the task still runs. A task accepted and then never run is a hang. */
    struct asyncify_pool *pool = new_pool(2);
    atomic_store(&fail_threads, 1);
    atomic_int ran = 0;
    asyncify_handle h = 0;
    asyncify_submit_options opts = options_for(pool);
    asyncify_status s = asyncify_submit(counts_run, &ran, &opts, &h);
    asyncify_status w = s == ASYNCIFY_OK ? asyncify_wait(h, 2000, NULL, NULL) : s;
    asyncify_pool_stats st = stats_of(pool);
    atomic_store(&fail_threads, 0);
    if (s == ASYNCIFY_OK && w != ASYNCIFY_OK) {
        test_fail(
            __FILE__, __LINE__,
            "no worker thread could be created: asyncify_submit returned OK but the task never ran (wait "
            "returned %d %s; pool threads %u, queued %llu); expected an error from submit or a run",
            (int)w, asyncify_status_str(w), st.threads, (unsigned long long)st.queued);
    }
    if (s != ASYNCIFY_OK) {
        char msg[256];
        test_last_error_text(msg, sizeof msg);
        CHECK(s < 0 && strlen(msg) > 0);
        printf("no thread: submit refused with %s (%s)\n", asyncify_status_str(s), msg);
    } else {
        CHECK(atomic_load(&ran) == 1);
        CHECK_OK(asyncify_release(h));
    }
    /* With threads back, the pool works. */
    wait_ok_release(submit_to(pool, counts_run, &ran));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- file descriptors running out: a completion queue needs an eventfd -------------------------- */

static void test_out_of_file_descriptors(void)
{
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    int probe = dup(0);
    CHECK(probe >= 0);
    close(probe);
    struct rlimit low = old;
    low.rlim_cur = (rlim_t)probe + 8;
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    int fds[64];
    int nfds = 0;
    while (nfds < 64) {
        int fd = dup(0);
        if (fd < 0) {
            break;
        }
        fds[nfds++] = fd;
    }
    struct asyncify_cq *cq = (struct asyncify_cq *)&nfds;
    asyncify_status s = asyncify_cq_new(&cq);
    char msg[256];
    test_last_error_text(msg, sizeof msg);
    for (int i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK_EQ_STATUS(s, ASYNCIFY_E_OUT_OF_MEMORY);
    CHECK(cq == (struct asyncify_cq *)&nfds); /* not written on error */
    CHECK(strstr(msg, "eventfd") != NULL);
    /* Everything else still works, and so does a queue once descriptors are back. */
    CHECK_OK(asyncify_cq_new(&cq));
    CHECK_OK(asyncify_cq_free(cq));
}

/* ---- allocation failure ------------------------------------------------------------------------- */

/* The library allocates with Rust's global allocator, which aborts the process when an allocation fails
 * (there is no fallible allocation on these paths; ASYNCIFY_E_OUT_OF_MEMORY is for handle slots and file
 * descriptors). In a forked child with a small address-space limit, submitting until memory runs out
 * must end in that abort (SIGABRT), never a hang or a crash elsewhere. */
static void test_allocation_failure_aborts_cleanly(void)
{
    if (UNDER_ASAN || getenv("ASYNCIFY_UNDER_VALGRIND") != NULL) {
        printf("allocation failure: skipped under a sanitizer or valgrind (they own the address space)\n");
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct asyncify_pool *pool = NULL;
        if (asyncify_pool_new(0, &pool) != ASYNCIFY_OK) {
            _exit(3);
        }
        struct rlimit lim;
        /* Leave room for what is mapped already; the queue then grows into the limit. */
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (f != NULL) {
            if (fscanf(f, "%lu", &pages) != 1) {
                pages = 0;
            }
            fclose(f);
        }
        lim.rlim_cur = lim.rlim_max = (rlim_t)pages * 4096u + (64u << 20);
        if (setrlimit(RLIMIT_AS, &lim) != 0) {
            _exit(4);
        }
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 2); /* the abort message is expected; keep the log clean */
        }
        asyncify_submit_options opts;
        asyncify_submit_options_init(&opts, sizeof opts);
        opts.pool = pool;
        for (;;) {
            asyncify_handle h;
            asyncify_status s = asyncify_submit(quick, NULL, &opts, &h);
            if (s != ASYNCIFY_OK) {
                _exit(s == ASYNCIFY_E_OUT_OF_MEMORY ? 5 : 6);
            }
        }
    }
    int status = 0;
    int64_t deadline = now_ms() + 60000;
    pid_t got;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0) {
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            test_fail(__FILE__, __LINE__, "allocation failure: the child hung");
        }
        sleep_ms(10);
    }
    CHECK(got == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 5) {
        printf("allocation failure: submit returned ASYNCIFY_E_OUT_OF_MEMORY\n");
        return;
    }
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)) {
        test_fail(__FILE__, __LINE__, "allocation failure: child ended with status 0x%x, expected SIGABRT",
                  status);
    }
    printf("allocation failure: the process aborted cleanly (SIGABRT), as Rust's allocator does\n");
}

int main(void)
{
    /* The interposition must work, or the thread tests would prove nothing. */
    int before = atomic_load(&create_calls);
    atomic_int probe = 0;
    struct asyncify_pool *pool = new_pool(1);
    wait_ok_release(submit_to(pool, counts_run, &probe));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&create_calls) > before);

    test_failing_work_functions();
    test_reentrant_callbacks();
    test_out_of_file_descriptors();
    test_allocation_failure_aborts_cleanly();
    test_thread_creation_fails_with_threads_alive();
    test_thread_creation_fails_with_no_thread();
    TEST_PASS("test_faults");
    return 0;
}
