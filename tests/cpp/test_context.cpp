// asyncify::context, submit options, the default pool's stats, pool::close_for, completion_queue and
// task<T>::to_future: values, ownership, which thread, and errors.
#include "check.hpp"

#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using check::gate;
using check::tracked;

namespace {

void test_context_values() {
    asyncify::context empty;
    CHECK(empty.size() == 0);
    asyncify::context a = empty.with("model", "gpt").with("trace", "t-1");
    asyncify::context b = a.without("trace").with("model", "llama");
    CHECK(a.size() == 2 && b.size() == 1);
    CHECK(a.get("model") == std::optional<std::string>("gpt")); // a is unchanged by b
    CHECK(b.get("model") == std::optional<std::string>("llama"));
    CHECK(!b.get("trace"));
    CHECK((a.keys() == std::vector<std::string>{"model", "trace"}));
    asyncify::context copy = a; // copies share the snapshot
    CHECK(copy.native_handle() == a.native_handle());

    std::string big(1000, 'x');
    CHECK(empty.with("big", big).get("big") == std::optional<std::string>(big));

    tracked::reset_counts();
    {
        asyncify::context p = empty.with("client", std::make_unique<tracked>(5));
        CHECK(p.get_ptr<tracked>("client") != nullptr && p.get_ptr<tracked>("client")->value == 5);
        CHECK_THROWS_STATUS(p.get_ptr<int>("client"), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK_THROWS_STATUS(p.get("client"), ASYNCIFY_E_INVALID_ARGUMENT);
        CHECK(p.get_ptr("absent") == nullptr);
    }
    CHECK(tracked::destroyed == 1);
    CHECK_THROWS_STATUS(empty.with(std::string("a\0b", 3), "v"), ASYNCIFY_E_INVALID_ARGUMENT);
}

void test_capture_and_run() {
    asyncify::scope s{{"model", "mine"}};
    asyncify::context here = asyncify::context::capture();
    CHECK(here.get("model") == std::optional<std::string>("mine"));
    asyncify::context other = here.with("model", "other");
    std::string seen = other.run([] { return *asyncify::get("model"); });
    CHECK(seen == "other");
    CHECK(*asyncify::get("model") == "mine"); // restored
    bool threw = false;
    try {
        other.run([]() -> int { throw std::runtime_error("inside run"); });
    } catch (const std::runtime_error& e) {
        threw = std::string(e.what()) == "inside run";
    }
    CHECK(threw);
    CHECK(*asyncify::get("model") == "mine");
    int calls = 0;
    other.run([&calls] { ++calls; });
    CHECK(calls == 1);
}

void test_submit_options() {
    asyncify::pool pool(2);
    asyncify::context ctx = asyncify::context().with("model", "from-context");
    asyncify::scope s{{"model", "from-thread"}};
    auto reads = [] { return asyncify::get("model").value_or("none"); };

    asyncify::submit_options with_context;
    with_context.pool = &pool;
    with_context.context = ctx;
    auto t1 = asyncify::submit(with_context, reads);
    asyncify::submit_options empty_table;
    empty_table.flags = ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
    auto t2 = asyncify::submit(empty_table, reads);
    auto t3 = asyncify::submit(asyncify::submit_options{}, reads);
    CHECK(t1.get() == "from-context");
    CHECK(t2.get() == "none");
    CHECK(t3.get() == "from-thread");
    CHECK(pool.stats().completed == 1);

    asyncify::submit_options detached;
    detached.flags = ASYNCIFY_SUBMIT_DETACHED;
    CHECK_THROWS_STATUS(asyncify::submit(detached, reads), ASYNCIFY_E_INVALID_ARGUMENT);
    asyncify::submit_options unknown;
    unknown.flags = 0x80u;
    CHECK_THROWS_STATUS(asyncify::submit(unknown, reads), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(pool.shutdown(check::patience));
    CHECK_THROWS_STATUS(asyncify::submit(with_context, reads), ASYNCIFY_E_SHUT_DOWN);
}

void test_default_stats() {
    asyncify_pool_stats before = asyncify::stats();
    asyncify::submit([] { return 1; }).get();
    CHECK(check::eventually([&] { return asyncify::stats().completed == before.completed + 1; }));
    CHECK(asyncify::stats().limit == asyncify::max_workers());
}

void test_latency() {
    asyncify_pool_options options{};
    CHECK(asyncify_pool_options_init(&options, sizeof options) == ASYNCIFY_OK);
    options.max_workers = 1;
    options.flags = ASYNCIFY_POOL_RECORD_LATENCY;
    asyncify::pool pool(options);
    for (int i = 0; i < 3; i++) {
        pool.submit([] { std::this_thread::sleep_for(5ms); }).get();
    }
    asyncify_latency run = pool.latency(ASYNCIFY_LATENCY_RUN);
    CHECK(run.count == 3 && run.p50_ns >= 4500000 && run.max_ns >= run.p50_ns);
    CHECK(pool.latency(ASYNCIFY_LATENCY_QUEUE_WAIT).count == 3);
    asyncify::pool plain(1);
    CHECK_THROWS_STATUS(plain.latency(ASYNCIFY_LATENCY_RUN), ASYNCIFY_E_NOT_FOUND);
}

void test_close_for() {
    asyncify::pool pool(1);
    gate g;
    auto t = pool.submit([&g] { return g.wait(); });
    CHECK(check::eventually([&] { return pool.stats().running == 1; }));
    CHECK(!pool.close_for(0ms));
    CHECK(!pool.close_for(10ms));
    CHECK_THROWS_STATUS(pool.submit([] {}), ASYNCIFY_E_SHUT_DOWN);
    g.open();
    CHECK(check::eventually([&] { return pool.close_for(10ms); }));
    CHECK(pool.stats().threads == 0);
    CHECK(t.get());
}

std::int32_t c_work(void* arg, void** out) {
    *out = arg;
    return 0;
}

void test_completion_queue() {
    asyncify::completion_queue cq;
    CHECK(cq.fd() >= 0);
    CHECK(!cq.wait_for(1ms));
    asyncify_submit_options opts{};
    CHECK(asyncify_submit_options_init(&opts, sizeof opts) == ASYNCIFY_OK);
    opts.cq = cq.native_handle();
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    static int tags[10];
    for (int& tag : tags) {
        opts.on_done_data = &tag;
        CHECK(asyncify_submit(&c_work, &tag, &opts, nullptr) == ASYNCIFY_OK);
    }
    std::vector<asyncify_completion> got;
    while (got.size() < 10) {
        CHECK(cq.wait_for(check::patience));
        for (const asyncify_completion& c : cq.drain(3)) {
            CHECK(c.status == ASYNCIFY_OK && c.result == c.user_data);
            got.push_back(c);
        }
    }
    CHECK(got.size() == 10);
    CHECK(cq.drain().empty());
}

struct oops : std::runtime_error {
    oops() : std::runtime_error("oops") {}
};

void test_to_future() {
    std::future<int> f = asyncify::submit([] { return 42; }).to_future();
    CHECK(f.get() == 42);

    std::future<void> v = asyncify::submit([] {}).to_future();
    v.get();

    std::future<int> e = asyncify::submit([]() -> int { throw oops(); }).to_future();
    bool caught = false;
    try {
        e.get();
    } catch (const oops&) {
        caught = true;
    }
    CHECK(caught);

    // A task that already finished (reported before to_future): the same outcome.
    auto done = asyncify::submit([] { return std::string("early"); });
    done.wait();
    CHECK(std::move(done).to_future().get() == "early");

    // Cancelled while queued: the future throws ASYNCIFY_CANCELLED; the callable is destroyed unrun.
    asyncify::pool paused(0);
    tracked::reset_counts();
    auto queued = paused.submit([](tracked t) { return t.value; }, tracked(3));
    CHECK(queued.cancel());
    std::future<int> c = std::move(queued).to_future();
    CHECK(!queued.valid());
    CHECK_THROWS_STATUS(c.get(), ASYNCIFY_CANCELLED);
    CHECK(check::eventually([] { return tracked::destroyed == 1; }));

    // The future may outlive everything else: the worker fulfils it.
    asyncify::pool pool(1);
    gate g;
    std::future<std::unique_ptr<int>> late = pool.submit([&g] {
                                                     CHECK(g.wait());
                                                     return std::make_unique<int>(7);
                                                 })
                                                 .to_future();
    CHECK(late.wait_for(0ms) == std::future_status::timeout);
    g.open();
    CHECK(*late.get() == 7);
}

} // namespace

int main() {
    RUN(test_context_values);
    RUN(test_capture_and_run);
    RUN(test_submit_options);
    RUN(test_default_stats);
    RUN(test_latency);
    RUN(test_close_for);
    RUN(test_completion_queue);
    RUN(test_to_future);
    std::printf("PASS test_context\n");
    return 0;
}
