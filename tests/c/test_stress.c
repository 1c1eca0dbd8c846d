/* Exactly-once accounting under races, through the C ABI from C threads, at scale: every completion,
 * cancellation and shutdown rule of the API at once. The C twin of tests/stress.rs.
 *
 * Eight driver threads make random interleavings of submit, cancel (once, twice, of random recent
 * handles), release (pending or not), poll, wait, wait_any, resize (pause included), table and scope
 * changes, completion-queue drains and pool shutdowns on three pools: the default pool and two pools
 * that drivers retire (asyncify_pool_free while their tasks run) and replace with random options
 * (queue bound, RELEASE_SLOT_ON_ABANDON, short keep-alive, a stop hook). Work functions and on_done
 * submit, wait (a queued task of the same pool then runs inline) and cancel. At the end, with every
 * pool quiet, every task is checked:
 *
 *   - one outcome, reported exactly once (on_done or the queue), equal to every status anyone saw;
 *   - fn ran at most once, and exactly when the outcome says so;
 *   - free_arg exactly for tasks that never ran (before on_done) and abandoned ones (after fn returned);
 *   - the result moved exactly once (on_done, queue, poll/wait, or free_result), never when fn set none;
 *   - asyncify_stats of each pool equals the test's counts;
 *   - a worker's own table is empty whenever no task is installed; each task saw its submitter's table.
 *
 * Limiters and start deadlines (8.2, 8.3) join the races: three limiter slots, shared by every pool, hold
 * limiters that drivers resize (paused, small caps, none, real token rates, a bad rate now and then) and
 * replace, freeing the old one while its tasks still wait or run (or keeping it to check once quiet).
 * Tasks take a limiter and a start deadline of 1 to 50 ms at random. Then also: an expired task never
 * ran, got free_arg once, then on_done(EXPIRED) on a library thread, and counts in `expired`; no more
 * callables of a limiter run at once than its highest cap; once quiet each limiter kept has nothing
 * waiting or running, and admitted + expired + cancelled_waiting equal to the tasks accepted with it.
 *
 * A last phase races asyncify_shutdown of the default pool with submitters.
 *
 * ASYNCIFY_STRESS_TASKS sets the number of accepted tasks (default 20000; the valgrind run uses fewer),
 * ASYNCIFY_STRESS_SEED the seed.
 */
#include <math.h>

#include "test_util.h"

#define DRIVERS 8
#define MAX_GENS 512
#define RING 256
#define HELD_MAX 48
#define MAX_LIM_GENS 512
#define LIM_SLOTS 3

enum {
    M_ON_DONE = 1,
    M_CQ = 2,
    M_DETACHED = 4,
    M_SETS_RESULT = 8,
    M_EMPTY = 16,
    M_CONTEXT = 32,
    M_LIMITER = 64,
    M_DEADLINE = 128,
};

struct rec {
    /* Written before submit (the library orders them before any callback of the task). */
    unsigned mode;
    int32_t code;
    uint64_t seed;
    uint64_t expect_seq;
    uint32_t expect_count;
    uint32_t gen;
    uint32_t lim_gen; /* with M_LIMITER */
    /* Events. */
    atomic_ullong handle;
    atomic_int accepted;
    atomic_int ran;
    atomic_ullong ran_on;
    atomic_ullong fn_end;
    atomic_int arg_freed;
    atomic_ullong arg_freed_at;
    atomic_int result_freed;
    atomic_int delivered;
    atomic_int done_calls;
    atomic_int done_status;
    atomic_ullong done_at;
    atomic_int cq_calls;
    atomic_int cq_status;
    atomic_uint seen;
    atomic_uint cancel_seen;
};

struct gen {
    atomic_ullong accepted;
    atomic_int freed;
    atomic_int stops_after_free;
};

struct slot {
    pthread_rwlock_t lock;
    struct asyncify_pool *pool; /* NULL: the default pool */
    uint32_t gen;
};

static struct rec *recs;
static atomic_size_t next_rec;
static size_t rec_cap;
static atomic_llong budget;
static atomic_ullong clock_ticks = 1;
static struct gen gens[MAX_GENS];
static atomic_uint next_gen = 1;
static struct slot slots[3];
static struct asyncify_cq *_Atomic the_cq;
static atomic_ullong ring[RING];
static atomic_uint ring_next;
static atomic_ullong waited_child;
static uint64_t seed;
static unsigned release_slot_pct = 30; /* ASYNCIFY_STRESS_RELEASE_SLOT_PCT */
static atomic_ullong thread_ids = 1;

/* Figures. */
static atomic_ullong f_accepted, f_busy, f_shut_down, f_cancels, f_too_late, f_released_pending, f_polls,
    f_waits, f_timeouts, f_wait_any, f_resizes, f_pauses, f_retired, f_cb_submits, f_cb_cancels, f_inline,
    f_cq, f_to_on_done, f_to_poll, f_freed, f_args_freed, f_mismatch, f_stale, f_limiters, f_lim_sets,
    f_lim_freed_in_use, f_lim_peeks, f_limited, f_deadlines, f_expired_waiting, f_cancelled_waiting;

static _Thread_local int tl_driver;
static _Thread_local int tl_has_local;
static _Thread_local int tl_in_fn;
static _Thread_local int tl_shutting;
static _Thread_local uint64_t tl_cancelling[32];
static _Thread_local int tl_ncancelling;
static _Thread_local uint64_t tl_rng;
static _Thread_local uint64_t tl_id;

static uint64_t tick(void)
{
    return atomic_fetch_add(&clock_ticks, 1);
}

static uint64_t thread_id(void)
{
    if (tl_id == 0) {
        tl_id = atomic_fetch_add(&thread_ids, 1);
    }
    return tl_id;
}

static uint64_t rnd(void)
{
    if (tl_rng == 0) {
        tl_rng = seed ^ (thread_id() * 0x9E3779B97F4A7C15ull);
    }
    uint64_t z = (tl_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
    return rnd() % n;
}
static bool chance(unsigned percent)
{
    return below(100) < percent;
}

static void bump(atomic_ullong *c)
{
    atomic_fetch_add(c, 1);
}

/* ---- the thread's table, as the tasks check it ---- */

static uint64_t get_seq(void)
{
    uint64_t v = 0;
    size_t len = 0;
    asyncify_status s = asyncify_override_get("seq", &v, sizeof v, &len);
    if (s == ASYNCIFY_E_NOT_FOUND) {
        return 0;
    }
    CHECK(s == ASYNCIFY_OK && len == sizeof v);
    return v;
}

static void set_seq(uint64_t v)
{
    CHECK_OK(asyncify_override_set("seq", &v, sizeof v));
}

static uint32_t local_keys(void)
{
    return (tl_has_local && tl_in_fn == 0) ? 1u : 0u;
}

/* ---- cancels ---- */

static asyncify_status cancel(asyncify_handle h)
{
    bump(&f_cancels);
    CHECK(tl_ncancelling < 32);
    tl_cancelling[tl_ncancelling++] = h;
    asyncify_status s = asyncify_cancel(h);
    tl_ncancelling--;
    return s;
}

static bool cancelling_here(asyncify_handle h)
{
    for (int i = 0; i < tl_ncancelling; i++) {
        if (tl_cancelling[i] == h) {
            return true;
        }
    }
    return tl_shutting > 0;
}

static asyncify_handle ring_pick(void)
{
    if (chance(25)) {
        return atomic_load(&waited_child);
    }
    return atomic_load(&ring[below(RING)]);
}

static void cancel_from_callback(void)
{
    asyncify_handle h = ring_pick();
    if (h == 0) {
        return;
    }
    bump(&f_cb_cancels);
    asyncify_status s = cancel(h);
    CHECK(s == ASYNCIFY_CANCELLED || s == ASYNCIFY_OK || s == ASYNCIFY_FAILED || s == ASYNCIFY_EXPIRED ||
          s == ASYNCIFY_E_INVALID_HANDLE);
}

static void note_cancel(struct rec *r, asyncify_status s)
{
    if (s == ASYNCIFY_CANCELLED || s == ASYNCIFY_OK || s == ASYNCIFY_FAILED || s == ASYNCIFY_EXPIRED) {
        atomic_fetch_or(&r->cancel_seen, 1u << s);
        if (s != ASYNCIFY_CANCELLED) {
            bump(&f_too_late);
        }
    }
}

static bool detached(const struct rec *r)
{
    return (r->mode & M_DETACHED) != 0;
}

static struct rec *submit_one(int slot, asyncify_handle *out);
static void release_owned(asyncify_handle h, struct rec *r);

/* ---- limiters: slots shared by every pool, resized and replaced at random ---- */

struct lim_gen {
    atomic_ullong accepted; /* tasks accepted with it */
    atomic_uint cap_ever; /* the highest cap it ever had (raised before the cap is) */
    atomic_uint running_now;
    atomic_uint peak;
};

struct lim_slot {
    pthread_rwlock_t lock;
    struct asyncify_limiter *lim; /* NULL between phases */
    uint32_t gen;
};

static struct lim_gen lim_gens[MAX_LIM_GENS];
static atomic_uint next_lim_gen = 1;
static struct lim_slot lim_slots[LIM_SLOTS];
/* Limiters taken out of their slot and kept, to check once quiet. */
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lim_slot parked[MAX_LIM_GENS];
static int nparked;

static void fetch_max(atomic_uint *a, unsigned v)
{
    unsigned cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v)) {
    }
}

static struct asyncify_limiter *new_limiter(uint32_t gen)
{
    static const uint32_t caps[] = { 0, 1, 1, 2, 3, 8, UINT32_MAX };
    static const double rates[] = { 200.0, 1000.0, 5000.0 };
    asyncify_limiter_options o;
    CHECK_OK(asyncify_limiter_options_init(&o, sizeof o));
    o.max_running = caps[below(7)];
    o.rate_per_s = chance(40) ? rates[below(3)] : 0.0;
    o.burst = (uint32_t)below(8);
    char name[32];
    snprintf(name, sizeof name, "cstress-%u", gen);
    o.name = name;
    struct lim_gen *g = &lim_gens[gen];
    atomic_store(&g->accepted, 0);
    atomic_store(&g->cap_ever, o.max_running);
    atomic_store(&g->running_now, 0);
    atomic_store(&g->peak, 0);
    struct asyncify_limiter *lim = NULL;
    CHECK_OK(asyncify_limiter_new(&o, &lim));
    bump(&f_limiters);
    return lim;
}

static void set_limiter(struct asyncify_limiter *lim, uint32_t gen, uint32_t cap, double rate, uint32_t burst)
{
    fetch_max(&lim_gens[gen].cap_ever, cap);
    CHECK_OK(asyncify_limiter_set(lim, cap, rate, burst));
    bump(&f_lim_sets);
}

static void resize_limiter(int slot)
{
    static const uint32_t caps[] = { 0, 1, 2, 3, 4, 8, 16, UINT32_MAX };
    static const double rates[] = { 0.0, 0.0, 100.0, 1000.0, 10000.0 };
    CHECK(pthread_rwlock_rdlock(&lim_slots[slot].lock) == 0);
    struct asyncify_limiter *lim = lim_slots[slot].lim;
    if (lim != NULL) {
        if (chance(10)) {
            double bad = chance(50) ? -1.0 : (double)INFINITY;
            CHECK_EQ_STATUS(asyncify_limiter_set(lim, 1, bad, 0), ASYNCIFY_E_INVALID_ARGUMENT);
        } else {
            set_limiter(lim, lim_slots[slot].gen, caps[below(8)], rates[below(5)], (uint32_t)below(8));
        }
    }
    CHECK(pthread_rwlock_unlock(&lim_slots[slot].lock) == 0);
}

static asyncify_limiter_stats limiter_stats(const struct asyncify_limiter *lim)
{
    asyncify_limiter_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_OK(asyncify_limiter_stats_get(lim, &st));
    return st;
}

/* While everything runs: never more tasks accounted for than were given to the limiter (a few submits may
 * be in flight), never more places held than its highest cap. (`waiting` is left out for now: the library
 * can count the expiry of a task that has not joined its limiter's count yet, and `waiting` then reads
 * UINT64_MAX for a moment; reported.) */
static void peek_limiter(int slot)
{
    CHECK(pthread_rwlock_rdlock(&lim_slots[slot].lock) == 0);
    struct asyncify_limiter *lim = lim_slots[slot].lim;
    if (lim != NULL) {
        struct lim_gen *g = &lim_gens[lim_slots[slot].gen];
        asyncify_limiter_stats st = limiter_stats(lim);
        uint64_t given = atomic_load(&g->accepted) + 1024;
        uint64_t cap = atomic_load(&g->cap_ever);
        if (st.running > cap || st.admitted + st.expired + st.cancelled_waiting > given) {
            test_fail(
                __FILE__, __LINE__,
                "limiter %u while running: running %llu (highest cap %llu), admitted %llu, expired %llu, "
                "cancelled_waiting %llu, about %llu tasks accepted",
                lim_slots[slot].gen, (unsigned long long)st.running, (unsigned long long)cap,
                (unsigned long long)st.admitted, (unsigned long long)st.expired,
                (unsigned long long)st.cancelled_waiting, (unsigned long long)(given - 1024));
        }
        bump(&f_lim_peeks);
    }
    CHECK(pthread_rwlock_unlock(&lim_slots[slot].lock) == 0);
}

/* Takes the next limiter generation if it is below `bound`. */
static bool take_lim_gen(uint32_t bound, uint32_t *gen)
{
    uint32_t g = atomic_load(&next_lim_gen);
    do {
        if (g >= bound) {
            return false;
        }
    } while (!atomic_compare_exchange_weak(&next_lim_gen, &g, g + 1));
    *gen = g;
    return true;
}

/* Swaps a fresh limiter into `slot`, opens the old one (a cap of at least one, a fast rate or none) so
 * that what waits for it is admitted, then frees it while its tasks still hold it, or parks it to check
 * once quiet. */
static void retire_limiter(int slot)
{
    static const uint32_t caps[] = { 1, 4, UINT32_MAX };
    uint32_t gen;
    if (!take_lim_gen(MAX_LIM_GENS - LIM_SLOTS, &gen)) {
        return; /* the last generations are kept for the next phase's fresh_limiters */
    }
    struct asyncify_limiter *fresh = new_limiter(gen);
    CHECK(pthread_rwlock_wrlock(&lim_slots[slot].lock) == 0);
    struct lim_slot old = { .lim = lim_slots[slot].lim, .gen = lim_slots[slot].gen };
    lim_slots[slot].lim = fresh;
    lim_slots[slot].gen = gen;
    CHECK(pthread_rwlock_unlock(&lim_slots[slot].lock) == 0);
    if (old.lim == NULL) {
        return;
    }
    set_limiter(old.lim, old.gen, caps[below(3)], chance(50) ? 2000.0 : 0.0, 4);
    if (chance(50)) {
        CHECK_OK(asyncify_limiter_free(old.lim));
        bump(&f_lim_freed_in_use);
    } else {
        CHECK(pthread_mutex_lock(&parked_lock) == 0);
        parked[nparked++] = old;
        CHECK(pthread_mutex_unlock(&parked_lock) == 0);
    }
}

/* Fills the limiter slots for a phase. */
static void fresh_limiters(void)
{
    for (int i = 0; i < LIM_SLOTS; i++) {
        uint32_t gen;
        CHECK(take_lim_gen(MAX_LIM_GENS, &gen));
        lim_slots[i].lim = new_limiter(gen);
        lim_slots[i].gen = gen;
    }
}

/* Opens the slots' limiters (no cap, no rate): quiet pools then mean nothing waits for a limiter. */
static void open_limiters(void)
{
    for (int i = 0; i < LIM_SLOTS; i++) {
        if (lim_slots[i].lim != NULL) {
            set_limiter(lim_slots[i].lim, lim_slots[i].gen, UINT32_MAX, 0.0, 0);
        }
    }
}

static void check_limiter_quiet(struct asyncify_limiter *lim, uint32_t gen)
{
    struct lim_gen *g = &lim_gens[gen];
    asyncify_limiter_stats st = limiter_stats(lim);
    unsigned long long accepted = atomic_load(&g->accepted);
    if (st.waiting != 0 || st.running != 0 || st.admitted + st.expired + st.cancelled_waiting != accepted) {
        test_fail(__FILE__, __LINE__,
                  "limiter %u once quiet: waiting %llu, running %llu, admitted %llu + expired %llu + "
                  "cancelled_waiting %llu should be the %llu tasks accepted with it",
                  gen, (unsigned long long)st.waiting, (unsigned long long)st.running,
                  (unsigned long long)st.admitted, (unsigned long long)st.expired,
                  (unsigned long long)st.cancelled_waiting, accepted);
    }
    CHECK(atomic_load(&g->peak) <= atomic_load(&g->cap_ever));
    atomic_fetch_add(&f_expired_waiting, st.expired);
    atomic_fetch_add(&f_cancelled_waiting, st.cancelled_waiting);
    CHECK_OK(asyncify_limiter_free(lim));
}

/* With every pool quiet: checks and frees the slots' limiters and the parked ones. */
static void check_and_free_limiters(void)
{
    for (int i = 0; i < LIM_SLOTS; i++) {
        CHECK(pthread_rwlock_wrlock(&lim_slots[i].lock) == 0);
        struct lim_slot s = { .lim = lim_slots[i].lim, .gen = lim_slots[i].gen };
        lim_slots[i].lim = NULL;
        lim_slots[i].gen = 0;
        CHECK(pthread_rwlock_unlock(&lim_slots[i].lock) == 0);
        if (s.lim != NULL) {
            check_limiter_quiet(s.lim, s.gen);
        }
    }
    CHECK(pthread_mutex_lock(&parked_lock) == 0);
    for (int i = 0; i < nparked; i++) {
        check_limiter_quiet(parked[i].lim, parked[i].gen);
    }
    nparked = 0;
    CHECK(pthread_mutex_unlock(&parked_lock) == 0);
}

/* ---- callbacks ---- */

static int32_t work(void *arg, void **out_result)
{
    struct rec *r = arg;
    tl_in_fn++;
    CHECK(atomic_fetch_add(&r->ran, 1) == 0);
    struct lim_gen *lg = (r->mode & M_LIMITER) ? &lim_gens[r->lim_gen] : NULL;
    if (lg != NULL) {
        unsigned now = atomic_fetch_add(&lg->running_now, 1) + 1;
        fetch_max(&lg->peak, now);
        if (now > atomic_load(&lg->cap_ever)) {
            test_fail(__FILE__, __LINE__, "%u callables of limiter %u run at once, its highest cap is %u",
                      now, r->lim_gen, atomic_load(&lg->cap_ever));
        }
    }
    atomic_store(&r->ran_on, thread_id());
    CHECK(atomic_load(&r->arg_freed) == 0);
    /* Exactly the submitter's table at submit time. */
    uint64_t seq = get_seq();
    if (seq != r->expect_seq) {
        test_fail(__FILE__, __LINE__, "task sees seq %llu, submitted with %llu", (unsigned long long)seq,
                  (unsigned long long)r->expect_seq);
    }
    size_t n = table_count();
    if (n != r->expect_count) {
        test_fail(__FILE__, __LINE__, "task sees %zu keys, submitted with %u", n, r->expect_count);
    }
    uint64_t x = r->seed;
#define NEXT() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
    /* Scribble on the task's own table and leave a scope open: none of it may outlive the task. */
    set_seq(NEXT() | 1);
    uint64_t junk = NEXT();
    CHECK_OK(asyncify_override_set("junk", &junk, sizeof junk));
    if (NEXT() % 3 == 0) {
        uint64_t token = 0;
        CHECK_OK(asyncify_scope_enter(&token));
        set_seq(NEXT() | 1);
    }
    if (NEXT() % 2 == 0) {
        CHECK_OK(asyncify_override_remove("junk"));
    }
    if (NEXT() % 100 < 12) {
        asyncify_handle h = 0;
        struct rec *child = submit_one(-1, &h);
        if (child != NULL) {
            bump(&f_cb_submits);
            if (NEXT() % 2 == 0) {
                atomic_store(&waited_child, h);
                asyncify_status s = asyncify_wait(h, (int64_t)(NEXT() % 3), NULL, NULL);
                CHECK(s == ASYNCIFY_OK || s == ASYNCIFY_FAILED || s == ASYNCIFY_CANCELLED ||
                      s == ASYNCIFY_EXPIRED || s == ASYNCIFY_TIMEOUT || s == ASYNCIFY_E_INVALID_HANDLE);
                if (s == ASYNCIFY_OK || s == ASYNCIFY_FAILED || s == ASYNCIFY_CANCELLED ||
                    s == ASYNCIFY_EXPIRED) {
                    atomic_fetch_or(&child->seen, 1u << s);
                }
                if (atomic_load(&child->ran_on) == thread_id()) {
                    bump(&f_inline);
                }
            }
            release_owned(h, child);
        }
    }
    if (NEXT() % 100 < 4) {
        cancel_from_callback();
    }
    unsigned spin = (unsigned)((r->seed >> 40) & 0xff);
    int64_t spin_us = spin < 128 ? 0 : spin < 240 ? spin % 20 : 200 + spin * 3;
    if (spin_us > 0) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            if (asyncify_cancel_requested()) {
                break;
            }
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000 >= spin_us) {
                break;
            }
        }
    }
#undef NEXT
    if (r->mode & M_SETS_RESULT) {
        *out_result = r;
    }
    if (lg != NULL) {
        atomic_fetch_sub(&lg->running_now, 1);
    }
    atomic_store(&r->fn_end, tick());
    tl_in_fn--;
    return r->code;
}

static void on_done(void *data, asyncify_handle h, asyncify_status status, void *result, int32_t code)
{
    struct rec *r = data;
    CHECK(atomic_fetch_add(&r->done_calls, 1) == 0);
    atomic_store(&r->done_status, status);
    asyncify_handle known = atomic_load(&r->handle);
    CHECK(known == 0 || known == h);
    if (status == ASYNCIFY_OK || status == ASYNCIFY_FAILED) {
        CHECK(atomic_load(&r->ran) == 1 && atomic_load(&r->fn_end) != 0);
        CHECK(status == (r->code == 0 ? ASYNCIFY_OK : ASYNCIFY_FAILED) && code == r->code);
        CHECK(result == ((r->mode & M_SETS_RESULT) ? (void *)r : NULL));
        if (result != NULL) {
            atomic_fetch_add(&r->delivered, 1);
            bump(&f_to_on_done);
        }
        CHECK(!tl_driver); /* OK/FAILED: on a worker */
        if (tl_in_fn == 0) {
            CHECK(table_count() == 0); /* after the worker's own table was restored */
        }
    } else if (status == ASYNCIFY_EXPIRED) {
        CHECK(result == NULL && code == 0);
        CHECK(r->mode & M_DEADLINE);
        CHECK(atomic_load(&r->ran) == 0);
        CHECK(atomic_load(&r->arg_freed) == 1); /* 8.3: free_arg, then on_done */
        CHECK(!tl_driver); /* the timer or a worker notices */
    } else {
        CHECK(status == ASYNCIFY_CANCELLED);
        CHECK(result == NULL && code == 0);
        CHECK(cancelling_here(h)); /* on the cancelling (or shutting-down) thread */
    }
    atomic_store(&r->done_at, tick());
    uint64_t roll = below(100);
    if (roll < 8) {
        asyncify_handle ch = 0;
        struct rec *child = submit_one(-1, &ch);
        if (child != NULL) {
            bump(&f_cb_submits);
            release_owned(ch, child);
        }
    } else if (roll < 12) {
        cancel_from_callback();
    }
}

static void free_arg(void *p)
{
    struct rec *r = p;
    CHECK(atomic_fetch_add(&r->arg_freed, 1) == 0);
    atomic_store(&r->arg_freed_at, tick());
    bump(&f_args_freed);
    if (atomic_load(&r->ran)) {
        CHECK(atomic_load(&r->fn_end) != 0); /* abandoned: only after fn returned */
    }
    if (chance(3)) {
        asyncify_handle h = 0;
        struct rec *child = submit_one(-1, &h);
        if (child != NULL) {
            bump(&f_cb_submits);
            release_owned(h, child);
        }
    }
}

static void free_result(void *p)
{
    struct rec *r = p;
    CHECK(atomic_fetch_add(&r->result_freed, 1) == 0);
    CHECK(atomic_load(&r->ran) == 1 && atomic_load(&r->fn_end) != 0);
    CHECK(r->mode & M_SETS_RESULT); /* never called with NULL */
    bump(&f_freed);
    if (chance(3)) {
        cancel_from_callback();
    }
}

static void thread_stop(void *data)
{
    struct gen *g = &gens[(uintptr_t)data];
    if (atomic_load(&g->freed)) {
        atomic_fetch_add(&g->stops_after_free, 1);
    }
    CHECK(table_count() == 0);
    CHECK(tl_in_fn == 0);
}

/* ---- submitting ---- */

static bool take_budget(void)
{
    long long b = atomic_load(&budget);
    while (b > 0) {
        if (atomic_compare_exchange_weak(&budget, &b, b - 1)) {
            return true;
        }
    }
    return false;
}

/* Submits one random task to `slot` (-1: a random one). Returns its record, or NULL when refused or the
 * budget is spent. */
static struct rec *submit_one(int slot, asyncify_handle *out)
{
    if (!take_budget()) {
        return NULL;
    }
    size_t index = atomic_fetch_add(&next_rec, 1);
    if (index >= rec_cap) {
        atomic_store(&budget, 0);
        return NULL;
    }
    struct rec *r = &recs[index];
    unsigned mode = 0;
    struct asyncify_cq *cq = atomic_load(&the_cq);
    if (chance(45)) {
        mode |= M_ON_DONE;
    } else if (chance(35) && cq != NULL) {
        mode |= M_CQ;
    }
    if (chance(15)) {
        mode |= M_DETACHED;
    }
    if (chance(90)) {
        mode |= M_SETS_RESULT;
    }
    uint64_t ctx_roll = below(100);
    if (ctx_roll < 5) {
        mode |= M_EMPTY;
    } else if (ctx_roll < 10) {
        mode |= M_CONTEXT;
    }
    int lim_slot = chance(30) ? (int)below(LIM_SLOTS) : -1;
    static const uint32_t withins[] = { 1, 2, 3, 5, 10, 50 };
    uint32_t start_within_ms = chance(20) ? withins[below(6)] : 0;
    if (start_within_ms > 0) {
        /* Its outcome (EXPIRED, or CANCELLED when it never ran) must reach a callback or the queue, for
         * the checks to tell them apart. */
        mode |= M_DEADLINE;
        if ((mode & (M_ON_DONE | M_CQ)) == 0) {
            mode |= M_ON_DONE;
        }
    }
    static const int32_t codes[] = { 1, -1, 7, INT32_MIN, INT32_MAX };
    r->mode = mode;
    r->code = chance(75) ? 0 : codes[below(5)];
    r->seed = rnd() | 1;

    asyncify_submit_options opts;
    CHECK_OK(asyncify_submit_options_init(&opts, sizeof opts));
    if (mode & M_ON_DONE) {
        opts.on_done = on_done;
    }
    opts.on_done_data = r;
    opts.free_arg = free_arg;
    opts.free_result = free_result;
    if (mode & M_CQ) {
        opts.cq = cq;
    }
    if (mode & M_DETACHED) {
        opts.flags |= ASYNCIFY_SUBMIT_DETACHED;
    }
    opts.start_within_ms = start_within_ms;
    struct asyncify_context *ctx = NULL;
    uint64_t seq_now = get_seq();
    uint32_t count_now = (uint32_t)table_count() - local_keys();
    if (mode & M_EMPTY) {
        opts.flags |= ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
        r->expect_seq = 0;
        r->expect_count = 0;
    } else if (mode & M_CONTEXT) {
        struct asyncify_context *captured = NULL;
        CHECK_OK(asyncify_context_capture(&captured));
        uint64_t v = rnd() | 1;
        CHECK_OK(asyncify_context_with(captured, "seq", &v, sizeof v, &ctx));
        CHECK_OK(asyncify_context_free(captured));
        opts.context = ctx;
        r->expect_seq = v;
        r->expect_count = count_now + (seq_now == 0 ? 1u : 0u);
    } else {
        r->expect_seq = seq_now;
        r->expect_count = count_now;
    }

    if (slot < 0) {
        slot = (int)below(3);
    }
    asyncify_handle h = 0;
    CHECK(pthread_rwlock_rdlock(&slots[slot].lock) == 0);
    uint32_t gen = slots[slot].gen;
    r->gen = gen;
    opts.pool = slots[slot].pool;
    if (lim_slot >= 0) {
        CHECK(pthread_rwlock_rdlock(&lim_slots[lim_slot].lock) == 0);
        if (lim_slots[lim_slot].lim != NULL) {
            opts.limiter = lim_slots[lim_slot].lim;
            r->lim_gen = lim_slots[lim_slot].gen;
            r->mode |= M_LIMITER;
        }
    }
    asyncify_status s = asyncify_submit(work, r, &opts, &h);
    if (s == ASYNCIFY_OK) {
        atomic_store(&r->accepted, 1);
        atomic_fetch_add(&gens[gen].accepted, 1);
        bump(&f_accepted);
        if (r->mode & M_LIMITER) {
            atomic_fetch_add(&lim_gens[r->lim_gen].accepted, 1);
            bump(&f_limited);
        }
        if (start_within_ms > 0) {
            bump(&f_deadlines);
        }
    }
    if (lim_slot >= 0) {
        CHECK(pthread_rwlock_unlock(&lim_slots[lim_slot].lock) == 0);
    }
    CHECK(pthread_rwlock_unlock(&slots[slot].lock) == 0);
    if (ctx != NULL) {
        CHECK_OK(asyncify_context_free(ctx));
    }
    if (s == ASYNCIFY_OK) {
        CHECK(h != 0);
        atomic_store(&r->handle, h);
        atomic_store(&ring[atomic_fetch_add(&ring_next, 1) % RING], h);
        *out = h;
        return r;
    }
    if (s == ASYNCIFY_E_BUSY) {
        bump(&f_busy);
    } else if (s == ASYNCIFY_E_SHUT_DOWN) {
        CHECK(gen == 0); /* only the default pool is shut down under submitters */
        bump(&f_shut_down);
    } else {
        test_fail(__FILE__, __LINE__, "submit returned %d", (int)s);
    }
    atomic_fetch_add(&budget, 1);
    return NULL;
}

static void observed(struct rec *r, asyncify_status s, void *result)
{
    if (s == ASYNCIFY_OK || s == ASYNCIFY_FAILED || s == ASYNCIFY_CANCELLED || s == ASYNCIFY_EXPIRED) {
        atomic_fetch_or(&r->seen, 1u << s);
        if (result != NULL) {
            CHECK(s == ASYNCIFY_OK || s == ASYNCIFY_FAILED);
            CHECK(result == r);
            atomic_fetch_add(&r->delivered, 1);
            bump(&f_to_poll);
        }
    } else if (s == ASYNCIFY_PENDING || s == ASYNCIFY_TIMEOUT) {
        CHECK(result == NULL);
        if (s == ASYNCIFY_TIMEOUT) {
            bump(&f_timeouts);
        }
    } else {
        CHECK(s == ASYNCIFY_E_INVALID_HANDLE && detached(r));
    }
}

static void release_owned(asyncify_handle h, struct rec *r)
{
    bool pending = asyncify_poll(h, NULL, NULL) == ASYNCIFY_PENDING;
    asyncify_status s = asyncify_release(h);
    if (detached(r)) {
        CHECK(s == ASYNCIFY_OK || s == ASYNCIFY_E_INVALID_HANDLE);
    } else {
        CHECK_OK(s);
        if (pending) {
            bump(&f_released_pending);
        }
    }
    CHECK_EQ_STATUS(asyncify_release(h), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_EQ_STATUS(asyncify_poll(h, NULL, NULL), ASYNCIFY_E_INVALID_HANDLE);
    bump(&f_stale);
}

/* ---- pools ---- */

static struct asyncify_pool *make_pool(uint32_t gen)
{
    asyncify_pool_options o;
    CHECK_OK(asyncify_pool_options_init(&o, sizeof o));
    o.max_workers = 1 + (uint32_t)below(4);
    if (chance(30)) {
        o.max_queued = 8 + (uint32_t)below(56);
    }
    if (chance(release_slot_pct)) {
        o.flags = ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON;
    }
    if (chance(50)) {
        o.keep_alive_ms = 1 + (uint32_t)below(30);
    }
    o.thread_name = "cstress";
    o.on_thread_stop = thread_stop;
    o.hook_data = (void *)(uintptr_t)gen;
    struct asyncify_pool *p = NULL;
    CHECK_OK(asyncify_pool_new_ex(&o, &p));
    return p;
}

static void free_pool(struct asyncify_pool *p, uint32_t gen)
{
    tl_shutting++;
    /* Bounded, so a pool that never becomes quiet fails the test instead of hanging it. */
    asyncify_status s = asyncify_pool_free(p, 20000);
    tl_shutting--;
    if (s != ASYNCIFY_OK) {
        test_fail(
            __FILE__, __LINE__,
            "pool_free of generation %u returned %d (%s) after 20 s: a callable or a slot never came back",
            gen, (int)s, asyncify_status_str(s));
    }
    atomic_store(&gens[gen].freed, 1);
}

static void retire(int slot)
{
    uint32_t gen = atomic_fetch_add(&next_gen, 1);
    if (gen >= MAX_GENS) {
        return;
    }
    struct asyncify_pool *fresh = make_pool(gen);
    CHECK(pthread_rwlock_wrlock(&slots[slot].lock) == 0);
    struct asyncify_pool *old = slots[slot].pool;
    uint32_t old_gen = slots[slot].gen;
    slots[slot].pool = fresh;
    slots[slot].gen = gen;
    CHECK(pthread_rwlock_unlock(&slots[slot].lock) == 0);
    /* Nobody can submit to the old pool any more: its count is final. */
    asyncify_pool_stats st = stats_of(old);
    CHECK(st.submitted == atomic_load(&gens[old_gen].accepted));
    free_pool(old, old_gen);
    bump(&f_retired);
}

static void resize(int slot)
{
    static const uint32_t sizes[] = { 0, 1, 1, 2, 2, 3, 4, 4, 8, 16 };
    uint32_t n = sizes[below(10)];
    CHECK(pthread_rwlock_rdlock(&slots[slot].lock) == 0);
    CHECK_OK(asyncify_set_max_workers(slots[slot].pool, n));
    uint32_t got = 0;
    CHECK_OK(asyncify_get_max_workers(slots[slot].pool, &got));
    CHECK(pthread_rwlock_unlock(&slots[slot].lock) == 0);
    bump(&f_resizes);
    if (n == 0) {
        bump(&f_pauses);
    }
}

static void drain_cq(size_t max)
{
    struct asyncify_cq *cq = atomic_load(&the_cq);
    asyncify_completion buf[16];
    size_t total = 0;
    for (;;) {
        size_t n = 0;
        CHECK_OK(asyncify_cq_drain(cq, buf, 16, &n));
        for (size_t i = 0; i < n; i++) {
            struct rec *r = buf[i].user_data;
            CHECK(atomic_fetch_add(&r->cq_calls, 1) == 0);
            atomic_store(&r->cq_status, buf[i].status);
            CHECK(r->mode & M_CQ);
            asyncify_handle known = atomic_load(&r->handle);
            CHECK(known == 0 || known == buf[i].handle);
            if (buf[i].result != NULL) {
                CHECK(buf[i].status == ASYNCIFY_OK || buf[i].status == ASYNCIFY_FAILED);
                CHECK(buf[i].result == r);
                atomic_fetch_add(&r->delivered, 1);
            }
            bump(&f_cq);
        }
        total += n;
        if (n < 16 || total >= max) {
            break;
        }
    }
}

/* ---- drivers ---- */

struct held {
    asyncify_handle h;
    struct rec *r;
};

static void *driver(void *unused)
{
    (void)unused;
    tl_driver = 1;
    uint8_t one = 1;
    CHECK_OK(asyncify_override_set_ex("driver-local", &one, 1, ASYNCIFY_KEY_LOCAL));
    tl_has_local = 1;
    struct held held[HELD_MAX + 1];
    int nheld = 0;
    uint64_t scopes[64];
    int nscopes = 0;
    int idle = 0;
    for (;;) {
        uint64_t roll = below(1000);
        if (roll < 350) {
            asyncify_handle h = 0;
            struct rec *r = submit_one(-1, &h);
            if (r != NULL) {
                held[nheld++] = (struct held){ h, r };
            } else if (atomic_load(&budget) == 0 && ++idle > 3) {
                break;
            }
        } else if (roll < 470) {
            if (nheld > 0) {
                struct held x = held[below((uint64_t)nheld)];
                asyncify_status s = cancel(x.h);
                if (!(s == ASYNCIFY_E_INVALID_HANDLE && detached(x.r))) {
                    CHECK(s == ASYNCIFY_CANCELLED || s == ASYNCIFY_OK || s == ASYNCIFY_FAILED ||
                          s == ASYNCIFY_EXPIRED);
                    note_cancel(x.r, s);
                    if (chance(30)) {
                        asyncify_status again = cancel(x.h);
                        CHECK(again == s || (detached(x.r) && again == ASYNCIFY_E_INVALID_HANDLE));
                    }
                }
            }
        } else if (roll < 530) {
            asyncify_handle h = ring_pick();
            if (h != 0) {
                asyncify_status s = cancel(h);
                CHECK(s == ASYNCIFY_CANCELLED || s == ASYNCIFY_OK || s == ASYNCIFY_FAILED ||
                      s == ASYNCIFY_EXPIRED || s == ASYNCIFY_E_INVALID_HANDLE);
            }
        } else if (roll < 630) {
            if (nheld > 0) {
                int i = (int)below((uint64_t)nheld);
                struct held x = held[i];
                held[i] = held[--nheld];
                release_owned(x.h, x.r);
            }
        } else if (roll < 720) {
            if (nheld > 0) {
                struct held x = held[below((uint64_t)nheld)];
                void *res = NULL;
                int32_t code = 12345;
                asyncify_status s = asyncify_poll(x.h, chance(50) ? &res : NULL, &code);
                bump(&f_polls);
                observed(x.r, s, res);
                if (s == ASYNCIFY_OK || s == ASYNCIFY_FAILED) {
                    CHECK(code == x.r->code);
                }
            }
        } else if (roll < 790) {
            if (nheld > 0) {
                struct held x = held[below((uint64_t)nheld)];
                void *res = NULL;
                asyncify_status s = asyncify_wait(x.h, (int64_t)below(3), chance(50) ? &res : NULL, NULL);
                bump(&f_waits);
                observed(x.r, s, res);
            }
        } else if (roll < 810) {
            if (nheld >= 2) {
                int k = nheld < 4 ? nheld : 4;
                int start = (int)below((uint64_t)(nheld - k + 1));
                asyncify_handle hs[4];
                bool any_detached = false;
                for (int i = 0; i < k; i++) {
                    hs[i] = held[start + i].h;
                    any_detached |= detached(held[start + i].r);
                }
                size_t index = 99;
                asyncify_status s = asyncify_wait_any(hs, (size_t)k, 1, &index);
                bump(&f_wait_any);
                if (s == ASYNCIFY_OK) {
                    CHECK(index < (size_t)k);
                    struct held x = held[start + (int)index];
                    asyncify_status p = asyncify_poll(x.h, NULL, NULL);
                    CHECK(p == ASYNCIFY_OK || p == ASYNCIFY_FAILED || p == ASYNCIFY_CANCELLED ||
                          p == ASYNCIFY_EXPIRED || (detached(x.r) && p == ASYNCIFY_E_INVALID_HANDLE));
                    observed(x.r, p, NULL);
                } else {
                    CHECK(s == ASYNCIFY_TIMEOUT || (s == ASYNCIFY_E_INVALID_HANDLE && any_detached));
                }
            }
        } else if (roll < 850) {
            resize((int)below(3));
        } else if (roll < 910) {
            switch (below(4)) {
            case 0:
                set_seq(rnd() | 1);
                break;
            case 1:
                if (nscopes < 64) {
                    CHECK_OK(asyncify_scope_enter(&scopes[nscopes++]));
                    set_seq(rnd() | 1);
                }
                break;
            case 2:
                if (nscopes >= 2 && chance(30)) {
                    CHECK_EQ_STATUS(asyncify_scope_exit(scopes[0]), ASYNCIFY_E_SCOPE_MISMATCH);
                    bump(&f_mismatch);
                }
                if (nscopes > 0) {
                    CHECK_OK(asyncify_scope_exit(scopes[--nscopes]));
                }
                break;
            default:
                asyncify_override_remove("seq");
                break;
            }
        } else if (roll < 950) {
            drain_cq(64);
        } else if (roll < 952) {
            if (below(8) == 0) {
                retire(1 + (int)below(2));
            }
        } else if (roll < 960) {
            resize_limiter((int)below(LIM_SLOTS));
        } else if (roll < 962) {
            if (below(4) == 0) {
                retire_limiter((int)below(LIM_SLOTS));
            }
        } else if (roll < 966) {
            peek_limiter((int)below(LIM_SLOTS));
        } else {
            sched_yield();
        }
        while (nheld > HELD_MAX) {
            struct held x = held[0];
            held[0] = held[--nheld];
            release_owned(x.h, x.r);
        }
    }
    while (nheld > 0) {
        struct held x = held[--nheld];
        release_owned(x.h, x.r);
    }
    while (nscopes > 0) {
        CHECK_OK(asyncify_scope_exit(scopes[--nscopes]));
    }
    CHECK_OK(asyncify_override_clear());
    tl_has_local = 0;
    return NULL;
}

/* ---- checks ---- */

struct counts {
    uint64_t submitted, completed, failed, cancelled, abandoned, expired;
};

static struct counts counts_of(const asyncify_pool_stats *s)
{
    return (struct counts){ s->submitted, s->completed, s->failed, s->cancelled, s->abandoned, s->expired };
}

static struct counts minus(struct counts a, struct counts b)
{
    return (struct counts){ a.submitted - b.submitted, a.completed - b.completed, a.failed - b.failed,
                            a.cancelled - b.cancelled, a.abandoned - b.abandoned, a.expired - b.expired };
}

static void check_counts(const char *what, struct counts got, struct counts want)
{
    if (memcmp(&got, &want, sizeof got) != 0) {
        test_fail(__FILE__, __LINE__,
                  "%s: asyncify_stats says submitted %llu completed %llu failed %llu cancelled %llu "
                  "abandoned %llu expired %llu; the test "
                  "counted %llu %llu %llu %llu %llu %llu",
                  what, (unsigned long long)got.submitted, (unsigned long long)got.completed,
                  (unsigned long long)got.failed, (unsigned long long)got.cancelled,
                  (unsigned long long)got.abandoned, (unsigned long long)got.expired,
                  (unsigned long long)want.submitted, (unsigned long long)want.completed,
                  (unsigned long long)want.failed, (unsigned long long)want.cancelled,
                  (unsigned long long)want.abandoned, (unsigned long long)want.expired);
    }
}

static uint64_t n_ran, n_completed, n_failed, n_never, n_abandoned, n_expired;

/* Checks every record used; adds the counts per pool generation into per_gen. */
static void check_records(size_t used, struct counts *per_gen, uint32_t ngens)
{
    for (size_t i = 0; i < used; i++) {
        struct rec *r = &recs[i];
        int ran = atomic_load(&r->ran);
        int arg_freed = atomic_load(&r->arg_freed);
        int result_freed = atomic_load(&r->result_freed);
        int delivered = atomic_load(&r->delivered);
        if (!atomic_load(&r->accepted)) {
            CHECK(ran + arg_freed + result_freed + atomic_load(&r->done_calls) + atomic_load(&r->cq_calls) ==
                  0);
            continue;
        }
        asyncify_status status;
        if (r->mode & M_ON_DONE) {
            if (atomic_load(&r->done_calls) != 1) {
                test_fail(
                    __FILE__, __LINE__,
                    "task %zu: on_done called %d times (mode 0x%x, pool generation %u, ran %d, free_arg "
                    "%d, seen 0x%x, cancel said 0x%x)",
                    i, atomic_load(&r->done_calls), r->mode, r->gen, ran, arg_freed, atomic_load(&r->seen),
                    atomic_load(&r->cancel_seen));
            }
            status = atomic_load(&r->done_status);
        } else if (r->mode & M_CQ) {
            if (atomic_load(&r->cq_calls) != 1) {
                test_fail(__FILE__, __LINE__,
                          "task %zu: %d completions in the queue (mode 0x%x, pool generation %u, ran %d, "
                          "free_arg %d, seen 0x%x, cancel said 0x%x)",
                          i, atomic_load(&r->cq_calls), r->mode, r->gen, ran, arg_freed,
                          atomic_load(&r->seen), atomic_load(&r->cancel_seen));
            }
            status = atomic_load(&r->cq_status);
        } else if (ran == 0 || arg_freed == 1) {
            status = ASYNCIFY_CANCELLED;
        } else {
            status = r->code == 0 ? ASYNCIFY_OK : ASYNCIFY_FAILED;
        }
        CHECK(ran <= 1);
        CHECK(r->gen < ngens);
        struct counts *g = &per_gen[r->gen];
        g->submitted++;
        CHECK((atomic_load(&r->seen) & ~(1u << status)) == 0);
        CHECK((atomic_load(&r->cancel_seen) & ~(1u << status)) == 0);
        bool sets = (r->mode & M_SETS_RESULT) != 0;
        if (!ran) {
            n_never++;
            if (status == ASYNCIFY_EXPIRED) {
                g->expired++;
                n_expired++;
                CHECK(r->mode & M_DEADLINE);
            } else {
                g->cancelled++;
                CHECK(status == ASYNCIFY_CANCELLED);
            }
            if (arg_freed != 1) {
                test_fail(__FILE__, __LINE__, "task %zu never ran: free_arg called %d times", i, arg_freed);
            }
            CHECK(result_freed + delivered == 0);
            if (r->mode & M_ON_DONE) {
                CHECK(atomic_load(&r->arg_freed_at) <
                      atomic_load(&r->done_at)); /* 5.1, 8.3: free_arg, then on_done */
            }
        } else if (status == ASYNCIFY_CANCELLED) {
            g->abandoned++;
            n_abandoned++;
            n_ran++;
            if (arg_freed != 1) {
                test_fail(__FILE__, __LINE__, "abandoned task %zu: free_arg called %d times", i, arg_freed);
            }
            CHECK(atomic_load(&r->arg_freed_at) > atomic_load(&r->fn_end)); /* 5.2: after fn returned */
            CHECK(delivered == 0);
            if (result_freed != (sets ? 1 : 0)) {
                test_fail(__FILE__, __LINE__, "abandoned task %zu: free_result called %d times", i,
                          result_freed);
            }
        } else {
            n_ran++;
            CHECK(status == (r->code == 0 ? ASYNCIFY_OK : ASYNCIFY_FAILED));
            if (r->code == 0) {
                g->completed++;
                n_completed++;
            } else {
                g->failed++;
                n_failed++;
            }
            if (arg_freed != 0) {
                test_fail(__FILE__, __LINE__, "task %zu ran to its end but free_arg was called", i);
            }
            if (delivered + result_freed != (sets ? 1 : 0)) {
                test_fail(__FILE__, __LINE__,
                          "task %zu: result delivered %d and freed %d times (set: %d; mode 0x%x, gen %u, "
                          "status %d, seen 0x%x, "
                          "cancel said 0x%x)",
                          i, delivered, result_freed, (int)sets, r->mode, r->gen, (int)status,
                          atomic_load(&r->seen), atomic_load(&r->cancel_seen));
            }
        }
    }
}

/* Waits until every pool is quiet: nothing queued or running, and no submission between two looks. */
static void quiesce(asyncify_pool_stats st[3])
{
    for (int i = 0; i < 3; i++) {
        uint32_t n = 0;
        CHECK_OK(asyncify_get_max_workers(slots[i].pool, &n));
        if (n == 0) {
            CHECK_OK(asyncify_set_max_workers(slots[i].pool, 4));
        }
    }
    int64_t deadline = now_ms() + 60000;
    uint64_t last[3] = { 0, 0, 0 };
    bool was_quiet = false;
    for (;;) {
        bool quiet = true, same = true;
        for (int i = 0; i < 3; i++) {
            st[i] = stats_of(slots[i].pool);
            quiet = quiet && st[i].queued == 0 && st[i].running == 0;
            same = same && st[i].submitted == last[i];
            last[i] = st[i].submitted;
        }
        if (quiet && was_quiet && same) {
            return;
        }
        was_quiet = quiet;
        if (now_ms() > deadline) {
            test_fail(__FILE__, __LINE__, "the pools never became quiet");
        }
        sleep_ms(2);
    }
}

/* With the pools quiet, waits until every accepted task's outcome has been reported, draining the queue
 * meanwhile. Quiet stats do not say that: an expiry is counted before its free_arg and on_done run (or its
 * completion is queued) on the timer thread. */
static void settle_reports(void)
{
    size_t used = atomic_load(&next_rec);
    if (used > rec_cap) {
        used = rec_cap;
    }
    int64_t deadline = now_ms() + 20000;
    for (;;) {
        drain_cq(SIZE_MAX);
        size_t unreported = 0;
        for (size_t i = 0; i < used; i++) {
            struct rec *r = &recs[i];
            if (atomic_load(&r->accepted) && (((r->mode & M_ON_DONE) && atomic_load(&r->done_calls) == 0) ||
                                              ((r->mode & M_CQ) && atomic_load(&r->cq_calls) == 0))) {
                unreported++;
            }
        }
        if (unreported == 0) {
            return;
        }
        if (now_ms() > deadline) {
            test_fail(__FILE__, __LINE__, "%zu tasks of quiet pools never reported their outcome",
                      unreported);
        }
        sleep_ms(1);
    }
}

static uint64_t env_u64(const char *name, uint64_t fallback)
{
    const char *v = getenv(name);
    return (v != NULL && *v != '\0') ? strtoull(v, NULL, 0) : fallback;
}

static void *shutdown_racer(void *stop)
{
    tl_driver = 1;
    bool seen_shut_down = false;
    while (!atomic_load((atomic_int *)stop)) {
        asyncify_handle h = 0;
        struct rec *r = submit_one(0, &h);
        if (r == NULL) {
            if (atomic_load(&next_rec) >= rec_cap) {
                break;
            }
            seen_shut_down = true;
            continue;
        }
        CHECK(!seen_shut_down); /* never accepted again after E_SHUT_DOWN */
        switch (below(3)) {
        case 0:
            note_cancel(r, cancel(h));
            break;
        case 1: {
            void *res = NULL;
            asyncify_status s = asyncify_wait(h, 1, &res, NULL);
            observed(r, s, res);
            break;
        }
        default:
            break;
        }
        release_owned(h, r);
    }
    return NULL;
}

int main(void)
{
    seed = env_u64("ASYNCIFY_STRESS_SEED", 0x5EED0006u);
    uint64_t tasks = env_u64("ASYNCIFY_STRESS_TASKS", 20000);
    release_slot_pct = (unsigned)env_u64("ASYNCIFY_STRESS_RELEASE_SLOT_PCT", 30);
    size_t allocated = (size_t)(tasks * 3 / 2 + 4096);
    rec_cap = allocated;
    recs = calloc(allocated, sizeof *recs);
    CHECK(recs != NULL);
    atomic_store(&budget, (long long)tasks);
    int64_t t0 = now_ms();

    for (int i = 0; i < 3; i++) {
        CHECK(pthread_rwlock_init(&slots[i].lock, NULL) == 0);
    }
    for (int i = 0; i < LIM_SLOTS; i++) {
        CHECK(pthread_rwlock_init(&lim_slots[i].lock, NULL) == 0);
    }
    fresh_limiters();
    for (int i = 1; i < 3; i++) {
        slots[i].gen = atomic_fetch_add(&next_gen, 1);
        slots[i].pool = make_pool(slots[i].gen);
    }
    asyncify_pool_stats d0 = stats_of(NULL);
    struct counts default_before = counts_of(&d0);
    struct asyncify_cq *cq = NULL;
    CHECK_OK(asyncify_cq_new(&cq));
    atomic_store(&the_cq, cq);

    pthread_t threads[DRIVERS];
    for (int i = 0; i < DRIVERS; i++) {
        threads[i] = start_thread(driver, NULL);
    }
    for (int i = 0; i < DRIVERS; i++) {
        join_thread(threads[i]);
    }

    asyncify_pool_stats st[3];
    open_limiters();
    quiesce(st);
    settle_reports();
    check_and_free_limiters();
    uint32_t live_gen[3] = { slots[0].gen, slots[1].gen, slots[2].gen };
    for (int i = 1; i < 3; i++) {
        /* From now on the slot names the default pool (generation 0). */
        CHECK(pthread_rwlock_wrlock(&slots[i].lock) == 0);
        struct asyncify_pool *p = slots[i].pool;
        uint32_t g = slots[i].gen;
        slots[i].pool = NULL;
        slots[i].gen = 0;
        CHECK(pthread_rwlock_unlock(&slots[i].lock) == 0);
        free_pool(p, g);
    }
    atomic_store(&the_cq, NULL);
    CHECK_OK(asyncify_cq_free(cq));
    sleep_ms(50); /* late thread hooks would show now */

    size_t used = atomic_load(&next_rec);
    if (used > rec_cap) {
        used = rec_cap;
    }
    uint32_t ngens = atomic_load(&next_gen);
    if (ngens > MAX_GENS) {
        ngens = MAX_GENS;
    }
    struct counts *per_gen = calloc(ngens, sizeof *per_gen);
    CHECK(per_gen != NULL);
    check_records(used, per_gen, ngens);
    check_counts("the default pool", minus(counts_of(&st[0]), default_before), per_gen[0]);
    check_counts("pool 1", counts_of(&st[1]), per_gen[live_gen[1]]);
    check_counts("pool 2", counts_of(&st[2]), per_gen[live_gen[2]]);
    for (uint32_t g = 0; g < ngens; g++) {
        if (atomic_load(&gens[g].stops_after_free) != 0) {
            test_fail(__FILE__, __LINE__,
                      "generation %u: on_thread_stop ran after asyncify_pool_free returned OK", g);
        }
    }
    uint64_t accepted_rounds = atomic_load(&f_accepted);
    int64_t t_round = now_ms() - t0;

    /* The default pool's shutdown racing with submitters, cancels and releases. */
    memset(recs, 0, used * sizeof *recs);
    atomic_store(&next_rec, 0);
    rec_cap = allocated < 4000 ? allocated : 4000;
    atomic_store(&budget, (long long)1 << 40);
    asyncify_pool_stats d1 = stats_of(NULL);
    default_before = counts_of(&d1);
    atomic_store(&gens[0].accepted, 0);
    fresh_limiters();
    atomic_int stop = 0;
    for (int i = 0; i < DRIVERS; i++) {
        threads[i] = start_thread(shutdown_racer, &stop);
    }
    sleep_ms(20);
    tl_shutting = 1;
    CHECK_OK(asyncify_shutdown(-1));
    tl_shutting = 0;
    sleep_ms(5);
    atomic_store(&stop, 1);
    for (int i = 0; i < DRIVERS; i++) {
        join_thread(threads[i]);
    }
    asyncify_pool_stats after = stats_of(NULL);
    CHECK(after.queued == 0 && after.running == 0);
    used = atomic_load(&next_rec);
    if (used > rec_cap) {
        used = rec_cap;
    }
    struct counts race[1] = { { 0, 0, 0, 0, 0, 0 } };
    check_records(used, race, 1);
    check_counts("the default pool after asyncify_shutdown", minus(counts_of(&after), default_before),
                 race[0]);
    check_and_free_limiters(); /* the shutdown cancelled what still waited for a limiter */
    asyncify_handle h = 0;
    CHECK_EQ_STATUS(asyncify_submit(work, recs, NULL, &h), ASYNCIFY_E_SHUT_DOWN);

    printf(
        "stress (seed %#llx, %lld ms): %llu tasks accepted, %llu ran (%llu completed, %llu failed, %llu "
        "abandoned), "
        "%llu never ran; races: %llu cancels (%llu too late), %llu released while pending, %llu polls, "
        "%llu waits "
        "(%llu timed out), %llu wait_any, %llu resizes (%llu pauses), %llu pools shut down while busy, "
        "%llu submits "
        "and %llu cancels from callbacks, %llu inline runs, %llu limiters (%llu limiter sets, %llu freed in "
        "use, %llu stats reads), %llu tasks with a limiter (%llu expired and %llu cancelled while waiting "
        "for it), %llu with a start deadline, %llu expired, %llu refused busy, %llu refused shut down, "
        "%llu stale "
        "handles refused, %llu scope exits refused; results: %llu to on_done, %llu to poll/wait, %llu via "
        "the "
        "queue, %llu freed; args freed %llu; errors 0\n",
        (unsigned long long)seed, (long long)t_round, (unsigned long long)atomic_load(&f_accepted),
        (unsigned long long)n_ran, (unsigned long long)n_completed, (unsigned long long)n_failed,
        (unsigned long long)n_abandoned, (unsigned long long)n_never,
        (unsigned long long)atomic_load(&f_cancels), (unsigned long long)atomic_load(&f_too_late),
        (unsigned long long)atomic_load(&f_released_pending), (unsigned long long)atomic_load(&f_polls),
        (unsigned long long)atomic_load(&f_waits), (unsigned long long)atomic_load(&f_timeouts),
        (unsigned long long)atomic_load(&f_wait_any), (unsigned long long)atomic_load(&f_resizes),
        (unsigned long long)atomic_load(&f_pauses), (unsigned long long)atomic_load(&f_retired),
        (unsigned long long)atomic_load(&f_cb_submits), (unsigned long long)atomic_load(&f_cb_cancels),
        (unsigned long long)atomic_load(&f_inline), (unsigned long long)atomic_load(&f_limiters),
        (unsigned long long)atomic_load(&f_lim_sets), (unsigned long long)atomic_load(&f_lim_freed_in_use),
        (unsigned long long)atomic_load(&f_lim_peeks), (unsigned long long)atomic_load(&f_limited),
        (unsigned long long)atomic_load(&f_expired_waiting),
        (unsigned long long)atomic_load(&f_cancelled_waiting), (unsigned long long)atomic_load(&f_deadlines),
        (unsigned long long)n_expired, (unsigned long long)atomic_load(&f_busy),
        (unsigned long long)atomic_load(&f_shut_down), (unsigned long long)atomic_load(&f_stale),
        (unsigned long long)atomic_load(&f_mismatch), (unsigned long long)atomic_load(&f_to_on_done),
        (unsigned long long)atomic_load(&f_to_poll), (unsigned long long)atomic_load(&f_cq),
        (unsigned long long)atomic_load(&f_freed), (unsigned long long)atomic_load(&f_args_freed));
    CHECK(accepted_rounds >= tasks);
    CHECK(n_never > 0 && n_completed > 0 && n_failed > 0);
    CHECK(atomic_load(&f_limited) > 0 && atomic_load(&f_deadlines) > 0);
    free(per_gen);
    free(recs);
    TEST_PASS("test_stress");
    return 0;
}
