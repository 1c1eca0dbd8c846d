/*
 * cq_loop: an event loop that learns of finished asyncify tasks through a completion queue.
 *
 * The loop watches two file descriptors with poll(2):
 *   - the completion queue's fd, readable while completions wait;
 *   - a timerfd that ticks every 50 ms; each tick stands for 30 ms of the loop's other work (sockets,
 *     pipes...), during which completions pile up in the queue.
 *
 * It submits 20 tasks, each with its own overrides (a "model" and a "request" key set inside a
 * scope just before the submit), to a pool of 4 workers. Each task reads its overrides on the worker
 * thread, sleeps a little, and returns a string. The loop drains completions in batches as they
 * arrive, and counts how many times it woke up: one wake-up often brings several completions.
 *
 * Build (from the repository root, after `cargo build --release`):
 *   gcc -std=c11 -Wall -Wextra -Werror -O2 -Iinclude examples/cq_loop.c -Ltarget/release -lasyncify \
 *       -lpthread -Wl,-rpath,$PWD/target/release -o build/cq_loop
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "asyncify.h"

#define TASKS 20
#define BATCH 8

/* Stops the program when a call fails, with the library's own explanation. */
static void must(asyncify_status s, const char *what)
{
    if (s < 0) {
        char detail[256] = "";
        asyncify_last_error(detail, sizeof detail, NULL);
        fprintf(stderr, "cq_loop: %s failed: %s (%s)\n", what, asyncify_status_str(s), detail);
        exit(1);
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static const char *status_name(asyncify_status s)
{
    switch (s) {
    case ASYNCIFY_OK:
        return "OK";
    case ASYNCIFY_FAILED:
        return "FAILED";
    case ASYNCIFY_CANCELLED:
        return "CANCELLED";
    default:
        return "?";
    }
}

/* Reads a string override of the calling thread (on a worker: the task's snapshot). */
static void read_key(const char *key, char *out, size_t cap)
{
    size_t len = 0;
    asyncify_status s = asyncify_override_get(key, out, cap - 1, &len);
    if (s != ASYNCIFY_OK) {
        snprintf(out, cap, "(%s)", asyncify_status_str(s));
        return;
    }
    out[len] = '\0';
}

/* The work: runs on a worker thread with the submitter's overrides installed. */
static int32_t handle_request(void *arg, void **out_result)
{
    int n = *(const int *)arg;
    char model[32], request[32];
    read_key("model", model, sizeof model);
    read_key("request", request, sizeof request);
    sleep_ms(10 + (n * 37) % 60); /* blocking work of varying length */

    char *text = malloc(96);
    if (text == NULL) {
        return 12;
    }
    snprintf(text, 96, "%s answered by %s", request, model);
    *out_result = text; /* moves to the completion record */
    return n % 7 == 6 ? 7 : 0; /* a few requests fail, with code 7 */
}

int main(void)
{
    static const char *const models[] = { "small", "medium", "large" };

    struct asyncify_pool *pool = NULL;
    must(asyncify_pool_new(4, &pool), "asyncify_pool_new");
    struct asyncify_cq *cq = NULL;
    must(asyncify_cq_new(&cq), "asyncify_cq_new");
    int cq_fd = -1;
    must(asyncify_cq_fd(cq, &cq_fd), "asyncify_cq_fd");

    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer_fd < 0) {
        perror("timerfd_create");
        return 1;
    }
    struct itimerspec every_50ms = { .it_interval = { 0, 50000000L }, .it_value = { 0, 50000000L } };
    if (timerfd_settime(timer_fd, 0, &every_50ms, NULL) != 0) {
        perror("timerfd_settime");
        return 1;
    }

    /* Submit: each task gets its own overrides, set in a scope that is closed right after. */
    static int ids[TASKS];
    asyncify_submit_options opts;
    must(asyncify_submit_options_init(&opts, sizeof opts), "asyncify_submit_options_init");
    opts.pool = pool;
    opts.cq = cq; /* no on_done: completions go to the queue */
    opts.free_result = free; /* results nobody receives (none here) */
    double t0 = now_ms();
    for (int i = 0; i < TASKS; i++) {
        ids[i] = i;
        char request[32];
        snprintf(request, sizeof request, "request-%02d", i);
        uint64_t scope = 0;
        must(asyncify_scope_enter(&scope), "asyncify_scope_enter");
        must(asyncify_override_set("model", models[i % 3], strlen(models[i % 3])), "asyncify_override_set");
        must(asyncify_override_set("request", request, strlen(request)), "asyncify_override_set");
        opts.on_done_data = &ids[i]; /* comes back as the record's user_data */
        asyncify_handle h = 0;
        must(asyncify_submit(handle_request, &ids[i], &opts, &h), "asyncify_submit");
        must(asyncify_scope_exit(scope), "asyncify_scope_exit");
    }
    size_t left = 0;
    must(asyncify_override_count(&left), "asyncify_override_count");
    printf("submitted %d tasks to a pool of 4; the loop thread's own table has %zu keys again\n", TASKS,
           left);

    /* The loop. */
    int done = 0, failed = 0, wakeups = 0, cq_wakeups = 0, ticks = 0;
    while (done < TASKS) {
        struct pollfd fds[2] = { { .fd = cq_fd, .events = POLLIN }, { .fd = timer_fd, .events = POLLIN } };
        int n = poll(fds, 2, 10000);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "cq_loop: %s\n", n == 0 ? "no completion for 10 s" : strerror(errno));
            return 1;
        }
        wakeups++;
        if (fds[1].revents & POLLIN) {
            uint64_t expirations = 0;
            if (read(timer_fd, &expirations, sizeof expirations) == (ssize_t)sizeof expirations) {
                ticks += (int)expirations;
                printf("[%6.1f ms] tick %d: 30 ms of other work\n", now_ms() - t0, ticks);
                sleep_ms(30);
            }
        }
        if (fds[0].revents & POLLIN) {
            cq_wakeups++;
            asyncify_completion batch[BATCH];
            size_t got = 0;
            do {
                must(asyncify_cq_drain(cq, batch, BATCH, &got), "asyncify_cq_drain");
                if (got > 0) {
                    printf("[%6.1f ms] a batch of %zu:\n", now_ms() - t0, got);
                }
                for (size_t i = 0; i < got; i++) {
                    const asyncify_completion *c = &batch[i];
                    int id = *(const int *)c->user_data;
                    printf("    task %2d: %-6s code %d  %s\n", id, status_name(c->status), (int)c->code,
                           c->result != NULL ? (const char *)c->result : "(no result)");
                    if (c->status != ASYNCIFY_OK) {
                        failed++;
                    }
                    free(c->result); /* the result is ours now */
                    must(asyncify_release(c->handle), "asyncify_release");
                }
                done += (int)got;
            } while (got == BATCH); /* a full batch: there may be more */
        }
    }
    printf("%d completions (%d failed, as planned) in %d wake-ups of the completion queue; "
           "%d wake-ups in all with %d timer ticks; %.0f ms\n",
           done, failed, cq_wakeups, wakeups, ticks, now_ms() - t0);

    close(timer_fd);
    must(asyncify_cq_free(cq), "asyncify_cq_free");
    must(asyncify_pool_free(pool, -1), "asyncify_pool_free");
    int planned = 0;
    for (int i = 0; i < TASKS; i++) {
        planned += i % 7 == 6;
    }
    if (done != TASKS || failed != planned) {
        fprintf(stderr, "cq_loop: expected %d completions with %d failures, got %d with %d\n", TASKS, planned,
                done, failed);
        return 1;
    }
    return 0;
}
