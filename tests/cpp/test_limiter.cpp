// asyncify::limiter (RAII) and the start deadline of submit_options: one cap shared by two pools,
// raising a paused limiter, a limiter destroyed while its tasks hold it, its latency on a pool that
// records it; deadlines that expire on time in a paused pool and surface as ASYNCIFY_EXPIRED through
// get() and to_future(), and while waiting for a limiter; the pool's `expired` counter; bad input.
//
// Timing bounds are generous (noisy 2-core machines, sanitizers): "about 50 ms" is checked as at least
// 50 ms and under 1 s.
#include "check.hpp"

#include <cmath>
#include <future>
#include <limits>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using check::tracked;
using clock_type = std::chrono::steady_clock;

namespace {

/// Counts how many callables of one kind run at once, and the most seen.
struct concurrency {
    std::atomic<int> now{0};
    std::atomic<int> most{0};
    std::atomic<int> ran{0};

    void run(std::chrono::milliseconds how_long) {
        int n = ++now;
        int seen = most.load();
        while (n > seen && !most.compare_exchange_weak(seen, n)) {
        }
        ++ran;
        std::this_thread::sleep_for(how_long);
        --now;
    }
};

asyncify::submit_options on(asyncify::pool& pool, const asyncify::limiter* lim = nullptr) {
    asyncify::submit_options options;
    options.pool = &pool;
    options.limiter = lim;
    return options;
}

asyncify::pool recording_pool(std::uint32_t max_workers) {
    asyncify_pool_options options{};
    CHECK(asyncify_pool_options_init(&options, sizeof options) == ASYNCIFY_OK);
    options.max_workers = max_workers;
    options.flags = ASYNCIFY_POOL_RECORD_LATENCY;
    return asyncify::pool(options);
}

long long ms_since(clock_type::time_point t0) {
    return static_cast<long long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count());
}

void test_cap_shared_by_two_pools() {
    asyncify::pool a(4);
    asyncify::pool b(4);
    asyncify::limiter lim(2, 0.0, 0, "model-a");
    CHECK(lim.name() == "model-a");
    concurrency limited;
    std::vector<asyncify::task<void>> tasks;
    for (int i = 0; i < 12; i++) {
        tasks.push_back(asyncify::submit(on(i % 2 == 0 ? a : b, &lim), [&] { limited.run(30ms); }));
    }
    // Tasks without the limiter do not wait behind the limited ones: 8 workers, only 2 of them busy.
    CHECK(a.submit([] { return 1; }).get() == 1);
    CHECK(b.submit([] { return 2; }).get() == 2);
    CHECK(lim.stats().waiting > 0);
    for (auto& t : tasks) {
        t.get();
    }
    CHECK(limited.ran == 12);
    CHECK(limited.most == 2); // never more than the cap, although the pools have 8 workers
    asyncify_limiter_stats stats = lim.stats();
    CHECK(stats.struct_size == sizeof stats);
    CHECK(stats.max_running == 2 && stats.admitted == 12 && stats.waiting == 0);
    CHECK(stats.expired == 0 && stats.cancelled_waiting == 0);
    CHECK(check::eventually([&] { return lim.stats().running == 0; }));
}

void test_set_and_move() {
    asyncify::pool pool(4);
    asyncify::limiter paused(0);
    auto t = asyncify::submit(on(pool, &paused), [] { return 5; });
    CHECK(!t.wait_for(50ms));
    CHECK(paused.stats().waiting == 1 && paused.stats().admitted == 0);
    asyncify::limiter moved(std::move(paused));
    CHECK(paused.native_handle() == nullptr); // NOLINT(bugprone-use-after-move)
    CHECK_THROWS_STATUS(paused.stats(), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_THROWS_STATUS(asyncify::submit(on(pool, &paused), [] {}), ASYNCIFY_E_INVALID_HANDLE);
    moved.set(1, 100.0, 2); // raising the cap admits the waiting task at once
    CHECK(t.get() == 5);
    asyncify_limiter_stats stats = moved.stats();
    CHECK(stats.max_running == 1 && stats.admitted == 1 && stats.waiting == 0);
    asyncify::limiter other(3);
    other = std::move(moved); // frees other's own limiter first
    CHECK(other.stats().max_running == 1);
}

void test_destroyed_while_held() {
    asyncify::pool pool(4);
    concurrency c;
    std::vector<asyncify::task<int>> tasks;
    {
        asyncify::limiter one(1);
        for (int i = 0; i < 4; i++) {
            tasks.push_back(asyncify::submit(on(pool, &one), [&c, i] {
                c.run(20ms);
                return i;
            }));
        }
    } // the tasks hold it: they still run, and still one at a time
    for (int i = 0; i < 4; i++) {
        CHECK(tasks[static_cast<std::size_t>(i)].get() == i);
    }
    CHECK(c.ran == 4 && c.most == 1);
}

void test_latency() {
    asyncify::pool pool = recording_pool(4);
    asyncify::limiter one(1);
    for (int i = 0; i < 3; i++) {
        (void)asyncify::submit(on(pool, &one), [] { std::this_thread::sleep_for(20ms); });
    }
    // The three are submitted at once and run one at a time: the last waits about 40 ms for the limiter.
    CHECK(check::eventually([&] { return one.latency(ASYNCIFY_LATENCY_RUN).count == 3; }));
    asyncify_latency run = one.latency(ASYNCIFY_LATENCY_RUN);
    CHECK(run.struct_size == sizeof run);
    CHECK(run.p50_ns >= 19000000 && run.max_ns >= run.p50_ns);
    asyncify_latency waited = one.latency(ASYNCIFY_LATENCY_QUEUE_WAIT);
    CHECK(waited.count == 3);
    CHECK(waited.max_ns >= 35000000); // the queue wait includes the wait for the limiter
    // A limiter's tasks on a pool that does not record: nothing recorded (not an error).
    asyncify::pool plain(1);
    asyncify::limiter other(1);
    asyncify::submit(on(plain, &other), [] {}).get();
    CHECK(other.latency(ASYNCIFY_LATENCY_QUEUE_WAIT).count == 0);
    CHECK_THROWS_STATUS(other.latency(99), ASYNCIFY_E_INVALID_ARGUMENT);
}

void test_deadline_in_paused_pool() {
    tracked::reset_counts();
    asyncify::pool paused(0);
    std::atomic<bool> ran{false};
    asyncify::submit_options options = on(paused);
    options.start_within = 50ms;
    auto t0 = clock_type::now();
    auto by_get = asyncify::submit(options, [&](const tracked&) { ran = true; }, tracked(1));
    std::future<int> by_future = asyncify::submit(options, [&] {
                                     ran = true;
                                     return 1;
                                 }).to_future();
    auto by_cancel = asyncify::submit(options, [&] { ran = true; });

    // get(): waits, then throws ASYNCIFY_EXPIRED, on time.
    bool expired = false;
    try {
        by_get.get();
    } catch (const asyncify::error& e) {
        expired = e.status() == ASYNCIFY_EXPIRED && std::string(e.what()).find("deadline") != std::string::npos;
    }
    long long took = ms_since(t0);
    std::printf("a deadline of 50 ms in a paused pool: expired after %lld ms\n", took);
    CHECK(expired);
    CHECK(took >= 50 && took < 1000);
    CHECK(!by_get.valid());
    CHECK(tracked::destroyed == 1); // the callable and its argument, destroyed unrun

    // The future: the promise is fulfilled with ASYNCIFY_EXPIRED by whichever thread noticed.
    CHECK(by_future.wait_for(check::patience) == std::future_status::ready);
    CHECK_THROWS_STATUS(by_future.get(), ASYNCIFY_EXPIRED);

    // An expired task cannot be cancelled any more: cancel() is false and get() still says expired.
    CHECK(by_cancel.wait_for(check::patience));
    CHECK(by_cancel.ready());
    CHECK(!by_cancel.cancel());
    CHECK_THROWS_STATUS(by_cancel.get(), ASYNCIFY_EXPIRED);

    CHECK(!ran);
    asyncify_pool_stats stats = paused.stats();
    CHECK(stats.expired == 3 && stats.cancelled == 0 && stats.submitted == 3 && stats.queued == 0);
}

void test_deadline_met_and_while_waiting_for_limiter() {
    asyncify::pool pool(2);
    asyncify::submit_options options = on(pool);
    options.start_within = std::chrono::seconds(30);
    CHECK(asyncify::submit(options, [] { return 4; }).get() == 4); // started in time: runs as usual

    asyncify::limiter paused(0);
    options.limiter = &paused;
    options.start_within = std::chrono::duration<double, std::milli>(40.5); // rounded up to 41 ms
    auto t0 = clock_type::now();
    auto t = asyncify::submit(options, [] { return 1; });
    CHECK_THROWS_STATUS(t.get(), ASYNCIFY_EXPIRED);
    long long took = ms_since(t0);
    CHECK(took >= 41 && took < 1000);
    asyncify_limiter_stats stats = paused.stats();
    CHECK(stats.expired == 1 && stats.waiting == 0 && stats.admitted == 0);
    CHECK(check::eventually([&] { return pool.stats().expired == 1; }));
    asyncify_pool_stats s = pool.stats();
    CHECK(s.submitted == s.completed + s.failed + s.cancelled + s.abandoned + s.expired);
}

void test_deadline_conversion() {
    using asyncify::detail::start_within_ms;
    using double_ms = std::chrono::duration<double, std::milli>;
    CHECK(start_within_ms(50ms) == 50);
    CHECK(start_within_ms(std::chrono::seconds(2)) == 2000);
    CHECK(start_within_ms(1ns) == 1); // rounded up, never to "no deadline"
    CHECK(start_within_ms(1000001ns) == 2); // 1.000001 ms
    CHECK(start_within_ms(double_ms(4294967295.0)) == UINT32_MAX);
    CHECK_THROWS_STATUS(start_within_ms(double_ms(4294967295.5)), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(start_within_ms(std::chrono::hours(24 * 50)), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(start_within_ms(0ms), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(start_within_ms(-5ms), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(start_within_ms(double_ms(std::numeric_limits<double>::quiet_NaN())),
                        ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(start_within_ms(double_ms(std::numeric_limits<double>::infinity())),
                        ASYNCIFY_E_INVALID_ARGUMENT);

    // Through submit: refused before anything is submitted, with a message that says why.
    asyncify::pool pool(1);
    asyncify::submit_options options = on(pool);
    options.start_within = std::chrono::hours(24 * 50);
    tracked::reset_counts();
    std::string message;
    try {
        (void)asyncify::submit(options, [](const tracked&) {}, tracked(1));
    } catch (const asyncify::error& e) {
        CHECK(e.status() == ASYNCIFY_E_INVALID_ARGUMENT);
        message = e.what();
    }
    CHECK(message.find("uint32") != std::string::npos && message.find("start_within") != std::string::npos);
    CHECK(tracked::destroyed == 1);
    CHECK(pool.stats().submitted == 0);
    options.start_within = 0ms;
    CHECK_THROWS_STATUS(asyncify::submit(options, [] {}), ASYNCIFY_E_INVALID_ARGUMENT);
}

void test_bad_input() {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::string message;
    try {
        asyncify::limiter bad(2, nan);
    } catch (const asyncify::error& e) {
        CHECK(e.status() == ASYNCIFY_E_INVALID_ARGUMENT);
        message = e.what();
    }
    std::printf("limiter(2, NaN) throws: %s\n", message.c_str());
    CHECK(!message.empty() && message != asyncify_status_str(ASYNCIFY_E_INVALID_ARGUMENT));
    CHECK_THROWS_STATUS(asyncify::limiter(1, -1.0), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(asyncify::limiter(1, std::numeric_limits<double>::infinity()), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(asyncify::limiter(1, 0.0, 0, std::string_view("a\0b", 3)), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(asyncify::limiter(1, 0.0, 0, "\xff"), ASYNCIFY_E_INVALID_ARGUMENT);

    asyncify::limiter lim(3, 10.0, 2);
    CHECK_THROWS_STATUS(lim.set(1, nan), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(lim.stats().max_running == 3); // nothing changed

    asyncify_limiter_options options{};
    CHECK(asyncify_limiter_options_init(&options, sizeof options) == ASYNCIFY_OK);
    options.max_running = 2;
    options.name = "from-c-options";
    asyncify::limiter from_options(options);
    CHECK(from_options.stats().max_running == 2 && from_options.name() == "from-c-options");
    options.struct_size = 3; // not a size this library accepts
    CHECK_THROWS_STATUS(asyncify::limiter(options), ASYNCIFY_E_INVALID_ARGUMENT);
}

} // namespace

int main() {
    RUN(test_cap_shared_by_two_pools);
    RUN(test_set_and_move);
    RUN(test_destroyed_while_held);
    RUN(test_latency);
    RUN(test_deadline_in_paused_pool);
    RUN(test_deadline_met_and_while_waiting_for_limiter);
    RUN(test_deadline_conversion);
    RUN(test_bad_input);
    CHECK(tracked::alive == 0);
    std::printf("PASS test_limiter\n");
    return 0;
}
