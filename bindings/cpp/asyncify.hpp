// asyncify.hpp: a header-only C++17 wrapper over the asyncify C API (asyncify.h).
//
//     #include <asyncify.hpp>
//
//     asyncify::set("model", "gpt-4o");                   // this thread's override table
//     asyncify::task<std::string> t = asyncify::submit([](std::string doc) {
//         return *asyncify::get("model") + " read " + doc; // the submitter's table, as at submit
//     }, std::string("report.txt"));
//     asyncify::set("model", "llama");                    // the task still sees gpt-4o
//     std::string summary = t.get();                      // waits; rethrows what the lambda threw
//
// Link with asyncify::asyncify_cpp (CMake) or `pkg-config --libs asyncify`; it needs only C++17 and the C
// library, and uses nothing but the public functions of asyncify.h.
//
// What is where:
//   asyncify::submit(f, args...)      run f(args...) on the default pool   -> asyncify::task<R>
//   asyncify::pool                    a pool of its own (RAII): submit, set_max_workers, stats, shutdown
//   asyncify::task<R>                 move-only owner of a task's handle: get, wait, wait_for, ready, cancel
//   asyncify::scope                   RAII override scope: restores this thread's table when it ends
//   asyncify::context                 an immutable table as a value: capture, with, without, get, run
//   asyncify::submit(options, f, ...) with a pool, a context, flags, a limiter or a start deadline
//   asyncify::limiter                 RAII cap (and rate) shared by every pool: set, stats, latency
//   task<R>::to_future()              a std::future<R>; C++20: co_await t, co_await t.resume_via(post)
//   asyncify::completion_queue        RAII queue for C submissions with an fd for your event loop
//   asyncify::stats()                 the default pool's counters (pool::stats() for a pool)
//   asyncify::set / get / get_ptr / remove   this thread's override table (bytes or pointer values)
//   asyncify::cancel_requested()      inside f: the task was cancelled, stop early
//   asyncify::error                   every failure: a std::runtime_error with the C status and message
//
// Errors. A C call that fails throws asyncify::error: status() is the C status (< 0, e.g.
// ASYNCIFY_E_SHUT_DOWN, ASYNCIFY_E_BUSY, ASYNCIFY_E_INVALID_ARGUMENT) and what() is the library's message
// (asyncify_last_error). task::get() of a cancelled task throws asyncify::error with status()
// ASYNCIFY_CANCELLED, and of a task whose start deadline passed (submit_options::start_within) with
// ASYNCIFY_EXPIRED: neither ran. Using a task that is empty (default-constructed, moved from, or already got) throws
// asyncify::error with ASYNCIFY_E_INVALID_HANDLE.
//
// Exceptions never cross into the C library. The work function's exception is caught on the worker
// thread, kept as a std::exception_ptr, and rethrown by task::get() on the caller's thread with its own
// dynamic type, so `catch (const MyError&)` works. Release functions called by the library (the deleter of a
// std::unique_ptr value, the destruction of f and its arguments) are noexcept: a destructor that throws
// there ends the program (std::terminate), as it would in any noexcept context.
//
// Threads (which code runs where):
//   - submit() snapshots the calling thread's override table at the call (O(1)). f runs on a worker
//     thread of the pool with that snapshot installed, so asyncify::get inside f sees the submitter's
//     values; what f sets stays in the task. (A task that waits for a still-queued task of its own pool
//     runs that one inline on its own thread.)
//   - f and args are decay-copied at submit (as by std::thread), invoked as rvalues on the worker, and
//     destroyed there right after the call. A task that never runs (cancelled while queued, pool shut
//     down) has them destroyed on the thread that cancelled it or shut the pool down.
//   - The returned value (or exception) is stored by the worker and moved out by get() on the caller's
//     thread. If no one calls get(), it is destroyed with the last owner: the task object, or the worker
//     when the task object was already gone.
//   - A std::unique_ptr given to set() is deleted on whichever thread drops the last table, task or
//     context holding it, possibly a worker.
//   - One task object must not be used by two threads at once (like std::future); move it instead.
//     Everything else may be called from any thread, including inside f.
//   - A scope must end on the thread (and in the task) that began it, innermost first; C++ block scope
//     does exactly that, which is why a scope can be neither copied nor moved.
//
// Lifetimes: destroying a task without get() detaches it (the work still runs, its result is
// discarded); call cancel() first to stop it. Destroying a pool cancels its queued tasks (their get()
// throws ASYNCIFY_CANCELLED) and waits for the running ones. Tasks may outlive their pool.
#ifndef ASYNCIFY_HPP
#define ASYNCIFY_HPP

#include "asyncify.h"

#include <atomic>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <initializer_list>
#include <vector>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#if defined(__cpp_impl_coroutine) && __cpp_impl_coroutine >= 201902L && __has_include(<coroutine>)
#include <coroutine>
#endif

#if !(__cplusplus >= 201703L || (defined(_MSVC_LANG) && _MSVC_LANG >= 201703L))
#error "asyncify.hpp needs C++17 or later"
#endif

namespace asyncify {

/// A failure reported by the C library (status() < 0), or the get() of a task that never ran: cancelled
/// (ASYNCIFY_CANCELLED) or expired, its start deadline passed (ASYNCIFY_EXPIRED).
class error : public std::runtime_error {
public:
    error(asyncify_status status, const std::string& message) : std::runtime_error(message), status_(status) {}

    /// The C status code, one of the ASYNCIFY_* values.
    asyncify_status status() const noexcept { return status_; }

private:
    asyncify_status status_;
};

template <class T> class task;

namespace detail {

/// This thread's asyncify_last_error text, or the status's fixed text when there is none.
inline std::string last_error_message(asyncify_status status) {
    std::size_t needed = 0;
    std::string text;
    if (asyncify_last_error(nullptr, 0, &needed) == ASYNCIFY_E_BUFFER_TOO_SMALL && needed > 1) {
        text.resize(needed);
        std::size_t len = 0;
        if (asyncify_last_error(text.data(), text.size(), &len) == ASYNCIFY_OK) {
            text.resize(std::strlen(text.c_str()));
        } else {
            text.clear();
        }
    }
    if (text.empty()) {
        text = asyncify_status_str(status);
    }
    return text;
}

/// Returns an outcome (>= 0) and throws asyncify::error for an error (< 0).
inline asyncify_status check(asyncify_status status) {
    if (status < 0) {
        throw error(status, last_error_message(status));
    }
    return status;
}

/// A key as the C API wants it: NUL-terminated, with no NUL inside (which C would silently cut off).
class c_key {
public:
    explicit c_key(std::string_view key) : text_(key) {
        if (text_.find('\0') != std::string::npos) {
            throw error(ASYNCIFY_E_INVALID_ARGUMENT, "asyncify: a key must not contain a NUL character");
        }
    }
    const char* c_str() const noexcept { return text_.c_str(); }

private:
    std::string text_;
};

/// A timeout in milliseconds for the C API: rounded up, negative or zero is 0 (do not wait), and a
/// duration too long for int64 milliseconds means forever (-1).
template <class Rep, class Period> std::int64_t timeout_ms(const std::chrono::duration<Rep, Period>& timeout) noexcept {
    const std::chrono::duration<double, std::milli> ms = timeout;
    if (!(ms.count() > 0.0)) {
        return 0;
    }
    if (ms.count() >= 9.0e18) {
        return -1;
    }
    return static_cast<std::int64_t>(std::ceil(ms.count()));
}

/// A start deadline for asyncify_submit_options::start_within_ms: rounded up to whole milliseconds. The C
/// API's 0 means "no deadline" and it counts in uint32, so a deadline that is not positive (NaN included)
/// or longer than UINT32_MAX ms (about 49.7 days) is refused with ASYNCIFY_E_INVALID_ARGUMENT.
inline std::uint32_t start_within_ms(std::chrono::duration<double, std::milli> deadline) {
    const double ms = deadline.count();
    if (!(ms > 0.0)) {
        throw error(ASYNCIFY_E_INVALID_ARGUMENT, "asyncify::submit: start_within must be a positive duration (got " +
                                                     std::to_string(ms) + " ms); leave it empty for no deadline");
    }
    const double whole = std::ceil(ms);
    if (!(whole <= static_cast<double>(UINT32_MAX))) {
        throw error(ASYNCIFY_E_INVALID_ARGUMENT, "asyncify::submit: start_within of " + std::to_string(ms) +
                                                     " ms does not fit the C API's uint32 milliseconds (at most "
                                                     "4294967295 ms, about 49.7 days)");
    }
    return static_cast<std::uint32_t>(whole);
}

/// A terminal status of a task whose outcome is not its work function's: cancelled or expired.
inline bool without_result(asyncify_status status) noexcept {
    return status == ASYNCIFY_CANCELLED || status == ASYNCIFY_EXPIRED;
}

/// What get() throws for such a status: asyncify::error with ASYNCIFY_CANCELLED or ASYNCIFY_EXPIRED.
[[noreturn]] inline void throw_without_result(asyncify_status status, const char* where) {
    if (status == ASYNCIFY_EXPIRED) {
        throw error(status, std::string(where) + ": the task expired: its start deadline passed before it started");
    }
    throw error(status, std::string(where) + ": the task was cancelled");
}

/// The release function of a value set from a std::unique_ptr<T>; also how get_ptr<T> recognises one.
template <class T> void delete_value(void* ptr) noexcept {
    delete static_cast<T*>(ptr);
}

/// Something to run once when a task reaches its terminal status (a coroutine to resume, a promise to
/// fulfil): on the thread that reports it, i.e. the worker (finished or failed) or the cancelling thread.
class continuation {
public:
    virtual ~continuation() = default;
    /// Called once with the task's terminal status, inside its on_done (the task is not published yet:
    /// waiting for it here would wait for this very call).
    virtual void run(asyncify_status status) noexcept = 0;
};

/// What a task object and the library share. Three references: the task object's (dropped when it is
/// destroyed or after get()); on_done's, dropped by on_done, which the library calls exactly once with
/// the terminal status; and the argument's, dropped with the callable: by on_done when the work function
/// returned (OK or FAILED), or else by free_arg (at once for a task that never ran, after the function
/// returned for an abandoned one). So the state outlives every call that can touch it, and nothing is
/// freed twice.
class shared_state {
public:
    shared_state() = default;
    shared_state(const shared_state&) = delete;
    shared_state& operator=(const shared_state&) = delete;
    virtual ~shared_state() { delete waiter(waiter_.load(std::memory_order_acquire)); }

    void release() noexcept {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            delete this;
        }
    }

    static void on_done(void* data, asyncify_handle, asyncify_status status, void*, std::int32_t) noexcept {
        auto* self = static_cast<shared_state*>(data);
        if (continuation* c = waiter(self->waiter_.exchange(done_mark, std::memory_order_acq_rel))) {
            c->run(status);
            delete c;
        }
        if (status == ASYNCIFY_OK || status == ASYNCIFY_FAILED) {
            self->release(); // the argument's: no free_arg follows
        }
        self->release();
    }

    static void free_arg(void* arg) noexcept {
        auto* self = static_cast<shared_state*>(arg);
        self->drop_call();
        self->release();
    }

    /// Registers `c` to run when the task reaches its terminal status. False (and `c` is deleted) when it
    /// already has: then nothing will run it, and the caller goes on at once.
    bool on_terminal(continuation* c) noexcept {
        std::uintptr_t none = 0;
        if (waiter_.compare_exchange_strong(none, reinterpret_cast<std::uintptr_t>(c), std::memory_order_acq_rel)) {
            return true;
        }
        delete c;
        return false;
    }

    /// Set by the worker when the work function threw.
    std::exception_ptr exception;

protected:
    /// Destroys the callable and its arguments, if they are still there.
    virtual void drop_call() noexcept = 0;

private:
    static constexpr std::uintptr_t done_mark = 1;

    static continuation* waiter(std::uintptr_t word) noexcept {
        return word > done_mark ? reinterpret_cast<continuation*>(word) : nullptr;
    }

    std::atomic<unsigned> refs_{3};
    /// 0: nothing registered; done_mark: terminal; else the registered continuation.
    std::atomic<std::uintptr_t> waiter_{0};
};

template <class T> class result_state : public shared_state {
public:
    /// Set by the worker when the work function returned.
    std::optional<T> value;
};

template <> class result_state<void> : public shared_state {};

struct invoke_moved {
    template <class F, class... Args> decltype(auto) operator()(F&& f, Args&&... args) const {
        return std::invoke(std::forward<F>(f), std::forward<Args>(args)...);
    }
};

/// A submitted call: the decayed callable and arguments, and where its outcome goes.
template <class T, class Fn, class... Args> class job final : public result_state<T> {
public:
    template <class F, class... A>
    explicit job(F&& f, A&&... args) : call_(std::in_place, std::forward<F>(f), std::forward<A>(args)...) {}

    /// The C work function. Every exception stops here: it is stored for get() and reported to the
    /// library as the failure code 1.
    static std::int32_t run(void* arg, void** /*out_result*/) noexcept {
        auto* self = static_cast<job*>(static_cast<shared_state*>(arg));
        std::int32_t code = 0;
        try {
            if constexpr (std::is_void_v<T>) {
                std::apply(invoke_moved{}, std::move(*self->call_));
            } else {
                self->value.emplace(std::apply(invoke_moved{}, std::move(*self->call_)));
            }
        } catch (...) {
            self->exception = std::current_exception();
            code = 1;
        }
        self->call_.reset();
        return code;
    }

private:
    void drop_call() noexcept override { call_.reset(); }

    std::optional<std::tuple<Fn, Args...>> call_;
};

template <class F, class... Args> using result_t = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;

struct task_access {
    template <class T> static task<T> make(asyncify_handle handle, result_state<T>* state) noexcept {
        return task<T>(handle, state);
    }
};

template <class F, class... Args>
task<result_t<F, Args...>> submit_to(const asyncify_submit_options& base, F&& f, Args&&... args);

template <class F, class... Args> task<result_t<F, Args...>> submit_to(asyncify_pool* pool, F&& f, Args&&... args) {
    asyncify_submit_options options{};
    check(asyncify_submit_options_init(&options, sizeof options));
    options.pool = pool;
    return submit_to(options, std::forward<F>(f), std::forward<Args>(args)...);
}

} // namespace detail

/// The owner of one submitted task's handle (move-only). Destroying it releases the handle: a task that
/// is still pending goes on, detached, and its result is discarded.
template <class T> class [[nodiscard]] task {
public:
    /// An empty task (valid() is false).
    task() noexcept = default;

    task(task&& other) noexcept
        : handle_(std::exchange(other.handle_, 0)), state_(std::exchange(other.state_, nullptr)) {}

    task& operator=(task&& other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, 0);
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    task(const task&) = delete;
    task& operator=(const task&) = delete;

    ~task() { reset(); }

    /// False for a default-constructed or moved-from task, and after get().
    bool valid() const noexcept { return handle_ != 0; }

    /// The C handle, for asyncify_wait_any and friends; still owned by this object.
    asyncify_handle native_handle() const noexcept { return handle_; }

    /// Waits for the task, then returns what f returned, rethrows what f threw (with its own type), or
    /// throws asyncify::error with ASYNCIFY_CANCELLED (cancelled) or ASYNCIFY_EXPIRED (its start deadline
    /// passed before it started). Afterwards the task is empty. Called inside the task itself it throws
    /// ASYNCIFY_E_WOULD_DEADLOCK, and the task stays valid.
    T get() { return take(wait_status(-1)); }

    /// The task as a std::future (this task is empty afterwards): its get() returns what f returned or
    /// rethrows what f threw, or asyncify::error with ASYNCIFY_CANCELLED or ASYNCIFY_EXPIRED. The promise is fulfilled
    /// on the thread that reports the task's status (the worker, the cancelling thread, or for an expired task the
    /// library's timer thread or a worker).
    std::future<T> to_future() && {
        require_valid("to_future");
        auto fulfil = std::make_unique<promise_continuation>(state_);
        std::future<T> future = fulfil->promise.get_future();
        auto* raw = fulfil.release();
        if (!state_->on_terminal(raw)) {
            // Already reported (perhaps not yet published): take the outcome as get() does.
            std::promise<T> promise;
            future = promise.get_future();
            try {
                if constexpr (std::is_void_v<T>) {
                    get();
                    promise.set_value();
                } else {
                    promise.set_value(get());
                }
            } catch (...) {
                promise.set_exception(std::current_exception());
            }
            return future;
        }
        reset();
        return future;
    }

#if defined(__cpp_impl_coroutine) && __cpp_impl_coroutine >= 201902L && __has_include(<coroutine>)
    /// C++20: `co_await std::move(t)` (or `co_await t`) suspends until the task is terminal, then gives
    /// what get() gives. The coroutine resumes on the thread that reports the status, inside the task's
    /// on_done: the worker (whose slot it holds until the coroutine suspends again or ends), the
    /// cancelling thread, or for an expired task the library's timer thread (keep the code that follows
    /// short there, or move on with resume_via: that thread notices every deadline of the process) or a
    /// worker. Use resume_via() to resume elsewhere.
    auto operator co_await() noexcept { return awaiter<inline_resume>{*this, {}}; }

    /// C++20: `co_await t.resume_via(post)` resumes the coroutine through `post`, a callable that takes a
    /// `std::function<void()>` and runs it later where you want (your event loop, an executor, a thread
    /// that drains a completion queue). `post` is called on the reporting thread and must not throw.
    template <class Post> auto resume_via(Post post) noexcept {
        return awaiter<posted_resume<Post>>{*this, posted_resume<Post>{std::move(post)}};
    }
#endif

    /// Waits until the task has finished, failed, been cancelled or expired.
    void wait() const { wait_status(-1); }

    /// Waits at most `timeout` (rounded up to whole milliseconds): true when the task has finished,
    /// failed, been cancelled or expired, false when the time ran out (the task goes on).
    template <class Rep, class Period> bool wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
        return wait_status(detail::timeout_ms(timeout)) != ASYNCIFY_TIMEOUT;
    }

    /// True when the task has finished, failed, been cancelled or expired; never blocks.
    bool ready() const {
        require_valid("ready");
        return detail::check(asyncify_poll(handle_, nullptr, nullptr)) != ASYNCIFY_PENDING;
    }

    /// Cancels the task: a queued task never runs; a running one is abandoned (get() throws at once, f
    /// runs to its end on its worker and may notice asyncify::cancel_requested()). True when the task is
    /// now cancelled (by this call or an earlier one), false when f had already returned or the task had
    /// expired (its get() still says which).
    bool cancel() {
        require_valid("cancel");
        return detail::check(asyncify_cancel(handle_)) == ASYNCIFY_CANCELLED;
    }

private:
    friend struct detail::task_access;

    task(asyncify_handle handle, detail::result_state<T>* state) noexcept : handle_(handle), state_(state) {}

    /// The outcome for a terminal `status`, read from the state (no wait); the task is empty afterwards.
    T take(asyncify_status status) {
        detail::result_state<T>* state = state_;
        if (detail::without_result(status)) {
            reset();
            detail::throw_without_result(status, "asyncify::task::get");
        }
        if (status == ASYNCIFY_FAILED) {
            std::exception_ptr exception = state->exception;
            reset();
            if (exception) {
                std::rethrow_exception(exception);
            }
            throw error(ASYNCIFY_FAILED, "asyncify::task::get: the work function failed");
        }
        if constexpr (std::is_void_v<T>) {
            reset();
        } else {
            T value = std::move(*state->value);
            reset();
            return value;
        }
    }

    /// Fulfils a promise with the outcome; keeps the state alive until then.
    struct promise_continuation final : detail::continuation {
        explicit promise_continuation(detail::result_state<T>* s) noexcept : state(s) {}
        void run(asyncify_status status) noexcept override {
            try {
                if (detail::without_result(status)) {
                    detail::throw_without_result(status, "asyncify::task");
                }
                if (status == ASYNCIFY_FAILED) {
                    if (state->exception) {
                        std::rethrow_exception(state->exception);
                    }
                    throw error(ASYNCIFY_FAILED, "asyncify::task: the work function failed");
                }
                if constexpr (std::is_void_v<T>) {
                    promise.set_value();
                } else {
                    promise.set_value(std::move(*state->value));
                }
            } catch (...) {
                promise.set_exception(std::current_exception());
            }
        }
        detail::result_state<T>* state; // kept alive by on_done's reference while this runs
        std::promise<T> promise;
    };

#if defined(__cpp_impl_coroutine) && __cpp_impl_coroutine >= 201902L && __has_include(<coroutine>)
    struct inline_resume {
        void operator()(std::coroutine_handle<> h) noexcept { h.resume(); }
    };

    template <class Post> struct posted_resume {
        Post post;
        void operator()(std::coroutine_handle<> h) noexcept {
            post(std::function<void()>([h] { h.resume(); }));
        }
    };

    /// Suspends a coroutine until the task is terminal; the status comes with the wake-up, so resuming
    /// never waits (not even inside the task's own on_done).
    template <class Resume> struct awaiter {
        task& t;
        Resume resume;
        std::optional<asyncify_status> status{};

        struct wake final : detail::continuation {
            wake(awaiter* a, std::coroutine_handle<> h) noexcept : self(a), handle(h) {}
            void run(asyncify_status s) noexcept override {
                self->status = s;
                self->resume(handle);
            }
            awaiter* self;
            std::coroutine_handle<> handle;
        };

        bool await_ready() const { return t.ready(); }

        bool await_suspend(std::coroutine_handle<> h) {
            t.require_valid("co_await");
            // False when it was reported meanwhile: go on at once, with get().
            return t.state_->on_terminal(new wake(this, h));
        }

        T await_resume() { return status ? t.take(*status) : t.get(); }
    };
#endif

    void require_valid(const char* what) const {
        if (handle_ == 0) {
            throw error(ASYNCIFY_E_INVALID_HANDLE,
                        std::string("asyncify::task::") + what + ": the task is empty (moved from or already got)");
        }
    }

    asyncify_status wait_status(std::int64_t ms) const {
        require_valid("wait");
        return detail::check(asyncify_wait(handle_, ms, nullptr, nullptr));
    }

    void reset() noexcept {
        if (handle_ != 0) {
            asyncify_release(handle_);
            handle_ = 0;
        }
        if (state_ != nullptr) {
            state_->release();
            state_ = nullptr;
        }
    }

    asyncify_handle handle_ = 0;
    detail::result_state<T>* state_ = nullptr;
};

/// Runs f(args...) on the default pool with a snapshot of this thread's override table.
/// Throws asyncify::error when the library refuses (e.g. ASYNCIFY_E_SHUT_DOWN after asyncify_shutdown).
template <class F, class... Args> task<detail::result_t<F, Args...>> submit(F&& f, Args&&... args) {
    return detail::submit_to(nullptr, std::forward<F>(f), std::forward<Args>(args)...);
}

/// A pool of worker threads of its own, with a limit on how many tasks run at once (RAII).
class pool {
public:
    /// A pool running at most `max_workers` tasks at once (0 pauses it, UINT32_MAX is unbounded).
    explicit pool(std::uint32_t max_workers = 8) { detail::check(asyncify_pool_new(max_workers, &pool_)); }

    /// A pool with all the options of the C API (prepare them with asyncify_pool_options_init).
    explicit pool(const asyncify_pool_options& options) { detail::check(asyncify_pool_new_ex(&options, &pool_)); }

    pool(pool&& other) noexcept : pool_(std::exchange(other.pool_, nullptr)) {}

    pool& operator=(pool&& other) noexcept {
        if (this != &other) {
            close();
            pool_ = std::exchange(other.pool_, nullptr);
        }
        return *this;
    }

    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;

    /// Cancels the queued tasks and waits for the running ones. Must not run inside one of this pool's
    /// own tasks: the library refuses (ASYNCIFY_E_WOULD_DEADLOCK) and the pool is then leaked.
    ~pool() { close(); }

    /// Runs f(args...) on this pool; as asyncify::submit.
    template <class F, class... Args> task<detail::result_t<F, Args...>> submit(F&& f, Args&&... args) {
        return detail::submit_to(native(), std::forward<F>(f), std::forward<Args>(args)...);
    }

    /// Raising the limit starts waiting tasks at once; lowering it interrupts nothing; 0 pauses.
    void set_max_workers(std::uint32_t n) { detail::check(asyncify_set_max_workers(native(), n)); }

    std::uint32_t max_workers() const {
        std::uint32_t n = 0;
        detail::check(asyncify_get_max_workers(native(), &n));
        return n;
    }

    asyncify_pool_stats stats() const {
        asyncify_pool_stats out{};
        out.struct_size = static_cast<std::uint32_t>(sizeof out);
        detail::check(asyncify_stats(native(), &out));
        return out;
    }

    /// Shuts the pool down now: queued tasks are cancelled, running ones waited for up to `timeout`.
    /// True when all have finished, false when some still run (they finish on their own). The pool is
    /// empty afterwards, except when called from one of its own tasks (ASYNCIFY_E_WOULD_DEADLOCK).
    template <class Rep, class Period> bool shutdown(const std::chrono::duration<Rep, Period>& timeout) {
        asyncify_pool* p = native();
        asyncify_status status = asyncify_pool_free(p, detail::timeout_ms(timeout));
        if (status != ASYNCIFY_E_WOULD_DEADLOCK) {
            pool_ = nullptr;
        }
        return detail::check(status) == ASYNCIFY_OK;
    }

    /// The queue wait (ASYNCIFY_LATENCY_QUEUE_WAIT) or run time (ASYNCIFY_LATENCY_RUN) figures of a pool
    /// made with ASYNCIFY_POOL_RECORD_LATENCY; throws ASYNCIFY_E_NOT_FOUND for one that does not record.
    asyncify_latency latency(std::uint32_t which) const {
        asyncify_latency out{};
        out.struct_size = static_cast<std::uint32_t>(sizeof out);
        detail::check(asyncify_pool_latency(native(), which, &out));
        return out;
    }

    /// Begins the shutdown (as shutdown() does) and waits up to `timeout` without giving the pool up:
    /// true once no task runs and every worker thread has left, false before that. Call it again to
    /// go on waiting (in slices, e.g. to stay responsive); the destructor then frees at once.
    template <class Rep, class Period> bool close_for(const std::chrono::duration<Rep, Period>& timeout) {
        return detail::check(asyncify_pool_close(native(), detail::timeout_ms(timeout))) == ASYNCIFY_OK;
    }

    /// The C pool, still owned by this object; NULL after shutdown() or a move.
    asyncify_pool* native_handle() const noexcept { return pool_; }

private:
    asyncify_pool* native() const {
        if (pool_ == nullptr) {
            throw error(ASYNCIFY_E_SHUT_DOWN, "asyncify::pool: the pool was shut down or moved from");
        }
        return pool_;
    }

    void close() noexcept {
        if (pool_ != nullptr) {
            asyncify_pool_free(pool_, -1);
            pool_ = nullptr;
        }
    }

    asyncify_pool* pool_ = nullptr;
};

/// A limiter (RAII): at most `max_running` callables holding it run at once and, with a rate, at most
/// `rate_per_s` of them start per second (a token bucket of `burst` tokens that starts full), whatever pool
/// they run on. One per model, provider or tenant, shared by every pool and thread; pass its address as
/// submit_options::limiter. A task waits for its limiter (FIFO among that limiter's tasks, holding no pool
/// slot) before it enters its pool's queue, and holds its place until f returns.
///
/// Destroying the limiter frees the caller's reference only: tasks submitted with it keep it alive, and
/// those still waiting are admitted by it as before. Movable, not copyable.
class limiter {
public:
    /// A limiter of `max_running` at once (0 pauses it, UINT32_MAX is no cap), at most `rate_per_s` starts
    /// a second (0: no rate cap) with a bucket of `burst` (0 means 1), named `name` (shown in messages).
    /// A negative, NaN or infinite rate, or a name that is not UTF-8, throws ASYNCIFY_E_INVALID_ARGUMENT.
    explicit limiter(std::uint32_t max_running, double rate_per_s = 0.0, std::uint32_t burst = 0,
                     std::string_view name = {})
        : name_(name) {
        if (name_.find('\0') != std::string::npos) {
            throw error(ASYNCIFY_E_INVALID_ARGUMENT, "asyncify::limiter: a name must not contain a NUL character");
        }
        asyncify_limiter_options options{};
        detail::check(asyncify_limiter_options_init(&options, sizeof options));
        options.max_running = max_running;
        options.rate_per_s = rate_per_s;
        options.burst = burst;
        options.name = name_.c_str();
        detail::check(asyncify_limiter_new(&options, &lim_));
    }

    /// A limiter with all the options of the C API (prepare them with asyncify_limiter_options_init).
    explicit limiter(const asyncify_limiter_options& options) : name_(options.name != nullptr ? options.name : "") {
        detail::check(asyncify_limiter_new(&options, &lim_));
    }

    limiter(limiter&& other) noexcept
        : lim_(std::exchange(other.lim_, nullptr)), name_(std::exchange(other.name_, std::string())) {}

    limiter& operator=(limiter&& other) noexcept {
        if (this != &other) {
            close();
            lim_ = std::exchange(other.lim_, nullptr);
            name_ = std::exchange(other.name_, std::string());
        }
        return *this;
    }

    limiter(const limiter&) = delete;
    limiter& operator=(const limiter&) = delete;

    /// Frees this reference; tasks that hold the limiter keep it alive until they are done.
    ~limiter() { close(); }

    /// Changes the cap and the rate at once, for every pool: raising either admits waiting tasks at once,
    /// lowering interrupts nothing. A bad rate throws ASYNCIFY_E_INVALID_ARGUMENT and changes nothing.
    void set(std::uint32_t max_running, double rate_per_s = 0.0, std::uint32_t burst = 0) {
        detail::check(asyncify_limiter_set(native(), max_running, rate_per_s, burst));
    }

    /// The counters: the cap, tasks waiting, places held (running), admitted, expired and cancelled while
    /// waiting.
    asyncify_limiter_stats stats() const {
        asyncify_limiter_stats out{};
        out.struct_size = static_cast<std::uint32_t>(sizeof out);
        detail::check(asyncify_limiter_stats_get(native(), &out));
        return out;
    }

    /// The queue wait (ASYNCIFY_LATENCY_QUEUE_WAIT: from submit, the wait for this limiter included, to the
    /// start) or run time (ASYNCIFY_LATENCY_RUN) of this limiter's tasks that ran on pools made with
    /// ASYNCIFY_POOL_RECORD_LATENCY; count is 0 until one did.
    asyncify_latency latency(std::uint32_t which) const {
        asyncify_latency out{};
        out.struct_size = static_cast<std::uint32_t>(sizeof out);
        detail::check(asyncify_limiter_latency(native(), which, &out));
        return out;
    }

    /// The name given at construction ("" when none).
    const std::string& name() const noexcept { return name_; }

    /// The C limiter, still owned by this object; NULL after a move.
    asyncify_limiter* native_handle() const noexcept { return lim_; }

private:
    asyncify_limiter* native() const {
        if (lim_ == nullptr) {
            throw error(ASYNCIFY_E_INVALID_HANDLE, "asyncify::limiter: the limiter was moved from");
        }
        return lim_;
    }

    void close() noexcept {
        if (lim_ != nullptr) {
            asyncify_limiter_free(lim_);
            lim_ = nullptr;
        }
    }

    asyncify_limiter* lim_ = nullptr;
    std::string name_;
};

/// The default pool's counters (exact when it is quiet).
inline asyncify_pool_stats stats() {
    asyncify_pool_stats out{};
    out.struct_size = static_cast<std::uint32_t>(sizeof out);
    detail::check(asyncify_stats(nullptr, &out));
    return out;
}

/// An immutable snapshot of an override table, as a value: copies share it, `with` and `without`
/// return a new context in O(log n) and leave this one unchanged (like Python's contextvars).
class context {
public:
    /// A context with no keys.
    context() : context(make(asyncify_context_empty)) {}

    /// This thread's table now (what a task submitted now would get), in O(1).
    static context capture() { return context(make(asyncify_context_capture)); }

    /// This context with `key` set to a copy of the bytes of `value`.
    context with(std::string_view key, std::string_view value) const {
        detail::c_key k(key);
        asyncify_context* out = nullptr;
        detail::check(asyncify_context_with(native(), k.c_str(), value.data(), value.size(), &out));
        return context(out);
    }

    /// This context with `key` set to a pointer value the contexts now own (deleted with `delete` once
    /// no table, task or context holds it). On error `value` keeps it.
    template <class T> context with(std::string_view key, std::unique_ptr<T>&& value) const {
        static_assert(!std::is_array_v<T>, "asyncify::context::with takes std::unique_ptr<T> of a single object");
        detail::c_key k(key);
        using plain = std::remove_cv_t<T>;
        asyncify_context* out = nullptr;
        void* ptr = const_cast<plain*>(value.get());
        detail::check(asyncify_context_with_ptr(native(), k.c_str(), ptr, &detail::delete_value<plain>, &out));
        value.release();
        return context(out);
    }

    /// This context without `key` (the same keys when it is absent).
    context without(std::string_view key) const {
        detail::c_key k(key);
        asyncify_context* out = nullptr;
        detail::check(asyncify_context_without(native(), k.c_str(), &out));
        return context(out);
    }

    /// The bytes of `key` in this context (the global layer is not consulted); std::nullopt when absent.
    std::optional<std::string> get(std::string_view key) const {
        detail::c_key k(key);
        std::size_t len = 0;
        asyncify_status status = asyncify_context_get(native(), k.c_str(), nullptr, 0, &len);
        if (status == ASYNCIFY_E_NOT_FOUND) {
            return std::nullopt;
        }
        std::string value(len, '\0');
        if (status == ASYNCIFY_E_BUFFER_TOO_SMALL) {
            status = asyncify_context_get(native(), k.c_str(), value.data(), value.size(), &len);
        }
        detail::check(status);
        return value;
    }

    /// The pointer value of `key`; nullptr when absent. With T (not void) it must have been set from a
    /// std::unique_ptr<T>, else this throws ASYNCIFY_E_INVALID_ARGUMENT. Valid while this context lives.
    template <class T = void> T* get_ptr(std::string_view key) const {
        detail::c_key k(key);
        void* ptr = nullptr;
        asyncify_free_fn release = nullptr;
        asyncify_status status = asyncify_context_get_ptr_ex(native(), k.c_str(), &ptr, &release);
        if (status == ASYNCIFY_E_NOT_FOUND) {
            return nullptr;
        }
        detail::check(status);
        if constexpr (!std::is_void_v<T>) {
            if (release != &detail::delete_value<std::remove_cv_t<T>>) {
                throw error(ASYNCIFY_E_INVALID_ARGUMENT, "asyncify::context::get_ptr<T>: \"" + std::string(key) +
                                                             "\" holds a pointer not set from a std::unique_ptr<T>");
            }
        }
        return static_cast<T*>(ptr);
    }

    /// The number of keys.
    std::size_t size() const {
        std::size_t n = 0;
        detail::check(asyncify_context_count(native(), &n));
        return n;
    }

    /// The keys, in order.
    std::vector<std::string> keys() const {
        std::vector<std::string> out;
        detail::check(asyncify_context_visit(native(), &collect_key, &out));
        return out;
    }

    /// Runs f() here, on this thread, with this context installed as the thread's table, then restores
    /// the table; returns what f returns (an exception passes through, after the restore).
    template <class F> std::invoke_result_t<F&> run(F&& f) const {
        using R = std::invoke_result_t<F&>;
        struct call {
            F* fn;
            std::optional<std::conditional_t<std::is_void_v<R>, char, R>> value;
            std::exception_ptr exception;
            static std::int32_t work(void* arg, void**) noexcept {
                auto* self = static_cast<call*>(arg);
                try {
                    if constexpr (std::is_void_v<R>) {
                        (*self->fn)();
                    } else {
                        self->value.emplace((*self->fn)());
                    }
                } catch (...) {
                    self->exception = std::current_exception();
                }
                return 0;
            }
        } c{&f, std::nullopt, nullptr};
        detail::check(asyncify_context_run(native(), &call::work, &c, nullptr, nullptr));
        if (c.exception) {
            std::rethrow_exception(c.exception);
        }
        if constexpr (!std::is_void_v<R>) {
            return std::move(*c.value);
        }
    }

    /// The C context, still owned by this object (and its copies).
    const asyncify_context* native_handle() const noexcept { return ctx_.get(); }

private:
    explicit context(asyncify_context* owned) : ctx_(owned, [](asyncify_context* c) { asyncify_context_free(c); }) {}

    static asyncify_context* make(asyncify_status (*fn)(asyncify_context**)) {
        asyncify_context* out = nullptr;
        detail::check(fn(&out));
        return out;
    }

    static int collect_key(void* out, const char* key, std::size_t len, int, const void*, std::size_t) {
        static_cast<std::vector<std::string>*>(out)->emplace_back(key, len);
        return 0;
    }

    const asyncify_context* native() const noexcept { return ctx_.get(); }

    std::shared_ptr<asyncify_context> ctx_;
};

/// How to submit: which pool, with which context, with which flags.
struct submit_options {
    /// nullptr: the default pool.
    asyncify::pool* pool = nullptr;
    /// The table the task runs with; std::nullopt: a snapshot of this thread's table at submit.
    std::optional<asyncify::context> context{};
    /// ASYNCIFY_SUBMIT_EMPTY_CONTEXT runs with an empty table. (DETACHED is not for C++ tasks: a
    /// task object that is destroyed without get() detaches already.)
    std::uint32_t flags = 0;
    /// nullptr: none. Otherwise the task waits until this limiter admits it, then enters its pool's queue;
    /// the task keeps the limiter alive, so the asyncify::limiter may be destroyed right after submit.
    const asyncify::limiter* limiter = nullptr;
    /// std::nullopt: no deadline. Otherwise a task that has not started this long after submit never runs:
    /// its get() (or future, or co_await) throws asyncify::error with ASYNCIFY_EXPIRED. Any std::chrono
    /// duration, rounded up to whole milliseconds; one that is not positive or longer than UINT32_MAX ms
    /// (about 49.7 days) makes submit throw ASYNCIFY_E_INVALID_ARGUMENT. A running task is never interrupted.
    std::optional<std::chrono::duration<double, std::milli>> start_within{};
};

/// Runs f(args...) as `options` say; as asyncify::submit. The context and the limiter, if any, are
/// referenced by the task: they may be destroyed right after.
template <class F, class... Args>
task<detail::result_t<F, Args...>> submit(const submit_options& options, F&& f, Args&&... args) {
    if (options.flags & ASYNCIFY_SUBMIT_DETACHED) {
        throw error(ASYNCIFY_E_INVALID_ARGUMENT,
                    "asyncify::submit: ASYNCIFY_SUBMIT_DETACHED is for C handles; destroy the task instead");
    }
    asyncify_submit_options c{};
    detail::check(asyncify_submit_options_init(&c, sizeof c));
    c.pool = options.pool != nullptr ? options.pool->native_handle() : nullptr;
    if (options.pool != nullptr && c.pool == nullptr) {
        throw error(ASYNCIFY_E_SHUT_DOWN, "asyncify::submit: the pool was shut down or moved from");
    }
    c.context = options.context ? options.context->native_handle() : nullptr;
    c.flags = options.flags;
    if (options.limiter != nullptr) {
        c.limiter = options.limiter->native_handle();
        if (c.limiter == nullptr) {
            throw error(ASYNCIFY_E_INVALID_HANDLE, "asyncify::submit: the limiter was moved from");
        }
    }
    if (options.start_within) {
        c.start_within_ms = detail::start_within_ms(*options.start_within);
    }
    return detail::submit_to(c, std::forward<F>(f), std::forward<Args>(args)...);
}

/// A completion queue (RAII): tasks submitted through the C API with `opts.cq` set (and no on_done)
/// complete into it, and an event loop watches fd(). C++ tasks (asyncify::task) complete through their
/// own objects instead; use resume_via() to hand a coroutine's resumption to your loop.
class completion_queue {
public:
    completion_queue() { detail::check(asyncify_cq_new(&cq_)); }
    completion_queue(const completion_queue&) = delete;
    completion_queue& operator=(const completion_queue&) = delete;
    /// Frees the queue: later completions stay on their handles; undrained results go to free_result.
    ~completion_queue() { asyncify_cq_free(cq_); }

    /// Readable while completions wait (for poll/epoll/uv_poll). Owned by the queue: do not read it.
    int fd() const {
        std::int32_t out = -1;
        detail::check(asyncify_cq_fd(cq_, &out));
        return out;
    }

    /// Waits up to `timeout` for a completion: true when one is ready.
    template <class Rep, class Period> bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
        return detail::check(asyncify_cq_wait(cq_, detail::timeout_ms(timeout))) == ASYNCIFY_OK;
    }

    /// Up to `max` completions, oldest first; never blocks. Their results are now yours.
    std::vector<asyncify_completion> drain(std::size_t max = 64) {
        std::vector<asyncify_completion> out(max);
        std::size_t n = 0;
        detail::check(asyncify_cq_drain(cq_, out.data(), out.size(), &n));
        out.resize(n);
        return out;
    }

    /// The C queue, for asyncify_submit_options::cq; still owned by this object.
    asyncify_cq* native_handle() const noexcept { return cq_; }

private:
    asyncify_cq* cq_ = nullptr;
};

/// An override scope (like `with dspy.context(...)`): remembers this thread's table when constructed,
/// optionally sets string values, and restores the table exactly when destroyed, whatever was set or
/// removed meanwhile. Scopes nest; each must end on the thread (and in the task) that began it.
///
/// Coroutines: a scope must not be held across a `co_await` that may resume on another thread (the
/// override would stay in the first thread's table, and this thread's would not be restored). Builds
/// without NDEBUG detect it when the scope ends (an assert); to give a coroutine's tasks overrides, pass
/// an asyncify::context in submit_options, or run code under context::run.
class scope {
public:
    scope() : owner_(std::this_thread::get_id()) { detail::check(asyncify_scope_enter(&token_)); }

    /// Begins a scope and sets each key to its string value in it.
    scope(std::initializer_list<std::pair<std::string_view, std::string_view>> values);

    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    /// Restores the table. A scope ended out of order (which C++ block scope never does) is refused by
    /// the library and leaves the table as it is.
    ~scope() {
        assert(owner_ == std::this_thread::get_id() &&
               "asyncify::scope ended on another thread than it began on (held across a co_await?)");
        asyncify_scope_exit(token_);
    }

private:
    std::uint64_t token_ = 0;
    std::thread::id owner_;
};

/// Sets `key` to a copy of the bytes of `value` in this thread's table.
inline void set(std::string_view key, std::string_view value) {
    detail::c_key k(key);
    detail::check(asyncify_override_set(k.c_str(), value.data(), value.size()));
}

/// Sets `key` to a pointer value the tables now own: it is deleted (with `delete`) once no table, task
/// or context holds it any more, on whichever thread that happens. On error `value` keeps it.
template <class T> void set(std::string_view key, std::unique_ptr<T>&& value) {
    static_assert(!std::is_array_v<T>, "asyncify::set takes std::unique_ptr<T> of a single object");
    detail::c_key k(key);
    using plain = std::remove_cv_t<T>;
    void* ptr = const_cast<plain*>(value.get());
    detail::check(asyncify_override_set_ptr(k.c_str(), ptr, &detail::delete_value<plain>));
    value.release();
}

/// Sets `key` to a raw pointer, as asyncify_override_set_ptr does: `release` (nullable) is called on it
/// once no table, task or context holds it any more.
inline void set(std::string_view key, void* ptr, asyncify_free_fn release) {
    detail::c_key k(key);
    detail::check(asyncify_override_set_ptr(k.c_str(), ptr, release));
}

/// The bytes of `key` (this thread's table, then the global layer); std::nullopt when it is not set.
/// Throws ASYNCIFY_E_INVALID_ARGUMENT when the key holds a pointer.
inline std::optional<std::string> get(std::string_view key) {
    detail::c_key k(key);
    std::string value(64, '\0');
    for (;;) {
        std::size_t len = 0;
        asyncify_status status = asyncify_override_get(k.c_str(), value.data(), value.size(), &len);
        if (status == ASYNCIFY_E_NOT_FOUND) {
            return std::nullopt;
        }
        if (status == ASYNCIFY_E_BUFFER_TOO_SMALL) {
            // (The global layer may change between two calls, so this asks again until it fits.)
            value.resize(len);
            continue;
        }
        detail::check(status);
        value.resize(len);
        return value;
    }
}

/// The pointer value of `key`; nullptr when it is not set (or set to nullptr). With T (not void), the
/// value must have been set from a std::unique_ptr<T>, else this throws ASYNCIFY_E_INVALID_ARGUMENT;
/// get_ptr<void>() takes any pointer value. The pointer stays valid while this thread's table (or, in a
/// task, the task) holds it.
template <class T = void> T* get_ptr(std::string_view key) {
    detail::c_key k(key);
    void* ptr = nullptr;
    asyncify_free_fn release = nullptr;
    asyncify_status status = asyncify_override_get_ptr_ex(k.c_str(), &ptr, &release);
    if (status == ASYNCIFY_E_NOT_FOUND) {
        return nullptr;
    }
    detail::check(status);
    if constexpr (!std::is_void_v<T>) {
        if (release != &detail::delete_value<std::remove_cv_t<T>>) {
            throw error(ASYNCIFY_E_INVALID_ARGUMENT,
                        "asyncify::get_ptr<T>: \"" + std::string(key) +
                            "\" holds a pointer that was not set from a std::unique_ptr<T>");
        }
    }
    return static_cast<T*>(ptr);
}

/// Removes `key` from this thread's table: true when it was there.
inline bool remove(std::string_view key) {
    detail::c_key k(key);
    asyncify_status status = asyncify_override_remove(k.c_str());
    if (status == ASYNCIFY_E_NOT_FOUND) {
        return false;
    }
    detail::check(status);
    return true;
}

/// Inside a task: true once the task has been cancelled, so long work can stop early.
inline bool cancel_requested() noexcept {
    return asyncify_cancel_requested();
}

/// The default pool's limit.
inline std::uint32_t max_workers() {
    std::uint32_t n = 0;
    detail::check(asyncify_get_max_workers(nullptr, &n));
    return n;
}

/// Sets the default pool's limit.
inline void set_max_workers(std::uint32_t n) {
    detail::check(asyncify_set_max_workers(nullptr, n));
}

/// The library's version ("MAJOR.MINOR.PATCH"), which may be newer than the header's
/// ASYNCIFY_VERSION_STRING within the same major version.
inline const char* version() noexcept {
    return asyncify_version();
}

inline scope::scope(std::initializer_list<std::pair<std::string_view, std::string_view>> values) : scope() {
    // The delegated constructor has finished, so if a set throws, ~scope restores the table.
    for (const auto& [key, value] : values) {
        set(key, value);
    }
}

namespace detail {

template <class F, class... Args>
task<result_t<F, Args...>> submit_to(const asyncify_submit_options& base, F&& f, Args&&... args) {
    using T = result_t<F, Args...>;
    static_assert(std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>,
                  "asyncify::submit(f, args...): f must be callable with rvalues of the decayed args");
    static_assert(!std::is_reference_v<T>,
                  "asyncify::submit: f must return a value, not a reference (return a copy, a pointer or a "
                  "std::reference_wrapper)");
    using job_t = job<T, std::decay_t<F>, std::decay_t<Args>...>;

    std::unique_ptr<job_t> owned(new job_t(std::forward<F>(f), std::forward<Args>(args)...));
    shared_state* state = owned.get();

    asyncify_submit_options options = base;
    options.on_done = &shared_state::on_done;
    options.on_done_data = state;
    options.free_arg = &shared_state::free_arg;

    asyncify_handle handle = 0;
    // On failure nothing runs and no callback is called: `owned` still frees the job.
    check(asyncify_submit(&job_t::run, state, &options, &handle));
    return task_access::make<T>(handle, owned.release());
}

} // namespace detail
} // namespace asyncify

#endif // ASYNCIFY_HPP
