// asyncify::submit and asyncify::task<T>: values, void, move-only arguments and results, exceptions
// rethrown as the same type, wait/wait_for/ready, cancel (queued and running), empty tasks, detaching,
// nested waits, and which thread runs and destroys what.
#include "check.hpp"

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;
using check::gate;
using check::tracked;

namespace {

struct my_error : std::runtime_error {
    int detail;
    explicit my_error(int d) : std::runtime_error("my_error"), detail(d) {}
};

struct derived_error : my_error {
    derived_error() : my_error(99) {}
};

void test_value_and_args() {
    asyncify::task<std::string> t =
        asyncify::submit([](int a, const std::string& b) { return b + std::to_string(a); }, 42, std::string("x"));
    CHECK(t.valid());
    CHECK(t.native_handle() != 0);
    CHECK(t.get() == "x42");
    CHECK(!t.valid());
    CHECK(t.native_handle() == 0);
}

void test_args_are_copied_at_submit() {
    std::string text = "before";
    gate g;
    auto t = asyncify::submit(
        [&g](std::string s) {
            CHECK(g.wait());
            return s;
        },
        text);
    text = "after";
    g.open();
    CHECK(t.get() == "before");
}

void test_void() {
    std::atomic<int> ran{0};
    auto t = asyncify::submit([&ran] { ++ran; });
    static_assert(std::is_same_v<decltype(t), asyncify::task<void>>);
    t.get();
    CHECK(ran == 1);
    CHECK(!t.valid());
}

void test_move_only() {
    auto t = asyncify::submit(
        [](std::unique_ptr<int> p) {
            *p += 1;
            return p;
        },
        std::make_unique<int>(41));
    std::unique_ptr<int> r = t.get();
    CHECK(r != nullptr && *r == 42);
}

void test_exception_same_type() {
    auto t = asyncify::submit([]() -> int { throw my_error(7); });
    bool caught = false;
    try {
        (void)t.get();
    } catch (const my_error& e) {
        caught = e.detail == 7 && std::string(e.what()) == "my_error";
    } catch (...) {
        check::fail(__FILE__, __LINE__, "get() rethrew another type than my_error");
    }
    CHECK(caught);
    CHECK(!t.valid());

    // A derived type is still itself (caught by its own type, not sliced).
    auto d = asyncify::submit([] { throw derived_error(); });
    caught = false;
    try {
        d.get();
    } catch (const derived_error& e) {
        caught = e.detail == 99;
    }
    CHECK(caught);

    // Something that is not a std::exception at all.
    auto i = asyncify::submit([]() -> double { throw 1234; });
    caught = false;
    try {
        (void)i.get();
    } catch (int v) {
        caught = v == 1234;
    }
    CHECK(caught);
}

void test_wait_for_and_ready() {
    gate g;
    auto t = asyncify::submit([&g] {
        CHECK(g.wait());
        return 5;
    });
    CHECK(!t.ready());
    CHECK(!t.wait_for(30ms));
    CHECK(!t.wait_for(0ms));
    CHECK(!t.wait_for(-5s));
    CHECK(!t.wait_for(std::chrono::microseconds(1)));
    g.open();
    CHECK(t.wait_for(check::patience));
    CHECK(t.ready());
    CHECK(t.wait_for(std::chrono::hours::max())); // "forever" when it does not fit
    t.wait();
    CHECK(t.get() == 5);
}

void test_cancel_queued() {
    asyncify::pool paused(0);
    tracked::reset_counts();
    std::atomic<int> ran{0};
    auto t = paused.submit(
        [&ran](const tracked& x) {
            ++ran;
            return x.value;
        },
        tracked(3));
    CHECK(tracked::destroyed == 0);
    CHECK(t.cancel());
    CHECK(t.cancel()); // twice is harmless
    CHECK(t.ready());
    // The callable and its arguments are gone at once, on the cancelling thread.
    CHECK(tracked::destroyed == 1);
    CHECK(tracked::destroyed_on() == std::this_thread::get_id());
    CHECK_THROWS_STATUS(t.get(), ASYNCIFY_CANCELLED);
    CHECK(!t.valid());
    paused.set_max_workers(1);
    CHECK(paused.shutdown(check::patience));
    CHECK(ran == 0);
    CHECK(tracked::destroyed == 1);
}

void test_cancel_running() {
    asyncify::pool one(1);
    gate started;
    std::atomic<bool> saw_cancel{false};
    std::atomic<bool> returned{false};
    tracked::reset_counts();
    auto t = one.submit([&] {
        started.open();
        bool seen = check::eventually([] { return asyncify::cancel_requested(); });
        saw_cancel = seen;
        returned = true;
        return std::make_unique<tracked>(8);
    });
    CHECK(started.wait());
    CHECK(!asyncify::cancel_requested()); // false outside tasks
    CHECK(t.cancel());
    // The waiter is released at once, although the function still runs.
    auto before = std::chrono::steady_clock::now();
    CHECK_THROWS_STATUS(t.get(), ASYNCIFY_CANCELLED);
    CHECK(std::chrono::steady_clock::now() - before < 5s);
    CHECK(check::eventually([&] { return returned.load(); }));
    CHECK(saw_cancel);
    // The result of the abandoned function is destroyed, exactly once.
    CHECK(check::eventually([] { return tracked::destroyed == 1; }));
    CHECK(one.shutdown(check::patience));
    CHECK(tracked::destroyed == 1);
}

void test_cancel_after_finish() {
    auto t = asyncify::submit([] { return 11; });
    t.wait();
    CHECK(!t.cancel());
    CHECK(t.get() == 11);
}

void test_empty_task() {
    asyncify::task<int> empty;
    CHECK(!empty.valid());
    CHECK_THROWS_STATUS(empty.get(), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_THROWS_STATUS(empty.ready(), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_THROWS_STATUS(empty.cancel(), ASYNCIFY_E_INVALID_HANDLE);
    CHECK_THROWS_STATUS(empty.wait_for(1ms), ASYNCIFY_E_INVALID_HANDLE);

    auto a = asyncify::submit([] { return 1; });
    asyncify::task<int> b = std::move(a);
    CHECK(!a.valid()); // NOLINT(bugprone-use-after-move): moved-from is empty, by contract
    CHECK(b.valid());
    CHECK_THROWS_STATUS(a.get(), ASYNCIFY_E_INVALID_HANDLE);
    CHECK(b.get() == 1);
    CHECK_THROWS_STATUS(b.get(), ASYNCIFY_E_INVALID_HANDLE); // get() once, like std::future

    // Move assignment releases what the target held.
    auto c = asyncify::submit([] { return 2; });
    auto d = asyncify::submit([] { return 3; });
    asyncify_handle old = c.native_handle();
    c = std::move(d);
    CHECK(asyncify_poll(old, nullptr, nullptr) == ASYNCIFY_E_INVALID_HANDLE);
    CHECK(c.get() == 3);
}

void test_destroy_detaches() {
    tracked::reset_counts();
    std::atomic<bool> ran{false};
    gate g;
    asyncify_handle handle = 0;
    {
        auto t = asyncify::submit([&] {
            CHECK(g.wait());
            ran = true;
            return tracked(4);
        });
        handle = t.native_handle();
    }
    CHECK(asyncify_poll(handle, nullptr, nullptr) == ASYNCIFY_E_INVALID_HANDLE); // released
    g.open();
    CHECK(check::eventually([&] { return ran.load(); }));
    // The unwanted result is destroyed once, by the worker (no task object is left).
    CHECK(check::eventually([] { return tracked::destroyed == 1; }));
    CHECK(tracked::destroyed_on() != std::this_thread::get_id());
}

void test_runs_on_a_worker() {
    std::thread::id caller = std::this_thread::get_id();
    tracked::reset_counts();
    tracked in_lambda(1);
    auto t = asyncify::submit([caller, in_lambda] { return std::this_thread::get_id() != caller; });
    CHECK(t.get());
    // The copy captured by the lambda was destroyed on the worker, right after the call.
    CHECK(tracked::destroyed == 1);
    CHECK(tracked::destroyed_on() != caller);
}

void test_get_own_task_would_deadlock() {
    asyncify::task<int> self;
    gate handed_over;
    std::atomic<int> status{0};
    self = asyncify::submit([&] {
        CHECK(handed_over.wait());
        try {
            (void)self.ready();
            self.wait();
        } catch (const asyncify::error& e) {
            status = e.status();
        }
        return 1;
    });
    handed_over.open();
    CHECK(check::eventually([&] { return status.load() != 0; }));
    CHECK(status == ASYNCIFY_E_WOULD_DEADLOCK);
    CHECK(self.get() == 1);
}

void test_nested_wait_runs_inline() {
    asyncify::pool one(1);
    auto outer = one.submit([&one] {
        auto inner = one.submit([] { return 41; });
        return inner.get() + 1; // the only slot is ours: the library runs inner here
    });
    CHECK(outer.wait_for(check::patience));
    CHECK(outer.get() == 42);
}

void test_many() {
    std::vector<asyncify::task<int>> tasks;
    for (int i = 0; i < 1000; i++) {
        tasks.push_back(asyncify::submit([](int v) { return v * 2; }, i));
    }
    long long sum = 0;
    for (auto& t : tasks) {
        sum += t.get();
    }
    CHECK(sum == 999LL * 1000LL);
}

} // namespace

int main() {
    RUN(test_value_and_args);
    RUN(test_args_are_copied_at_submit);
    RUN(test_void);
    RUN(test_move_only);
    RUN(test_exception_same_type);
    RUN(test_wait_for_and_ready);
    RUN(test_cancel_queued);
    RUN(test_cancel_running);
    RUN(test_cancel_after_finish);
    RUN(test_empty_task);
    RUN(test_destroy_detaches);
    RUN(test_runs_on_a_worker);
    RUN(test_get_own_task_would_deadlock);
    RUN(test_nested_wait_runs_inline);
    RUN(test_many);
    CHECK(tracked::alive == 0);
    std::printf("PASS test_task\n");
    return 0;
}
