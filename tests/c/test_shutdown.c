/* Shutdown and lifecycle: pool_free with queued and running tasks, timeouts, freeing
 * from inside the pool, abandoned callables, asyncify_shutdown, and a process that exits with tasks
 * still running. */
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

/* Every callback of the test bumps this, so "no callback after OK" can be checked. */
static atomic_int callbacks;

struct job {
    atomic_int gate;
    atomic_int started;
    atomic_int finished;
    atomic_int free_arg_calls;
    atomic_int done_calls;
    atomic_int free_arg_before_done; /* free_arg had been called when on_done ran */
    asyncify_status done_status;
    pthread_t done_thread;
    int64_t done_sleep_ms;
    atomic_int done_returned;
    int64_t finished_at;
    struct asyncify_pool *pool; /* for on_done's submit attempt */
    asyncify_status submit_in_done; /* what a submit to the pool gave inside on_done */
};

static int32_t job_task(void *arg, void **out_result)
{
    (void)out_result;
    struct job *j = arg;
    atomic_store(&j->started, 1);
    gate_wait(&j->gate);
    j->finished_at = now_ms();
    atomic_store(&j->finished, 1);
    return 0;
}

static void job_free_arg(void *arg)
{
    struct job *j = arg;
    atomic_fetch_add(&j->free_arg_calls, 1);
    atomic_fetch_add(&callbacks, 1);
}

static void job_done(void *user_data, asyncify_handle h, asyncify_status s, void *result, int32_t code)
{
    (void)h;
    (void)result;
    (void)code;
    struct job *j = user_data;
    j->done_status = s;
    j->done_thread = pthread_self();
    atomic_store(&j->free_arg_before_done, atomic_load(&j->free_arg_calls));
    if (j->pool != NULL) {
        asyncify_handle nh = 0;
        asyncify_submit_options opts = options_for(j->pool);
        j->submit_in_done = asyncify_submit(noop_task, NULL, &opts, &nh);
        if (j->submit_in_done >= 0) {
            (void)asyncify_release(nh);
        }
    }
    if (j->done_sleep_ms > 0) {
        sleep_ms(j->done_sleep_ms);
    }
    atomic_fetch_add(&j->done_calls, 1);
    atomic_fetch_add(&callbacks, 1);
    atomic_store(&j->done_returned, 1);
}

static asyncify_handle submit_job(struct asyncify_pool *pool, struct job *j)
{
    asyncify_submit_options opts = options_for(pool);
    opts.on_done = job_done;
    opts.on_done_data = j;
    opts.free_arg = job_free_arg;
    return submit_opts(job_task, j, &opts);
}

/* Opens a gate after a delay, from its own thread. */
struct opener {
    atomic_int *gate;
    int64_t delay_ms;
    int64_t opened_at;
};

static void *open_later(void *arg)
{
    struct opener *o = arg;
    sleep_ms(o->delay_ms);
    o->opened_at = now_ms();
    gate_open(o->gate);
    return NULL;
}

/* ---- pool_free with queued and running tasks ----------------------------------------------------- */

static void test_free_with_queued_and_running(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct job run[2], queued[3];
    memset(run, 0, sizeof run);
    memset(queued, 0, sizeof queued);
    asyncify_handle hr[2], hq[3];
    for (int i = 0; i < 2; i++) {
        run[i].done_sleep_ms = 100; /* pool_free waits for on_done too, not just fn */
        run[i].submit_in_done = 12345;
        hr[i] = submit_job(pool, &run[i]);
    }
    for (int i = 0; i < 2; i++) {
        WAIT_FOR(atomic_load(&run[i].started), TEST_PATIENCE_MS);
    }
    for (int i = 0; i < 3; i++) {
        queued[i].pool = pool; /* tries a submit from its on_done, during the shutdown */
        queued[i].submit_in_done = 12345;
        hq[i] = submit_job(pool, &queued[i]);
    }
    /* The running tasks go on for another 300 ms. */
    struct opener op0 = { .gate = &run[0].gate, .delay_ms = 300 };
    struct opener op1 = { .gate = &run[1].gate, .delay_ms = 300 };
    pthread_t t0 = start_thread(open_later, &op0);
    pthread_t t1 = start_thread(open_later, &op1);

    int64_t start = now_ms();
    CHECK_OK(asyncify_pool_free(pool, -1));
    int64_t returned = now_ms();
    int cb_at_return = atomic_load(&callbacks);
    join_thread(t0);
    join_thread(t1);
    CHECK(returned >= op0.opened_at && returned >= op1.opened_at); /* it waited for the running ones */
    CHECK(returned - start < 5000);

    /* Queued: never ran, free_arg once then on_done(CANCELLED) once, on the freeing thread, and a
     * submit during the shutdown was refused. */
    for (int i = 0; i < 3; i++) {
        CHECK(atomic_load(&queued[i].started) == 0);
        CHECK(atomic_load(&queued[i].free_arg_calls) == 1);
        CHECK(atomic_load(&queued[i].done_calls) == 1);
        CHECK(atomic_load(&queued[i].free_arg_before_done) == 1);
        CHECK_EQ_STATUS(queued[i].done_status, ASYNCIFY_CANCELLED);
        CHECK(pthread_equal(queued[i].done_thread, pthread_self()));
        CHECK_EQ_STATUS(queued[i].submit_in_done, ASYNCIFY_E_SHUT_DOWN);
    }
    /* Running: completed, with on_done returned before pool_free did. */
    for (int i = 0; i < 2; i++) {
        CHECK(atomic_load(&run[i].finished) == 1);
        CHECK(atomic_load(&run[i].done_returned) == 1);
        CHECK(atomic_load(&run[i].done_calls) == 1);
        CHECK_EQ_STATUS(run[i].done_status, ASYNCIFY_OK);
        CHECK(!pthread_equal(run[i].done_thread, pthread_self()));
        CHECK(atomic_load(&run[i].free_arg_calls) == 0); /* it ran: arg is the caller's */
    }
    CHECK(cb_at_return == 2 * 1 + 3 * 2);
    /* No callback after OK. */
    sleep_ms(200);
    CHECK(atomic_load(&callbacks) == cb_at_return);

    /* Handles outlive the pool. */
    for (int i = 0; i < 2; i++) {
        CHECK_OK(asyncify_poll(hr[i], NULL, NULL));
        CHECK_OK(asyncify_release(hr[i]));
    }
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_STATUS(asyncify_wait(hq[i], 0, NULL, NULL), ASYNCIFY_CANCELLED);
        CHECK_OK(asyncify_release(hq[i]));
    }
    atomic_store(&callbacks, 0);
}

static uint64_t pool_running(struct asyncify_pool *pool)
{
    asyncify_pool_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_OK(asyncify_stats(pool, &st));
    return st.running;
}

/* ---- pool_free with a timeout ------------------------------------------------------------------- */

static void test_free_timeout(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct job j;
    memset(&j, 0, sizeof j);
    asyncify_handle h = submit_job(pool, &j);
    WAIT_FOR(atomic_load(&j.started), TEST_PATIENCE_MS);
    struct job q;
    memset(&q, 0, sizeof q);
    asyncify_handle hq = submit_job(pool, &q);

    int64_t t0 = now_ms();
    CHECK_EQ_STATUS(asyncify_pool_free(pool, 150), ASYNCIFY_TIMEOUT);
    int64_t waited = now_ms() - t0;
    CHECK(waited >= 140 && waited < 5000);
    /* The queued one was cancelled anyway; the running one goes on. */
    CHECK_EQ_STATUS(asyncify_poll(hq, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&q.free_arg_calls) == 1 && atomic_load(&q.done_calls) == 1);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_PENDING);
    CHECK(atomic_load(&j.finished) == 0);
    CHECK(atomic_load(&j.done_calls) == 0);

    /* It still completes later, with its on_done; the handle waits OK. */
    gate_open(&j.gate);
    wait_ok(h);
    CHECK(atomic_load(&j.finished) == 1);
    CHECK(atomic_load(&j.done_calls) == 1);
    CHECK_EQ_STATUS(j.done_status, ASYNCIFY_OK);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_release(hq));

    /* Timeout 0 with a running task: TIMEOUT at once. */
    pool = new_pool(1);
    struct job k;
    memset(&k, 0, sizeof k);
    h = submit_job(pool, &k);
    WAIT_FOR(atomic_load(&k.started), TEST_PATIENCE_MS);
    t0 = now_ms();
    CHECK_EQ_STATUS(asyncify_pool_free(pool, 0), ASYNCIFY_TIMEOUT);
    CHECK(now_ms() - t0 < 2000);
    gate_open(&k.gate);
    wait_ok_release(h);
    WAIT_FOR(atomic_load(&k.done_returned) == 1, TEST_PATIENCE_MS);

    /* An idle pool: OK at once, whatever the timeout. (A worker gives its slot back just after the
     * task's status is published, so wait until the pool says it is quiet.) */
    pool = new_pool(2);
    wait_ok_release(submit_to(pool, noop_task, NULL));
    WAIT_FOR(pool_running(pool) == 0, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_pool_free(pool, 0));
    pool = new_pool(0);
    CHECK_OK(asyncify_pool_free(pool, 0));
}

/* ---- pool_free from inside the pool -------------------------------------------------------------- */

struct self_free {
    struct asyncify_pool *pool;
    struct asyncify_pool *other;
    asyncify_status in_task;
    asyncify_status in_done;
    asyncify_status other_in_task;
    size_t err_len;
};

static int32_t free_own_pool_task(void *arg, void **out_result)
{
    (void)out_result;
    struct self_free *s = arg;
    s->in_task = asyncify_pool_free(s->pool, -1);
    s->err_len = last_error_size();
    if (s->other != NULL) {
        s->other_in_task = asyncify_pool_free(s->other, -1);
        s->other = NULL;
    }
    return 0;
}

static void free_own_pool_done(void *user_data, asyncify_handle h, asyncify_status st, void *result,
                               int32_t code)
{
    (void)h;
    (void)st;
    (void)result;
    (void)code;
    struct self_free *s = user_data;
    s->in_done = asyncify_pool_free(s->pool, 0);
}

static void test_free_from_inside(void)
{
    struct self_free s = { .in_task = 12345, .in_done = 12345, .other_in_task = 12345 };
    s.pool = new_pool(2);
    s.other = new_pool(1);
    wait_ok_release(submit_to(s.other, noop_task, NULL));
    asyncify_submit_options opts = options_for(s.pool);
    opts.on_done = free_own_pool_done;
    opts.on_done_data = &s;
    wait_ok_release(submit_opts(free_own_pool_task, &s, &opts));
    CHECK_EQ_STATUS(s.in_task, ASYNCIFY_E_WOULD_DEADLOCK);
    CHECK(s.err_len > 1);
    CHECK_EQ_STATUS(s.in_done, ASYNCIFY_E_WOULD_DEADLOCK); /* on_done runs on the worker too */
    CHECK_OK(s.other_in_task); /* another pool may be freed from a task */

    /* The pool still works. */
    for (int i = 0; i < 5; i++) {
        wait_ok_release(submit_to(s.pool, noop_task, NULL));
    }
    uint32_t n = 0;
    CHECK_OK(asyncify_get_max_workers(s.pool, &n));
    CHECK(n == 2);
    CHECK_OK(asyncify_pool_free(s.pool, -1));
}

static asyncify_status shutdown_in_default_task;
static int32_t shutdown_default_task(void *arg, void **out_result)
{
    (void)arg;
    (void)out_result;
    shutdown_in_default_task = asyncify_shutdown(-1);
    return 0;
}

/* ---- abandoned callables are waited for --------------------------------------------------------------- */

static void run_abandoned_waited(uint32_t flags)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 1;
    o.flags = flags;
    struct asyncify_pool *pool = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &pool));

    struct job j;
    memset(&j, 0, sizeof j);
    asyncify_handle h = submit_job(pool, &j);
    WAIT_FOR(atomic_load(&j.started), TEST_PATIENCE_MS);
    CHECK_EQ_STATUS(asyncify_cancel(h), ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&j.done_calls) == 1); /* on_done ran here, in cancel */
    CHECK(atomic_load(&j.free_arg_calls) == 0); /* not before fn returns */

    struct opener op = { .gate = &j.gate, .delay_ms = 300 };
    pthread_t t = start_thread(open_later, &op);
    CHECK_OK(asyncify_pool_free(pool, -1));
    int64_t returned = now_ms();
    join_thread(t);
    CHECK(atomic_load(&j.finished) == 1);
    CHECK(j.finished_at >= op.opened_at);
    CHECK(returned >= j.finished_at);
    /* The callbacks the abandoned callable causes (free_arg) happened before the return. */
    CHECK(atomic_load(&j.free_arg_calls) == 1);
    CHECK(atomic_load(&j.done_calls) == 1);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(h));
}

static void test_abandoned_waited_for(void)
{
    run_abandoned_waited(0);
    run_abandoned_waited(ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON);
}

/* ---- asyncify_shutdown: the default pool ------------------------------------------------------------ */

static void test_default_shutdown(void)
{
    /* From a task of the default pool: refused. */
    shutdown_in_default_task = 12345;
    asyncify_handle h = 0;
    CHECK_OK(asyncify_submit(shutdown_default_task, NULL, NULL, &h));
    wait_ok_release(h);
    CHECK_EQ_STATUS(shutdown_in_default_task, ASYNCIFY_E_WOULD_DEADLOCK);

    /* A running task and a queued one (limit 1 for this test). */
    CHECK_OK(asyncify_set_max_workers(NULL, 1));
    struct job run, queued;
    memset(&run, 0, sizeof run);
    memset(&queued, 0, sizeof queued);
    asyncify_handle hr = submit_job(NULL, &run);
    WAIT_FOR(atomic_load(&run.started), TEST_PATIENCE_MS);
    asyncify_handle hq = submit_job(NULL, &queued);

    CHECK_EQ_STATUS(asyncify_shutdown(100), ASYNCIFY_TIMEOUT);
    CHECK_EQ_STATUS(asyncify_poll(hq, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&queued.free_arg_calls) == 1 && atomic_load(&queued.done_calls) == 1);
    /* New submissions to the default pool are refused, nothing runs. */
    atomic_int ran = 0;
    asyncify_handle hx = 999;
    CHECK_ERR(asyncify_submit(noop_task, &ran, NULL, &hx), ASYNCIFY_E_SHUT_DOWN);
    CHECK(hx == 999);

    struct opener op = { .gate = &run.gate, .delay_ms = 200 };
    pthread_t t = start_thread(open_later, &op);
    CHECK_OK(asyncify_shutdown(-1));
    join_thread(t);
    CHECK(atomic_load(&run.done_returned) == 1);
    wait_ok_release(hr);
    CHECK_OK(asyncify_release(hq));
    CHECK_OK(asyncify_shutdown(0)); /* again: harmless */
    CHECK_ERR(asyncify_submit(noop_task, NULL, NULL, &hx), ASYNCIFY_E_SHUT_DOWN);

    /* Private pools are not affected. */
    struct asyncify_pool *pool = new_pool(1);
    wait_ok_release(submit_to(pool, noop_task, NULL));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- a process that exits with tasks still running ----------------------------------------------------- */

static int32_t long_task(void *arg, void **out_result)
{
    (void)out_result;
    atomic_fetch_add((atomic_int *)arg, 1);
    sleep_ms(20000);
    return 0;
}

static void *blocked_waiter(void *arg)
{
    asyncify_handle h = *(asyncify_handle *)arg;
    (void)asyncify_wait(h, -1, NULL, NULL);
    return NULL;
}

static void release_nothing(void *p)
{
    (void)p;
}

/* The child: submits long tasks everywhere, tells the parent, then leaves main. */
static int exit_child(const char *mode, int fd)
{
    static atomic_int started;
    /* Static: still referenced at exit, so LeakSanitizer does not count the pool and queue, which the
     * child deliberately never frees, as leaks. */
    static struct asyncify_pool *pool;
    static struct asyncify_cq *cq;
    pool = new_pool(2);
    CHECK_OK(asyncify_cq_new(&cq));
    CHECK_OK(asyncify_override_set_ptr("p", &started, release_nothing));
    set_str("k", "v");
    static int dummy;
    CHECK_OK(asyncify_global_set_ptr("g", &dummy, release_nothing));
    asyncify_handle h = 0;
    CHECK_OK(asyncify_submit(long_task, &started, NULL, &h)); /* the default pool */
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    for (int i = 0; i < 4; i++) { /* two running, two queued */
        (void)submit_opts(long_task, &started, &opts);
    }
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_OK(asyncify_submit(long_task, &started, &opts, NULL));
    WAIT_FOR(atomic_load(&started) == 3, TEST_PATIENCE_MS);
    static asyncify_handle waited;
    waited = h;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, blocked_waiter, &waited) == 0);
    sleep_ms(50);
    CHECK(write(fd, "R", 1) == 1);
    close(fd);
    if (strcmp(mode, "exit") == 0) {
        exit(0);
    }
    return 0; /* return from main */
}

static void run_exit_child(const char *self, const char *mode)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    char fd_text[16];
    snprintf(fd_text, sizeof fd_text, "%d", fds[1]);
    int64_t t0 = now_ms();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char *argv[] = { (char *)self, "--exit-child", (char *)mode, fd_text, NULL };
        execv(self, argv);
        _exit(127);
    }
    close(fds[1]);
    char c = 0;
    ssize_t r = read(fds[0], &c, 1);
    close(fds[0]);
    int64_t ready = now_ms();
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() - ready < 5000) {
        sleep_ms(10);
    }
    int64_t exited = now_ms();
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        test_fail(__FILE__, __LINE__, "the child (%s) still runs 5 s after its tasks started: a hang", mode);
    }
    CHECK(done == pid);
    printf("child (%s): ready after %lld ms, exited %lld ms later, status 0x%x\n", mode,
           (long long)(ready - t0), (long long)(exited - ready), status);
    CHECK(r == 1 && c == 'R');
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(exited - ready < 5000);
}

static void test_exit_with_tasks_running(const char *self)
{
    run_exit_child(self, "return");
    run_exit_child(self, "exit");
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--exit-child") == 0) {
        return exit_child(argv[2], atoi(argv[3]));
    }
    /* The child is this program again: the running executable. */
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    self[n] = '\0';

    test_free_with_queued_and_running();
    test_free_timeout();
    test_free_from_inside();
    test_abandoned_waited_for();
    test_exit_with_tasks_running(self);
    test_default_shutdown(); /* last: the default pool stays shut down */
    TEST_PASS("test_shutdown");
    return 0;
}
