/* Completion queues: delivery into the queue, the pollable fd, many completions per
 * wake-up, cancelled records, and freeing a queue that tasks still point at. */
#include <poll.h>

#include "test_util.h"

static struct asyncify_cq *new_cq(void)
{
    struct asyncify_cq *cq = NULL;
    CHECK_OK(asyncify_cq_new(&cq));
    CHECK(cq != NULL);
    return cq;
}

static int cq_fd(struct asyncify_cq *cq)
{
    int fd = -1;
    CHECK_OK(asyncify_cq_fd(cq, &fd));
    CHECK(fd >= 0);
    return fd;
}

/* poll(2) with a 0 timeout: is the fd readable now? */
static bool readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n = poll(&p, 1, 0);
    CHECK(n >= 0);
    CHECK((p.revents & (POLLERR | POLLNVAL)) == 0);
    return n == 1 && (p.revents & POLLIN);
}

/* A result object that counts how often free_result was called on it. */
struct result {
    atomic_int freed;
    int id;
};

static void free_result_counted(void *p)
{
    atomic_fetch_add(&((struct result *)p)->freed, 1);
}

static atomic_int free_arg_calls;
static void free_arg_counted(void *p)
{
    (void)p;
    atomic_fetch_add(&free_arg_calls, 1);
}

struct job {
    atomic_int gate;
    atomic_int started;
    atomic_int finished;
    struct result *result;
    int32_t code;
};

static int32_t job_task(void *arg, void **out_result)
{
    struct job *j = arg;
    atomic_store(&j->started, 1);
    gate_wait(&j->gate);
    *out_result = j->result;
    atomic_store(&j->finished, 1);
    return j->code;
}

/* Drains until `want` records arrived (bounded). */
static size_t drain_n(struct asyncify_cq *cq, asyncify_completion *out, size_t want)
{
    size_t have = 0;
    int64_t deadline = now_ms() + TEST_PATIENCE_MS;
    while (have < want) {
        CHECK(now_ms() < deadline);
        asyncify_status s = asyncify_cq_wait(cq, 100);
        CHECK(s == ASYNCIFY_OK || s == ASYNCIFY_TIMEOUT);
        size_t got = 0;
        CHECK_OK(asyncify_cq_drain(cq, out + have, want - have, &got));
        CHECK(got <= want - have);
        have += got;
    }
    return have;
}

/* ---- delivery, moving the result, the fd ---------------------------------------------------------- */

static void test_delivery(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct asyncify_cq *cq = new_cq();
    int fd = cq_fd(cq);
    int fd2 = -1;
    CHECK_OK(asyncify_cq_fd(cq, &fd2));
    CHECK(fd2 == fd); /* the same fd every time */
    CHECK(!readable(fd));

    struct result r_ok = { .id = 1 }, r_fail = { .id = 2 };
    struct job ok = { .result = &r_ok, .code = 0 }, fail = { .result = &r_fail, .code = 6 };
    int marker_ok = 0, marker_fail = 0;
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    opts.free_result = free_result_counted;
    opts.on_done_data = &marker_ok;
    asyncify_handle h_ok = submit_opts(job_task, &ok, &opts);
    opts.on_done_data = &marker_fail;
    asyncify_handle h_fail = submit_opts(job_task, &fail, &opts);

    /* Nothing finished: nothing to drain, the fd not readable, a wait times out. */
    WAIT_FOR(atomic_load(&ok.started), TEST_PATIENCE_MS);
    asyncify_completion rec[4];
    memset(rec, 0, sizeof rec);
    size_t n = 99;
    CHECK_OK(asyncify_cq_drain(cq, rec, 4, &n));
    CHECK(n == 0);
    CHECK(!readable(fd));
    int64_t t0 = now_ms();
    CHECK_EQ_STATUS(asyncify_cq_wait(cq, 100), ASYNCIFY_TIMEOUT);
    int64_t waited = now_ms() - t0;
    CHECK(waited >= 90 && waited < 5000);
    CHECK_EQ_STATUS(asyncify_cq_wait(cq, 0), ASYNCIFY_TIMEOUT);

    /* Both finish (in order: limit 1). */
    gate_open(&ok.gate);
    gate_open(&fail.gate);
    WAIT_FOR(atomic_load(&fail.finished), TEST_PATIENCE_MS);
    CHECK_OK(asyncify_cq_wait(cq, TEST_PATIENCE_MS));
    WAIT_FOR(asyncify_poll(h_fail, NULL, NULL) == ASYNCIFY_FAILED, TEST_PATIENCE_MS);
    CHECK(readable(fd));
    CHECK_OK(asyncify_cq_wait(cq, 0)); /* wait does not drain */
    CHECK_OK(asyncify_cq_wait(cq, -1));
    CHECK(readable(fd));

    /* A drain with room for one: still readable, the other still waits. */
    n = 0;
    CHECK_OK(asyncify_cq_drain(cq, rec, 1, &n));
    CHECK(n == 1);
    CHECK(rec[0].handle == h_ok);
    CHECK(rec[0].status == ASYNCIFY_OK);
    CHECK(rec[0].code == 0);
    CHECK(rec[0].result == &r_ok);
    CHECK(rec[0].user_data == &marker_ok);
    CHECK(readable(fd));
    /* cap 0: nothing moves, out may be NULL. */
    n = 99;
    CHECK_OK(asyncify_cq_drain(cq, NULL, 0, &n));
    CHECK(n == 0);
    CHECK(readable(fd));
    n = 0;
    CHECK_OK(asyncify_cq_drain(cq, rec + 1, 3, &n));
    CHECK(n == 1);
    CHECK(rec[1].handle == h_fail);
    CHECK(rec[1].status == ASYNCIFY_FAILED);
    CHECK(rec[1].code == 6);
    CHECK(rec[1].result == &r_fail);
    CHECK(rec[1].user_data == &marker_fail);
    /* Drained empty: not readable any more. */
    CHECK(!readable(fd));
    n = 99;
    CHECK_OK(asyncify_cq_drain(cq, rec + 2, 2, &n));
    CHECK(n == 0);
    CHECK(!readable(fd));

    /* The results moved into the records: the handles keep status and code, the result is NULL. */
    void *res = &n;
    int32_t code = -1;
    CHECK_OK(asyncify_poll(h_ok, &res, &code));
    CHECK(res == NULL && code == 0);
    res = &n;
    CHECK_EQ_STATUS(asyncify_wait(h_fail, 0, &res, &code), ASYNCIFY_FAILED);
    CHECK(res == NULL && code == 6);
    CHECK_OK(asyncify_release(h_ok));
    CHECK_OK(asyncify_release(h_fail));
    sleep_ms(20);
    CHECK(atomic_load(&r_ok.freed) == 0 && atomic_load(&r_fail.freed) == 0); /* ours now */

    /* The fd becomes readable again with the next completion. */
    struct result r3 = { .id = 3 };
    struct job third = { .result = &r3, .code = 0 };
    gate_open(&third.gate);
    opts.on_done_data = NULL;
    asyncify_handle h3 = submit_opts(job_task, &third, &opts);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    CHECK(poll(&p, 1, TEST_PATIENCE_MS) == 1);
    CHECK(drain_n(cq, rec, 1) == 1);
    CHECK(rec[0].handle == h3 && rec[0].result == &r3 && rec[0].user_data == NULL);
    CHECK(!readable(fd));
    CHECK_OK(asyncify_release(h3));

    /* A DETACHED task delivers too; its handle released itself. */
    struct result r4 = { .id = 4 };
    struct job fourth = { .result = &r4, .code = 0 };
    gate_open(&fourth.gate);
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    opts.on_done_data = &marker_ok;
    CHECK_OK(asyncify_submit(job_task, &fourth, &opts, NULL));
    CHECK(drain_n(cq, rec, 1) == 1);
    CHECK(rec[0].status == ASYNCIFY_OK && rec[0].result == &r4 && rec[0].user_data == &marker_ok);
    CHECK(rec[0].handle != 0);
    WAIT_FOR(asyncify_poll(rec[0].handle, NULL, NULL) == ASYNCIFY_E_INVALID_HANDLE, TEST_PATIENCE_MS);
    CHECK(atomic_load(&r4.freed) == 0);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_cq_free(cq));
    CHECK(atomic_load(&r_ok.freed) == 0 && atomic_load(&r_fail.freed) == 0);
    CHECK(atomic_load(&r3.freed) == 0 && atomic_load(&r4.freed) == 0);
}

static atomic_int done_calls;
static void count_done(void *user_data, asyncify_handle h, asyncify_status s, void *result, int32_t code)
{
    (void)user_data;
    (void)h;
    (void)result;
    (void)code;
    CHECK(s == ASYNCIFY_OK);
    atomic_fetch_add(&done_calls, 1);
}

static void test_on_done_wins(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct asyncify_cq *cq = new_cq();
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    opts.on_done = count_done;
    struct result r = { .id = 5 };
    struct job j = { .result = &r, .code = 0 };
    gate_open(&j.gate);
    asyncify_handle h = submit_opts(job_task, &j, &opts);
    wait_ok_release(h);
    CHECK(atomic_load(&done_calls) == 1);
    CHECK_EQ_STATUS(asyncify_cq_wait(cq, 100), ASYNCIFY_TIMEOUT);
    CHECK(!readable(cq_fd(cq)));
    CHECK_OK(asyncify_cq_free(cq));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&r.freed) == 0); /* it went to on_done */
}

/* ---- cq_wait from another thread ---------------------------------------------------------------- */

struct waiter {
    struct asyncify_cq *cq;
    atomic_int about_to_wait;
    asyncify_status status;
    int64_t returned_at;
};

static void *cq_waiter(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->about_to_wait, 1);
    w->status = asyncify_cq_wait(w->cq, -1);
    w->returned_at = now_ms();
    return NULL;
}

static void test_wait_from_another_thread(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct asyncify_cq *cq = new_cq();
    struct waiter w = { .cq = cq, .status = 12345 };
    pthread_t t = start_thread(cq_waiter, &w);
    WAIT_FOR(atomic_load(&w.about_to_wait), TEST_PATIENCE_MS);
    sleep_ms(100);
    CHECK(w.returned_at == 0);
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    struct job j = { .code = 0 };
    gate_open(&j.gate);
    int64_t submitted_at = now_ms();
    asyncify_handle h = submit_opts(job_task, &j, &opts);
    join_thread(t);
    CHECK_OK(w.status);
    CHECK(w.returned_at - submitted_at < 5000);
    asyncify_completion rec;
    CHECK(drain_n(cq, &rec, 1) == 1);
    CHECK(rec.handle == h && rec.status == ASYNCIFY_OK);
    CHECK_OK(asyncify_release(h));

    /* Freeing the queue wakes a waiter with E_SHUT_DOWN. */
    struct waiter w2 = { .cq = cq, .status = 12345 };
    t = start_thread(cq_waiter, &w2);
    WAIT_FOR(atomic_load(&w2.about_to_wait), TEST_PATIENCE_MS);
    sleep_ms(300); /* let it get into the wait */
    CHECK(w2.returned_at == 0);
    int64_t freed_at = now_ms();
    CHECK_OK(asyncify_cq_free(cq));
    join_thread(t);
    CHECK_EQ_STATUS(w2.status, ASYNCIFY_E_SHUT_DOWN);
    CHECK(w2.returned_at - freed_at < 5000);
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- cancelled tasks deliver CANCELLED records ------------------------------------------------------ */

static void test_cancelled_records(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct asyncify_cq *cq = new_cq();
    int fd = cq_fd(cq);
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    opts.free_arg = free_arg_counted;
    opts.free_result = free_result_counted;
    atomic_store(&free_arg_calls, 0);

    /* One running (to be abandoned), two queued (to be cancelled). */
    struct result r_run = { .id = 10 };
    struct job run = { .result = &r_run, .code = 0 }, q1 = { .code = 0 }, q2 = { .code = 0 };
    int tag_run = 0, tag_q1 = 0, tag_q2 = 0;
    opts.on_done_data = &tag_run;
    asyncify_handle h_run = submit_opts(job_task, &run, &opts);
    WAIT_FOR(atomic_load(&run.started), TEST_PATIENCE_MS);
    opts.on_done_data = &tag_q1;
    asyncify_handle h_q1 = submit_opts(job_task, &q1, &opts);
    opts.on_done_data = &tag_q2;
    asyncify_handle h_q2 = submit_opts(job_task, &q2, &opts);

    CHECK_EQ_STATUS(asyncify_cancel(h_q2), ASYNCIFY_CANCELLED);
    CHECK(readable(fd)); /* delivered at once, by the cancelling thread */
    CHECK(atomic_load(&free_arg_calls) == 1);
    CHECK_EQ_STATUS(asyncify_cancel(h_q1), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_cancel(h_run), ASYNCIFY_CANCELLED);
    CHECK_EQ_STATUS(asyncify_cancel(h_run), ASYNCIFY_CANCELLED); /* twice: one record */

    asyncify_completion rec[4];
    size_t n = 0;
    CHECK_OK(asyncify_cq_drain(cq, rec, 4, &n));
    CHECK(n == 3);
    CHECK(!readable(fd));
    CHECK(rec[0].handle == h_q2 && rec[0].user_data == &tag_q2);
    CHECK(rec[1].handle == h_q1 && rec[1].user_data == &tag_q1);
    CHECK(rec[2].handle == h_run && rec[2].user_data == &tag_run);
    for (size_t i = 0; i < 3; i++) {
        CHECK(rec[i].status == ASYNCIFY_CANCELLED);
        CHECK(rec[i].result == NULL);
    }

    /* The abandoned fn runs to its end; its result then goes to free_result, not to a record. */
    CHECK(atomic_load(&run.finished) == 0);
    gate_open(&run.gate);
    WAIT_FOR(atomic_load(&r_run.freed) == 1, TEST_PATIENCE_MS);
    WAIT_FOR(atomic_load(&free_arg_calls) == 3, TEST_PATIENCE_MS);
    CHECK_EQ_STATUS(asyncify_cq_wait(cq, 100), ASYNCIFY_TIMEOUT);
    CHECK(atomic_load(&q1.started) == 0 && atomic_load(&q2.started) == 0);
    CHECK_EQ_STATUS(asyncify_poll(h_run, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(h_run));
    CHECK_OK(asyncify_release(h_q1));
    CHECK_OK(asyncify_release(h_q2));

    /* Shutdown cancels queued tasks: CANCELLED records too. */
    struct asyncify_pool *paused = new_pool(0);
    opts.pool = paused;
    opts.on_done_data = &tag_q1;
    struct job s1 = { .code = 0 }, s2 = { .code = 0 };
    asyncify_handle hs1 = submit_opts(job_task, &s1, &opts);
    asyncify_handle hs2 = submit_opts(job_task, &s2, &opts);
    CHECK_OK(asyncify_pool_free(paused, -1));
    CHECK(readable(fd));
    n = 0;
    CHECK_OK(asyncify_cq_drain(cq, rec, 4, &n));
    CHECK(n == 2);
    CHECK(rec[0].handle == hs1 && rec[1].handle == hs2);
    CHECK(rec[0].status == ASYNCIFY_CANCELLED && rec[1].status == ASYNCIFY_CANCELLED);
    CHECK(atomic_load(&free_arg_calls) == 5);
    CHECK_OK(asyncify_release(hs1));
    CHECK_OK(asyncify_release(hs2));

    CHECK_OK(asyncify_cq_free(cq));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&r_run.freed) == 1);
}

/* ---- freeing a queue that tasks still point at ------------------------------------------------------ */

static void test_free_with_tasks_pending(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct asyncify_pool *paused = new_pool(0);
    struct asyncify_cq *cq = new_cq();
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;
    opts.free_result = free_result_counted;

    /* B finished and its record was never drained; C failed, undrained; D has no result. */
    struct result rb = { .id = 1 }, rc = { .id = 2 };
    struct job b = { .result = &rb, .code = 0 }, c = { .result = &rc, .code = 3 }, d = { .code = 0 };
    gate_open(&b.gate);
    gate_open(&c.gate);
    gate_open(&d.gate);
    asyncify_handle hb = submit_opts(job_task, &b, &opts);
    asyncify_handle hc = submit_opts(job_task, &c, &opts);
    asyncify_handle hd = submit_opts(job_task, &d, &opts);
    WAIT_FOR(asyncify_poll(hb, NULL, NULL) == ASYNCIFY_OK, TEST_PATIENCE_MS);
    WAIT_FOR(asyncify_poll(hc, NULL, NULL) == ASYNCIFY_FAILED, TEST_PATIENCE_MS);
    WAIT_FOR(asyncify_poll(hd, NULL, NULL) == ASYNCIFY_OK, TEST_PATIENCE_MS);

    /* A is still queued, E is running: both point at the queue. */
    struct result ra = { .id = 3 }, re = { .id = 4 }, rf = { .id = 5 };
    struct job a = { .result = &ra, .code = 0 }, e = { .result = &re, .code = 0 };
    struct job f = { .result = &rf, .code = 0 };
    opts.pool = paused;
    asyncify_handle ha = submit_opts(job_task, &a, &opts);
    asyncify_handle hf = submit_opts(job_task, &f, &opts);
    opts.pool = pool;
    asyncify_handle he = submit_opts(job_task, &e, &opts);
    WAIT_FOR(atomic_load(&e.started), TEST_PATIENCE_MS);

    CHECK_OK(asyncify_cq_free(cq));
    /* The undrained records' results went to free_result, once each. */
    CHECK(atomic_load(&rb.freed) == 1);
    CHECK(atomic_load(&rc.freed) == 1);
    void *res = &res;
    int32_t code = -1;
    CHECK_OK(asyncify_poll(hb, &res, &code));
    CHECK(res == NULL && code == 0);
    CHECK_EQ_STATUS(asyncify_poll(hc, &res, &code), ASYNCIFY_FAILED);
    CHECK(code == 3);

    /* Later completions stay on the handles. */
    gate_open(&e.gate);
    gate_open(&a.gate);
    gate_open(&f.gate);
    CHECK_OK(asyncify_set_max_workers(paused, 2));
    res = NULL;
    CHECK_OK(asyncify_wait(he, TEST_PATIENCE_MS, &res, &code));
    CHECK(res == &re && code == 0);
    res = NULL;
    CHECK_OK(asyncify_wait(ha, TEST_PATIENCE_MS, &res, NULL));
    CHECK(res == &ra);
    /* F's result nobody takes: released handle, free_result once. */
    CHECK_OK(asyncify_wait(hf, TEST_PATIENCE_MS, NULL, NULL));
    CHECK(atomic_load(&rf.freed) == 0);
    CHECK_OK(asyncify_release(hf));
    WAIT_FOR(atomic_load(&rf.freed) == 1, TEST_PATIENCE_MS);

    CHECK_OK(asyncify_release(ha));
    CHECK_OK(asyncify_release(hb));
    CHECK_OK(asyncify_release(hc));
    CHECK_OK(asyncify_release(hd));
    CHECK_OK(asyncify_release(he));
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_pool_free(paused, -1));
    sleep_ms(20);
    CHECK(atomic_load(&rb.freed) == 1 && atomic_load(&rc.freed) == 1 && atomic_load(&rf.freed) == 1);
    CHECK(atomic_load(&ra.freed) == 0 && atomic_load(&re.freed) == 0);

    /* A queue freed with only cancelled (result-less) records: nothing to free, no crash. */
    struct asyncify_cq *cq2 = new_cq();
    paused = new_pool(0);
    opts = options_for(paused);
    opts.cq = cq2;
    struct job g = { .code = 0 };
    asyncify_handle hg = submit_opts(job_task, &g, &opts);
    CHECK_EQ_STATUS(asyncify_cancel(hg), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_cq_free(cq2));
    CHECK_EQ_STATUS(asyncify_poll(hg, NULL, NULL), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(hg));
    CHECK_OK(asyncify_pool_free(paused, -1));
}

/* ---- the count: 10,000 completions, far fewer wake-ups --------------------------------------- */

#define MANY 10000

static atomic_int many_ran;

static int32_t tiny_task(void *arg, void **out_result)
{
    atomic_fetch_add(&many_ran, 1);
    *out_result = arg;
    return 0;
}

static void test_many_completions_few_wakeups(void)
{
    struct asyncify_pool *pool = new_pool(4);
    struct asyncify_cq *cq = new_cq();
    int fd = cq_fd(cq);
    static unsigned char seen[MANY];
    memset(seen, 0, sizeof seen);
    asyncify_submit_options opts = options_for(pool);
    opts.cq = cq;

    int64_t t0 = now_ms();
    for (size_t i = 0; i < MANY; i++) {
        opts.on_done_data = (void *)(i + 1);
        (void)submit_opts(tiny_task, &seen[i], &opts);
    }
    int wakeups = 0, drains = 0, got_total = 0, bad = 0;
    static asyncify_completion batch[256];
    while (got_total < MANY) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, TEST_PATIENCE_MS);
        CHECK(r == 1); /* not a timeout: completions keep coming */
        CHECK(p.revents & POLLIN);
        wakeups++;
        size_t n;
        bool first = true;
        do {
            n = 0;
            CHECK_OK(asyncify_cq_drain(cq, batch, 256, &n));
            drains++;
            /* Readable only while completions wait: a wake-up always finds
               one (a queue left readable after it was drained empty would
               wake the loop for nothing). */
            CHECK(n > 0 || !first);
            first = false;
            for (size_t i = 0; i < n; i++) {
                size_t idx = (size_t)batch[i].user_data - 1;
                if (batch[i].status != ASYNCIFY_OK || idx >= MANY || batch[i].result != &seen[idx] ||
                    seen[idx] != 0) {
                    bad++;
                } else {
                    seen[idx] = 1;
                }
                CHECK_OK(asyncify_release(batch[i].handle));
            }
            got_total += (int)n;
        } while (n > 0);
    }
    CHECK(!readable(fd)); /* drained empty, and no task is left to complete */
    int64_t elapsed = now_ms() - t0;
    printf("%d completions in %d wake-ups (%d drains), %lld ms\n", got_total, wakeups, drains,
           (long long)elapsed);
    CHECK(got_total == MANY);
    CHECK(bad == 0);
    CHECK(atomic_load(&many_ran) == MANY);
    for (size_t i = 0; i < MANY; i++) {
        CHECK(seen[i] == 1);
    }
    CHECK(wakeups < MANY / 4);
    CHECK_EQ_STATUS(asyncify_cq_wait(cq, 50), ASYNCIFY_TIMEOUT);
    CHECK_OK(asyncify_cq_free(cq));
    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- NULL checks ------------------------------------------------------------------------------- */

static void test_arguments(void)
{
    CHECK_ERR(asyncify_cq_new(NULL), ASYNCIFY_E_NULL);
    struct asyncify_cq *cq = new_cq();
    int fd = -77;
    CHECK_ERR(asyncify_cq_fd(NULL, &fd), ASYNCIFY_E_NULL);
    CHECK(fd == -77);
    CHECK_ERR(asyncify_cq_fd(cq, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_cq_wait(NULL, 0), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_cq_wait(NULL, -1), ASYNCIFY_E_NULL);
    asyncify_completion rec[2];
    size_t n = 77;
    CHECK_ERR(asyncify_cq_drain(NULL, rec, 2, &n), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_cq_drain(cq, NULL, 2, &n), ASYNCIFY_E_NULL);
    CHECK(n == 77);
    CHECK_ERR(asyncify_cq_drain(cq, rec, 2, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_cq_free(NULL), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_cq_free(cq));

    /* Two queues: two different fds. */
    struct asyncify_cq *a = new_cq(), *b = new_cq();
    CHECK(cq_fd(a) != cq_fd(b));
    CHECK_OK(asyncify_cq_free(a));
    CHECK_OK(asyncify_cq_free(b));
}

int main(void)
{
    test_arguments();
    test_delivery();
    test_on_done_wins();
    test_wait_from_another_thread();
    test_cancelled_records();
    test_free_with_tasks_pending();
    test_many_completions_few_wakeups();
    TEST_PASS("test_cq");
    return 0;
}
