// C++20 coroutines over asyncify::task<T>: co_await resumes on the worker that finished the task, or
// through resume_via() on a thread the test drives; values, exceptions, cancellation, an already
// finished task, a start deadline that expires (ASYNCIFY_EXPIRED, resumed by the library's timer), and
// the scope check for a scope held across a co_await (debug builds).
#include "check.hpp"

#include <condition_variable>
#include <coroutine>
#include <deque>
#include <functional>
#include <mutex>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
using check::gate;

namespace {

/// The smallest coroutine type: starts at once, and the test waits for `done`.
struct fire {
    struct promise_type {
        fire get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { check::fail(__FILE__, __LINE__, "exception escaped a coroutine"); }
    };
};

/// A thread that runs what is posted to it: the "event loop" of resume_via.
class loop {
public:
    loop() : thread_([this] { run(); }) {}
    ~loop() {
        post([this] { stop_ = true; });
        thread_.join();
    }
    void post(std::function<void()> f) {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(f));
        ready_.notify_one();
    }
    std::thread::id id() const { return thread_.get_id(); }

private:
    void run() {
        while (!stop_) {
            std::function<void()> f;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ready_.wait(lock, [this] { return !queue_.empty(); });
                f = std::move(queue_.front());
                queue_.pop_front();
            }
            f();
        }
    }
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> queue_;
    bool stop_ = false;
    std::thread thread_;
};

fire add_on_worker(asyncify::pool& pool, gate& g, std::atomic<int>& out, std::atomic<std::thread::id>& resumed_on,
                   std::atomic<bool>& done) {
    // The task waits for the gate, which the test opens once this coroutine has suspended: so it
    // really resumes on the worker (a task already terminal at co_await goes on at once, here).
    int a = co_await pool.submit([&g] { return g.wait() ? 40 : 0; });
    resumed_on = std::this_thread::get_id();
    int b = co_await pool.submit([](int x) { return x + 1; }, 1);
    out = a + b;
    done = true;
}

void test_co_await_resumes_on_the_worker() {
    asyncify::pool pool(2);
    gate g;
    std::atomic<int> out{0};
    std::atomic<std::thread::id> resumed_on{};
    std::atomic<bool> done{false};
    add_on_worker(pool, g, out, resumed_on, done);
    g.open();
    CHECK(check::eventually([&] { return done.load(); }));
    CHECK(out == 42);
    CHECK(resumed_on.load() != std::this_thread::get_id());
}

fire via_loop(loop& l, gate& first, gate& second, std::atomic<int>& stage, std::atomic<bool>& on_loop,
              std::atomic<bool>& caught, std::atomic<bool>& done) {
    // Each task waits for its gate, which the test opens once this coroutine has suspended: so it
    // really resumes through the loop (a task already terminal at co_await goes on at once, here).
    auto t = asyncify::submit([&first] { return first.wait() ? std::string("v") : std::string("timeout"); });
    std::string v = co_await t.resume_via([&l](std::function<void()> f) { l.post(std::move(f)); });
    on_loop = std::this_thread::get_id() == l.id() && v == "v" && !t.valid();
    stage = 1;
    try {
        auto bad = asyncify::submit([&second]() -> int {
            CHECK(second.wait());
            throw std::out_of_range("x");
        });
        co_await bad.resume_via([&l](std::function<void()> f) { l.post(std::move(f)); });
    } catch (const std::out_of_range&) {
        caught = std::this_thread::get_id() == l.id();
    }
    done = true;
}

void test_resume_via_an_executor() {
    loop l;
    gate first, second;
    std::atomic<int> stage{0};
    std::atomic<bool> on_loop{false}, caught{false}, done{false};
    via_loop(l, first, second, stage, on_loop, caught, done);
    first.open();
    CHECK(check::eventually([&] { return stage.load() == 1; }));
    std::this_thread::sleep_for(10ms); // (the second co_await suspends meanwhile; if not, it goes on here)
    second.open();
    CHECK(check::eventually([&] { return done.load(); }));
    CHECK(on_loop);
    CHECK(caught);
}

fire await_cancelled(asyncify::task<int>& t, std::atomic<asyncify_status>& status, std::atomic<bool>& done) {
    try {
        (void)co_await t;
    } catch (const asyncify::error& e) {
        status = e.status();
    }
    done = true;
}

void test_cancel_resumes_with_cancelled() {
    asyncify::pool paused(0);
    auto t = paused.submit([] { return 1; });
    std::atomic<asyncify_status> status{ASYNCIFY_OK};
    std::atomic<bool> done{false};
    await_cancelled(t, status, done);
    CHECK(!done);
    CHECK(t.cancel()); // resumes the coroutine here, on the cancelling thread
    CHECK(done);
    CHECK(status == ASYNCIFY_CANCELLED);
}

fire await_expired(asyncify::task<int>& t, std::atomic<asyncify_status>& status,
                   std::atomic<std::thread::id>& resumed_on, std::atomic<bool>& done) {
    try {
        (void)co_await t;
    } catch (const asyncify::error& e) {
        status = e.status();
    }
    resumed_on = std::this_thread::get_id();
    done = true;
}

void test_deadline_resumes_with_expired() {
    asyncify::pool paused(0);
    asyncify::submit_options options;
    options.pool = &paused;
    options.start_within = 50ms;
    auto t0 = std::chrono::steady_clock::now();
    auto t = asyncify::submit(options, [] { return 1; });
    std::atomic<asyncify_status> status{ASYNCIFY_OK};
    std::atomic<std::thread::id> resumed_on{};
    std::atomic<bool> done{false};
    await_expired(t, status, resumed_on, done);
    CHECK(check::eventually([&] { return done.load(); })); // no one waits or cancels: the library's timer
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    std::printf("co_await of a task with a 50 ms deadline in a paused pool: resumed after %lld ms\n",
                static_cast<long long>(took.count()));
    CHECK(status == ASYNCIFY_EXPIRED);
    CHECK(took >= 50ms && took < 1s);
    CHECK(resumed_on.load() != std::this_thread::get_id());
    CHECK(!t.valid());
    CHECK(paused.stats().expired == 1);
}

fire await_finished(asyncify::task<int> t, std::atomic<int>& out, std::atomic<bool>& done) {
    out = co_await t;
    done = true;
}

void test_already_finished() {
    auto t = asyncify::submit([] { return 9; });
    t.wait();
    std::atomic<int> out{0};
    std::atomic<bool> done{false};
    await_finished(std::move(t), out, done);
    CHECK(done && out == 9); // no suspension: it went on at once
}

fire scope_across_await(asyncify::pool& pool, gate& g) {
    asyncify::scope s{{"k", "v"}};
    co_await pool.submit([&g] { return g.wait(); }); // resumes on a worker: the scope ends there
}

void test_scope_held_across_co_await_is_detected() {
#ifdef NDEBUG
    std::printf("(NDEBUG build: the scope check is compiled out)\n");
#else
    std::fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        asyncify::pool pool(1); // a fresh pool: the child has no workers of the parent's
        gate g;
        scope_across_await(pool, g); // suspended at its co_await once this returns
        g.open();
        std::this_thread::sleep_for(check::patience);
        std::_Exit(0); // not detected
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
#endif
}

} // namespace

int main() {
    RUN(test_co_await_resumes_on_the_worker);
    RUN(test_resume_via_an_executor);
    RUN(test_cancel_resumes_with_cancelled);
    RUN(test_deadline_resumes_with_expired);
    RUN(test_already_finished);
    RUN(test_scope_held_across_co_await_is_detected);
    std::printf("PASS test_coro\n");
    return 0;
}
