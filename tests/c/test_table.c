/* The override table (contract section 2) and how it travels with submitted work (section 3).
 * Scenarios 2, 3, 4 and 5 of section 7. */
#include "test_util.h"

/* A pointer value whose release function counts its calls. */
struct tracked {
    atomic_int released;
};

static void tracked_release(void *p)
{
    atomic_fetch_add(&((struct tracked *)p)->released, 1);
}

static void unused_release(void *p)
{
    (void)p;
}

/* ---- bytes values ---------------------------------------------------------------------------- */

static void test_bytes(void)
{
    CHECK_OK(asyncify_override_clear());
    CHECK(table_count() == 0);

    CHECK_OK(asyncify_override_set("greeting", "hello", 5));
    CHECK(table_count() == 1);

    /* Size query: buf NULL, cap 0. Either outcome carries the size; a 5-byte value does not fit. */
    size_t len = 12345;
    asyncify_status s = asyncify_override_get("greeting", NULL, 0, &len);
    CHECK(s == ASYNCIFY_OK || s == ASYNCIFY_E_BUFFER_TOO_SMALL);
    CHECK(len == 5);

    /* Too small: *out_len gets the size needed and the buffer is left alone. */
    char buf[16];
    memset(buf, '#', sizeof buf);
    len = 0;
    CHECK_EQ_STATUS(asyncify_override_get("greeting", buf, 4, &len), ASYNCIFY_E_BUFFER_TOO_SMALL);
    CHECK(len == 5);
    for (size_t i = 0; i < sizeof buf; i++) {
        CHECK(buf[i] == '#');
    }

    /* Exactly big enough, and bigger. */
    len = 0;
    CHECK_OK(asyncify_override_get("greeting", buf, 5, &len));
    CHECK(len == 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    memset(buf, '#', sizeof buf);
    len = 0;
    CHECK_OK(asyncify_override_get("greeting", buf, sizeof buf, &len));
    CHECK(len == 5);
    CHECK(memcmp(buf, "hello", 5) == 0);

    /* Bytes are bytes: embedded NULs and high bytes come back exactly. */
    const unsigned char bin[6] = { 0, 1, 0, 0xff, 'x', 0 };
    CHECK_OK(asyncify_override_set("bin", bin, sizeof bin));
    unsigned char binout[8] = { 0 };
    len = 0;
    CHECK_OK(asyncify_override_get("bin", binout, sizeof binout, &len));
    CHECK(len == sizeof bin);
    CHECK(memcmp(binout, bin, sizeof bin) == 0);

    /* A zero-length value exists and fits a zero-sized buffer. */
    CHECK_OK(asyncify_override_set("empty", "", 0));
    len = 999;
    CHECK_OK(asyncify_override_get("empty", NULL, 0, &len));
    CHECK(len == 0);
    CHECK(table_count() == 3);

    /* Copied in: changing the caller's buffer afterwards changes nothing. */
    char source[8] = "abcdefg";
    CHECK_OK(asyncify_override_set("copied", source, 7));
    memset(source, 'z', 7);
    CHECK(key_is("copied", "abcdefg"));

    /* Overwrite replaces, also with a different length; the count does not grow. */
    CHECK_OK(asyncify_override_set("greeting", "bonjour!", 8));
    CHECK(key_is("greeting", "bonjour!"));
    CHECK(table_count() == 4);

    /* Absent keys: NOT_FOUND, *out_len untouched. */
    len = 777;
    CHECK_EQ_STATUS(asyncify_override_get("absent", buf, sizeof buf, &len), ASYNCIFY_E_NOT_FOUND);
    CHECK(len == 777);

    CHECK_OK(asyncify_override_remove("bin"));
    CHECK_EQ_STATUS(asyncify_override_remove("bin"), ASYNCIFY_E_NOT_FOUND);
    CHECK_EQ_STATUS(asyncify_override_remove("never-set"), ASYNCIFY_E_NOT_FOUND);
    CHECK(key_absent("bin"));
    CHECK(table_count() == 3);

    CHECK_OK(asyncify_override_clear());
    CHECK(table_count() == 0);
    CHECK(key_absent("greeting"));
    CHECK_OK(asyncify_override_clear());
    CHECK(table_count() == 0);
}

/* ---- pointer values -------------------------------------------------------------------------- */

static void test_pointers(void)
{
    CHECK_OK(asyncify_override_clear());
    struct tracked a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };

    CHECK_OK(asyncify_override_set_ptr("p", &a, tracked_release));
    void *out = NULL;
    CHECK_OK(asyncify_override_get_ptr("p", &out));
    CHECK(out == &a);
    out = NULL;
    asyncify_free_fn rel = NULL;
    CHECK_OK(asyncify_override_get_ptr_ex("p", &out, &rel));
    CHECK(out == &a);
    CHECK(rel == tracked_release);

    /* No release function: get_ptr_ex reports NULL for it. */
    int plain = 42;
    CHECK_OK(asyncify_override_set_ptr("plain", &plain, NULL));
    out = NULL;
    rel = unused_release;
    CHECK_OK(asyncify_override_get_ptr_ex("plain", &out, &rel));
    CHECK(out == &plain);
    CHECK(rel == NULL);

    /* Kind mismatch both ways: E_INVALID_ARGUMENT, outputs untouched. */
    CHECK_OK(asyncify_override_set("bytes", "x", 1));
    out = (void *)&plain;
    CHECK_EQ_STATUS(asyncify_override_get_ptr("bytes", &out), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(out == (void *)&plain);
    rel = unused_release;
    CHECK_EQ_STATUS(asyncify_override_get_ptr_ex("bytes", &out, &rel), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(out == (void *)&plain && rel == unused_release);
    char buf[8];
    size_t len = 555;
    CHECK_EQ_STATUS(asyncify_override_get("p", buf, sizeof buf, &len), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(len == 555);
    CHECK_EQ_STATUS(asyncify_override_get("p", NULL, 0, &len), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(len == 555);
    CHECK_EQ_STATUS(asyncify_override_get_ptr("absent", &out), ASYNCIFY_E_NOT_FOUND);
    CHECK(out == (void *)&plain);
    CHECK(atomic_load(&a.released) == 0);

    /* Overwriting drops the only table holding `a`: released exactly once, `b` untouched. */
    CHECK_OK(asyncify_override_set_ptr("p", &b, tracked_release));
    CHECK(atomic_load(&a.released) == 1);
    CHECK(atomic_load(&b.released) == 0);
    CHECK_OK(asyncify_override_get_ptr("p", &out));
    CHECK(out == &b);

    /* Replacing a pointer with bytes releases it too. */
    CHECK_OK(asyncify_override_set("p", "now bytes", 9));
    CHECK(atomic_load(&b.released) == 1);

    /* remove releases. */
    CHECK_OK(asyncify_override_set_ptr("c", &c, tracked_release));
    CHECK_OK(asyncify_override_remove("c"));
    CHECK(atomic_load(&c.released) == 1);

    /* A scope's saved table holds the value: removing it inside the scope does not release it; it comes
     * back on exit; removing it afterwards does. */
    CHECK_OK(asyncify_override_set_ptr("d", &d, tracked_release));
    uint64_t tok = 0;
    CHECK_OK(asyncify_scope_enter(&tok));
    CHECK_OK(asyncify_override_remove("d"));
    CHECK(key_absent("d"));
    CHECK(atomic_load(&d.released) == 0);
    CHECK_OK(asyncify_scope_exit(tok));
    CHECK_OK(asyncify_override_get_ptr("d", &out));
    CHECK(out == &d);
    CHECK(atomic_load(&d.released) == 0);

    /* clear releases everything it held, once. */
    CHECK_OK(asyncify_override_clear());
    CHECK(atomic_load(&d.released) == 1);

    /* A value set only inside a scope goes when the scope is exited. */
    struct tracked e = { 0 };
    CHECK_OK(asyncify_scope_enter(&tok));
    CHECK_OK(asyncify_override_set_ptr("e", &e, tracked_release));
    CHECK(atomic_load(&e.released) == 0);
    CHECK_OK(asyncify_scope_exit(tok));
    CHECK(atomic_load(&e.released) == 1);
    CHECK(key_absent("e"));

    sleep_ms(20);
    CHECK(atomic_load(&a.released) == 1);
    CHECK(atomic_load(&b.released) == 1);
    CHECK(atomic_load(&c.released) == 1);
    CHECK(atomic_load(&d.released) == 1);
    CHECK(atomic_load(&e.released) == 1);
}

/* A submitted task holds the last reference to a pointer value: the release runs once, after the
 * task is done with it, not when the submitter removes it. */
struct hold_state {
    atomic_int gate;
    struct tracked *obj;
    void *seen;
    int released_when_seen;
};

static int32_t hold_task(void *arg, void **out_result)
{
    (void)out_result;
    struct hold_state *st = arg;
    gate_wait(&st->gate);
    CHECK_OK(asyncify_override_get_ptr("held", &st->seen));
    st->released_when_seen = atomic_load(&st->obj->released);
    return 0;
}

static void test_pointer_released_by_task(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(1);
    struct tracked obj = { 0 };
    struct hold_state st = { .obj = &obj, .released_when_seen = -1 };

    CHECK_OK(asyncify_override_set_ptr("held", &obj, tracked_release));
    asyncify_handle h = submit_to(pool, hold_task, &st);
    CHECK_OK(asyncify_override_remove("held"));
    CHECK(atomic_load(&obj.released) == 0); /* the task's snapshot still holds it */

    gate_open(&st.gate);
    wait_ok(h);
    CHECK(st.seen == &obj);
    CHECK(st.released_when_seen == 0);
    CHECK_OK(asyncify_release(h));
    CHECK_OK(asyncify_pool_free(pool, -1));
    WAIT_FOR(atomic_load(&obj.released) == 1, TEST_PATIENCE_MS);
    sleep_ms(50);
    CHECK(atomic_load(&obj.released) == 1);
}

/* ---- a thread created outside the library starts empty ---------------------------------------- */

struct fresh_state {
    struct tracked *own;
    size_t count_at_start;
    bool k_absent, p_absent;
};

static void *fresh_thread(void *arg)
{
    struct fresh_state *st = arg;
    st->count_at_start = table_count();
    st->k_absent = key_absent("k");
    void *p = NULL;
    st->p_absent = asyncify_override_get_ptr("p", &p) == ASYNCIFY_E_NOT_FOUND;
    set_str("k", "child");
    CHECK(key_is("k", "child"));
    /* Dropped with this thread's table when the thread exits. */
    CHECK_OK(asyncify_override_set_ptr("own", st->own, tracked_release));
    return NULL;
}

static void test_fresh_thread(void)
{
    CHECK_OK(asyncify_override_clear());
    struct tracked parent_obj = { 0 }, child_obj = { 0 };
    set_str("k", "main");
    CHECK_OK(asyncify_override_set_ptr("p", &parent_obj, tracked_release));

    struct fresh_state st = { .own = &child_obj, .count_at_start = 99 };
    join_thread(start_thread(fresh_thread, &st));
    CHECK(st.count_at_start == 0);
    CHECK(st.k_absent);
    CHECK(st.p_absent);

    /* The child's writes did not reach the creator. */
    CHECK(key_is("k", "main"));
    CHECK(table_count() == 2);
    /* The child's table went with the child. */
    WAIT_FOR(atomic_load(&child_obj.released) == 1, TEST_PATIENCE_MS);
    CHECK(atomic_load(&parent_obj.released) == 0);
    CHECK_OK(asyncify_override_clear());
    CHECK(atomic_load(&parent_obj.released) == 1);
    CHECK(atomic_load(&child_obj.released) == 1);
}

/* ---- scenario 2: nested scopes ---------------------------------------------------------------- */

struct capture {
    bool k1, j2, baseX;
    size_t count;
    atomic_int done;
};

static int32_t capture_task(void *arg, void **out_result)
{
    (void)out_result;
    struct capture *c = arg;
    c->k1 = key_is("k", "1");
    c->j2 = key_is("j", "2");
    c->baseX = key_is("base", "X");
    c->count = table_count();
    atomic_store(&c->done, 1);
    return 0;
}

struct foreign_exit {
    uint64_t token;
    asyncify_status status;
    size_t own_count_after;
};

static void *foreign_exit_thread(void *arg)
{
    struct foreign_exit *fe = arg;
    fe->status = asyncify_scope_exit(fe->token);
    fe->own_count_after = table_count();
    return NULL;
}

static int32_t foreign_exit_task(void *arg, void **out_result)
{
    (void)out_result;
    struct foreign_exit *fe = arg;
    fe->status = asyncify_scope_exit(fe->token);
    fe->own_count_after = table_count();
    return 0;
}

static void test_scopes(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(1);
    set_str("base", "0");

    uint64_t t1 = 0, t2 = 0;
    CHECK_OK(asyncify_scope_enter(&t1));
    set_str("k", "1");
    CHECK_OK(asyncify_scope_enter(&t2));
    CHECK(t1 != t2);
    set_str("j", "2");
    set_str("base", "X");

    struct capture cap = { .count = 0 };
    asyncify_handle h = submit_to(pool, capture_task, &cap);

    /* Out of order: refused, and the table is exactly as it was. */
    CHECK_EQ_STATUS(asyncify_scope_exit(t1), ASYNCIFY_E_SCOPE_MISMATCH);
    CHECK(key_is("k", "1") && key_is("j", "2") && key_is("base", "X"));
    CHECK(table_count() == 3);

    CHECK_OK(asyncify_scope_exit(t2));
    CHECK(key_is("k", "1") && key_absent("j") && key_is("base", "0"));
    CHECK(table_count() == 2);

    /* The same token twice is not a valid exit either, and changes nothing. */
    CHECK(asyncify_scope_exit(t2) < 0);
    CHECK(key_is("k", "1") && key_is("base", "0"));
    CHECK(table_count() == 2);

    CHECK_OK(asyncify_scope_exit(t1));
    CHECK(key_absent("k") && key_is("base", "0"));
    CHECK(table_count() == 1);

    wait_ok_release(h);
    CHECK(atomic_load(&cap.done) == 1);
    CHECK(cap.k1 && cap.j2 && cap.baseX);
    CHECK(cap.count == 3);

    /* Restore exactly, even after clear inside the scope. */
    CHECK_OK(asyncify_scope_enter(&t1));
    CHECK_OK(asyncify_override_clear());
    set_str("other", "y");
    CHECK_OK(asyncify_scope_exit(t1));
    CHECK(key_is("base", "0") && key_absent("other"));
    CHECK(table_count() == 1);

    /* Exit from another thread: refused; neither table changes. */
    CHECK_OK(asyncify_scope_enter(&t1));
    set_str("k", "5");
    struct foreign_exit fe = { .token = t1, .status = 12345, .own_count_after = 99 };
    join_thread(start_thread(foreign_exit_thread, &fe));
    CHECK_EQ_STATUS(fe.status, ASYNCIFY_E_SCOPE_MISMATCH);
    CHECK(fe.own_count_after == 0);
    CHECK(key_is("k", "5") && table_count() == 2);

    /* Exit from a task (another thread and another task): refused too. */
    fe = (struct foreign_exit){ .token = t1, .status = 12345, .own_count_after = 99 };
    wait_ok_release(submit_to(pool, foreign_exit_task, &fe));
    CHECK_EQ_STATUS(fe.status, ASYNCIFY_E_SCOPE_MISMATCH);
    CHECK(fe.own_count_after == 2); /* the task's own (installed) table, untouched by the refusal */
    CHECK(key_is("k", "5") && table_count() == 2);

    CHECK_OK(asyncify_scope_exit(t1));
    CHECK(key_absent("k") && key_is("base", "0"));
    CHECK(table_count() == 1);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* ---- scenario 3: what a task does stays in the task ------------------------------------------- */

struct isolation {
    pthread_t worker;
    uint64_t leaked_token;
    atomic_int ran;
    asyncify_status reuse_token_status;
    size_t count;
    bool saw_expected;
};

static int32_t messy_task(void *arg, void **out_result)
{
    (void)out_result;
    struct isolation *st = arg;
    st->worker = pthread_self();
    CHECK(key_is("a", "1") && key_is("b", "2"));
    CHECK(table_count() == 2);
    set_str("a", "10");
    CHECK(key_is("a", "10"));
    set_str("c", "3");
    CHECK_OK(asyncify_override_remove("b"));
    CHECK_OK(asyncify_scope_enter(&st->leaked_token));
    set_str("d", "4");
    CHECK(table_count() == 3);
    atomic_store(&st->ran, 1);
    return 0; /* the scope stays open on purpose */
}

static int32_t foreign_submitter_task(void *arg, void **out_result)
{
    (void)out_result;
    struct isolation *st = arg;
    st->worker = pthread_self();
    st->count = table_count();
    st->saw_expected =
        key_is("x", "9") && key_absent("a") && key_absent("b") && key_absent("c") && key_absent("d");
    /* The previous task's open scope was discarded with its table. */
    st->reuse_token_status = asyncify_scope_exit(st->leaked_token);
    atomic_store(&st->ran, 1);
    return 0;
}

static int32_t parent_table_task(void *arg, void **out_result)
{
    (void)out_result;
    struct isolation *st = arg;
    st->worker = pthread_self();
    st->count = table_count();
    st->saw_expected = key_is("a", "7") && key_is("b", "2") && key_absent("c") && key_absent("d");
    atomic_store(&st->ran, 1);
    return 0;
}

struct second_submitter {
    struct asyncify_pool *pool;
    struct isolation *st;
};

static void *second_submitter_thread(void *arg)
{
    struct second_submitter *ss = arg;
    set_str("x", "9");
    wait_ok_release(submit_to(ss->pool, foreign_submitter_task, ss->st));
    CHECK(key_is("x", "9") && table_count() == 1);
    return NULL;
}

static void test_task_isolation(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(1);
    set_str("a", "1");
    set_str("b", "2");

    struct isolation first = { .leaked_token = 0 };
    wait_ok_release(submit_to(pool, messy_task, &first));
    CHECK(atomic_load(&first.ran) == 1);
    CHECK(first.leaked_token != 0);
    CHECK(key_is("a", "1") && key_is("b", "2") && key_absent("c") && key_absent("d"));
    CHECK(table_count() == 2);

    /* The next task on that worker, from another submitter, sees only that submitter's table. */
    struct isolation second = { .leaked_token = first.leaked_token, .reuse_token_status = 12345 };
    struct second_submitter ss = { .pool = pool, .st = &second };
    join_thread(start_thread(second_submitter_thread, &ss));
    CHECK(atomic_load(&second.ran) == 1);
    CHECK(second.saw_expected);
    CHECK(second.count == 1);
    CHECK(second.reuse_token_status < 0);
    CHECK(pthread_equal(first.worker, second.worker)); /* limit 1: the same, reused worker */

    /* And a later task from this thread sees this thread's current table, nothing of the others. */
    set_str("a", "7");
    struct isolation third = { .leaked_token = 0 };
    wait_ok_release(submit_to(pool, parent_table_task, &third));
    CHECK(atomic_load(&third.ran) == 1);
    CHECK(third.saw_expected);
    CHECK(third.count == 2);
    CHECK(pthread_equal(first.worker, third.worker));

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* ---- scenario 4: nested submissions inherit the installed table ------------------------------- */

struct nested {
    struct asyncify_pool *pool;
    struct tracked *shared;
    bool inner_saw_outer_table;
    void *inner_shared;
    size_t inner_count;
    bool outer_unchanged_after_inner;
    atomic_int inner_ran;
};

static int32_t inner_task(void *arg, void **out_result)
{
    (void)out_result;
    struct nested *st = arg;
    st->inner_saw_outer_table = key_is("k", "2") && key_is("m", "5") && key_absent("gone");
    st->inner_count = table_count();
    CHECK_OK(asyncify_override_get_ptr("shared", &st->inner_shared));
    set_str("z", "inner");
    atomic_store(&st->inner_ran, 1);
    return 0;
}

static int32_t outer_task(void *arg, void **out_result)
{
    (void)out_result;
    struct nested *st = arg;
    CHECK(key_is("k", "1") && key_is("gone", "1"));
    set_str("k", "2");
    set_str("m", "5");
    CHECK_OK(asyncify_override_remove("gone"));
    wait_ok_release(submit_to(st->pool, inner_task, st));
    st->outer_unchanged_after_inner =
        key_is("k", "2") && key_is("m", "5") && key_absent("z") && table_count() == 3;
    return 0;
}

static void test_nested_submission(void)
{
    CHECK_OK(asyncify_override_clear());
    struct tracked shared = { 0 };
    struct nested st = { .pool = new_pool(2), .shared = &shared };
    set_str("k", "1");
    set_str("gone", "1");
    CHECK_OK(asyncify_override_set_ptr("shared", &shared, tracked_release));

    wait_ok_release(submit_to(st.pool, outer_task, &st));
    CHECK(atomic_load(&st.inner_ran) == 1);
    CHECK(st.inner_saw_outer_table);
    CHECK(st.inner_count == 3); /* k, m, shared */
    CHECK(st.inner_shared == &shared); /* shared, not copied */
    CHECK(st.outer_unchanged_after_inner);
    CHECK(key_is("k", "1") && key_is("gone", "1") && key_absent("m") && key_absent("z"));

    CHECK_OK(asyncify_pool_free(st.pool, -1));
    CHECK_OK(asyncify_override_clear());
    WAIT_FOR(atomic_load(&shared.released) == 1, TEST_PATIENCE_MS);
}

/* ---- scenario 5: two submitters, 500 tasks each, scopes in between ----------------------------- */

#define TASKS_PER_SUBMITTER 500

struct expectation {
    char owner[8];
    char k[32];
    bool has_depth;
    size_t count;
    atomic_int verdict; /* 0 not run, 1 right, 2 wrong */
};

struct submitter {
    const char *name;
    struct asyncify_pool *pool;
    struct expectation exp[TASKS_PER_SUBMITTER];
    asyncify_handle handles[TASKS_PER_SUBMITTER];
};

static int32_t expectation_task(void *arg, void **out_result)
{
    (void)out_result;
    struct expectation *e = arg;
    bool right = key_is("owner", e->owner) && key_is("k", e->k) && table_count() == e->count &&
                 (e->has_depth ? key_is("depth", "inner") : key_absent("depth"));
    atomic_store(&e->verdict, right ? 1 : 2);
    return 0;
}

static void *submitter_thread(void *arg)
{
    struct submitter *s = arg;
    set_str("owner", s->name);
    set_str("k", s->name);
    for (int i = 0; i < TASKS_PER_SUBMITTER; i++) {
        struct expectation *e = &s->exp[i];
        snprintf(e->owner, sizeof e->owner, "%s", s->name);
        uint64_t outer = 0, inner = 0;
        switch (i % 3) {
        case 0: /* at the base of the thread's table */
            snprintf(e->k, sizeof e->k, "%s", s->name);
            e->count = 2;
            s->handles[i] = submit_to(s->pool, expectation_task, e);
            break;
        case 1: /* inside one scope */
            CHECK_OK(asyncify_scope_enter(&outer));
            snprintf(e->k, sizeof e->k, "%s:%d", s->name, i);
            set_str("k", e->k);
            e->count = 2;
            s->handles[i] = submit_to(s->pool, expectation_task, e);
            set_str("k", "changed after submit");
            CHECK_OK(asyncify_scope_exit(outer));
            break;
        default: /* two scopes deep, with an extra key */
            CHECK_OK(asyncify_scope_enter(&outer));
            set_str("k", "outer");
            CHECK_OK(asyncify_scope_enter(&inner));
            snprintf(e->k, sizeof e->k, "%s:%d:inner", s->name, i);
            set_str("k", e->k);
            set_str("depth", "inner");
            e->has_depth = true;
            e->count = 3;
            s->handles[i] = submit_to(s->pool, expectation_task, e);
            CHECK_OK(asyncify_override_remove("depth"));
            CHECK_OK(asyncify_scope_exit(inner));
            CHECK_OK(asyncify_scope_exit(outer));
            break;
        }
        CHECK(key_is("k", s->name) && key_absent("depth") && table_count() == 2);
    }
    return NULL;
}

static void test_two_submitters(void)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(4);
    static struct submitter a, b; /* zeroed; too big for a thread's stack budget in a test */
    a.name = "A";
    a.pool = pool;
    b.name = "B";
    b.pool = pool;
    pthread_t ta = start_thread(submitter_thread, &a);
    pthread_t tb = start_thread(submitter_thread, &b);
    join_thread(ta);
    join_thread(tb);

    struct submitter *all[2] = { &a, &b };
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < TASKS_PER_SUBMITTER; i++) {
            wait_ok_release(all[s]->handles[i]);
            if (atomic_load(&all[s]->exp[i].verdict) != 1) {
                test_fail(__FILE__, __LINE__, "task %d of submitter %s saw the wrong table (verdict %d)", i,
                          all[s]->name, atomic_load(&all[s]->exp[i].verdict));
            }
        }
    }
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(table_count() == 0); /* the main thread's table was never touched */
}

int main(void)
{
    /* The main thread never set anything: its table is empty. */
    CHECK(table_count() == 0);
    test_bytes();
    test_pointers();
    test_pointer_released_by_task();
    test_fresh_thread();
    test_scopes();
    test_task_isolation();
    test_nested_submission();
    test_two_submitters();
    TEST_PASS("test_table");
    return 0;
}
