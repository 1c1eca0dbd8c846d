/* Contexts as values, local keys and clone functions. */
#include "test_util.h"

/* A pointer value that counts its releases. */
struct obj {
    atomic_int released;
    int id;
};

static void release_obj(void *p)
{
    atomic_fetch_add(&((struct obj *)p)->released, 1);
}

/* What a work function saw of its table. */
struct view {
    pthread_t thread;
    size_t count;
    char k[32];
    bool k_found;
    bool j_found;
    bool loc_found;
    void *p;
    bool p_found;
    int32_t code;
    void *result;
    uint64_t scope_left_open;
};

static void read_str(const char *key, char *out, size_t cap, bool *found)
{
    size_t len = 0;
    asyncify_status s = asyncify_override_get(key, out, cap - 1, &len);
    *found = s == ASYNCIFY_OK;
    out[*found ? len : 0] = '\0';
}

static int32_t view_task(void *arg, void **out_result)
{
    struct view *v = arg;
    v->thread = pthread_self();
    v->count = table_count();
    read_str("k", v->k, sizeof v->k, &v->k_found);
    v->j_found = !key_absent("j");
    v->loc_found = !key_absent("loc");
    v->p = NULL;
    v->p_found = asyncify_override_get_ptr("p", &v->p) == ASYNCIFY_OK;
    /* Whatever the function changes stays inside it. */
    set_str("k", "changed inside");
    set_str("new", "inside");
    CHECK_OK(asyncify_scope_enter(&v->scope_left_open));
    set_str("scoped", "inside");
    *out_result = v->result;
    return v->code;
}

static struct view run_view(const struct asyncify_context *ctx, asyncify_status expected, int32_t code)
{
    struct view v;
    memset(&v, 0, sizeof v);
    v.code = code;
    v.result = &v;
    void *res = NULL;
    int32_t got = -12345;
    CHECK_EQ_STATUS(asyncify_context_run(ctx, view_task, &v, &res, &got), expected);
    CHECK(got == code);
    CHECK(res == &v);
    CHECK(pthread_equal(v.thread, pthread_self())); /* on the calling thread */
    return v;
}

struct nested {
    struct asyncify_context *inner;
    char before[32], after[32];
    size_t after_count;
    struct view inner_view;
};

static int32_t nested_task(void *arg, void **out_result)
{
    (void)out_result;
    struct nested *n = arg;
    bool found = false;
    read_str("k", n->before, sizeof n->before, &found);
    CHECK(found);
    CHECK_OK(asyncify_context_run(n->inner, view_task, &n->inner_view, NULL, NULL));
    read_str("k", n->after, sizeof n->after, &found);
    CHECK(found);
    n->after_count = table_count();
    return 0;
}

static struct asyncify_context *capture(void)
{
    struct asyncify_context *c = NULL;
    CHECK_OK(asyncify_context_capture(&c));
    CHECK(c != NULL);
    return c;
}

/* The calling thread's table is exactly {k: expected_k, j: "j"}. */
static void check_caller_table(const char *expected_k)
{
    CHECK(table_count() == 2);
    CHECK(key_is("k", expected_k));
    CHECK(key_is("j", "j"));
    CHECK(key_absent("new"));
    CHECK(key_absent("scoped"));
}

/* ---- capture, empty, with, with_ptr, without, run --------------------------------------------------- */

static void test_capture_and_run(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "1");
    set_str("j", "j");
    struct asyncify_context *c1 = capture();

    /* A snapshot: later changes by the thread are invisible. */
    set_str("k", "2");
    CHECK_OK(asyncify_override_remove("j"));
    set_str("extra", "x");
    struct view v = run_view(c1, ASYNCIFY_OK, 0);
    CHECK(v.count == 2);
    CHECK(v.k_found && strcmp(v.k, "1") == 0);
    CHECK(v.j_found);
    /* run restores the caller's table, whatever fn did (including a scope it left open). */
    CHECK(table_count() == 2);
    CHECK(key_is("k", "2"));
    CHECK(key_is("extra", "x"));
    CHECK(key_absent("j") && key_absent("new") && key_absent("scoped"));
    CHECK_OK(asyncify_override_clear());
    set_str("k", "2");
    set_str("j", "j");

    /* Running twice sees the same snapshot: nothing fn changed reached the context. */
    v = run_view(c1, ASYNCIFY_OK, 0);
    CHECK(v.count == 2 && strcmp(v.k, "1") == 0);
    check_caller_table("2");

    /* A failing fn: FAILED with its code; the table is restored too. */
    v = run_view(c1, ASYNCIFY_FAILED, 17);
    CHECK(strcmp(v.k, "1") == 0);
    check_caller_table("2");
    v = run_view(c1, ASYNCIFY_FAILED, -3);
    check_caller_table("2");
    /* The scope fn left open was discarded: its token is not an open scope of the caller. */
    CHECK_EQ_STATUS(asyncify_scope_exit(v.scope_left_open), ASYNCIFY_E_SCOPE_MISMATCH);
    check_caller_table("2");

    /* Outputs are nullable. */
    struct view quiet;
    memset(&quiet, 0, sizeof quiet);
    CHECK_OK(asyncify_context_run(c1, view_task, &quiet, NULL, NULL));
    CHECK(strcmp(quiet.k, "1") == 0);
    quiet.code = 9;
    CHECK_EQ_STATUS(asyncify_context_run(c1, view_task, &quiet, NULL, NULL), ASYNCIFY_FAILED);
    check_caller_table("2");

    /* Nested: a context_run inside a context_run restores the outer context afterwards. */
    struct asyncify_context *inner = NULL;
    CHECK_OK(asyncify_context_with(c1, "k", "inner", 5, &inner));
    struct nested n;
    memset(&n, 0, sizeof n);
    n.inner = inner;
    CHECK_OK(asyncify_context_run(c1, nested_task, &n, NULL, NULL));
    CHECK(strcmp(n.before, "1") == 0);
    CHECK(strcmp(n.inner_view.k, "inner") == 0);
    CHECK(strcmp(n.after, "1") == 0);
    CHECK(n.after_count == 2);
    CHECK_OK(asyncify_context_free(inner));
    check_caller_table("2");

    /* empty. */
    struct asyncify_context *e = NULL;
    CHECK_OK(asyncify_context_empty(&e));
    CHECK(e != NULL);
    v = run_view(e, ASYNCIFY_OK, 0);
    CHECK(v.count == 0 && !v.k_found && !v.j_found);
    check_caller_table("2");

    /* with: a new context; the old one unchanged. */
    struct asyncify_context *c2 = NULL;
    CHECK_OK(asyncify_context_with(c1, "k", "3", 1, &c2));
    CHECK(c2 != NULL && c2 != c1);
    v = run_view(c2, ASYNCIFY_OK, 0);
    CHECK(v.count == 2 && strcmp(v.k, "3") == 0 && v.j_found);
    v = run_view(c1, ASYNCIFY_OK, 0);
    CHECK(v.count == 2 && strcmp(v.k, "1") == 0);
    struct asyncify_context *c2b = NULL;
    CHECK_OK(asyncify_context_with(e, "k", NULL, 0, &c2b)); /* an empty value */
    v = run_view(c2b, ASYNCIFY_OK, 0);
    CHECK(v.count == 1 && v.k_found && v.k[0] == '\0');
    v = run_view(e, ASYNCIFY_OK, 0);
    CHECK(v.count == 0);

    /* with_ptr. */
    struct obj o = { .id = 1 };
    struct asyncify_context *c3 = NULL;
    CHECK_OK(asyncify_context_with_ptr(c2, "p", &o, release_obj, &c3));
    v = run_view(c3, ASYNCIFY_OK, 0);
    CHECK(v.count == 3 && v.p_found && v.p == &o && strcmp(v.k, "3") == 0);
    v = run_view(c2, ASYNCIFY_OK, 0);
    CHECK(v.count == 2 && !v.p_found);

    /* without: the old one keeps the key; an absent key gives an equal context. */
    struct asyncify_context *c4 = NULL;
    CHECK_OK(asyncify_context_without(c3, "k", &c4));
    v = run_view(c4, ASYNCIFY_OK, 0);
    CHECK(v.count == 2 && !v.k_found && v.j_found && v.p == &o);
    v = run_view(c3, ASYNCIFY_OK, 0);
    CHECK(v.count == 3 && strcmp(v.k, "3") == 0);
    struct asyncify_context *c5 = NULL;
    CHECK_OK(asyncify_context_without(c4, "absent", &c5));
    v = run_view(c5, ASYNCIFY_OK, 0);
    CHECK(v.count == 2 && v.p == &o);

    /* The pointer is released once, when the last context holding it (c3, c4, c5) is freed. */
    CHECK_OK(asyncify_context_free(c3));
    CHECK_OK(asyncify_context_free(c4));
    CHECK(atomic_load(&o.released) == 0);
    CHECK_OK(asyncify_context_free(c5));
    CHECK(atomic_load(&o.released) == 1);

    CHECK_OK(asyncify_context_free(c2b));
    CHECK_OK(asyncify_context_free(c2));
    CHECK_OK(asyncify_context_free(e));
    CHECK_OK(asyncify_context_free(c1));
    check_caller_table("2");
    CHECK(atomic_load(&o.released) == 1);
    CHECK_OK(asyncify_override_clear());
}

/* ---- NULL and bad values ------------------------------------------------------------------------- */

static int32_t never_task(void *arg, void **out_result)
{
    (void)out_result;
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

static void test_arguments(void)
{
    struct asyncify_context *c = NULL;
    CHECK_OK(asyncify_context_empty(&c));
    struct asyncify_context *untouched = (struct asyncify_context *)&c;
    struct asyncify_context *out = untouched;
    struct obj o = { .id = 2 };

    CHECK_ERR(asyncify_context_capture(NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_empty(NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_free(NULL), ASYNCIFY_E_NULL);

    CHECK_ERR(asyncify_context_with(NULL, "k", "v", 1, &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with(c, NULL, "v", 1, &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with(c, "k", NULL, 1, &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with(c, "k", "v", 1, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with(c, "", "v", 1, &out), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_context_with(c, "bad\xff", "v", 1, &out), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(out == untouched);

    /* with_ptr: on error the caller keeps the pointer (no release). */
    CHECK_ERR(asyncify_context_with_ptr(NULL, "p", &o, release_obj, &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with_ptr(c, NULL, &o, release_obj, &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with_ptr(c, "p", &o, release_obj, NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_with_ptr(c, "", &o, release_obj, &out), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_context_with_ptr(c, "\xc3\x28", &o, release_obj, &out), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(out == untouched);
    CHECK(atomic_load(&o.released) == 0);

    CHECK_ERR(asyncify_context_without(NULL, "k", &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_without(c, NULL, &out), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_without(c, "k", NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_without(c, "", &out), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(out == untouched);

    atomic_int ran = 0;
    void *res = (void *)&ran;
    int32_t code = 555;
    CHECK_ERR(asyncify_context_run(NULL, never_task, &ran, &res, &code), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_run(c, NULL, &ran, &res, &code), ASYNCIFY_E_NULL);
    CHECK(atomic_load(&ran) == 0);
    CHECK(res == (void *)&ran && code == 555);

    /* EMPTY_CONTEXT together with a context: refused, nothing runs. */
    struct asyncify_pool *pool = new_pool(1);
    asyncify_submit_options opts = options_for(pool);
    opts.context = c;
    opts.flags = ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
    asyncify_handle h = 4242;
    CHECK_ERR(asyncify_submit(never_task, &ran, &opts, &h), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(h == 4242);
    opts.flags = ASYNCIFY_SUBMIT_EMPTY_CONTEXT | ASYNCIFY_SUBMIT_DETACHED;
    CHECK_ERR(asyncify_submit(never_task, &ran, &opts, NULL), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&ran) == 0);

    /* set_ex / set_ptr_ex argument checks. */
    CHECK_ERR(asyncify_override_set_ex(NULL, "v", 1, 0), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_set_ex("", "v", 1, 0), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_override_set_ex("k", NULL, 1, 0), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_set_ex("k", "v", 1, 2), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_override_set_ex("k", "v", 1, 0x80000000u), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_override_set_ptr_ex(NULL, &o, release_obj, NULL, 0), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_override_set_ptr_ex("", &o, release_obj, NULL, 0), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_override_set_ptr_ex("p", &o, release_obj, NULL, 4), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(key_absent("k") && key_absent("p"));
    CHECK(atomic_load(&o.released) == 0);

    CHECK_OK(asyncify_context_free(c));
}

/* ---- submitting with a context ------------------------------------------------------------------ */

struct task_view {
    struct view v;
    atomic_int done;
    atomic_int released_at_run; /* the pointer's release count while the task ran */
    struct obj *watch;
};

static int32_t ctx_task(void *arg, void **out_result)
{
    struct task_view *t = arg;
    if (t->watch != NULL) {
        atomic_store(&t->released_at_run, atomic_load(&t->watch->released));
    }
    int32_t code = view_task(&t->v, out_result);
    atomic_store(&t->done, 1);
    return code;
}

static void test_submit_with_context(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "thread");
    set_str("j", "j");

    struct asyncify_context *e = NULL, *c = NULL, *cp = NULL;
    CHECK_OK(asyncify_context_empty(&e));
    CHECK_OK(asyncify_context_with(e, "k", "ctx", 3, &c));
    struct obj o = { .id = 3 };
    CHECK_OK(asyncify_context_with_ptr(c, "p", &o, release_obj, &cp));
    CHECK_OK(asyncify_context_free(e));
    CHECK_OK(asyncify_context_free(c));

    /* A paused pool: the task is still queued when its submitter frees the context. */
    struct asyncify_pool *pool = new_pool(0);
    asyncify_submit_options opts = options_for(pool);
    opts.context = cp;
    struct task_view t;
    memset(&t, 0, sizeof t);
    t.watch = &o;
    atomic_store(&t.released_at_run, -1);
    asyncify_handle h = submit_opts(ctx_task, &t, &opts);
    CHECK_OK(asyncify_context_free(cp));
    set_str("k", "changed after submit");
    CHECK(atomic_load(&o.released) == 0); /* the task holds it */
    CHECK_OK(asyncify_set_max_workers(pool, 1));
    wait_ok_release(h);
    CHECK(atomic_load(&t.released_at_run) == 0);
    CHECK(t.v.k_found && strcmp(t.v.k, "ctx") == 0); /* the context, not the thread's table */
    CHECK(!t.v.j_found);
    CHECK(t.v.count == 2);
    CHECK(t.v.p_found && t.v.p == &o);
    CHECK(!pthread_equal(t.v.thread, pthread_self()));
    /* The task was the last holder: released exactly once (on the worker, after the task). */
    WAIT_FOR(atomic_load(&o.released) == 1, TEST_PATIENCE_MS);
    sleep_ms(50);
    CHECK(atomic_load(&o.released) == 1);
    CHECK(key_is("k", "changed after submit"));
    CHECK(key_is("j", "j"));
    CHECK(table_count() == 2);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* A context captured on one thread, used by another after the first one ended. */
struct capturer {
    struct asyncify_context *ctx;
    struct obj *o;
};

static void *capture_thread(void *arg)
{
    struct capturer *cap = arg;
    CHECK(table_count() == 0); /* a new thread starts empty */
    set_str("k", "captured on T");
    CHECK_OK(asyncify_override_set_ptr("p", cap->o, release_obj));
    CHECK_OK(asyncify_context_capture(&cap->ctx));
    CHECK_OK(asyncify_override_clear());
    return NULL;
}

static void test_cross_thread_context(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "main");
    set_str("j", "j");
    struct obj o = { .id = 4 };
    struct capturer cap = { .o = &o };
    join_thread(start_thread(capture_thread, &cap));
    CHECK(cap.ctx != NULL);
    CHECK(atomic_load(&o.released) == 0); /* the context holds it */

    struct asyncify_pool *pool = new_pool(2);
    asyncify_submit_options opts = options_for(pool);
    opts.context = cap.ctx;
    struct task_view t;
    memset(&t, 0, sizeof t);
    wait_ok_release(submit_opts(ctx_task, &t, &opts));
    CHECK(strcmp(t.v.k, "captured on T") == 0);
    CHECK(t.v.count == 2 && !t.v.j_found && t.v.p == &o);

    struct view v = run_view(cap.ctx, ASYNCIFY_OK, 0);
    CHECK(strcmp(v.k, "captured on T") == 0 && v.p == &o);
    check_caller_table("main");

    CHECK_OK(asyncify_context_free(cap.ctx));
    WAIT_FOR(atomic_load(&o.released) == 1, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_pool_free(pool, -1));
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 1);
    CHECK_OK(asyncify_override_clear());
}

/* ---- with_ptr release: exactly once, by the last holder ------------------------------------------ */

static void test_with_ptr_release_once(void)
{
    struct obj o = { .id = 5 };
    struct asyncify_context *e = NULL, *a = NULL, *b = NULL, *d = NULL;
    CHECK_OK(asyncify_context_empty(&e));
    CHECK_OK(asyncify_context_with_ptr(e, "p", &o, release_obj, &a));
    CHECK_OK(asyncify_context_with(a, "x", "1", 1, &b)); /* shares p */
    CHECK_OK(asyncify_context_without(a, "x", &d)); /* shares p */
    CHECK_OK(asyncify_context_free(e));

    /* The thread installs it too: the value is shared, not copied. */
    struct asyncify_pool *pool = new_pool(0);
    asyncify_submit_options opts = options_for(pool);
    opts.context = b;
    struct task_view t1, t2;
    memset(&t1, 0, sizeof t1);
    memset(&t2, 0, sizeof t2);
    asyncify_handle h1 = submit_opts(ctx_task, &t1, &opts);
    opts.context = d;
    asyncify_handle h2 = submit_opts(ctx_task, &t2, &opts);

    CHECK_OK(asyncify_context_free(a));
    CHECK_OK(asyncify_context_free(b));
    CHECK_OK(asyncify_context_free(d));
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 0); /* two queued tasks hold it */

    CHECK_OK(asyncify_set_max_workers(pool, 1));
    wait_ok_release(h1);
    wait_ok_release(h2);
    CHECK(t1.v.p == &o && t2.v.p == &o);
    WAIT_FOR(atomic_load(&o.released) == 1, TEST_PATIENCE_MS);
    CHECK_OK(asyncify_pool_free(pool, -1));
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 1);

    /* A cancelled queued task drops its reference too. */
    struct obj o2 = { .id = 6 };
    CHECK_OK(asyncify_context_empty(&e));
    CHECK_OK(asyncify_context_with_ptr(e, "p", &o2, release_obj, &a));
    CHECK_OK(asyncify_context_free(e));
    pool = new_pool(0);
    opts = options_for(pool);
    opts.context = a;
    struct task_view t3;
    memset(&t3, 0, sizeof t3);
    asyncify_handle h3 = submit_opts(ctx_task, &t3, &opts);
    CHECK_OK(asyncify_context_free(a));
    CHECK(atomic_load(&o2.released) == 0);
    CHECK_EQ_STATUS(asyncify_cancel(h3), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(h3));
    WAIT_FOR(atomic_load(&o2.released) == 1, TEST_PATIENCE_MS);
    CHECK(atomic_load(&t3.done) == 0);
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&o2.released) == 1);
}

/* ---- ASYNCIFY_KEY_LOCAL ------------------------------------------------------------------------- */

static void test_local_keys(void)
{
    CHECK_OK(asyncify_override_clear());
    set_str("k", "k");
    CHECK_OK(asyncify_override_set_ex("loc", "L", 1, ASYNCIFY_KEY_LOCAL));
    struct obj o = { .id = 7 };
    CHECK_OK(asyncify_override_set_ptr_ex("p", &o, release_obj, NULL, ASYNCIFY_KEY_LOCAL));
    CHECK_OK(asyncify_override_set_ex("plain", "P", 1, 0)); /* flags 0: an ordinary key */

    /* Readable on the thread. */
    CHECK(key_is("loc", "L"));
    void *p = NULL;
    CHECK_OK(asyncify_override_get_ptr("p", &p));
    CHECK(p == &o);
    CHECK(key_is("plain", "P"));

    /* Not in a captured context. */
    struct asyncify_context *c = capture();
    struct view v = run_view(c, ASYNCIFY_OK, 0);
    CHECK(!v.loc_found && !v.p_found);
    CHECK(v.k_found && strcmp(v.k, "k") == 0);
    CHECK(v.count == 2); /* k and plain */
    CHECK_OK(asyncify_context_free(c));

    /* Not in a submitted task. */
    struct asyncify_pool *pool = new_pool(1);
    struct task_view t;
    memset(&t, 0, sizeof t);
    wait_ok_release(submit_to(pool, ctx_task, &t));
    CHECK(!t.v.loc_found && !t.v.p_found);
    CHECK(t.v.k_found && t.v.count == 2);

    /* Still there on the thread afterwards. */
    CHECK(key_is("loc", "L"));
    CHECK_OK(asyncify_override_get_ptr("p", &p));
    CHECK(p == &o);

    /* Setting the key again without the flag makes it inheritable. */
    set_str("loc", "now inherited");
    memset(&t, 0, sizeof t);
    wait_ok_release(submit_to(pool, ctx_task, &t));
    CHECK(t.v.loc_found);
    /* And with the flag again: local again. */
    CHECK_OK(asyncify_override_set_ex("loc", "L2", 2, ASYNCIFY_KEY_LOCAL));
    memset(&t, 0, sizeof t);
    wait_ok_release(submit_to(pool, ctx_task, &t));
    CHECK(!t.v.loc_found);
    CHECK(key_is("loc", "L2"));

    /* A local key is removable and released once. */
    CHECK(atomic_load(&o.released) == 0);
    CHECK_OK(asyncify_override_remove("p"));
    CHECK(atomic_load(&o.released) == 1);
    CHECK_EQ_STATUS(asyncify_override_remove("p"), ASYNCIFY_E_NOT_FOUND);
    CHECK_OK(asyncify_override_remove("loc"));
    CHECK(key_absent("loc"));

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
    CHECK(atomic_load(&o.released) == 1);
}

/* ---- clone functions ---------------------------------------------------------------------------- */

struct tracker {
    struct tracker *origin; /* NULL for the original */
    atomic_int released;
    atomic_int uses;
};

static atomic_int clone_calls;
static atomic_int clone_releases;
static atomic_int original_releases;
static atomic_int bad_releases;

static void *clone_tracker(void *p)
{
    struct tracker *orig = p;
    if (orig->origin != NULL) {
        atomic_fetch_add(&bad_releases, 1); /* a clone of a clone */
    }
    struct tracker *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    c->origin = orig;
    atomic_fetch_add(&clone_calls, 1);
    return c;
}

static void release_tracker(void *p)
{
    struct tracker *t = p;
    if (atomic_fetch_add(&t->released, 1) != 0) {
        atomic_fetch_add(&bad_releases, 1); /* twice */
        return;
    }
    if (t->origin == NULL) {
        atomic_fetch_add(&original_releases, 1);
    } else {
        atomic_fetch_add(&clone_releases, 1); /* freed by the test, which checks the flag first */
    }
}

#define CLONE_TASKS 8

struct clone_view {
    struct tracker *seen;
    struct tracker *seen_again;
    struct tracker *nested_seen;
    atomic_int go;
    atomic_int started;
    int clone_calls_at_end;
};

static int32_t clone_task(void *arg, void **out_result)
{
    (void)out_result;
    struct clone_view *cv = arg;
    void *p = NULL;
    CHECK_OK(asyncify_override_get_ptr("tracker", &p));
    cv->seen = p;
    atomic_fetch_add(&cv->seen->uses, 1);
    atomic_store(&cv->started, 1);
    gate_wait(&cv->go);
    p = NULL;
    CHECK_OK(asyncify_override_get_ptr("tracker", &p));
    cv->seen_again = p;
    return 0;
}

static void test_clone(void)
{
    CHECK_OK(asyncify_override_clear());
    atomic_store(&clone_calls, 0);
    struct tracker orig;
    memset(&orig, 0, sizeof orig);
    CHECK_OK(asyncify_override_set_ptr_ex("tracker", &orig, release_tracker, clone_tracker, 0));
    CHECK(atomic_load(&clone_calls) == 0);

    /* The thread itself sees the original. */
    void *p = NULL;
    CHECK_OK(asyncify_override_get_ptr("tracker", &p));
    CHECK(p == &orig);
    asyncify_free_fn rel = NULL;
    CHECK_OK(asyncify_override_get_ptr_ex("tracker", &p, &rel));
    CHECK(p == &orig && rel == release_tracker);

    /* Each task gets its own clone, made once per task, released when its table is restored. */
    struct asyncify_pool *pool = new_pool(CLONE_TASKS);
    struct clone_view cv[CLONE_TASKS];
    memset(cv, 0, sizeof cv);
    asyncify_handle h[CLONE_TASKS];
    for (int i = 0; i < CLONE_TASKS; i++) {
        h[i] = submit_to(pool, clone_task, &cv[i]);
    }
    for (int i = 0; i < CLONE_TASKS; i++) {
        WAIT_FOR(atomic_load(&cv[i].started), TEST_PATIENCE_MS);
    }
    /* All running at once: all clones alive and distinct. */
    CHECK(atomic_load(&clone_calls) == CLONE_TASKS);
    CHECK(atomic_load(&clone_releases) == 0);
    for (int i = 0; i < CLONE_TASKS; i++) {
        CHECK(cv[i].seen != NULL && cv[i].seen != &orig);
        CHECK(cv[i].seen->origin == &orig);
        CHECK(atomic_load(&cv[i].seen->uses) == 1);
        for (int j = 0; j < i; j++) {
            CHECK(cv[i].seen != cv[j].seen);
        }
    }
    for (int i = 0; i < CLONE_TASKS; i++) {
        gate_open(&cv[i].go);
    }
    for (int i = 0; i < CLONE_TASKS; i++) {
        wait_ok_release(h[i]);
        CHECK(cv[i].seen_again == cv[i].seen); /* one clone per task, not per read */
        /* Released when the task's table was restored, which is before its status is published. */
        CHECK(atomic_load(&cv[i].seen->released) == 1);
    }
    CHECK(atomic_load(&clone_releases) == CLONE_TASKS);
    CHECK(atomic_load(&clone_calls) == CLONE_TASKS);
    CHECK(atomic_load(&original_releases) == 0);

    /* context_run installs like a task: one clone, released when run returns. */
    struct asyncify_context *c = capture();
    struct clone_view one;
    memset(&one, 0, sizeof one);
    gate_open(&one.go);
    CHECK_OK(asyncify_context_run(c, clone_task, &one, NULL, NULL));
    CHECK(one.seen != &orig && one.seen_again == one.seen);
    CHECK(atomic_load(&one.seen->released) == 1);
    CHECK(atomic_load(&clone_calls) == CLONE_TASKS + 1);
    CHECK(atomic_load(&clone_releases) == CLONE_TASKS + 1);

    /* A queued task that is cancelled never got a clone. */
    struct asyncify_pool *paused = new_pool(0);
    struct clone_view never;
    memset(&never, 0, sizeof never);
    asyncify_handle hn = submit_to(paused, clone_task, &never);
    CHECK_EQ_STATUS(asyncify_cancel(hn), ASYNCIFY_CANCELLED);
    CHECK_OK(asyncify_release(hn));
    CHECK_OK(asyncify_pool_free(paused, -1));
    CHECK(atomic_load(&clone_calls) == CLONE_TASKS + 1);

    /* The original is released once, when the thread (its last holder) drops it. */
    CHECK_OK(asyncify_context_free(c));
    CHECK(atomic_load(&original_releases) == 0); /* the thread still holds it */
    CHECK_OK(asyncify_override_get_ptr("tracker", &p));
    CHECK(p == &orig);
    CHECK_OK(asyncify_override_remove("tracker"));
    CHECK(atomic_load(&original_releases) == 1);
    CHECK_OK(asyncify_pool_free(pool, -1));
    sleep_ms(20);
    CHECK(atomic_load(&original_releases) == 1);
    CHECK(atomic_load(&clone_releases) == CLONE_TASKS + 1);
    CHECK(atomic_load(&bad_releases) == 0);
    CHECK(atomic_load(&orig.released) == 1);
    for (int i = 0; i < CLONE_TASKS; i++) {
        CHECK(atomic_load(&cv[i].seen->released) == 1);
        free(cv[i].seen);
    }
    free(one.seen);
}

/* ---- reading a context: get, get_ptr(_ex), count, visit -------------------------------------------- */

struct visited {
    char keys[8][16];
    int is_ptr[8];
    size_t lens[8];
    int n;
    int stop_after;
};

static int visit_record(void *user_data, const char *key, size_t key_len, int is_ptr, const void *value,
                        size_t len)
{
    struct visited *v = user_data;
    CHECK(strlen(key) == key_len && key_len < sizeof v->keys[0]);
    memcpy(v->keys[v->n], key, key_len + 1);
    v->is_ptr[v->n] = is_ptr;
    v->lens[v->n] = len;
    if (!is_ptr && len > 0) {
        CHECK(value != NULL);
    }
    v->n++;
    return v->n == v->stop_after;
}

static int released_values;
static void count_release(void *p)
{
    (void)p;
    released_values++;
}

static void test_reading_a_context(void)
{
    static int marker;
    asyncify_context *empty = NULL, *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(asyncify_context_empty(&empty));
    CHECK_OK(asyncify_context_with(empty, "model", "gpt", 3, &a));
    CHECK_OK(asyncify_context_with_ptr(a, "client", &marker, count_release, &b));
    CHECK_OK(asyncify_context_with(b, "alpha", "", 0, &c));

    size_t n = 99;
    CHECK_OK(asyncify_context_count(c, &n));
    CHECK(n == 3);
    CHECK_OK(asyncify_context_count(empty, &n));
    CHECK(n == 0);

    char buf[8];
    size_t len = 0;
    CHECK_OK(asyncify_context_get(c, "model", buf, sizeof buf, &len));
    CHECK(len == 3 && memcmp(buf, "gpt", 3) == 0);
    CHECK_ERR(asyncify_context_get(c, "model", buf, 2, &len), ASYNCIFY_E_BUFFER_TOO_SMALL);
    CHECK(len == 3);
    CHECK_OK(asyncify_context_get(c, "alpha", NULL, 0, &len));
    CHECK(len == 0);
    CHECK_ERR(asyncify_context_get(a, "client", buf, sizeof buf, &len), ASYNCIFY_E_NOT_FOUND);
    CHECK_ERR(asyncify_context_get(c, "client", buf, sizeof buf, &len), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_context_get(NULL, "model", buf, sizeof buf, &len), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_get(c, "", buf, sizeof buf, &len), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_context_get(c, "model", NULL, 4, &len), ASYNCIFY_E_NULL);

    /* The thread's own table and the global layer are not consulted. */
    set_str("model", "thread's");
    CHECK_OK(asyncify_global_set("global-only", "g", 1));
    CHECK_ERR(asyncify_context_get(empty, "model", buf, sizeof buf, &len), ASYNCIFY_E_NOT_FOUND);
    CHECK_ERR(asyncify_context_get(c, "global-only", buf, sizeof buf, &len), ASYNCIFY_E_NOT_FOUND);
    CHECK_OK(asyncify_override_remove("model"));
    CHECK_OK(asyncify_global_remove("global-only"));

    void *p = NULL;
    asyncify_free_fn release = NULL;
    CHECK_OK(asyncify_context_get_ptr(c, "client", &p));
    CHECK(p == &marker);
    CHECK_OK(asyncify_context_get_ptr_ex(c, "client", &p, &release));
    CHECK(p == &marker && release == count_release);
    CHECK_ERR(asyncify_context_get_ptr(c, "model", &p), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_context_get_ptr(a, "client", &p), ASYNCIFY_E_NOT_FOUND);
    CHECK_ERR(asyncify_context_get_ptr_ex(c, "client", &p, NULL), ASYNCIFY_E_NULL);

    struct visited v;
    memset(&v, 0, sizeof v);
    CHECK_OK(asyncify_context_visit(c, visit_record, &v));
    CHECK(v.n == 3); /* in key order */
    CHECK(strcmp(v.keys[0], "alpha") == 0 && !v.is_ptr[0] && v.lens[0] == 0);
    CHECK(strcmp(v.keys[1], "client") == 0 && v.is_ptr[1] && v.lens[1] == 0);
    CHECK(strcmp(v.keys[2], "model") == 0 && !v.is_ptr[2] && v.lens[2] == 3);
    memset(&v, 0, sizeof v);
    v.stop_after = 2;
    CHECK_OK(asyncify_context_visit(c, visit_record, &v));
    CHECK(v.n == 2);
    CHECK_ERR(asyncify_context_visit(c, NULL, &v), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_context_visit(NULL, visit_record, &v), ASYNCIFY_E_NULL);

    CHECK_OK(asyncify_context_free(c));
    CHECK_OK(asyncify_context_free(b));
    CHECK(released_values == 1);
    CHECK_OK(asyncify_context_free(a));
    CHECK_OK(asyncify_context_free(empty));
}

int main(void)
{
    test_capture_and_run();
    test_arguments();
    test_submit_with_context();
    test_cross_thread_context();
    test_with_ptr_release_once();
    test_local_keys();
    test_clone();
    test_reading_a_context();
    TEST_PASS("test_context");
    return 0;
}
