/* A completion queue's fd in an edge-triggered loop (epoll EPOLLET) that drains in batches smaller
 * than the backlog: each partial drain must leave a new edge, or the rest of the completions stall.
 * Run twice by ctest: with the eventfd, and with the portable pipe (ASYNCIFY_CQ_PIPE=1). */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

enum { TASKS = 1000, BATCH = 16 };

int main(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct asyncify_cq *cq = NULL;
    CHECK_OK(asyncify_cq_new(&cq));
    int32_t fd = -1;
    CHECK_OK(asyncify_cq_fd(cq, &fd));
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    const char *forced = getenv("ASYNCIFY_CQ_PIPE");
    CHECK(S_ISFIFO(st.st_mode) == (forced != NULL && strcmp(forced, "1") == 0));

    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.fd = fd };
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);

    /* The whole backlog is queued before the loop starts: one edge for all of it. A task counts as
     * completed when its function returns, and its completion is queued just after; its slot goes back
     * after that, so "nothing running" means every completion is in the queue. */
    asyncify_submit_options so = options_for(pool);
    so.cq = cq;
    so.flags = ASYNCIFY_SUBMIT_DETACHED;
    for (int i = 0; i < TASKS; i++) {
        CHECK_OK(asyncify_submit(noop_task, NULL, &so, NULL));
    }
    WAIT_FOR(stats_of(pool).completed == TASKS && stats_of(pool).running == 0, TEST_PATIENCE_MS);

    int received = 0, wakeups = 0;
    int64_t deadline = now_ms() + TEST_PATIENCE_MS;
    while (received < TASKS) {
        struct epoll_event got;
        int n = epoll_wait(ep, &got, 1, 1000);
        if (n == 0) {
            test_fail(__FILE__, __LINE__, "stalled: %d of %d completions after %d edges", received, TASKS,
                      wakeups);
        }
        CHECK(n == 1 && now_ms() < deadline);
        wakeups++;
        /* One batch per edge, as a loop that shares its time between sources does. */
        asyncify_completion out[BATCH];
        size_t drained = 0;
        CHECK_OK(asyncify_cq_drain(cq, out, BATCH, &drained));
        CHECK(drained > 0);
        for (size_t i = 0; i < drained; i++) {
            CHECK(out[i].status == ASYNCIFY_OK);
        }
        received += (int)drained;
    }
    CHECK(received == TASKS);
    CHECK(wakeups == (TASKS + BATCH - 1) / BATCH);

    /* Emptied: no edge is left, and none comes until a new completion. */
    struct epoll_event got;
    CHECK(epoll_wait(ep, &got, 1, 50) == 0);
    CHECK_OK(asyncify_submit(noop_task, NULL, &so, NULL));
    CHECK(epoll_wait(ep, &got, 1, TEST_PATIENCE_MS) == 1);
    size_t drained = 0;
    asyncify_completion one;
    CHECK_OK(asyncify_cq_drain(cq, &one, 1, &drained));
    CHECK(drained == 1);

    close(ep);
    CHECK_OK(asyncify_cq_free(cq));
    CHECK_OK(asyncify_pool_free(pool, -1));
    TEST_PASS("test_cq_edge");
    return 0;
}
