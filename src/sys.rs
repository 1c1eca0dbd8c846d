//! The operating-system calls the engine needs that std does not offer: the
//! completion queue's descriptor (an eventfd, or a pipe), the fork handlers,
//! waiting on an atomic word (a futex, or polling elsewhere), and the worker
//! threads (started with `pthread_create` so that a foreign unwind out of a
//! work function is sound; see [`ThreadBody`]). The only OS-specific module.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_void, CString};
use std::io;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
#[cfg(not(all(test, loom)))]
use std::sync::atomic::AtomicU32;
#[cfg(not(all(test, loom)))]
use std::time::Instant;

use crate::local;

/// A descriptor that is readable exactly while its owner says so, for an
/// event loop to watch: a completion queue's. An eventfd on Linux; a
/// non-blocking pipe elsewhere, or where `ASYNCIFY_CQ_PIPE=1` is set when it
/// is made (so the portable path is tested on Linux too).
pub(crate) struct Signal {
    read: OwnedFd,
    /// The pipe's other end; `None` for an eventfd (one descriptor for both).
    write: Option<OwnedFd>,
}

impl Signal {
    pub(crate) fn new() -> io::Result<Signal> {
        let forced_pipe = std::env::var_os("ASYNCIFY_CQ_PIPE").is_some_and(|v| v == "1");
        #[cfg(target_os = "linux")]
        if !forced_pipe {
            // SAFETY: eventfd takes no pointers; it returns a new descriptor or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let read = unsafe { OwnedFd::from_raw_fd(fd) };
            return Ok(Signal { read, write: None });
        }
        let _ = forced_pipe;
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            set_nonblocking_cloexec(fd.as_raw_fd())?;
        }
        Ok(Signal {
            read,
            write: Some(write),
        })
    }

    /// The descriptor to watch.
    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Makes the descriptor readable, with a new wake-up even when it already
    /// was (an edge for edge-triggered loops).
    pub(crate) fn raise(&self) {
        let fd = self.write.as_ref().unwrap_or(&self.read).as_raw_fd();
        let one = 1u64.to_ne_bytes();
        // An eventfd takes 8 bytes, a pipe 1. Neither write can fail here
        // but for a full pipe, which is readable already.
        let len = if self.write.is_some() { 1 } else { one.len() };
        // SAFETY: `one` holds at least `len` readable bytes.
        let _ = unsafe { libc::write(fd, one.as_ptr().cast(), len) };
    }

    /// Makes the descriptor unreadable.
    pub(crate) fn clear(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` has room for the bytes asked for.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            // An eventfd is emptied by one read; a pipe when a read finds nothing.
            if n <= 0 || self.write.is_none() {
                break;
            }
        }
    }
}

fn set_nonblocking_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this module owns, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Registers `prepare`, `parent` and `child` with `pthread_atfork`.
pub(crate) fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> io::Result<()> {
    // SAFETY: the handlers are plain functions that live as long as the
    // process (this library is never unloaded while registered handlers run).
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The smallest stack a thread may be given (`PTHREAD_STACK_MIN`).
pub(crate) fn min_stack_size() -> usize {
    libc::PTHREAD_STACK_MIN
}

/// What a thread started by [`spawn_thread`] does: it asks for the next
/// foreign call, makes it, reports back, until told to exit.
///
/// Every call into the embedding program's code that may end the thread
/// (`pthread_exit`, which an interpreter's finalization uses on threads that
/// try to re-enter it) is made from the thread's start routine or a function
/// it calls whose frame, like its own, holds nothing to drop: the forced
/// unwind crosses only such plain old frames (which RFC 2945 defines for a
/// forced unwind) and foreign ones, never a Rust frame with pending
/// destructors, and never a `catch_unwind` or an `extern "C"` frame (both
/// abort on a foreign unwind). That covers the work function, the thread
/// hooks, and, through [`call_foreign`], every `on_done`, free and release
/// function the engine calls on the thread between them (a clone function,
/// whose result the engine needs at once, is still called in place).
pub(crate) trait ThreadBody: Send + 'static {
    /// The next call to make. Runs engine code only.
    fn next(&mut self) -> ForeignCall;
    /// After the body's last call (from [`ThreadBody::next`] or from here)
    /// returned `code` and `result`: the next call when the body has it at
    /// once (it comes after any calls deferred meanwhile, as `next`'s
    /// does); None: `next` says, once the deferred calls are made.
    fn finish(&mut self, code: i32, result: *mut c_void) -> Option<ForeignCall>;
}

/// A call into the embedding program.
#[derive(Clone, Copy)]
pub(crate) enum ForeignCall {
    /// A work function: `code = work(arg, &result)`.
    Work(WorkFn, *mut c_void),
    /// A thread hook, free or release function: `f(ptr)`.
    Unary(UnaryFn, *mut c_void),
    /// `on_done(user_data, handle, status, result, code)`.
    Done(DoneFn, *mut c_void, u64, i32, *mut c_void, i32),
    /// A task hook: `hook(hook_data, handle, status, queue_wait_ns, run_ns)`.
    TaskHook(TaskHookFn, *mut c_void, u64, i32, u64, u64),
    /// No call: the body wants to be asked again once the calls its step
    /// deferred are made (never made itself).
    Again,
    /// The thread returns (its body is dropped first).
    Exit,
}

/// `asyncify_work_fn`.
pub(crate) type WorkFn = extern "C" fn(*mut c_void, *mut *mut c_void) -> i32;
/// `asyncify_free_fn`, `asyncify_thread_hook`.
pub(crate) type UnaryFn = extern "C" fn(*mut c_void);
/// `asyncify_done_fn`.
pub(crate) type DoneFn = extern "C" fn(*mut c_void, u64, i32, *mut c_void, i32);
/// `asyncify_task_hook`.
pub(crate) type TaskHookFn = extern "C" fn(*mut c_void, u64, i32, u64, u64);
type UnwindingTaskHookFn = extern "C-unwind" fn(*mut c_void, u64, i32, u64, u64);
type UnwindingWorkFn = extern "C-unwind" fn(*mut c_void, *mut *mut c_void) -> i32;
type UnwindingUnaryFn = extern "C-unwind" fn(*mut c_void);
type UnwindingDoneFn = extern "C-unwind" fn(*mut c_void, u64, i32, *mut c_void, i32);

/// What the engine left for the start routine to do after its step: a
/// foreign call, or engine code that must come after the calls before it.
enum Deferred {
    Call(ForeignCall),
    Engine(Box<dyn FnOnce()>),
}

thread_local! {
    /// The calls deferred for the start routine. How many it holds is
    /// `local::Cells::deferred_len`: read on every engine step, and, in a
    /// thread-local with no destructor, cheaper to reach than the queue.
    /// Calls are deferred while `local::Cells::in_engine_step`: a thread
    /// started by [`spawn_thread`] runs engine code between its foreign
    /// calls.
    static DEFERRED: DeferredQueue = const { DeferredQueue(RefCell::new(VecDeque::new())) };
}

/// Queues `deferred` for this thread's start routine.
fn defer(deferred: Deferred) {
    DEFERRED.with(|d| d.0.borrow_mut().push_back(deferred));
    local::with(|c| c.deferred_len.set(c.deferred_len.get() + 1));
}

/// True when calls are deferred on this thread.
#[inline(always)]
fn any_deferred() -> bool {
    local::with(|c| c.deferred_len.get()) > 0
}

/// The calls an engine step deferred. Empty whenever the thread ends on its
/// own; a thread ended inside a foreign call leaks what is left (engine
/// continuations that may hold the last reference to a table) rather than
/// drop it on a thread that is going away.
struct DeferredQueue(RefCell<VecDeque<Deferred>>);

impl Drop for DeferredQueue {
    fn drop(&mut self) {
        if local::with(|c| c.in_foreign_call.get()) {
            std::mem::forget(std::mem::take(self.0.get_mut()));
        }
    }
}

fn in_engine_step() -> bool {
    local::with(|c| c.in_engine_step.get())
}

/// Nanoseconds on the monotonic clock, never 0, for durations (queue wait
/// and run time): a timestamp that differences take with one subtraction.
/// Where the kernel keeps its time by the CPU's time-stamp counter, the
/// counter is read directly and scaled (see [`tsc`]): about 60% of a
/// `clock_gettime` through the vDSO, three of which a task recording
/// latency makes.
///
/// Where to read it: on the x86 CPUs measured, reading the counter waits
/// until the memory accesses before it are done (a read after a cache miss
/// costs the miss, which would otherwise overlap with what follows). So the
/// hot paths read it before their misses and locked instructions, not after
/// them: a submit as the last step of filling the task's slot, a worker
/// right before it pops the task. Not inlined: those paths stay short where
/// nothing is timed.
#[inline(never)]
pub(crate) fn now_ns() -> u64 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if let Some(ns) = tsc::now_ns() {
        return ns;
    }
    clock_ns()
}

/// The monotonic clock (that of `Instant`) in nanoseconds, never 0.
fn clock_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write; CLOCK_MONOTONIC
    // cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
        .max(1)
}

/// The time-stamp counter as a clock, where the kernel's clock source is
/// the counter itself (so it runs at a constant rate, in step on every CPU).
/// Scaled to the monotonic clock without a pause: the first reading anchors
/// both clocks, readings go to `clock_gettime` until [`CALIBRATION_NS`]
/// have passed, and the rate measured then is used from there on. A reading
/// from the counter equals the monotonic clock at that moment, so a duration
/// across the switch is right too.
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod tsc {
    use once_cell::sync::OnceCell;

    /// How long the rate is measured over: its error (the clock's reading
    /// jitter over this) is a few parts in a million.
    const CALIBRATION_NS: u64 = 10_000_000;

    struct Anchor {
        ticks: u64,
        ns: u64,
    }

    /// Nanoseconds per tick, times 2^32.
    struct Rate(u64);

    /// `None`: the counter is not the kernel's clock source here.
    static ANCHOR: OnceCell<Option<Anchor>> = OnceCell::new();
    static RATE: OnceCell<Rate> = OnceCell::new();

    fn ticks() -> u64 {
        // SAFETY: RDTSC exists on every x86_64 CPU and reads a register.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn counter_is_the_clock() -> bool {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|source| source.trim() == "tsc")
    }

    /// The counter's reading in nanoseconds, or None where the counter is
    /// not used (or not yet calibrated: the caller reads the clock).
    #[inline]
    pub(super) fn now_ns() -> Option<u64> {
        let anchor = ANCHOR
            .get_or_init(|| {
                counter_is_the_clock().then(|| Anchor {
                    ticks: ticks(),
                    ns: super::clock_ns(),
                })
            })
            .as_ref()?;
        let rate = match RATE.get() {
            Some(rate) => rate,
            None => return calibrate(anchor),
        };
        let elapsed = (u128::from(ticks().wrapping_sub(anchor.ticks)) * u128::from(rate.0)) >> 32;
        Some(anchor.ns.wrapping_add(elapsed as u64).max(1))
    }

    /// Before the rate is known: the clock's reading, and the rate set
    /// once the calibration time has passed since the anchor.
    #[cold]
    fn calibrate(anchor: &Anchor) -> Option<u64> {
        let (ticks, ns) = (ticks(), super::clock_ns());
        let (dt, dn) = (
            ticks.wrapping_sub(anchor.ticks),
            ns.saturating_sub(anchor.ns),
        );
        if dn >= CALIBRATION_NS && dt > 0 {
            let _ = RATE.set(Rate(((u128::from(dn) << 32) / u128::from(dt)) as u64));
        }
        Some(ns)
    }
}

/// True on a worker thread between its foreign calls: foreign calls made
/// now are deferred to its start routine.
pub(crate) fn deferring() -> bool {
    in_engine_step()
}

/// True on a worker between its foreign calls when some are deferred: its
/// body then asks to be called again after them (`ForeignCall::Again`).
pub(crate) fn calls_deferred() -> bool {
    in_engine_step() && any_deferred()
}

/// `run(value)` now, unless this is a worker between its foreign calls with
/// calls deferred already: then `defer(value)` takes its place after them.
fn now_or_after_deferred<T>(value: T, run: impl FnOnce(T), deferred: impl FnOnce(T) -> Deferred) {
    if calls_deferred() {
        defer(deferred(value));
    } else {
        run(value);
    }
}
/// Makes `call` now; or, on a worker thread between its foreign calls, has
/// its start routine make it right after the current engine step, in the
/// order of the calls to this function.
pub(crate) fn call_foreign(call: ForeignCall) {
    if in_engine_step() {
        defer(Deferred::Call(call));
    } else {
        make_call(call);
    }
}

/// Runs `f` after the foreign calls deferred before it (engine code that
/// must follow an `on_done`): now, unless this is a worker between its
/// foreign calls with some deferred already.
pub(crate) fn then(f: impl FnOnce() + 'static) {
    now_or_after_deferred(f, |f| f(), |f| Deferred::Engine(Box::new(f)));
}
/// Makes one foreign call; returns what a work function returned. Its
/// frame holds nothing to drop (see [`ThreadBody`]).
fn make_call(call: ForeignCall) -> (i32, *mut c_void) {
    let mut result: *mut c_void = std::ptr::null_mut();
    let code = match call {
        ForeignCall::Work(work, arg) => {
            // SAFETY: the same function with the unwinding ABI string: a
            // foreign unwind out of it is then defined, not undefined.
            let work = unsafe { std::mem::transmute::<WorkFn, UnwindingWorkFn>(work) };
            set_in_foreign_call(true);
            let code = work(arg, &mut result);
            set_in_foreign_call(false);
            code
        }
        ForeignCall::Unary(f, ptr) => {
            // SAFETY: as above.
            let f = unsafe { std::mem::transmute::<UnaryFn, UnwindingUnaryFn>(f) };
            set_in_foreign_call(true);
            f(ptr);
            set_in_foreign_call(false);
            0
        }
        ForeignCall::Done(f, data, handle, status, res, code) => {
            // SAFETY: as above.
            let f = unsafe { std::mem::transmute::<DoneFn, UnwindingDoneFn>(f) };
            set_in_foreign_call(true);
            f(data, handle, status, res, code);
            set_in_foreign_call(false);
            0
        }
        ForeignCall::TaskHook(f, data, handle, status, queue_wait, run) => {
            // SAFETY: as above.
            let f = unsafe { std::mem::transmute::<TaskHookFn, UnwindingTaskHookFn>(f) };
            set_in_foreign_call(true);
            f(data, handle, status, queue_wait, run);
            set_in_foreign_call(false);
            0
        }
        ForeignCall::Again | ForeignCall::Exit => 0,
    };
    (code, result)
}

/// Runs deferred engine code until a deferred foreign call is next (which it
/// returns) or none is left. Asked at least twice per engine step, and
/// nearly always with nothing deferred: that check is inlined, the queue's
/// work is not.
#[inline(always)]
fn pop_deferred() -> Option<ForeignCall> {
    if any_deferred() {
        pop_deferred_queued()
    } else {
        None
    }
}

#[inline(never)]
fn pop_deferred_queued() -> Option<ForeignCall> {
    while any_deferred() {
        let next = DEFERRED.with(|d| d.0.borrow_mut().pop_front());
        local::with(|c| c.deferred_len.set(c.deferred_len.get() - 1));
        match next.expect("counted") {
            Deferred::Call(call) => return Some(call),
            Deferred::Engine(f) => f(),
        }
    }
    None
}

/// Sleeps while `word` holds `expected`, until [`wake_all`] on it or
/// `deadline`; may also return early for no reason, so the caller looks at
/// the word again. No wake-up is lost: the word is compared with
/// `expected` at the moment the thread goes to sleep, and a waker changes it
/// before it wakes. `word` must live until its waiters have returned.
#[cfg(not(all(test, loom)))]
pub(crate) fn wait_on(word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
    #[cfg(target_os = "linux")]
    futex::wait(word, expected, deadline);
    #[cfg(not(target_os = "linux"))]
    polling::wait(word, expected, deadline);
}

/// Wakes every thread in [`wait_on`] for `word`, which the caller has
/// changed since they looked at it.
#[cfg(not(all(test, loom)))]
pub(crate) fn wake_all(word: &AtomicU32) {
    #[cfg(target_os = "linux")]
    futex::wake_all(word);
    #[cfg(not(target_os = "linux"))]
    polling::wake_all(word);
}

#[cfg(all(target_os = "linux", not(all(test, loom))))]
mod futex {
    use super::*;

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
        let timeout = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                None => return,
                Some(left) => Some(libc::timespec {
                    tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                }),
            },
        };
        let timeout_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: a futex wait on a live, aligned 32-bit atomic with a
        // relative timeout (or none); it only reads the word. Interrupted,
        // timed out or woken, it returns, and the caller looks again.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                timeout_ptr,
            )
        };
    }

    pub(super) fn wake_all(word: &AtomicU32) {
        // SAFETY: a futex wake names the word's address only; no memory is
        // read or written.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            )
        };
    }
}

/// [`wait_on`] and [`wake_all`] without a futex: the waiter sleeps a
/// moment (200 µs at most) and returns, for its caller to look again. No
/// lock, so a fork can leave none held; a wake-up is seen a sleep late at
/// worst. A port would use the platform's own address wait instead. (Built
/// on Linux for its test.)
#[cfg(all(any(not(target_os = "linux"), test), not(all(test, loom))))]
mod polling {
    use super::*;
    use std::time::Duration;

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
        if word.load(std::sync::atomic::Ordering::Acquire) != expected {
            return;
        }
        let pause = Duration::from_micros(200);
        let pause = deadline.map_or(pause, |d| {
            d.saturating_duration_since(Instant::now()).min(pause)
        });
        std::thread::sleep(pause);
    }

    pub(super) fn wake_all(_word: &AtomicU32) {}
}

/// Whether a thread-local destructor running now must leak what it holds
/// instead of dropping it (see [`LeakAtExit`]): the thread was ended inside
/// a foreign call, or it has retired.
pub(crate) fn no_user_code_at_exit() -> bool {
    local::with(|c| c.in_foreign_call.get() || c.retired.get())
}

/// From now on this thread runs no user code at its exit: called once its
/// own table is cleared, right before its stop hook.
pub(crate) fn retire_thread() {
    local::with(|c| c.retired.set(true));
}

/// A thread-local's value that is leaked, not dropped, when the thread ends
/// inside a foreign call or after it retired: dropping it could call a
/// release function into an interpreter that is ending that very thread.
pub(crate) struct LeakAtExit<T>(ManuallyDrop<T>);

impl<T> LeakAtExit<T> {
    pub(crate) const fn new(value: T) -> Self {
        LeakAtExit(ManuallyDrop::new(value))
    }
}

impl<T> Deref for LeakAtExit<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for LeakAtExit<T> {
    fn drop(&mut self) {
        if !no_user_code_at_exit() {
            // SAFETY: dropped once, here; never used again.
            unsafe { ManuallyDrop::drop(&mut self.0) };
        }
    }
}

/// A joinable thread started by [`spawn_thread`].
pub(crate) struct Thread(libc::pthread_t);

// SAFETY: a pthread_t is an id any thread may join once.
unsafe impl Send for Thread {}

impl Thread {
    /// The calling thread (one started by [`spawn_thread`]).
    pub(crate) fn current() -> Thread {
        // SAFETY: pthread_self has no preconditions.
        Thread(unsafe { libc::pthread_self() })
    }

    /// Lets the thread free itself when it ends; nobody joins it.
    pub(crate) fn detach(self) {
        // SAFETY: a joinable thread's id, detached once (this consumes it).
        let rc = unsafe { libc::pthread_detach(self.0) };
        debug_assert_eq!(rc, 0, "pthread_detach");
    }

    /// Waits for the thread to end and frees what the system kept for it.
    pub(crate) fn join(self) {
        // SAFETY: the id came from pthread_create and is joined once (join
        // consumes it); the thread is joinable (never detached).
        let rc = unsafe { libc::pthread_join(self.0, std::ptr::null_mut()) };
        debug_assert_eq!(rc, 0, "pthread_join");
    }
}

/// Starts a joinable thread named `name` (at most 15 bytes are kept) with a
/// stack of `stack_size` bytes (0: the platform's default for new threads)
/// that runs `body` as [`ThreadBody`] describes.
pub(crate) fn spawn_thread<B: ThreadBody>(
    body: B,
    stack_size: usize,
    name: &str,
) -> io::Result<Thread> {
    let body = Box::into_raw(Box::new(Started {
        body,
        name: CString::new(truncate_name(name)).ok(),
    }));
    let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
    // SAFETY: attr is initialised before use and destroyed after; the start
    // routine has the C calling convention pthread_create expects ("C-unwind"
    // only changes what unwinding through it means), and it takes ownership
    // of `body` only when the thread was created.
    let rc = unsafe {
        let rc = libc::pthread_attr_init(attr.as_mut_ptr());
        if rc != 0 {
            drop(Box::from_raw(body));
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut rc = 0;
        if stack_size != 0 {
            rc = libc::pthread_attr_setstacksize(attr.as_mut_ptr(), stack_size);
        }
        if rc == 0 {
            let start: extern "C-unwind" fn(*mut c_void) -> *mut c_void = thread_start::<B>;
            rc = libc::pthread_create(
                thread.as_mut_ptr(),
                attr.as_ptr(),
                std::mem::transmute::<
                    extern "C-unwind" fn(*mut c_void) -> *mut c_void,
                    extern "C" fn(*mut c_void) -> *mut c_void,
                >(start),
                body.cast(),
            );
        }
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if rc != 0 {
            drop(Box::from_raw(body));
        }
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: pthread_create succeeded, so it wrote the id.
    Ok(Thread(unsafe { thread.assume_init() }))
}

/// What a new thread owns: its body, and the name it gives itself (the
/// thread names itself: its id may be gone by the time its creator could).
struct Started<B> {
    body: B,
    name: Option<CString>,
}

fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The start routine: a plain old frame around every foreign call (see
/// [`ThreadBody`]). Its locals are a raw pointer and `Copy` values; the
/// engine's work happens in `next`/`finish`, whose frames have returned
/// before each foreign call begins.
extern "C-unwind" fn thread_start<B: ThreadBody>(arg: *mut c_void) -> *mut c_void {
    let started = arg.cast::<Started<B>>();
    name_self(started);
    // SAFETY: `started` is the Box this thread owns until `body_drop`.
    let body = unsafe { &raw mut (*started).body };
    // The body's next call while the calls its step deferred go first.
    let mut pending: Option<ForeignCall> = None;
    // What the body's last call returned, for the next step to report.
    let mut returned: Option<(i32, *mut c_void)> = None;
    // The call to make next (written in place by `next_call`).
    let mut call = ForeignCall::Again;
    loop {
        let from_body = next_call(body, &mut pending, returned.take(), &mut call);
        if let ForeignCall::Exit = call {
            break;
        }
        let (code, result) = make_call(call);
        if from_body {
            returned = Some((code, result));
        }
    }
    body_drop(started);
    // Dropping the body runs in an engine step too: whatever it deferred (a
    // release function of a value it held last) is made here, not lost.
    while let Some(call) = engine_step(pop_deferred) {
        make_call(call);
    }
    std::ptr::null_mut()
}

fn name_self<B>(started: *mut Started<B>) {
    // SAFETY: as in `thread_start`.
    if let Some(name) = unsafe { &(*started).name } {
        // SAFETY: this thread's id and a NUL-terminated name of at most 15
        // bytes. A failure only leaves the name unset.
        unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
    }
}

/// Engine code between foreign calls: the foreign calls it asks for are
/// deferred to the start routine. A panic cannot unwind into the thread's C
/// start: it aborts, as any panic escaping an `extern "C"` function does.
fn engine_step<R>(f: impl FnOnce() -> R) -> R {
    local::with(|c| c.in_engine_step.set(true));
    let r = match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => std::process::abort(),
    };
    local::with(|c| c.in_engine_step.set(false));
    r
}

/// One engine step: tells the body what its last call `returned`, then
/// picks the next foreign call (into `next`) and says whether it is the
/// body's (whose return the next step reports): the calls engine steps
/// deferred come first, in order, then the body's.
fn next_call<B: ThreadBody>(
    body: *mut B,
    pending: &mut Option<ForeignCall>,
    returned: Option<(i32, *mut c_void)>,
    next: &mut ForeignCall,
) -> bool {
    engine_step(|| {
        if let Some((code, result)) = returned {
            // SAFETY: `body` is the Box this thread owns until `body_drop`.
            if let Some(call) = unsafe { (*body).finish(code, result) } {
                return after_deferred(pending, call, next);
            }
        }
        if let Some(call) = pop_deferred() {
            *next = call;
            return false;
        }
        if let Some(call) = pending.take() {
            *next = call;
            return true;
        }
        loop {
            // SAFETY: `body` is the Box this thread owns until `body_drop`.
            let call = unsafe { (*body).next() };
            if let ForeignCall::Again = call {
                if let Some(deferred) = pop_deferred() {
                    *next = deferred;
                    return false;
                }
                continue;
            }
            return after_deferred(pending, call, next);
        }
    })
}

/// The body's `call` into `next`, unless calls were deferred before it:
/// the first of them then, and `call` waits in `pending`. True: the body's.
#[inline(always)]
fn after_deferred(
    pending: &mut Option<ForeignCall>,
    call: ForeignCall,
    next: &mut ForeignCall,
) -> bool {
    match pop_deferred() {
        Some(deferred) => {
            *pending = Some(call);
            *next = deferred;
            false
        }
        None => {
            *next = call;
            true
        }
    }
}

fn body_drop<B: ThreadBody>(started: *mut Started<B>) {
    // SAFETY: the Box made by `spawn_thread`; dropped once, as the loop ends.
    engine_step(|| drop(unsafe { Box::from_raw(started) }))
}

fn set_in_foreign_call(inside: bool) {
    local::with(|c| c.in_foreign_call.set(inside));
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A sleeper on a word wakes when another thread changes the word and
    /// wakes it, and a deadline ends a sleep nobody ends; for the futex and
    /// for the polling fallback alike.
    #[test]
    fn a_word_sleeper_wakes_on_a_change_or_its_deadline() {
        type Wait = fn(&AtomicU32, u32, Option<Instant>);
        type Wake = fn(&AtomicU32);
        let ways: [(Wait, Wake); 2] = [(wait_on, wake_all), (polling::wait, polling::wake_all)];
        for (wait, wake) in ways {
            let word = std::sync::Arc::new(AtomicU32::new(0));
            let sleeper = {
                let word = word.clone();
                std::thread::spawn(move || {
                    let t = Instant::now();
                    while word.load(std::sync::atomic::Ordering::Acquire) == 0 {
                        wait(&word, 0, None);
                    }
                    t.elapsed()
                })
            };
            std::thread::sleep(std::time::Duration::from_millis(50));
            word.store(1, std::sync::atomic::Ordering::Release);
            wake(&word);
            let slept = sleeper.join().unwrap();
            assert!(slept >= std::time::Duration::from_millis(40), "{slept:?}");
            // It may return early (a signal): the caller looks again.
            let t = Instant::now();
            let deadline = t + std::time::Duration::from_millis(30);
            while Instant::now() < deadline {
                wait(&word, 1, Some(deadline));
            }
            assert!(t.elapsed() < std::time::Duration::from_secs(2));
            // A word that no longer holds what the caller saw: no sleep.
            let t = Instant::now();
            wait(&word, 0, None);
            assert!(t.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    /// Durations read with `now_ns` agree with the monotonic clock's, before
    /// the time-stamp counter is calibrated (where it is used), across the
    /// switch, and after it.
    #[test]
    fn now_ns_measures_what_the_clock_measures() {
        for _ in 0..4 {
            let (a, t) = (now_ns(), std::time::Instant::now());
            std::thread::sleep(std::time::Duration::from_millis(8));
            let (b, real) = (now_ns(), t.elapsed().as_nanos() as u64);
            let measured = b.saturating_sub(a);
            assert!(
                measured.abs_diff(real) < real / 20 + 200_000,
                "now_ns measured {measured} ns, the clock {real} ns"
            );
        }
        let mut last = now_ns();
        for _ in 0..10_000 {
            let now = now_ns();
            assert!(now >= last, "{now} after {last} on one thread");
            last = now;
        }
    }
}
