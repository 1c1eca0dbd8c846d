// asyncify::pool (RAII): the limit, pausing, stats, options, shutdown with a timeout, what its
// destructor does to queued and running tasks, moves, refusals as asyncify::error; the default pool's
// limit and the version.
#include "check.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using check::gate;
using check::tracked;

namespace {

void test_limit() {
    asyncify::pool two(2);
    CHECK(two.max_workers() == 2);
    std::atomic<int> running{0};
    std::atomic<int> most{0};
    std::vector<asyncify::task<void>> tasks;
    for (int i = 0; i < 6; i++) {
        tasks.push_back(two.submit([&] {
            int now = ++running;
            int seen = most.load();
            while (now > seen && !most.compare_exchange_weak(seen, now)) {
            }
            std::this_thread::sleep_for(50ms);
            --running;
        }));
    }
    for (auto& t : tasks) {
        t.get();
    }
    CHECK(most >= 1 && most <= 2);
}

void test_pause_and_resize() {
    asyncify::pool paused(0);
    auto t = paused.submit([] { return 1; });
    CHECK(!t.wait_for(50ms));
    paused.set_max_workers(3);
    CHECK(paused.max_workers() == 3);
    CHECK(t.wait_for(check::patience));
    CHECK(t.get() == 1);
}

void test_stats() {
    asyncify::pool one(1);
    for (int i = 0; i < 3; i++) {
        one.submit([] {}).get();
    }
    auto failing = one.submit([] { throw std::runtime_error("no"); });
    bool threw = false;
    try {
        failing.get();
    } catch (const std::runtime_error&) {
        threw = true;
    }
    CHECK(threw);
    asyncify_pool_stats stats = one.stats();
    CHECK(stats.struct_size == sizeof stats);
    CHECK(stats.limit == 1);
    CHECK(stats.submitted == 4);
    CHECK(stats.completed == 3);
    CHECK(stats.failed == 1); // an exception is a failed task
    CHECK(stats.cancelled == 0 && stats.abandoned == 0);
}

void test_options_and_busy() {
    asyncify_pool_options options;
    std::memset(&options, 0, sizeof options);
    CHECK(asyncify_pool_options_init(&options, sizeof options) == ASYNCIFY_OK);
    options.max_workers = 0;
    options.max_queued = 1;
    options.thread_name = "cpp-test";
    asyncify::pool bounded(options);
    auto queued = bounded.submit([] { return 1; });
    tracked::reset_counts();
    // Refused: the error carries the status and the library's message, and the callable is destroyed.
    bool threw = false;
    try {
        (void)bounded.submit([](const tracked&) { return 2; }, tracked(2));
    } catch (const asyncify::error& e) {
        threw = e.status() == ASYNCIFY_E_BUSY && std::string(e.what()).find("asyncify_submit") != std::string::npos;
    }
    CHECK(threw);
    CHECK(tracked::destroyed == 1);
    bounded.set_max_workers(1);
    CHECK(queued.get() == 1);

    asyncify_pool_options bad;
    std::memset(&bad, 0, sizeof bad);
    bad.struct_size = 3; // not a size this library accepts
    CHECK_THROWS_STATUS(asyncify::pool(bad), ASYNCIFY_E_INVALID_ARGUMENT);
}

void test_destructor_cancels_queued() {
    tracked::reset_counts();
    asyncify::task<int> t;
    {
        asyncify::pool paused(0);
        t = paused.submit([](const tracked& x) { return x.value; }, tracked(5));
    }
    CHECK(tracked::destroyed == 1);
    CHECK_THROWS_STATUS(t.get(), ASYNCIFY_CANCELLED);
}

void test_destructor_waits_for_running() {
    std::atomic<bool> finished{false};
    gate started;
    asyncify::task<void> t;
    {
        asyncify::pool one(1);
        t = one.submit([&] {
            started.open();
            std::this_thread::sleep_for(100ms);
            finished = true;
        });
        CHECK(started.wait());
    }
    CHECK(finished);
    t.get(); // handles outlive their pool
}

void test_shutdown() {
    asyncify::pool one(1);
    gate g;
    gate started;
    auto t = one.submit([&] {
        started.open();
        CHECK(g.wait());
        return 7;
    });
    CHECK(started.wait());
    CHECK(!one.shutdown(20ms)); // still running: TIMEOUT
    CHECK(one.native_handle() == nullptr);
    CHECK_THROWS_STATUS(one.submit([] { return 0; }), ASYNCIFY_E_SHUT_DOWN);
    CHECK_THROWS_STATUS(one.max_workers(), ASYNCIFY_E_SHUT_DOWN);
    g.open();
    CHECK(t.get() == 7);

    asyncify::pool idle(2);
    CHECK(idle.shutdown(check::patience));
}

void test_move() {
    asyncify::pool a(1);
    asyncify_pool* native = a.native_handle();
    asyncify::pool b(std::move(a));
    CHECK(a.native_handle() == nullptr); // NOLINT(bugprone-use-after-move)
    CHECK(b.native_handle() == native);
    CHECK_THROWS_STATUS(a.submit([] {}), ASYNCIFY_E_SHUT_DOWN);
    CHECK(b.submit([] { return 3; }).get() == 3);
    asyncify::pool c(2);
    c = std::move(b); // frees c's own pool first
    CHECK(c.native_handle() == native);
    CHECK(c.max_workers() == 1);
}

void test_default_pool() {
    std::uint32_t before = asyncify::max_workers();
    CHECK(before >= 1);
    asyncify::set_max_workers(before + 1);
    CHECK(asyncify::max_workers() == before + 1);
    asyncify::set_max_workers(before);
    CHECK(asyncify::max_workers() == before);
}

void test_version() {
    CHECK(std::string(asyncify::version()) == ASYNCIFY_VERSION_STRING);
    CHECK(std::string(ASYNCIFY_VERSION_STRING) == std::to_string(ASYNCIFY_VERSION_MAJOR) + "." +
                                                      std::to_string(ASYNCIFY_VERSION_MINOR) + "." +
                                                      std::to_string(ASYNCIFY_VERSION_PATCH));
}

} // namespace

int main() {
    RUN(test_limit);
    RUN(test_pause_and_resize);
    RUN(test_stats);
    RUN(test_options_and_busy);
    RUN(test_destructor_cancels_queued);
    RUN(test_destructor_waits_for_running);
    RUN(test_shutdown);
    RUN(test_move);
    RUN(test_default_pool);
    RUN(test_version);
    CHECK(tracked::alive == 0);
    std::printf("PASS test_pool\n");
    return 0;
}
