/* The global layer: process-wide defaults under every thread's own table, read live,
 * and the lifetime of global pointer values a reader holds. */
#include "test_util.h"

struct obj {
    atomic_int released;
    int id;
};

static void release_obj(void *p)
{
    atomic_fetch_add(&((struct obj *)p)->released, 1);
}

static void set_global_str(const char *key, const char *value)
{
    CHECK_OK(asyncify_global_set(key, value, strlen(value)));
}

/* ---- set / set_ptr / remove and their argument checks ---------------------------------------------- */

static void test_arguments(void)
{
    struct obj o = { .id = 1 };
    CHECK_ERR(asyncify_global_set(NULL, "v", 1), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_global_set("", "v", 1), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_global_set("bad\xff", "v", 1), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_global_set("k", NULL, 1), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_global_set_ptr(NULL, &o, release_obj), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_global_set_ptr("", &o, release_obj), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_global_set_ptr("\xe2\x82", &o, release_obj), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(atomic_load(&o.released) == 0); /* on error the caller keeps the pointer */
    CHECK_ERR(asyncify_global_remove(NULL), ASYNCIFY_E_NULL);
    CHECK_ERR(asyncify_global_remove(""), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_global_remove("\xff"), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_ERR(asyncify_global_remove("never-set"), ASYNCIFY_E_NOT_FOUND);
    CHECK(key_absent("k"));

    /* An empty value is a value. */
    CHECK_OK(asyncify_global_set("empty", NULL, 0));
    size_t len = 99;
    CHECK_OK(asyncify_override_get("empty", NULL, 0, &len));
    CHECK(len == 0);
    CHECK_OK(asyncify_global_remove("empty"));
    CHECK_ERR(asyncify_global_remove("empty"), ASYNCIFY_E_NOT_FOUND);
    CHECK(key_absent("empty"));
}

/* ---- reading: the thread's table first, then the global layer ------------------------------------- */

struct reader {
    char g[32];
    bool found;
    size_t count;
};

static void read_into(struct reader *r, const char *key)
{
    size_t len = 0;
    r->found = asyncify_override_get(key, r->g, sizeof r->g - 1, &len) == ASYNCIFY_OK;
    r->g[r->found ? len : 0] = '\0';
    r->count = table_count();
}

static void *read_g_thread(void *arg)
{
    read_into(arg, "g");
    return NULL;
}

static int32_t read_g_task(void *arg, void **out_result)
{
    (void)out_result;
    read_into(arg, "g");
    return 0;
}

static void test_layering(void)
{
    CHECK_OK(asyncify_override_clear());
    set_global_str("g", "global");

    /* A thread with no override reads the global value; it is not part of its table. */
    CHECK(key_is("g", "global"));
    CHECK(table_count() == 0);
    CHECK_EQ_STATUS(asyncify_override_remove("g"), ASYNCIFY_E_NOT_FOUND);
    CHECK(key_is("g", "global"));
    struct reader r;
    memset(&r, 0, sizeof r);
    join_thread(start_thread(read_g_thread, &r));
    CHECK(r.found && strcmp(r.g, "global") == 0 && r.count == 0);

    /* The thread's own override wins; removing it shows the global again. */
    set_str("g", "mine");
    CHECK(key_is("g", "mine"));
    memset(&r, 0, sizeof r);
    join_thread(start_thread(read_g_thread, &r)); /* another thread: still the global */
    CHECK(strcmp(r.g, "global") == 0);
    /* A task inherits the submitter's override, which wins over the global. */
    struct asyncify_pool *pool = new_pool(1);
    memset(&r, 0, sizeof r);
    wait_ok_release(submit_to(pool, read_g_task, &r));
    CHECK(strcmp(r.g, "mine") == 0 && r.count == 1);
    CHECK_OK(asyncify_override_remove("g"));
    CHECK(key_is("g", "global"));
    memset(&r, 0, sizeof r);
    wait_ok_release(submit_to(pool, read_g_task, &r));
    CHECK(strcmp(r.g, "global") == 0 && r.count == 0);

    /* An empty table (EMPTY_CONTEXT, an empty context) still reads the global layer. */
    asyncify_submit_options opts = options_for(pool);
    opts.flags = ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
    memset(&r, 0, sizeof r);
    wait_ok_release(submit_opts(read_g_task, &r, &opts));
    CHECK(strcmp(r.g, "global") == 0);
    struct asyncify_context *e = NULL;
    CHECK_OK(asyncify_context_empty(&e));
    memset(&r, 0, sizeof r);
    CHECK_OK(asyncify_context_run(e, read_g_task, &r, NULL, NULL));
    CHECK(strcmp(r.g, "global") == 0);
    CHECK_OK(asyncify_context_free(e));

    /* A scope restores the thread's table; the global layer is not part of it. */
    uint64_t tok = 0;
    CHECK_OK(asyncify_scope_enter(&tok));
    set_str("g", "scoped");
    set_global_str("g", "global2");
    CHECK(key_is("g", "scoped"));
    CHECK_OK(asyncify_scope_exit(tok));
    CHECK(key_is("g", "global2"));

    /* A global change is seen at once; a removal too. */
    set_global_str("g", "global3");
    CHECK(key_is("g", "global3"));
    CHECK_OK(asyncify_global_remove("g"));
    CHECK(key_absent("g"));
    memset(&r, 0, sizeof r);
    join_thread(start_thread(read_g_thread, &r));
    CHECK(!r.found);

    /* The kind is checked through the layers too: a global pointer is not bytes. */
    struct obj o = { .id = 2 };
    CHECK_OK(asyncify_global_set_ptr("gp", &o, release_obj));
    char buf[8];
    size_t len = 0;
    CHECK_ERR(asyncify_override_get("gp", buf, sizeof buf, &len), ASYNCIFY_E_INVALID_ARGUMENT);
    void *p = NULL;
    asyncify_free_fn rel = NULL;
    CHECK_OK(asyncify_override_get_ptr_ex("gp", &p, &rel));
    CHECK(p == &o && rel == release_obj);
    set_str("gp", "bytes win here");
    CHECK(key_is("gp", "bytes win here"));
    CHECK_OK(asyncify_override_remove("gp"));
    CHECK_OK(asyncify_global_remove("gp"));
    CHECK(key_absent("gp"));
    /* Read again after the removal: this thread holds nothing any more. */
    CHECK_EQ_STATUS(asyncify_override_get_ptr("gp", &p), ASYNCIFY_E_NOT_FOUND);
    CHECK(atomic_load(&o.released) == 1);

    /* Replacing a global pointer nobody read releases the old one once. */
    struct obj o1 = { .id = 3 }, o2 = { .id = 4 };
    CHECK_OK(asyncify_global_set_ptr("gq", &o1, release_obj));
    CHECK_OK(asyncify_global_set_ptr("gq", &o2, release_obj));
    CHECK(atomic_load(&o1.released) == 1);
    CHECK_OK(asyncify_global_set("gq", "bytes", 5));
    CHECK(atomic_load(&o2.released) == 1);
    CHECK_OK(asyncify_global_remove("gq"));
    CHECK(atomic_load(&o1.released) == 1 && atomic_load(&o2.released) == 1);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* ---- a running task sees a global change ------------------------------------------------------------ */

struct live {
    atomic_int started;
    atomic_int saw_first;
    char first[32];
    char last[32];
    bool saw_change;
    int64_t waited_ms;
    int64_t bound_ms; /* 0: 5 s */
};

static int32_t live_task(void *arg, void **out_result)
{
    (void)out_result;
    struct live *l = arg;
    struct reader r;
    read_into(&r, "live");
    snprintf(l->first, sizeof l->first, "%s", r.found ? r.g : "(absent)");
    atomic_store(&l->started, 1);
    int64_t t0 = now_ms();
    /* Loop until the value changes, bounded. */
    int64_t bound = l->bound_ms > 0 ? l->bound_ms : 5000;
    while (now_ms() - t0 < bound) {
        read_into(&r, "live");
        if (!r.found || strcmp(r.g, l->first) != 0) {
            l->saw_change = true;
            break;
        }
        sleep_ms(1);
    }
    l->waited_ms = now_ms() - t0;
    snprintf(l->last, sizeof l->last, "%s", r.found ? r.g : "(absent)");
    return 0;
}

static void test_live_global_in_running_task(void)
{
    CHECK_OK(asyncify_override_clear());
    set_global_str("live", "v1");
    struct asyncify_pool *pool = new_pool(2);

    /* No override: the running task sees the change. */
    struct live l;
    memset(&l, 0, sizeof l);
    asyncify_handle h = submit_to(pool, live_task, &l);
    WAIT_FOR(atomic_load(&l.started), TEST_PATIENCE_MS);
    CHECK(strcmp(l.first, "v1") == 0);
    sleep_ms(20);
    set_global_str("live", "v2");
    wait_ok_release(h);
    CHECK(l.saw_change);
    CHECK(strcmp(l.last, "v2") == 0);

    /* The submitter's override (in the task's snapshot) wins: the task never sees the change. */
    set_str("live", "own");
    memset(&l, 0, sizeof l);
    l.bound_ms = 500;
    h = submit_to(pool, live_task, &l);
    WAIT_FOR(atomic_load(&l.started), TEST_PATIENCE_MS);
    set_global_str("live", "v3");
    CHECK_OK(asyncify_override_remove("live"));
    wait_ok_release(h);
    CHECK(!l.saw_change);
    CHECK(l.waited_ms >= 500);
    CHECK(strcmp(l.first, "own") == 0);
    CHECK(strcmp(l.last, "own") == 0);

    /* A removal is seen live too. */
    memset(&l, 0, sizeof l);
    h = submit_to(pool, live_task, &l);
    WAIT_FOR(atomic_load(&l.started), TEST_PATIENCE_MS);
    CHECK(strcmp(l.first, "v3") == 0);
    CHECK_OK(asyncify_global_remove("live"));
    wait_ok_release(h);
    CHECK(l.saw_change);
    CHECK(strcmp(l.last, "(absent)") == 0);

    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK_OK(asyncify_override_clear());
}

/* ---- global pointer lifetime for readers ------------------------------------------------------------- */

struct holder {
    struct obj *expect;
    bool reread; /* read the key again after its removal */
    atomic_int have_it;
    atomic_int removed; /* the test removed the global key */
    atomic_int go; /* the task may end */
    void *first;
    asyncify_status reread_status;
    void *reread_ptr;
    int released_before_end;
};

static int32_t holder_task(void *arg, void **out_result)
{
    (void)out_result;
    struct holder *h = arg;
    CHECK_OK(asyncify_override_get_ptr("gp", &h->first));
    atomic_store(&h->have_it, 1);
    WAIT_FOR(atomic_load(&h->removed), TEST_PATIENCE_MS);
    /* Gone from the global layer: a new read misses it, but in a task the value read so far stays
     * valid until the task ends. */
    h->reread_status = 12345;
    if (h->reread) {
        h->reread_ptr = NULL;
        h->reread_status = asyncify_override_get_ptr("gp", &h->reread_ptr);
    }
    sleep_ms(50);
    h->released_before_end = atomic_load(&h->expect->released);
    gate_wait(&h->go);
    return 0;
}

/* A task read a global pointer; the global layer drops it while the task runs: still valid until the
 * task ends (also after the task reads the key again), then released exactly once. The pool's worker
 * stays alive (default keep-alive 10 s), so its thread exit cannot be what releases it. */
static void run_global_ptr_in_task(bool reread)
{
    CHECK_OK(asyncify_override_clear());
    struct asyncify_pool *pool = new_pool(1);
    struct obj o = { .id = 5 };
    CHECK_OK(asyncify_global_set_ptr("gp", &o, release_obj));
    struct holder hd = { .expect = &o, .reread = reread };
    asyncify_handle h = submit_to(pool, holder_task, &hd);
    WAIT_FOR(atomic_load(&hd.have_it), TEST_PATIENCE_MS);
    CHECK(hd.first == &o);
    CHECK_OK(asyncify_global_remove("gp"));
    /* Refresh this thread's view of the global layer (a read of that key): it held nothing. */
    void *p = NULL;
    CHECK_EQ_STATUS(asyncify_override_get_ptr("gp", &p), ASYNCIFY_E_NOT_FOUND);
    atomic_store(&hd.removed, 1);
    sleep_ms(150);
    CHECK(atomic_load(&o.released) == 0); /* the running task still holds it */
    gate_open(&hd.go);
    wait_ok_release(h);
    if (reread) {
        CHECK_EQ_STATUS(hd.reread_status, ASYNCIFY_E_NOT_FOUND);
    }
    CHECK(hd.released_before_end == 0);
    /* The task ended: released, exactly once. */
    WAIT_FOR(atomic_load(&o.released) == 1, 3000);
    sleep_ms(50);
    CHECK(atomic_load(&o.released) == 1);
    CHECK_OK(asyncify_pool_free(pool, -1));
    CHECK(atomic_load(&o.released) == 1);
}

static void test_global_ptr_in_task_reread(void)
{
    run_global_ptr_in_task(true);
}

static void test_global_ptr_in_task(void)
{
    run_global_ptr_in_task(false);
}

/* Outside tasks, a replaced value stays valid for its reader until the reader reads the key again. */
static void test_global_ptr_replaced(void)
{
    CHECK_OK(asyncify_override_clear());
    struct obj o3 = { .id = 7 }, o4 = { .id = 8 };
    void *p = NULL;
    CHECK_OK(asyncify_global_set_ptr("gp3", &o3, release_obj));
    CHECK_OK(asyncify_override_get_ptr("gp3", &p));
    CHECK_OK(asyncify_override_get_ptr("gp3", &p)); /* reading it again while set: the same one */
    CHECK(p == &o3);
    CHECK(atomic_load(&o3.released) == 0);
    CHECK_OK(asyncify_global_set_ptr("gp3", &o4, release_obj));
    CHECK(atomic_load(&o3.released) == 0); /* this thread still holds what it read */
    CHECK_OK(asyncify_override_get_ptr("gp3", &p));
    CHECK(p == &o4);
    CHECK(atomic_load(&o3.released) == 1);
    CHECK_OK(asyncify_global_remove("gp3"));
    CHECK_OK(asyncify_override_clear()); /* a table change: this thread lets go of o4 */
    CHECK(key_absent("gp3")); /* and a read of the global layer */
    WAIT_FOR(atomic_load(&o4.released) == 1, 2000);
    CHECK(atomic_load(&o3.released) == 1);
}

/* Outside tasks: removed from the global layer, valid until the reader reads that key again (and
 * finds nothing), then released exactly once. */
static void test_global_ptr_removed_then_reread(void)
{
    CHECK_OK(asyncify_override_clear());
    struct obj o = { .id = 9 };
    void *p = NULL;
    CHECK_OK(asyncify_global_set_ptr("gp2", &o, release_obj));
    CHECK_OK(asyncify_override_get_ptr("gp2", &p));
    CHECK(p == &o);
    CHECK_OK(asyncify_global_remove("gp2"));
    CHECK(atomic_load(&o.released) == 0);
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 0);
    CHECK_EQ_STATUS(asyncify_override_get_ptr("gp2", &p), ASYNCIFY_E_NOT_FOUND);
    CHECK(atomic_load(&o.released) == 1);
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 1);

    /* The same when the key now holds bytes: reading it again lets go of the pointer read before. */
    struct obj o2 = { .id = 12 };
    CHECK_OK(asyncify_global_set_ptr("gp2", &o2, release_obj));
    CHECK_OK(asyncify_override_get_ptr("gp2", &p));
    CHECK(p == &o2);
    CHECK_OK(asyncify_global_set("gp2", "bytes", 5));
    CHECK(atomic_load(&o2.released) == 0);
    CHECK(key_is("gp2", "bytes"));
    CHECK(atomic_load(&o2.released) == 1);
    CHECK_OK(asyncify_global_remove("gp2"));
    CHECK(atomic_load(&o2.released) == 1);
}

/* Outside tasks: removed from the global layer, valid until the reader changes its table. */
static void test_global_ptr_removed_then_table_change(void)
{
    CHECK_OK(asyncify_override_clear());
    struct obj o = { .id = 10 };
    void *p = NULL;
    CHECK_OK(asyncify_global_set_ptr("gp4", &o, release_obj));
    CHECK_OK(asyncify_override_get_ptr("gp4", &p));
    CHECK(p == &o);
    CHECK_OK(asyncify_global_remove("gp4"));
    CHECK(atomic_load(&o.released) == 0);
    set_str("unrelated", "change");
    WAIT_FOR(atomic_load(&o.released) == 1, 2000);
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 1);
    CHECK_OK(asyncify_override_clear());
}

/* A global pointer no thread ever read: global_remove drops the last reference, so it is released
 * (at once, the global layer being its only holder), even on a thread that read other global keys. */
static void test_global_ptr_never_read(void)
{
    CHECK_OK(asyncify_override_clear());
    struct obj o = { .id = 11 };
    CHECK_OK(asyncify_global_set_ptr("unread", &o, release_obj));
    set_global_str("other", "x");
    CHECK(key_is("other", "x")); /* this thread reads the global layer, just not "unread" */
    CHECK_OK(asyncify_global_remove("unread"));
    WAIT_FOR(atomic_load(&o.released) == 1, 2000);
    CHECK_OK(asyncify_global_remove("other"));
    sleep_ms(20);
    CHECK(atomic_load(&o.released) == 1);
}

/* ---- many readers while a writer changes the global layer -------------------------------------------- */

static atomic_int stress_stop;

struct stress_reader {
    atomic_int reads;
    int went_back;
    int missing;
};

static void *stress_read(void *arg)
{
    struct stress_reader *s = arg;
    unsigned last = 0;
    while (!atomic_load(&stress_stop)) {
        unsigned v = 0;
        size_t len = 0;
        asyncify_status st = asyncify_override_get("counter", &v, sizeof v, &len);
        if (st != ASYNCIFY_OK || len != sizeof v) {
            s->missing++;
        } else if (v < last) {
            s->went_back++;
        } else {
            last = v;
        }
        atomic_fetch_add(&s->reads, 1);
    }
    return NULL;
}

static void test_readers_and_writer(void)
{
    unsigned v = 0;
    CHECK_OK(asyncify_global_set("counter", &v, sizeof v));
    struct stress_reader r[3];
    memset(r, 0, sizeof r);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = start_thread(stress_read, &r[i]);
    }
    for (int i = 0; i < 3; i++) {
        WAIT_FOR(atomic_load(&r[i].reads) > 0, TEST_PATIENCE_MS);
    }
    int64_t t0 = now_ms();
    for (v = 1; v <= 3000 || now_ms() - t0 < 200; v++) {
        CHECK_OK(asyncify_global_set("counter", &v, sizeof v));
    }
    int sets = (int)v - 1;
    atomic_store(&stress_stop, 1);
    for (int i = 0; i < 3; i++) {
        join_thread(t[i]);
        CHECK(atomic_load(&r[i].reads) > 1);
        CHECK(r[i].missing == 0);
        CHECK(r[i].went_back == 0); /* one writer: a reader never sees an older value again */
    }
    printf("readers: %d, %d, %d reads during %d global sets\n", atomic_load(&r[0].reads),
           atomic_load(&r[1].reads), atomic_load(&r[2].reads), sets);
    CHECK_OK(asyncify_global_remove("counter"));
}

struct named_test {
    const char *name;
    void (*fn)(void);
};

/* Runs every test in order, or only those named on the command line. */
int main(int argc, char **argv)
{
    const struct named_test tests[] = {
        { "arguments", test_arguments },
        { "layering", test_layering },
        { "live", test_live_global_in_running_task },
        { "readers", test_readers_and_writer },
        { "ptr_in_task_reread", test_global_ptr_in_task_reread },
        { "ptr_replaced", test_global_ptr_replaced },
        { "ptr_in_task", test_global_ptr_in_task },
        { "ptr_removed_then_reread", test_global_ptr_removed_then_reread },
        { "ptr_removed_then_table_change", test_global_ptr_removed_then_table_change },
        { "ptr_never_read", test_global_ptr_never_read },
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        bool run = argc < 2;
        for (int a = 1; a < argc; a++) {
            run = run || strcmp(argv[a], tests[i].name) == 0;
        }
        if (run) {
            tests[i].fn();
            printf("ok %s\n", tests[i].name);
            fflush(stdout);
        }
    }
    TEST_PASS("test_global");
    return 0;
}
