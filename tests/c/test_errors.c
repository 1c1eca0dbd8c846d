/* Argument checking and error reporting (contract section 1 and every function of sections 2 to 5,
 * plus asyncify_pool_new/pool_free). Scenario 12 of section 7. */
#include <limits.h>

#include <stddef.h>

#include "test_util.h"

/* The status values and flags are part of the ABI: a changed value fails the build. */
_Static_assert(ASYNCIFY_OK == 0 && ASYNCIFY_PENDING == 1 && ASYNCIFY_FAILED == 2, "status values");
_Static_assert(ASYNCIFY_CANCELLED == 3 && ASYNCIFY_TIMEOUT == 4, "status values");
_Static_assert(ASYNCIFY_E_NULL == -1 && ASYNCIFY_E_INVALID_ARGUMENT == -2, "status values");
_Static_assert(ASYNCIFY_E_INVALID_HANDLE == -3 && ASYNCIFY_E_NOT_FOUND == -4, "status values");
_Static_assert(ASYNCIFY_E_BUFFER_TOO_SMALL == -5 && ASYNCIFY_E_SHUT_DOWN == -6, "status values");
_Static_assert(ASYNCIFY_E_BUSY == -7 && ASYNCIFY_E_WOULD_DEADLOCK == -8, "status values");
_Static_assert(ASYNCIFY_E_SCOPE_MISMATCH == -9 && ASYNCIFY_E_FORKED == -10, "status values");
_Static_assert(ASYNCIFY_E_PANIC == -11 && ASYNCIFY_E_OUT_OF_MEMORY == -12, "status values");
_Static_assert(ASYNCIFY_SUBMIT_DETACHED == 1 && ASYNCIFY_SUBMIT_EMPTY_CONTEXT == 2, "flag values");
_Static_assert(sizeof(asyncify_status) == 4 && (asyncify_status)-1 < 0, "asyncify_status is int32_t");
_Static_assert(sizeof(asyncify_handle) == 8 && (asyncify_handle)-1 > 0, "asyncify_handle is uint64_t");

/* After an error: asyncify_last_error has a non-empty message, its size query agrees with the copy,
 * and a 1-byte buffer gets E_BUFFER_TOO_SMALL with the size needed and is left alone. */
static void check_last_error_set(const char *file, int line, const char *what, char *out, size_t out_cap)
{
    size_t needed = 0;
    asyncify_status s = asyncify_last_error(NULL, 0, &needed);
    if (s != ASYNCIFY_OK && s != ASYNCIFY_E_BUFFER_TOO_SMALL) {
        test_fail(file, line, "after %s: size query asyncify_last_error(NULL, 0, &len) returned %d", what, s);
    }
    if (needed == 0) {
        test_fail(file, line, "after %s: asyncify_last_error reports an empty message", what);
    }
    char one = '#';
    size_t needed_again = 0;
    s = asyncify_last_error(&one, 1, &needed_again);
    if (needed > 1 && s != ASYNCIFY_E_BUFFER_TOO_SMALL) {
        test_fail(file, line, "after %s: asyncify_last_error with a 1-byte buffer returned %d (%s)", what, s,
                  asyncify_status_str(s));
    }
    if (needed_again != needed || one != '#') {
        test_fail(file, line, "after %s: 1-byte buffer: len %zu (size query said %zu), buffer %s", what,
                  needed_again, needed, one == '#' ? "untouched" : "written");
    }
    char buf[1024];
    if (needed + 1 > sizeof buf) {
        test_fail(file, line, "after %s: a %zu-byte error message", what, needed);
    }
    memset(buf, '#', sizeof buf);
    size_t len = 0;
    s = asyncify_last_error(buf, needed + 1, &len);
    if (s != ASYNCIFY_OK) {
        test_fail(file, line, "after %s: asyncify_last_error with %zu bytes returned %d", what, needed + 1,
                  s);
    }
    size_t text = strnlen(buf, needed + 1);
    if (text == 0 || len != needed || (needed != text && needed != text + 1)) {
        test_fail(file, line, "after %s: message \"%.*s\" (%zu chars), len %zu, size query %zu", what,
                  (int)text, buf, text, len, needed);
    }
    if (out != NULL) {
        snprintf(out, out_cap, "%s", buf);
    }
}

/* Checks the status and that a message was stored for it. */
/* A stricter CHECK_ERR than test_util.h's: the size query must also agree with the copy. */
#undef CHECK_ERR
#define CHECK_ERR(expr, expected)                                 \
    do {                                                          \
        CHECK_EQ_STATUS(expr, expected);                          \
        check_last_error_set(__FILE__, __LINE__, #expr, NULL, 0); \
    } while (0)

/* ---- section 1 --------------------------------------------------------------------------------- */

static void test_status_str_and_version(void)
{
    for (int s = -40; s <= 40; s++) {
        const char *text = asyncify_status_str(s);
        CHECK(text != NULL);
        CHECK(text[0] != '\0');
    }
    const asyncify_status odd[] = { 12345, -999, INT32_MAX, INT32_MIN, 1000000 };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *text = asyncify_status_str(odd[i]);
        CHECK(text != NULL);
        CHECK(text[0] != '\0');
    }
    /* Known statuses have texts of their own. */
    CHECK(strcmp(asyncify_status_str(ASYNCIFY_OK), asyncify_status_str(ASYNCIFY_E_NULL)) != 0);
    CHECK(strcmp(asyncify_status_str(ASYNCIFY_E_INVALID_HANDLE), asyncify_status_str(ASYNCIFY_E_NULL)) != 0);

    const char *v = asyncify_version();
    CHECK(v != NULL);
    CHECK(strcmp(v, ASYNCIFY_VERSION_STRING) == 0);
    char numbers[64];
    snprintf(numbers, sizeof numbers, "%d.%d.%d", (int)ASYNCIFY_VERSION_MAJOR, (int)ASYNCIFY_VERSION_MINOR,
             (int)ASYNCIFY_VERSION_PATCH);
    size_t n = strlen(numbers);
    CHECK(strncmp(ASYNCIFY_VERSION_STRING, numbers, n) == 0);
    CHECK(ASYNCIFY_VERSION_STRING[n] == '\0' || ASYNCIFY_VERSION_STRING[n] == '-' ||
          ASYNCIFY_VERSION_STRING[n] == '+');
}

struct thread_error {
    asyncify_status status;
    size_t len;
    char text[256];
};

static void *fresh_error_thread(void *arg)
{
    struct thread_error *te = arg;
    memset(te->text, '#', sizeof te->text);
    te->status = asyncify_last_error(te->text, sizeof te->text, &te->len);
    return NULL;
}

static void test_last_error_is_per_thread(void)
{
    char first[256], second[256];
    CHECK_EQ_STATUS(asyncify_override_set(NULL, "v", 1), ASYNCIFY_E_NULL);
    check_last_error_set(__FILE__, __LINE__, "set(NULL key)", first, sizeof first);
    CHECK_EQ_STATUS(asyncify_poll(0, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    check_last_error_set(__FILE__, __LINE__, "poll(0)", second, sizeof second);
    CHECK(strcmp(first, second) != 0); /* the message is about the latest error */

    /* Another thread has no error of its own: its message is empty, not ours. */
    struct thread_error te = { .status = 12345 };
    join_thread(start_thread(fresh_error_thread, &te));
    CHECK_OK(te.status);
    CHECK(strnlen(te.text, sizeof te.text) == 0);
    CHECK(te.len <= 1);
}

/* ---- section 2: NULLs and bad keys ------------------------------------------------------------- */

static void test_table_arguments(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "v");
    int x = 0;
    CHECK_OK(asyncify_override_set_ptr("p", &x, NULL));
    char buf[16];
    size_t len = 777;
    void *p = &len;
    asyncify_free_fn rel = (asyncify_free_fn)free;
    size_t count = 777;

    CHECK_ERR(asyncify_override_set(NULL, "v", 1), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_set("k", NULL, 1), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_set_ptr(NULL, &x, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get(NULL, buf, sizeof buf, &len), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get("k", NULL, sizeof buf, &len), ASYNCIFY_E_NULL);
    /* NULL buf with cap > 0 is refused before anything else is looked at. */
    CHECK_ERR(asyncify_override_get("no-such-key", NULL, 5, &len), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_override_set("three", "xyz", 3));
    CHECK_ERR(asyncify_override_get("three", NULL, 2, &len), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_override_remove("three"));
    CHECK_ERR(asyncify_override_get("k", buf, sizeof buf, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get_ptr(NULL, &p), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get_ptr("p", NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get_ptr_ex(NULL, &p, &rel), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get_ptr_ex("p", NULL, &rel), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_get_ptr_ex("p", &p, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_remove(NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_count(NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_scope_enter(NULL), ASYNCIFY_E_NULL);
    /* A capacity that would fit the message, so NULL is the only thing wrong. */
    CHECK_ERR(asyncify_last_error(NULL, 4096, &len), ASYNCIFY_E_NULL);
    CHECK(len == 777 && p == (void *)&len && rel == (asyncify_free_fn)free);

    /* Empty, invalid UTF-8, overlong-encoded and surrogate keys. */
    const char *bad_keys[] = { "", "\xff\xfe", "\xc0\x80", "ok\x80", "\xed\xa0\x80" };
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        const char *key = bad_keys[i];
        CHECK_ERR(asyncify_override_set(key, "v", 1), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_ERR(asyncify_override_set_ptr(key, &x, NULL), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_ERR(asyncify_override_get(key, buf, sizeof buf, &len), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_ERR(asyncify_override_get(key, NULL, 0, &len), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_ERR(asyncify_override_get_ptr(key, &p), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_ERR(asyncify_override_get_ptr_ex(key, &p, &rel), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_ERR(asyncify_override_remove(key), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK(len == 777 && p == (void *)&len && rel == (asyncify_free_fn)free);
    }

    /* Scope tokens that were never handed out. */
    CHECK(asyncify_scope_exit(0) < 0);
    check_last_error_set(__FILE__, __LINE__, "asyncify_scope_exit(0)", NULL, 0);
    asyncify_status s = asyncify_scope_exit(0xfeedface12345ull);
    CHECK(s == ASYNCIFY_E_SCOPE_MISMATCH || s == ASYNCIFY_E_INVALID_ARGUMENT);
    check_last_error_set(__FILE__, __LINE__, "asyncify_scope_exit(never issued)", NULL, 0);

    /* None of that changed the table. */
    CHECK_OK(asyncify_override_count(&count));
    CHECK(count == 2);
    CHECK(key_is("k", "v"));
    CHECK_OK(asyncify_override_get_ptr("p", &p));
    CHECK(p == &x);
    CHECK_OK(asyncify_override_clear());
}

/* ---- section 3: submit ------------------------------------------------------------------------- */

struct counters {
    atomic_int ran;
    atomic_int arg_freed;
    atomic_int done;
};

static int32_t counting_task(void *arg, void **out_result)
{
    (void)out_result;
    atomic_fetch_add(&((struct counters *)arg)->ran, 1);
    return 0;
}

static void counting_free_arg(void *arg)
{
    atomic_fetch_add(&((struct counters *)arg)->arg_freed, 1);
}

static void counting_done(void *user_data, asyncify_handle h, asyncify_status status, void *result,
                          int32_t code)
{
    (void)h;
    (void)status;
    (void)result;
    (void)code;
    atomic_fetch_add(&((struct counters *)user_data)->done, 1);
}

/* The options struct followed by room a later version might use. */
struct extended_options {
    asyncify_submit_options opts;
    unsigned char tail[16];
};

static void test_submit_arguments(void)
{
    struct asyncify_pool *pool = new_pool(2);
    struct counters c = { .ran = 0 };
    asyncify_submit_options opts = options_for(pool);
    opts.free_arg = counting_free_arg;
    opts.on_done = counting_done;
    opts.on_done_data = &c;
    asyncify_handle h = 0x5e5e5e5e;

    /* submit_options_init: NULL and too-small sizes; the struct is left alone. */
    CHECK_ERR(asyncify_submit_options_init(NULL, sizeof opts), ASYNCIFY_E_NULL);
    asyncify_submit_options fresh;
    /* Below the first published layout (0.1's, which ends at `context`); every size from there on is a
     * layout a program may have been built with. */
    const size_t first_layout = offsetof(asyncify_submit_options, limiter);
    const size_t small_sizes[] = { 0, 1, 4, 8, first_layout - 8, first_layout - 1 };
    for (size_t i = 0; i < sizeof small_sizes / sizeof small_sizes[0]; i++) {
        memset(&fresh, 0xab, sizeof fresh);
        CHECK_ERR(asyncify_submit_options_init(&fresh, small_sizes[i]), ASYNCIFY_E_INVALID_ARGUMENT);
        const unsigned char *bytes = (const unsigned char *)&fresh;
        for (size_t b = 0; b < sizeof fresh; b++) {
            CHECK(bytes[b] == 0xab);
        }
    }
    memset(&fresh, 0xab, sizeof fresh);
    CHECK_OK(asyncify_submit_options_init(&fresh, sizeof fresh));
    CHECK(fresh.struct_size == sizeof fresh);
    CHECK(fresh.flags == 0 && fresh.on_done == NULL && fresh.on_done_data == NULL);
    CHECK(fresh.free_arg == NULL && fresh.free_result == NULL && fresh.pool == NULL);
    CHECK(fresh.cq == NULL && fresh.context == NULL);

    /* NULL work function, NULL out_handle without DETACHED. */
    CHECK_ERR(asyncify_submit(NULL, &c, &opts, &h), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_submit(NULL, &c, NULL, &h), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_submit(counting_task, &c, &opts, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_submit(counting_task, &c, NULL, NULL), ASYNCIFY_E_NULL);

    /* Bad struct_size: below the first layout, or a size that stops inside a field this library reads
     * while that field is set (here `limiter`, past the 0.1 layout: its bytes are not all zero). */
    const uint32_t bad_sizes[] = { 0, 1, 4, 8, (uint32_t)first_layout - 8, (uint32_t)first_layout - 1 };
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        asyncify_submit_options bad = opts;
        bad.struct_size = bad_sizes[i];
        CHECK_ERR(asyncify_submit(counting_task, &c, &bad, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    }
    asyncify_submit_options cut = opts;
    cut.struct_size = (uint32_t)first_layout + 4;
    cut.limiter = (const struct asyncify_limiter *)&c; /* refused before it is ever read */
    CHECK_ERR(asyncify_submit(counting_task, &c, &cut, &h), ASYNCIFY_E_INVALID_ARGUMENT);

    /* Unknown flag bits, alone and next to known ones. */
    const uint32_t bad_flags[] = { 4u, 8u, 1u << 31, 0xffffffffu, ASYNCIFY_SUBMIT_DETACHED | 0x100u };
    for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        asyncify_submit_options bad = opts;
        bad.flags = bad_flags[i];
        CHECK_ERR(asyncify_submit(counting_task, &c, &bad, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    }

    /* A larger struct from a later version: unknown bytes must be zero. */
    struct extended_options ext;
    memset(&ext, 0, sizeof ext);
    ext.opts = opts;
    ext.opts.struct_size = (uint32_t)sizeof ext;
    ext.tail[5] = 1;
    CHECK_ERR(asyncify_submit(counting_task, &c, &ext.opts, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    ext.tail[5] = 0;
    ext.tail[15] = 0x80;
    CHECK_ERR(asyncify_submit(counting_task, &c, &ext.opts, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    ext.tail[15] = 0;

    /* Every failed submit: no handle written, nothing ran, no callback, arg still ours. */
    CHECK(h == 0x5e5e5e5e);
    sleep_ms(200);
    CHECK(atomic_load(&c.ran) == 0);
    CHECK(atomic_load(&c.arg_freed) == 0);
    CHECK(atomic_load(&c.done) == 0);

    /* The zero tail is accepted, and the same options work as given. */
    h = 0;
    CHECK_OK(asyncify_submit(counting_task, &c, &ext.opts, &h));
    CHECK(h != 0);
    wait_ok_release(h);
    CHECK(atomic_load(&c.ran) == 1);
    h = submit_opts(counting_task, &c, &opts);
    wait_ok_release(h);
    CHECK(atomic_load(&c.ran) == 2);
    CHECK(atomic_load(&c.done) == 2);
    CHECK(atomic_load(&c.arg_freed) == 0);

    /* Options with no free function, queue, context, limiter or deadline are read on a shorter path:
     * the same checks hold there. */
    asyncify_submit_options plain = options_for(pool);
    plain.on_done = counting_done;
    plain.on_done_data = &c;
    h = 0x5e5e5e5e;
    CHECK_ERR(asyncify_submit(counting_task, &c, &plain, NULL), ASYNCIFY_E_NULL);
    for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        asyncify_submit_options bad = plain;
        bad.flags = bad_flags[i];
        CHECK_ERR(asyncify_submit(counting_task, &c, &bad, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    }
    struct asyncify_context *ctx = NULL;
    CHECK_OK(asyncify_context_capture(&ctx));
    asyncify_submit_options both = plain;
    both.flags = ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
    both.context = ctx;
    CHECK_ERR(asyncify_submit(counting_task, &c, &both, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_OK(asyncify_context_free(ctx));
    /* Bytes after the last field, inside this header's own struct (tail padding where pointers have 8
     * bytes), must be zero too. */
    const size_t end = offsetof(asyncify_submit_options, start_within_ms) + sizeof plain.start_within_ms;
    if (sizeof plain > end) {
        asyncify_submit_options padded = plain;
        ((unsigned char *)&padded)[sizeof padded - 1] = 1;
        CHECK_ERR(asyncify_submit(counting_task, &c, &padded, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    }
    CHECK(h == 0x5e5e5e5e);
    CHECK(atomic_load(&c.ran) == 2);
    /* Accepted: as given, detached without a handle, and copied to an address the struct's alignment
     * does not allow (read byte-wise then). */
    h = submit_opts(counting_task, &c, &plain);
    wait_ok_release(h);
    asyncify_submit_options detached = plain;
    detached.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_OK(asyncify_submit(counting_task, &c, &detached, NULL));
    _Alignas(asyncify_submit_options) unsigned char misaligned[sizeof plain + 1];
    memcpy(misaligned + 1, &plain, sizeof plain);
    h = 0;
    CHECK_OK(asyncify_submit(counting_task, &c, (const asyncify_submit_options *)(misaligned + 1), &h));
    wait_ok_release(h);
    for (int i = 0; i < 200 && atomic_load(&c.done) < 5; i++) {
        sleep_ms(10);
    }
    CHECK(atomic_load(&c.ran) == 5);
    CHECK(atomic_load(&c.done) == 5);
    CHECK(atomic_load(&c.arg_freed) == 0);

    CHECK_OK(asyncify_pool_free(pool, -1));
}

/* ---- sections 4 and 5: handles, limits, pools -------------------------------------------------- */

static void check_invalid_handle(asyncify_handle h, const char *what)
{
    void *res = &res;
    int32_t code = 4242;
    asyncify_status s;
    if ((s = asyncify_poll(h, &res, &code)) != ASYNCIFY_E_INVALID_HANDLE) {
        test_fail(__FILE__, __LINE__, "poll(%s = 0x%" PRIx64 ") returned %d (%s)", what, h, s,
                  asyncify_status_str(s));
    }
    check_last_error_set(__FILE__, __LINE__, what, NULL, 0);
    if ((s = asyncify_wait(h, 0, &res, &code)) != ASYNCIFY_E_INVALID_HANDLE) {
        test_fail(__FILE__, __LINE__, "wait(%s, 0) returned %d (%s)", what, s, asyncify_status_str(s));
    }
    check_last_error_set(__FILE__, __LINE__, what, NULL, 0);
    if ((s = asyncify_wait(h, -1, &res, &code)) != ASYNCIFY_E_INVALID_HANDLE) {
        test_fail(__FILE__, __LINE__, "wait(%s, -1) returned %d (%s)", what, s, asyncify_status_str(s));
    }
    check_last_error_set(__FILE__, __LINE__, what, NULL, 0);
    if ((s = asyncify_cancel(h)) != ASYNCIFY_E_INVALID_HANDLE) {
        test_fail(__FILE__, __LINE__, "cancel(%s) returned %d (%s)", what, s, asyncify_status_str(s));
    }
    check_last_error_set(__FILE__, __LINE__, what, NULL, 0);
    if ((s = asyncify_release(h)) != ASYNCIFY_E_INVALID_HANDLE) {
        test_fail(__FILE__, __LINE__, "release(%s) returned %d (%s)", what, s, asyncify_status_str(s));
    }
    check_last_error_set(__FILE__, __LINE__, what, NULL, 0);
    CHECK(res == (void *)&res && code == 4242); /* outputs untouched */
}

static void test_handles(void)
{
    struct asyncify_pool *pool = new_pool(1);
    struct counters c = { .ran = 0 };

    check_invalid_handle(0, "handle 0");
    check_invalid_handle(0xdeadbeef12345678ull, "a forged handle");
    check_invalid_handle(UINT64_MAX, "UINT64_MAX");

    asyncify_handle h = submit_to(pool, counting_task, &c);
    wait_ok(h);
    CHECK_OK(asyncify_release(h));
    check_invalid_handle(h, "a released handle"); /* includes the double release */

    /* A later task may reuse the slot; the old handle stays dead, and near misses are not valid. */
    asyncify_handle h2 = submit_to(pool, counting_task, &c);
    wait_ok(h2);
    CHECK(h2 != h);
    check_invalid_handle(h, "a stale handle");
    check_invalid_handle(h2 ^ (1ull << 63), "a handle with a flipped top bit");
    check_invalid_handle(h2 ^ (1ull << 32), "a handle with bit 32 flipped");
    check_invalid_handle(h2 + 1, "the handle after a live one");
    CHECK_OK(asyncify_poll(h2, NULL, NULL)); /* the live one is unaffected */
    CHECK_OK(asyncify_release(h2));
    check_invalid_handle(h2, "a released handle");

    /* Limits and pools. */
    uint32_t n = 777;
    CHECK_ERR(asyncify_get_max_workers(pool, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_get_max_workers(NULL, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_pool_new(1, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_pool_free(NULL, 0), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_pool_free(NULL, -1), ASYNCIFY_E_NULL);
    CHECK_OK(asyncify_get_max_workers(pool, &n));
    CHECK(n == 1); /* nothing above touched the pool */

    CHECK(!asyncify_cancel_requested()); /* not in a task */
    CHECK_OK(asyncify_pool_free(pool, -1));
}

int main(void)
{
    test_status_str_and_version();
    test_last_error_is_per_thread();
    test_table_arguments();
    test_submit_arguments();
    test_handles();
    TEST_PASS("test_errors");
    return 0;
}
