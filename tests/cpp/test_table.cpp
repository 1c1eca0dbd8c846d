// The override table from C++: asyncify::set/get/get_ptr/remove for string and pointer values,
// asyncify::scope, what a submitted task sees, and asyncify::error for every refusal.
#include "check.hpp"

#include <memory>
#include <optional>
#include <string>
#include <thread>

using namespace std::chrono_literals;
using check::tracked;

namespace {

struct other {
    int unused = 0;
};

std::atomic<int> c_releases{0};
void count_release(void* ptr) {
    ++c_releases;
    delete static_cast<int*>(ptr);
}

void test_strings() {
    CHECK(!asyncify::get("model").has_value());
    asyncify::set("model", "gpt-4o");
    CHECK(asyncify::get("model") == std::optional<std::string>("gpt-4o"));

    // Bytes, not C strings: embedded NULs and values longer than the first buffer survive.
    std::string binary("a\0b\0c", 5);
    asyncify::set("binary", binary);
    CHECK(asyncify::get("binary") == binary);
    std::string long_value(10000, 'x');
    long_value[9999] = 'y';
    asyncify::set("long", long_value);
    CHECK(asyncify::get("long") == long_value);
    asyncify::set("empty", "");
    CHECK(asyncify::get("empty") == std::string());

    CHECK(asyncify::remove("model"));
    CHECK(!asyncify::remove("model"));
    CHECK(!asyncify::get("model").has_value());
    CHECK(asyncify::remove("binary") && asyncify::remove("long") && asyncify::remove("empty"));
}

void test_errors() {
    CHECK_THROWS_STATUS(asyncify::set("", "x"), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(asyncify::get(""), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(asyncify::set(std::string("a\0b", 3), "x"), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(asyncify::set("\xff\xfe", "x"), ASYNCIFY_E_INVALID_ARGUMENT); // not UTF-8

    // The message is the library's own text for this thread's failure.
    try {
        asyncify::set("", "x");
        check::fail(__FILE__, __LINE__, "set(\"\", ...) did not throw");
    } catch (const asyncify::error& e) {
        CHECK(std::string(e.what()).find("asyncify_override_set") != std::string::npos);
        CHECK(dynamic_cast<const std::runtime_error*>(&e) != nullptr);
    }

    // A value of the other kind is refused both ways.
    asyncify::set("bytes", "b");
    CHECK_THROWS_STATUS(asyncify::get_ptr("bytes"), ASYNCIFY_E_INVALID_ARGUMENT);
    asyncify::set("pointer", std::make_unique<int>(1));
    CHECK_THROWS_STATUS(asyncify::get("pointer"), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(asyncify::remove("bytes") && asyncify::remove("pointer"));
}

void test_owned_pointers() {
    tracked::reset_counts();
    auto owned = std::make_unique<tracked>(5);
    tracked* raw = owned.get();
    asyncify::set("tracker", std::move(owned));
    CHECK(owned == nullptr); // NOLINT(bugprone-use-after-move): set() took it
    CHECK(asyncify::get_ptr<tracked>("tracker") == raw);
    CHECK(asyncify::get_ptr<const tracked>("tracker") == raw);
    CHECK(asyncify::get_ptr("tracker") == static_cast<void*>(raw));
    CHECK(asyncify::get_ptr<tracked>("absent") == nullptr);
    // A pointer of another type is refused rather than cast.
    CHECK_THROWS_STATUS(asyncify::get_ptr<other>("tracker"), ASYNCIFY_E_INVALID_ARGUMENT);

    // Replaced: the old value is deleted once, the new one lives on.
    asyncify::set("tracker", std::make_unique<tracked>(6));
    CHECK(tracked::destroyed == 1);
    CHECK(asyncify::get_ptr<tracked>("tracker")->value == 6);
    CHECK(asyncify::remove("tracker"));
    CHECK(tracked::destroyed == 2);

    // On a refused set the caller keeps the object.
    auto kept = std::make_unique<tracked>(7);
    CHECK_THROWS_STATUS(asyncify::set("", std::move(kept)), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(kept != nullptr && kept->value == 7); // NOLINT(bugprone-use-after-move)
    kept.reset();

    // const objects work too.
    asyncify::set("const", std::make_unique<const tracked>(8));
    CHECK(asyncify::get_ptr<const tracked>("const")->value == 8);
    CHECK(asyncify::remove("const"));
    CHECK(tracked::destroyed == 4);
}

void test_raw_pointers() {
    c_releases = 0;
    int* p = new int(3);
    asyncify::set("raw", p, &count_release);
    CHECK(asyncify::get_ptr("raw") == static_cast<void*>(p));
    // Not set from a std::unique_ptr<int>: the typed get refuses it.
    CHECK_THROWS_STATUS(asyncify::get_ptr<int>("raw"), ASYNCIFY_E_INVALID_ARGUMENT);
    CHECK(asyncify::remove("raw"));
    CHECK(c_releases == 1);

    // A borrowed pointer: no release function.
    static int borrowed = 9;
    asyncify::set("borrowed", &borrowed, nullptr);
    CHECK(static_cast<int*>(asyncify::get_ptr("borrowed")) == &borrowed);
    CHECK(asyncify::remove("borrowed"));
}

void test_scope() {
    asyncify::set("k", "1");
    {
        asyncify::scope outer;
        asyncify::set("k", "2");
        asyncify::set("j", "x");
        {
            asyncify::scope inner{{"k", "3"}, {"i", "y"}};
            CHECK(asyncify::get("k") == std::string("3"));
            CHECK(asyncify::get("i") == std::string("y"));
            CHECK(asyncify::get("j") == std::string("x"));
            CHECK(asyncify::remove("j"));
        }
        CHECK(asyncify::get("k") == std::string("2"));
        CHECK(asyncify::get("j") == std::string("x"));
        CHECK(!asyncify::get("i").has_value());
    }
    CHECK(asyncify::get("k") == std::string("1"));
    CHECK(!asyncify::get("j").has_value());

    // A scope whose values are refused restores the table before the exception leaves.
    bool threw = false;
    try {
        asyncify::scope bad{{"first", "1"}, {"", "2"}};
    } catch (const asyncify::error& e) {
        threw = e.status() == ASYNCIFY_E_INVALID_ARGUMENT;
    }
    CHECK(threw);
    CHECK(!asyncify::get("first").has_value());
    CHECK(asyncify::get("k") == std::string("1"));

    // Pointer values set inside a scope are released when it ends.
    tracked::reset_counts();
    {
        asyncify::scope s;
        asyncify::set("scoped", std::make_unique<tracked>(1));
    }
    CHECK(tracked::destroyed == 1);
    CHECK(asyncify::get_ptr("scoped") == nullptr);
    CHECK(asyncify::remove("k"));
}

void test_task_sees_submitters_table() {
    asyncify::pool paused(0);
    asyncify::set("k", "1");
    asyncify::task<std::string> t;
    {
        asyncify::scope s{{"j", "2"}};
        t = paused.submit([] {
            std::string seen = *asyncify::get("k") + *asyncify::get("j");
            asyncify::set("leak", "from the task"); // stays in the task
            asyncify::remove("k");
            return seen;
        });
    }
    asyncify::set("k", "changed after submit");
    paused.set_max_workers(1);
    CHECK(t.get() == "12");
    CHECK(asyncify::get("k") == std::string("changed after submit"));
    CHECK(!asyncify::get("leak").has_value());
    CHECK(!asyncify::get("j").has_value());

    // The next task on the same worker sees only its own submitter's table.
    auto next = paused.submit([] { return !asyncify::get("leak").has_value(); });
    CHECK(next.get());
    CHECK(asyncify::remove("k"));
}

void test_task_shares_pointer_values() {
    asyncify::pool paused(0);
    tracked::reset_counts();
    auto owned = std::make_unique<tracked>(12);
    tracked* raw = owned.get();
    asyncify::set("shared", std::move(owned));
    auto t = paused.submit([raw] {
        tracked* seen = asyncify::get_ptr<tracked>("shared");
        return seen == raw && seen->value == 12;
    });
    // The submitter drops the value; the queued task's snapshot still holds it.
    CHECK(asyncify::remove("shared"));
    CHECK(tracked::destroyed == 0);
    paused.set_max_workers(1);
    CHECK(t.get());
    CHECK(check::eventually([] { return tracked::destroyed == 1; }));
}

void test_threads_start_empty() {
    asyncify::set("mine", "main");
    bool empty = false;
    std::thread other_thread([&empty] { empty = !asyncify::get("mine").has_value(); });
    other_thread.join();
    CHECK(empty);
    CHECK(asyncify::remove("mine"));
}

} // namespace

int main() {
    RUN(test_strings);
    RUN(test_errors);
    RUN(test_owned_pointers);
    RUN(test_raw_pointers);
    RUN(test_scope);
    RUN(test_task_sees_submitters_table);
    RUN(test_task_shares_pointer_values);
    RUN(test_threads_start_empty);
    CHECK(tracked::alive == 0);
    std::printf("PASS test_table\n");
    return 0;
}
