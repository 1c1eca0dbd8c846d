/* fork() while the library is busy: in the child the parent's handles give E_FORKED,
 * the forking thread keeps its table, the default pool and new pools work, nothing hangs; the
 * parent's tasks finish normally. Every wait is bounded and the whole program runs under alarm(). */
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define CHILDREN 8

struct job {
    atomic_int gate;
    atomic_int started;
    atomic_int finished;
};

static int32_t job_task(void *arg, void **out_result)
{
    struct job *j = arg;
    atomic_store(&j->started, 1);
    gate_wait(&j->gate);
    atomic_store(&j->finished, 1);
    *out_result = j;
    return 0;
}

/* What a task in the child saw. */
struct seen {
    char k[32];
    bool k_found;
    void *p;
    pid_t pid;
};

static int32_t seen_task(void *arg, void **out_result)
{
    struct seen *s = arg;
    size_t len = 0;
    s->k_found = asyncify_override_get("k", s->k, sizeof s->k - 1, &len) == ASYNCIFY_OK;
    s->k[s->k_found ? len : 0] = '\0';
    s->p = NULL;
    (void)asyncify_override_get_ptr("p", &s->p);
    s->pid = getpid();
    *out_result = s;
    return 0;
}

static int parent_obj;
static atomic_int parent_obj_released;
static void release_parent_obj(void *p)
{
    CHECK(p == &parent_obj);
    atomic_fetch_add(&parent_obj_released, 1);
}

/* Keeps the library busy (locks taken and released all the time) while the main thread forks. */
static atomic_int churn_stop;
static atomic_int churn_rounds;

/* Under AddressSanitizer the churn pauses around each fork: ASan's own allocator is not fork-safe, and a
 * child can inherit one of its internal locks held by a thread that was allocating (seen: a worker of the
 * child blocked for good in ASan's malloc). The plain and valgrind runs fork in the middle of the churn. */
#if defined(__SANITIZE_ADDRESS__)
#define FORK_PAUSES_CHURN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FORK_PAUSES_CHURN 1
#endif
#endif
#ifndef FORK_PAUSES_CHURN
#define FORK_PAUSES_CHURN 0
#endif
static atomic_int churn_pause; /* asked to pause */
static atomic_int churn_paused; /* pausing, outside the library */

static void *churn(void *arg)
{
    struct asyncify_pool *pool = arg;
    CHECK_OK(asyncify_override_set("churn", "c", 1));
    unsigned i = 0;
    while (!atomic_load(&churn_stop)) {
        if (atomic_load(&churn_pause)) {
            atomic_store(&churn_paused, 1);
            while (atomic_load(&churn_pause) && !atomic_load(&churn_stop)) {
                sleep_ms(1);
            }
            atomic_store(&churn_paused, 0);
            continue;
        }
        asyncify_handle h = 0;
        asyncify_submit_options opts = options_for((i & 1) ? pool : NULL);
        CHECK_OK(asyncify_submit(noop_task, NULL, &opts, &h));
        CHECK_OK(asyncify_wait(h, TEST_PATIENCE_MS, NULL, NULL));
        CHECK_OK(asyncify_release(h));
        char v = (char)('a' + i % 26);
        CHECK_OK(asyncify_global_set("churn_global", &v, 1));
        size_t len = 0;
        char buf[4];
        CHECK_OK(asyncify_override_get("churn_global", buf, sizeof buf, &len));
        struct asyncify_context *c = NULL;
        CHECK_OK(asyncify_context_capture(&c));
        CHECK_OK(asyncify_context_free(c));
        if (i % 16 == 0) {
            struct asyncify_cq *cq = NULL;
            CHECK_OK(asyncify_cq_new(&cq));
            CHECK_OK(asyncify_cq_free(cq));
        }
        i++;
        atomic_fetch_add(&churn_rounds, 1);
    }
    return NULL;
}

/* The checks a child makes. */
static void child_checks(const asyncify_handle *parent_handles, size_t n)
{
    alarm(20); /* a hang in the child ends it with SIGALRM, which the parent reports */

    /* The parent's handles: E_FORKED from every handle function. */
    for (size_t i = 0; i < n; i++) {
        void *res = (void *)&res;
        int32_t code = 77;
        CHECK_ERR(asyncify_poll(parent_handles[i], &res, &code), ASYNCIFY_E_FORKED);
        CHECK(res == (void *)&res && code == 77);
        CHECK_ERR(asyncify_wait(parent_handles[i], 1000, &res, &code), ASYNCIFY_E_FORKED);
        CHECK_ERR(asyncify_wait(parent_handles[i], -1, NULL, NULL), ASYNCIFY_E_FORKED);
        CHECK_ERR(asyncify_cancel(parent_handles[i]), ASYNCIFY_E_FORKED);
        CHECK_ERR(asyncify_release(parent_handles[i]), ASYNCIFY_E_FORKED);
        CHECK_ERR(asyncify_poll(parent_handles[i], NULL, NULL), ASYNCIFY_E_FORKED); /* still */
    }
    size_t index = 99;
    CHECK_ERR(asyncify_wait_any(parent_handles, n, 1000, &index), ASYNCIFY_E_FORKED);
    CHECK(index == 99);
    /* Handle 0 is still just invalid. */
    CHECK_ERR(asyncify_poll(0, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);

    /* The forking thread keeps its table. */
    CHECK(key_is("k", "parent-k"));
    void *p = NULL;
    CHECK_OK(asyncify_override_get_ptr("p", &p));
    CHECK(p == &parent_obj);
    CHECK(table_count() == 2);

    /* The default pool works again (a fresh one), with the thread's table as the snapshot. */
    struct seen s;
    memset(&s, 0, sizeof s);
    asyncify_handle h = 0;
    CHECK_OK(asyncify_submit(seen_task, &s, NULL, &h));
    CHECK(h != 0);
    void *res = NULL;
    CHECK_OK(asyncify_wait(h, TEST_PATIENCE_MS, &res, NULL));
    CHECK(res == &s);
    CHECK(s.k_found && strcmp(s.k, "parent-k") == 0);
    CHECK(s.p == &parent_obj);
    CHECK(s.pid == getpid());
    CHECK_OK(asyncify_release(h));
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    uint32_t limit = 0;
    CHECK_OK(asyncify_get_max_workers(NULL, &limit));
    if (getenv("ASYNCIFY_MAX_WORKERS") == NULL) {
        CHECK(limit == 8);
    }
    asyncify_pool_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_OK(asyncify_stats(NULL, &st));
    CHECK(st.submitted == 1); /* a fresh default pool: the parent's tasks are not in it */

    /* Many at once on the default pool, and wait_any. */
    asyncify_handle hs[16];
    for (int i = 0; i < 16; i++) {
        CHECK_OK(asyncify_submit(noop_task, NULL, NULL, &hs[i]));
    }
    CHECK_OK(asyncify_wait_any(hs, 16, TEST_PATIENCE_MS, &index));
    CHECK(index < 16);
    for (int i = 0; i < 16; i++) {
        wait_ok_release(hs[i]);
    }

    /* A new pool, a completion queue and a context work. */
    struct asyncify_pool *pool = new_pool(2);
    struct asyncify_cq *cq = NULL;
    CHECK_OK(asyncify_cq_new(&cq));
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    struct seen s2;
    memset(&s2, 0, sizeof s2);
    h = submit_opts(seen_task, &s2, &opts);
    CHECK_OK(asyncify_cq_wait(cq, TEST_PATIENCE_MS));
    asyncify_completion rec;
    size_t got = 0;
    CHECK_OK(asyncify_cq_drain(cq, &rec, 1, &got));
    CHECK(got == 1 && rec.handle == h && rec.status == ASYNCIFY_OK && rec.result == &s2);
    CHECK(strcmp(s2.k, "parent-k") == 0);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_cq_free(cq));
    struct asyncify_context *c = NULL;
    CHECK_OK(asyncify_context_capture(&c));
    opts = options_for(pool);
    opts.context = c;
    memset(&s2, 0, sizeof s2);
    wait_ok_release(submit_opts(seen_task, &s2, &opts));
    CHECK(strcmp(s2.k, "parent-k") == 0);
    CHECK_OK(asyncify_context_free(c));
    CHECK_OK(asyncify_pool_free(pool, -1));

    /* The global layer works (the parent's churn thread may have held its lock at the fork). */
    CHECK_OK(asyncify_global_set("child_global", "x", 1));
    CHECK(key_is("child_global", "x"));
    CHECK_OK(asyncify_global_remove("child_global"));
}

/* Ends a child. A forked child holds memory that only the parent's threads (absent here) reference;
 * LeakSanitizer would report it at exit(), so sanitized builds leave with _exit(). */
static _Noreturn void child_exit(void)
{
#if defined(__SANITIZE_ADDRESS__)
    fflush(stdout);
    fflush(stderr);
    _exit(0);
#else
    exit(0);
#endif
}

/* A child: the checks; `nested` children fork once more. Exits the process. */
static _Noreturn void child_main(const asyncify_handle *parent_handles, size_t n, bool nested)
{
    child_checks(parent_handles, n);
    if (nested) {
        /* A grandchild: the child's handles are the parent's there. */
        asyncify_handle mine = 0;
        CHECK_OK(asyncify_submit(noop_task, NULL, NULL, &mine));
        CHECK_OK(asyncify_wait(mine, TEST_PATIENCE_MS, NULL, NULL));
        pid_t g = fork();
        CHECK(g >= 0);
        if (g == 0) {
            child_checks(&mine, 1);
            child_exit();
        }
        int status = 0;
        int64_t deadline = now_ms() + 15000;
        pid_t done;
        while ((done = waitpid(g, &status, WNOHANG)) == 0 && now_ms() < deadline) {
            sleep_ms(5);
        }
        CHECK(done == g);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CHECK_OK(asyncify_poll(mine, NULL, NULL)); /* still fine here */
        CHECK_OK(asyncify_release(mine));
    }
    child_exit();
}

static void test_fork_while_busy(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "parent-k");
    CHECK_OK(asyncify_override_set_ptr("p", &parent_obj, release_parent_obj));

    /* Busy workers: two tasks on the default pool, two on a private pool, one queued there; one task
     * already finished. */
    struct asyncify_pool *pool = new_pool(2);
    struct job jobs[5];
    memset(jobs, 0, sizeof jobs);
    asyncify_handle handles[6];
    CHECK_OK(asyncify_submit(job_task, &jobs[0], NULL, &handles[0]));
    CHECK_OK(asyncify_submit(job_task, &jobs[1], NULL, &handles[1]));
    handles[2] = submit_to(pool, job_task, &jobs[2]);
    handles[3] = submit_to(pool, job_task, &jobs[3]);
    for (int i = 0; i < 4; i++) {
        WAIT_FOR(atomic_load(&jobs[i].started), TEST_PATIENCE_MS);
    }
    handles[4] = submit_to(pool, job_task, &jobs[4]); /* queued */
    CHECK_OK(asyncify_submit(noop_task, NULL, NULL, &handles[5]));
    wait_ok(handles[5]); /* terminal */

    struct asyncify_pool *churn_pool = new_pool(2);
    pthread_t churner = start_thread(churn, churn_pool);
    WAIT_FOR(atomic_load(&churn_rounds) > 10, TEST_PATIENCE_MS);

    for (int round = 0; round < CHILDREN; round++) {
        fflush(stdout);
        fflush(stderr);
        if (FORK_PAUSES_CHURN) {
            atomic_store(&churn_pause, 1);
            WAIT_FOR(atomic_load(&churn_paused), TEST_PATIENCE_MS);
            WAIT_FOR(stats_of(churn_pool).running == 0 && stats_of(NULL).running == 2, TEST_PATIENCE_MS);
        }
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            child_main(handles, 6, round == 0);
        }
        atomic_store(&churn_pause, 0);
        int status = 0;
        int64_t deadline = now_ms() + 25000;
        pid_t done;
        while ((done = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < deadline) {
            sleep_ms(5);
        }
        if (done == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            test_fail(__FILE__, __LINE__, "child %d hangs", round);
        }
        CHECK(done == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            test_fail(__FILE__, __LINE__, "child %d: %s %d", round,
                      WIFSIGNALED(status) ? "killed by signal" : "exit status",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
        /* Fork at different moments of the churn. */
        sleep_ms(3 + round * 7 % 11);
    }
    atomic_store(&churn_stop, 1);
    join_thread(churner);
    CHECK_OK(asyncify_pool_free(churn_pool, -1));
    printf("%d children forked during %d churn rounds\n", CHILDREN, atomic_load(&churn_rounds));

    /* The parent's tasks finish normally; its handles work. */
    for (int i = 0; i < 5; i++) {
        CHECK(atomic_load(&jobs[i].finished) == 0);
        CHECK_EQ_STATUS(asyncify_poll(handles[i], NULL, NULL), ASYNCIFY_PENDING);
        gate_open(&jobs[i].gate);
    }
    for (int i = 0; i < 5; i++) {
        void *res = NULL;
        CHECK_OK(asyncify_wait(handles[i], TEST_PATIENCE_MS, &res, NULL));
        CHECK(res == &jobs[i]);
        CHECK_OK(asyncify_release(handles[i]));
    }
    CHECK_OK(asyncify_release(handles[5]));
    wait_ok_release(submit_to(pool, noop_task, NULL));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(key_is("k", "parent-k"));
    CHECK(atomic_load(&parent_obj_released) == 0);
    CHECK_OK(asyncify_override_clear());
    CHECK(atomic_load(&parent_obj_released) == 1);
}

int main(void)
{
    alarm(100); /* a hang anywhere fails the test (SIGALRM) instead of waiting for ctest's timeout */
    test_fork_while_busy();
    TEST_PASS("test_fork");
    return 0;
}
