// Small helpers shared by the C++ wrapper tests.
//
// Every check stops the program on failure with file:line and the expression, from whichever thread
// failed (std::_Exit: other threads may still be inside the library), so a failing ctest run says why.
#ifndef ASYNCIFY_TEST_CHECK_HPP
#define ASYNCIFY_TEST_CHECK_HPP

#include "asyncify.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace check {

/// How long a test waits for something that should happen "at once" or "soon": generous, because the
/// machines are noisy 2-core VMs and sanitizers slow everything down.
constexpr std::chrono::seconds patience{10};

[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
    std::fprintf(stderr, "%s:%d: FAIL: %s\n", file, line, what.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(1);
}

/// Counts live objects and on which threads they were destroyed: for "destroyed exactly once, there".
struct tracked {
    static std::atomic<int> alive;
    static std::atomic<int> destroyed;
    static std::mutex mutex;
    static std::thread::id last_destroyed_on;

    int value;
    bool owner = true;

    explicit tracked(int v = 0) : value(v) { ++alive; }
    tracked(const tracked& other) : value(other.value) { ++alive; }
    tracked(tracked&& other) noexcept : value(other.value) {
        other.owner = false;
        ++alive;
    }
    tracked& operator=(const tracked&) = delete;
    tracked& operator=(tracked&&) = delete;
    ~tracked() {
        --alive;
        if (owner) {
            ++destroyed;
            std::lock_guard<std::mutex> lock(mutex);
            last_destroyed_on = std::this_thread::get_id();
        }
    }

    static void reset_counts() {
        destroyed = 0;
        std::lock_guard<std::mutex> lock(mutex);
        last_destroyed_on = std::thread::id();
    }
    static std::thread::id destroyed_on() {
        std::lock_guard<std::mutex> lock(mutex);
        return last_destroyed_on;
    }
};

inline std::atomic<int> tracked::alive{0};
inline std::atomic<int> tracked::destroyed{0};
inline std::mutex tracked::mutex;
inline std::thread::id tracked::last_destroyed_on;

/// A one-shot gate: tasks block in wait() until the test calls open(). Bounded, so a library that never
/// runs or never releases a task fails the test instead of hanging it.
class gate {
public:
    void open() { open_ = true; }
    bool wait() const {
        auto deadline = std::chrono::steady_clock::now() + patience;
        while (!open_) {
            if (std::chrono::steady_clock::now() > deadline) {
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

private:
    std::atomic<bool> open_{false};
};

template <class Pred> bool eventually(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + patience;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

} // namespace check

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            ::check::fail(__FILE__, __LINE__, "CHECK(" #cond ")");                                                     \
        }                                                                                                              \
    } while (0)

/// `expr` must throw asyncify::error with the given status and a non-empty message.
#define CHECK_THROWS_STATUS(expr, expected)                                                                            \
    do {                                                                                                               \
        bool threw_ = false;                                                                                           \
        try {                                                                                                          \
            (void)(expr);                                                                                              \
        } catch (const ::asyncify::error& e_) {                                                                        \
            threw_ = true;                                                                                             \
            if (e_.status() != (expected)) {                                                                           \
                ::check::fail(__FILE__, __LINE__,                                                                      \
                              std::string(#expr " threw status ") + std::to_string(e_.status()) + " (" + e_.what() +   \
                                  "), expected " #expected);                                                           \
            }                                                                                                          \
            if (std::string(e_.what()).empty()) {                                                                      \
                ::check::fail(__FILE__, __LINE__, #expr " threw asyncify::error with no message");                     \
            }                                                                                                          \
        }                                                                                                              \
        if (!threw_) {                                                                                                 \
            ::check::fail(__FILE__, __LINE__, #expr " did not throw asyncify::error");                                 \
        }                                                                                                              \
    } while (0)

#define RUN(test)                                                                                                      \
    do {                                                                                                               \
        test();                                                                                                        \
        std::printf("ok %s\n", #test);                                                                                 \
        std::fflush(stdout);                                                                                           \
    } while (0)

#endif // ASYNCIFY_TEST_CHECK_HPP
