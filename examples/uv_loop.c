/*
 * uv_loop: asyncify inside a libuv program. A uv_poll_t watches a completion queue's fd; each time it
 * is readable the callback drains a batch of completions. 1,000 tasks run on a pool of 4 workers,
 * each with the request number it was submitted with (an override set in a scope around the submit),
 * and the loop checks that every completion came back once, with its own number.
 *
 * Build (from the repository root, after `make lib`; libuv from your system or bench/build_libuv.sh):
 *   cc -std=c11 -Wall -Wextra -O2 -Iinclude -I<libuv>/include examples/uv_loop.c \
 *      -Ltarget/release -lasyncify -L<libuv> -luv -Wl,-rpath,$PWD/target/release -o build/uv_loop
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "asyncify.h"

#define TASKS 1000
#define BATCH 32

static void must(asyncify_status s, const char *what)
{
    if (s < 0) {
        char detail[256] = "";
        asyncify_last_error(detail, sizeof detail, NULL);
        fprintf(stderr, "%s: %s (%s)\n", what, asyncify_status_str(s), detail);
        exit(1);
    }
}

/* On a worker: succeeds when the request number the submitter set in its table is the one it passed. */
static int32_t work(void *arg, void **out_result)
{
    (void)out_result;
    uint32_t request = 0;
    size_t len = 0;
    must(asyncify_override_get("request", &request, sizeof request, &len), "override_get");
    return request == (uint32_t)(uintptr_t)arg ? 0 : 1;
}

struct app {
    asyncify_cq *cq;
    uv_poll_t poll;
    int received;
    int wakeups;
    unsigned char seen[TASKS];
};

static void on_readable(uv_poll_t *poll, int status, int events)
{
    (void)events;
    struct app *app = poll->data;
    if (status < 0) {
        fprintf(stderr, "uv_poll: %s\n", uv_strerror(status));
        exit(1);
    }
    app->wakeups++;
    asyncify_completion batch[BATCH];
    size_t n = 0;
    must(asyncify_cq_drain(app->cq, batch, BATCH, &n), "cq_drain");
    for (size_t i = 0; i < n; i++) {
        uintptr_t request = (uintptr_t)batch[i].user_data;
        if (batch[i].status != ASYNCIFY_OK || request >= TASKS || app->seen[request]) {
            fprintf(stderr, "completion %zu is wrong: status %d, request %zu\n", i, (int)batch[i].status,
                    (size_t)request);
            exit(1);
        }
        app->seen[request] = 1;
    }
    app->received += (int)n;
    if (app->received == TASKS) {
        uv_poll_stop(poll); /* the loop ends: nothing else is active */
    }
}

int main(void)
{
    struct app app;
    memset(&app, 0, sizeof app);
    asyncify_pool *pool = NULL;
    must(asyncify_pool_new(4, &pool), "pool_new");
    must(asyncify_cq_new(&app.cq), "cq_new");
    int32_t fd = -1;
    must(asyncify_cq_fd(app.cq, &fd), "cq_fd");

    uv_loop_t *loop = uv_default_loop();
    app.poll.data = &app;
    if (uv_poll_init(loop, &app.poll, fd) != 0 || uv_poll_start(&app.poll, UV_READABLE, on_readable) != 0) {
        fprintf(stderr, "uv_poll on the queue's fd failed\n");
        return 1;
    }

    asyncify_submit_options opts;
    must(asyncify_submit_options_init(&opts, sizeof opts), "submit_options_init");
    opts.pool = pool;
    opts.cq = app.cq;
    opts.flags = ASYNCIFY_SUBMIT_DETACHED; /* the handle releases itself */
    for (uint32_t request = 0; request < TASKS; request++) {
        uint64_t scope = 0;
        must(asyncify_scope_enter(&scope), "scope_enter");
        must(asyncify_override_set("request", &request, sizeof request), "override_set");
        opts.on_done_data = (void *)(uintptr_t)request;
        must(asyncify_submit(work, (void *)(uintptr_t)request, &opts, NULL), "submit");
        must(asyncify_scope_exit(scope), "scope_exit");
    }

    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&app.poll, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);

    must(asyncify_cq_free(app.cq), "cq_free");
    must(asyncify_pool_free(pool, -1), "pool_free");
    printf("uv_loop: %d completions, each once and with its own request, in %d wake-ups of the loop\n",
           app.received, app.wakeups);
    return app.received == TASKS ? 0 : 1;
}
