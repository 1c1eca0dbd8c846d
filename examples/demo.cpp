// examples/demo.cpp - asyncify from C++17 through the header-only wrapper bindings/cpp/asyncify.hpp.
//
// What it shows:
//   1. a lambda submitted with asyncify::submit sees the caller's override table as it was at submit;
//   2. a pool of its own (limit 2) running 6 tasks, each inside the scope its submitter had;
//   3. an exception thrown on the worker is rethrown by get() with its own type;
//   4. a cancelled queued task never runs, and its get() throws asyncify::error(ASYNCIFY_CANCELLED).
//
// Every outcome is checked: the demo exits with status 1 if the library misbehaves.
//
// Build and run:  make demo   (or: c++ -std=c++17 -Iinclude -Ibindings/cpp examples/demo.cpp
//                              -Ltarget/release -lasyncify -Wl,-rpath,$PWD/target/release -o demo-cpp)
#include <asyncify.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace
{

int failures = 0;

void expect(bool ok, const std::string &what)
{
    std::cout << (ok ? "  ok: " : "  FAILED: ") << what << "\n";
    if (!ok) {
        ++failures;
    }
}

struct parse_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

} // namespace

int main()
{
    std::cout << "asyncify " << asyncify::version() << " from C++\n\n";

    std::cout << "1. the caller's table travels with the task\n";
    asyncify::set("model", "gpt-4o");
    auto summary = asyncify::submit(
        [](const std::string &doc) { return *asyncify::get("model") + " summarized " + doc; },
        std::string("report.txt"));
    asyncify::set("model", "llama"); // too late for the task: it runs with gpt-4o
    std::string text = summary.get();
    std::cout << "  " << text << "\n";
    expect(text == "gpt-4o summarized report.txt", "the task saw model=gpt-4o, not the later llama");

    std::cout << "\n2. a pool of its own: at most 2 of 6 tasks at once, each in its submitter's scope\n";
    {
        asyncify::pool pool(2);
        std::atomic<int> running{ 0 };
        std::atomic<int> most{ 0 };
        std::vector<asyncify::task<std::string>> tasks;
        for (int i = 0; i < 6; ++i) {
            asyncify::scope scope{ { "trace_id", "trace-" + std::to_string(i) } }; // ends with this iteration
            tasks.push_back(pool.submit([&running, &most] {
                int now = ++running;
                for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                --running;
                return asyncify::get("trace_id").value_or("none");
            }));
        }
        bool each_own = true;
        for (int i = 0; i < 6; ++i) {
            std::string trace = tasks[static_cast<std::size_t>(i)].get();
            each_own = each_own && trace == "trace-" + std::to_string(i);
            std::cout << "  task " << i << " saw trace_id=" << trace << "\n";
        }
        expect(each_own, "each task saw the trace_id of the scope it was submitted in");
        expect(most.load() <= 2, "at most 2 tasks ran at once (saw " + std::to_string(most.load()) + ")");
        expect(!asyncify::get("trace_id"), "the scopes ended: this thread has no trace_id");
    }

    std::cout << "\n3. exceptions cross back to the caller, never into the C library\n";
    auto bad = asyncify::submit([] { return std::stoi("not a number"); });
    try {
        bad.get();
        expect(false, "get() rethrows what the task threw");
    } catch (const std::invalid_argument &e) {
        expect(true, std::string("get() rethrew std::invalid_argument (") + e.what() + ")");
    }
    auto custom = asyncify::submit([]() -> int { throw parse_error("line 3: unexpected '}'"); });
    try {
        custom.get();
        expect(false, "get() rethrows a user-defined exception");
    } catch (const parse_error &e) {
        expect(true, std::string("get() rethrew parse_error (") + e.what() + ")");
    }

    std::cout << "\n4. cancelling a queued task\n";
    {
        asyncify::pool pool(1);
        std::atomic<bool> release{ false };
        std::atomic<bool> second_ran{ false };
        auto blocker = pool.submit([&release] {
            while (!release.load()) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
        auto queued = pool.submit([&second_ran] { second_ran = true; });
        expect(queued.cancel(), "cancel() of the queued task succeeds");
        release = true;
        blocker.get();
        try {
            queued.get();
            expect(false, "get() of a cancelled task throws");
        } catch (const asyncify::error &e) {
            expect(e.status() == ASYNCIFY_CANCELLED,
                   std::string("get() threw asyncify::error: ") + asyncify_status_str(e.status()));
        }
        expect(!second_ran.load(), "the cancelled task never ran");
    }

    if (failures != 0) {
        std::cout << "\n" << failures << " check(s) FAILED\n";
        return EXIT_FAILURE;
    }
    std::cout << "\nC++ demo done: every check passed\n";
    return EXIT_SUCCESS;
}
