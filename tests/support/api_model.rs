//! A model of the C ABI's contract, and an interpreter that drives the real
//! functions (`asyncify::ffi::*`, called as C would) with a sequence of random
//! calls, good and bad, and compares every returned status, every output and
//! every callback with the model. Shared by `tests/model.rs` (seeded, bounded)
//! and the fuzz target `fuzz/fuzz_targets/api.rs` (the choices come from the
//! fuzzer's bytes).
//!
//! What is modelled (contract sections 1 to 6, 8.2 and 8.3): the calling
//! thread's table (keys, local keys, scopes, the global layer underneath),
//! pointer values and their release and clone functions, contexts, tasks on two
//! paused pools (one with a queue bound, one that records latency) that run
//! only when the interpreter lets them (so every status is deterministic),
//! handles (live, released, stale, forged, zero), poll/wait/wait_any/cancel/
//! release, where each result moves, completion queues, stats, versioned
//! structs (every published layout of the submit options), and the last error
//! message.
//!
//! Limiters (8.2) are modelled exactly: their caps (paused, small, none), FIFO
//! admission on submit, on `asyncify_limiter_set` and on each place given back
//! (a run, a cancel or an expiry of an admitted task), the token bucket with a
//! rate so low that no token is earned during a run (so only the burst
//! counts), and their stats and latency counts. Start deadlines (8.3) are
//! either long (never reached during a run) or 1 ms on a task that cannot
//! start (its pool is paused): the interpreter then waits until the library's
//! timer has expired and reported it, so every later status is deterministic
//! again (`EXPIRED` from poll, wait and cancel; `free_arg`, then `on_done`; the
//! place it held given back; the `expired` counters).
//!
//! Bad input is generated one fault per call (the contract does not order the
//! checks): NULL pointers, zero/stale/forged/double-released handles, empty and
//! non-UTF-8 keys, unknown flags, wrong `struct_size`, non-zero bytes beyond a
//! known struct (or beyond the older layout a `struct_size` names), scope exits
//! out of order, `EMPTY_CONTEXT` with a context, limiter options with a NaN,
//! negative or infinite rate or a non-UTF-8 name.
//!
//! Pointers given to the library as values, arguments and results are fake
//! addresses that encode an index: the library never dereferences them.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use asyncify::ffi::context::*;
use asyncify::ffi::cq::*;
use asyncify::ffi::error::*;
use asyncify::ffi::limiter::*;
use asyncify::ffi::overrides::*;
use asyncify::ffi::pool::*;
use asyncify::ffi::task::*;
use asyncify::status::*;

pub const MAX_TASKS: usize = 400;
pub const MAX_VALUES: usize = 400;

// ---- where the choices come from ----

/// A source of choices: a seeded generator, or a fuzzer's bytes.
pub trait Choices {
    /// The next raw choice, or `None` when the input is used up.
    fn next(&mut self) -> Option<u32>;
}

/// splitmix64, seeded: never runs out.
pub struct Seeded(pub u64);

impl Choices for Seeded {
    fn next(&mut self) -> Option<u32> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Some((z ^ (z >> 31)) as u32)
    }
}

/// A fuzzer's input, one byte per choice.
pub struct FromBytes<'a> {
    pub data: &'a [u8],
    pub at: usize,
}

impl Choices for FromBytes<'_> {
    fn next(&mut self) -> Option<u32> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(u32::from(b))
    }
}

// ---- what the callbacks see: statics, reset for each run ----

#[derive(Default)]
struct TaskRec {
    ran: AtomicU32,
    done_calls: AtomicU32,
    done_status: AtomicI32,
    done_code: AtomicI32,
    done_result: AtomicUsize,
    done_handle: AtomicUsize,
    arg_freed: AtomicU32,
    result_freed: AtomicU32,
    code: AtomicI32,
    sets_result: AtomicU32,
    view_bad: AtomicU32,
}

static TASK_RECS: [TaskRec; MAX_TASKS] = [const {
    TaskRec {
        ran: AtomicU32::new(0),
        done_calls: AtomicU32::new(0),
        done_status: AtomicI32::new(0),
        done_code: AtomicI32::new(0),
        done_result: AtomicUsize::new(0),
        done_handle: AtomicUsize::new(0),
        arg_freed: AtomicU32::new(0),
        result_freed: AtomicU32::new(0),
        code: AtomicI32::new(0),
        sets_result: AtomicU32::new(0),
        view_bad: AtomicU32::new(0),
    }
}; MAX_TASKS];

static RELEASED: [AtomicU32; MAX_VALUES] = [const { AtomicU32::new(0) }; MAX_VALUES];
static CLONES_MADE: [AtomicU32; MAX_VALUES] = [const { AtomicU32::new(0) }; MAX_VALUES];
static CLONES_RELEASED: [AtomicU32; MAX_VALUES] = [const { AtomicU32::new(0) }; MAX_VALUES];
static STRAY: AtomicU32 = AtomicU32::new(0);
static STRAY_TEXT: Mutex<String> = Mutex::new(String::new());
/// What each task must see when it runs, set before it can run.
static VIEWS: Mutex<Vec<Option<View>>> = Mutex::new(Vec::new());
static VIEW_TEXT: Mutex<String> = Mutex::new(String::new());
/// One run at a time: the statics are shared.
pub static RUN_LOCK: Mutex<()> = Mutex::new(());

const VALUE_BASE: usize = 0x1000;
const CLONE_TAG: usize = 1 << 40;
const RESULT_BASE: usize = 0x7000_0000;

fn value_ptr(id: usize) -> *mut c_void {
    (VALUE_BASE + id * 16) as *mut c_void
}

fn stray(text: String) {
    STRAY.fetch_add(1, SeqCst);
    let mut t = STRAY_TEXT.lock().unwrap_or_else(|e| e.into_inner());
    if t.len() < 2000 {
        t.push_str(&text);
        t.push('\n');
    }
}

fn value_id(p: *mut c_void) -> Option<(usize, bool)> {
    let a = p as usize;
    let clone = a & CLONE_TAG != 0;
    let a = a & !CLONE_TAG;
    if a < VALUE_BASE || (a - VALUE_BASE) % 16 != 0 || (a - VALUE_BASE) / 16 >= MAX_VALUES {
        return None;
    }
    Some(((a - VALUE_BASE) / 16, clone))
}

extern "C" fn release_value(p: *mut c_void) {
    match value_id(p) {
        Some((id, false)) => {
            RELEASED[id].fetch_add(1, SeqCst);
        }
        Some((id, true)) => {
            CLONES_RELEASED[id].fetch_add(1, SeqCst);
        }
        None => stray(format!("release function called with {p:?}")),
    }
}

extern "C" fn clone_value(p: *mut c_void) -> *mut c_void {
    match value_id(p) {
        Some((id, false)) => {
            CLONES_MADE[id].fetch_add(1, SeqCst);
            (p as usize | CLONE_TAG) as *mut c_void
        }
        _ => {
            stray(format!("clone function called with {p:?}"));
            p
        }
    }
}

fn task_id(p: *mut c_void) -> Option<usize> {
    let v = p as usize;
    (1..=MAX_TASKS).contains(&v).then(|| v - 1)
}

fn result_ptr(id: usize) -> *mut c_void {
    (RESULT_BASE + id * 16) as *mut c_void
}

/// What a task (or `context_run`) must find in its table.
#[derive(Clone, Debug)]
struct View {
    count: usize,
    keys: Vec<(CString, Seen)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Absent,
    Bytes(Vec<u8>),
    Ptr(usize),
}

fn read_key(key: &CStr) -> Seen {
    let mut len = 0usize;
    let s = asyncify_override_get(key.as_ptr(), null_mut(), 0, &mut len);
    match s {
        ASYNCIFY_E_NOT_FOUND => Seen::Absent,
        ASYNCIFY_OK => Seen::Bytes(Vec::new()),
        ASYNCIFY_E_BUFFER_TOO_SMALL => {
            let mut buf = vec![0u8; len];
            let mut got = 0usize;
            let s = asyncify_override_get(key.as_ptr(), buf.as_mut_ptr().cast(), len, &mut got);
            if s != ASYNCIFY_OK || got != len {
                return Seen::Bytes(b"<read failed>".to_vec());
            }
            Seen::Bytes(buf)
        }
        ASYNCIFY_E_INVALID_ARGUMENT => {
            let mut p = null_mut();
            let s = asyncify_override_get_ptr(key.as_ptr(), &mut p);
            if s == ASYNCIFY_OK {
                Seen::Ptr(p as usize)
            } else {
                Seen::Bytes(b"<get_ptr failed>".to_vec())
            }
        }
        _ => Seen::Bytes(format!("<get returned {s}>").into_bytes()),
    }
}

fn check_view(id: usize) -> bool {
    let view = VIEWS.lock().unwrap_or_else(|e| e.into_inner())[id].clone();
    let Some(view) = view else {
        stray(format!("task {id} ran without a view"));
        return false;
    };
    let mut n = usize::MAX;
    asyncify_override_count(&mut n);
    let mut ok = n == view.count;
    let mut text = String::new();
    if !ok {
        let _ = write!(text, "count {n}, expected {}; ", view.count);
    }
    for (k, want) in &view.keys {
        let got = read_key(k);
        if &got != want {
            ok = false;
            let _ = write!(text, "{k:?}: {got:?}, expected {want:?}; ");
        }
    }
    if !ok {
        let mut t = VIEW_TEXT.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() < 2000 {
            let _ = writeln!(t, "task {id}: {text}");
        }
    }
    ok
}

extern "C" fn work(arg: *mut c_void, out: *mut *mut c_void) -> i32 {
    let Some(id) = task_id(arg) else {
        stray(format!("work called with {arg:?}"));
        return 0;
    };
    let r = &TASK_RECS[id];
    r.ran.fetch_add(1, SeqCst);
    if !check_view(id) {
        r.view_bad.fetch_add(1, SeqCst);
    }
    if asyncify_cancel_requested() {
        stray(format!(
            "task {id}: cancel_requested inside a task nobody cancelled"
        ));
    }
    if r.sets_result.load(SeqCst) != 0 {
        // SAFETY: `out` is the library's valid result slot for this call.
        unsafe { *out = result_ptr(id) };
    }
    r.code.load(SeqCst)
}

extern "C" fn on_done(data: *mut c_void, h: u64, status: i32, result: *mut c_void, code: i32) {
    let Some(id) = task_id(data) else {
        stray(format!("on_done called with {data:?}"));
        return;
    };
    let r = &TASK_RECS[id];
    r.done_calls.fetch_add(1, SeqCst);
    r.done_status.store(status, SeqCst);
    r.done_code.store(code, SeqCst);
    r.done_result.store(result as usize, SeqCst);
    r.done_handle.store(h as usize, SeqCst);
}

extern "C" fn free_arg(p: *mut c_void) {
    match task_id(p) {
        Some(id) => {
            TASK_RECS[id].arg_freed.fetch_add(1, SeqCst);
        }
        None => stray(format!("free_arg called with {p:?}")),
    }
}

extern "C" fn free_result(p: *mut c_void) {
    let a = p as usize;
    if a < RESULT_BASE || (a - RESULT_BASE) % 16 != 0 || (a - RESULT_BASE) / 16 >= MAX_TASKS {
        stray(format!("free_result called with {p:?}"));
        return;
    }
    TASK_RECS[(a - RESULT_BASE) / 16]
        .result_freed
        .fetch_add(1, SeqCst);
}

fn reset_statics() {
    for r in &TASK_RECS {
        for a in [
            &r.ran,
            &r.done_calls,
            &r.arg_freed,
            &r.result_freed,
            &r.sets_result,
            &r.view_bad,
        ] {
            a.store(0, SeqCst);
        }
        r.done_status.store(-100, SeqCst);
        r.done_code.store(0, SeqCst);
        r.done_result.store(0, SeqCst);
        r.done_handle.store(0, SeqCst);
        r.code.store(0, SeqCst);
    }
    for a in RELEASED.iter().chain(&CLONES_MADE).chain(&CLONES_RELEASED) {
        a.store(0, SeqCst);
    }
    STRAY.store(0, SeqCst);
    STRAY_TEXT.lock().unwrap_or_else(|e| e.into_inner()).clear();
    VIEW_TEXT.lock().unwrap_or_else(|e| e.into_inner()).clear();
    *VIEWS.lock().unwrap_or_else(|e| e.into_inner()) = vec![None; MAX_TASKS];
}

// ---- the model ----

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Bytes(Vec<u8>),
    /// A pointer value: its index (addresses encode it), or `None` for NULL.
    Ptr {
        id: Option<usize>,
        clone: bool,
        release: bool,
    },
}

type Map = BTreeMap<String, Val>;

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Waiting for its limiter to admit it (counted as queued by its pool).
    Waiting,
    /// In its pool's queue (admitted, when it has a limiter).
    Queued,
    Done {
        status: i32,
        code: i32,
    },
    Cancelled,
    /// Its start deadline passed before it started.
    Expired,
}

impl State {
    /// Not terminal yet: waiting for its limiter or queued.
    fn pending(&self) -> bool {
        matches!(self, State::Waiting | State::Queued)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum ResultAt {
    Nowhere,
    Handle,
    OnDone,
    Queue,
    Taken,
    Freed,
}

#[derive(Clone, Debug)]
struct MTask {
    id: usize,
    handle: Option<u64>,
    pool: usize,
    code: i32,
    sets_result: bool,
    on_done: bool,
    cq: Option<usize>,
    detached: bool,
    released: bool,
    state: State,
    result: ResultAt,
    snapshot: Map,
    arg_freed: u32,
    result_freed: u32,
    /// Its limiter (an index into `Interp::limiters`).
    limiter: Option<usize>,
    /// Admitted by its limiter and holding a place until it returns or leaves.
    holds_place: bool,
}

/// A limiter as the model sees it. A rate, when there is one, is so low
/// that no token is earned during a run: only the bucket's burst counts.
#[derive(Clone, Debug)]
struct MLimiter {
    /// NULL once the caller freed it (its tasks keep the limiter alive).
    ptr: *mut asyncify_limiter,
    max_running: u32,
    rate: f64,
    /// The bucket's size (`burst`, 0 meaning 1).
    bucket: u32,
    /// Whole tokens in the bucket.
    tokens: u32,
    /// Places held: admitted tasks not started yet, and running ones.
    running: u64,
    /// Tasks waiting for admission, in order (indices into `Interp::tasks`).
    waiting: VecDeque<usize>,
    admitted: u64,
    expired: u64,
    cancelled_waiting: u64,
    /// Tasks submitted with it.
    submitted: u64,
    /// Its tasks that ran on pool 0 (which records latency).
    recorded: u64,
}

#[derive(Clone, Debug)]
struct Completion {
    task: usize,
    status: i32,
    code: i32,
    result: usize,
}

struct MCq {
    ptr: *mut asyncify_cq,
    items: VecDeque<Completion>,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Counts {
    submitted: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    expired: u64,
    /// Waiting to start: in the queue or waiting for a limiter.
    queued: u64,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Figures {
    pub steps: u64,
    pub calls: u64,
    pub errors_expected: u64,
    pub tasks: u64,
    pub runs: u64,
    /// Limiters made.
    pub limiters: u64,
    /// Tasks submitted with a limiter.
    pub limited: u64,
    /// Of those, admitted after waiting (by a set, a run, a cancel or an expiry).
    pub admitted_later: u64,
    /// Tasks that expired.
    pub expired: u64,
    /// Tasks cancelled while waiting for their limiter (a cancel or a shutdown).
    pub cancelled_waiting: u64,
}

impl Figures {
    /// Adds another run's figures.
    pub fn add(&mut self, f: &Figures) {
        self.steps += f.steps;
        self.calls += f.calls;
        self.errors_expected += f.errors_expected;
        self.tasks += f.tasks;
        self.runs += f.runs;
        self.limiters += f.limiters;
        self.limited += f.limited;
        self.admitted_later += f.admitted_later;
        self.expired += f.expired;
        self.cancelled_waiting += f.cancelled_waiting;
    }
}

const KEYS: [&str; 5] = ["a", "b", "c", "k", "a-longer-key.with.dots"];

pub struct Interp<C: Choices> {
    c: C,
    exhausted: bool,
    log: VecDeque<String>,
    table: Map,
    local: Map,
    scopes: Vec<(u64, Map, Map)>,
    exited_tokens: Vec<u64>,
    global: Map,
    globals_touched: Vec<String>,
    contexts: Vec<(*mut asyncify_context, Map)>,
    tasks: Vec<MTask>,
    stale: Vec<u64>,
    cqs: Vec<Option<MCq>>,
    pools: [*mut asyncify_pool; 2],
    counts: [Counts; 2],
    /// Each pool's queue in the order tasks entered it (at submit, or when
    /// their limiter admitted them): the order they run in, and so the order
    /// of their completions in a queue.
    queues: [VecDeque<usize>; 2],
    limiters: Vec<MLimiter>,
    next_value: usize,
    /// Values a global read may have pinned: exempt from "released while held".
    maybe_pinned: Vec<usize>,
    /// Values whose release was expected to be called by now, at most once.
    values: Vec<Val>,
    last_error_fn: Option<&'static str>,
    clone_expect: Vec<u32>,
    task_ids: usize,
    /// The version `asyncify_version` must report (the crate's, when known).
    pub expected_version: Option<&'static str>,
    pub figures: Figures,
}

macro_rules! ensure {
    ($self:ident, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($self.fail(format!($($fmt)+)));
        }
    };
}

/// What a call with one NULL output pointer (or none) returns.
fn ok_unless_null(null_out: bool) -> i32 {
    if null_out {
        ASYNCIFY_E_NULL
    } else {
        ASYNCIFY_OK
    }
}

fn status_name(s: i32) -> String {
    // SAFETY: asyncify_status_str returns a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(asyncify_status_str(s)) };
    format!(
        "{s} ({})",
        text.to_string_lossy().split(':').next().unwrap_or("")
    )
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

impl<C: Choices> Interp<C> {
    pub fn new(c: C) -> Self {
        Interp {
            c,
            exhausted: false,
            log: VecDeque::new(),
            table: Map::new(),
            local: Map::new(),
            scopes: Vec::new(),
            exited_tokens: Vec::new(),
            global: Map::new(),
            globals_touched: Vec::new(),
            contexts: Vec::new(),
            tasks: Vec::new(),
            stale: Vec::new(),
            cqs: Vec::new(),
            pools: [null_mut(); 2],
            counts: [Counts::default(); 2],
            queues: [VecDeque::new(), VecDeque::new()],
            limiters: Vec::new(),
            next_value: 0,
            maybe_pinned: Vec::new(),
            values: Vec::new(),
            last_error_fn: None,
            clone_expect: Vec::new(),
            task_ids: 0,
            expected_version: None,
            figures: Figures::default(),
        }
    }

    fn pick(&mut self, n: u32) -> u32 {
        match self.c.next() {
            Some(v) if n > 0 => v % n,
            Some(_) => 0,
            None => {
                self.exhausted = true;
                0
            }
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.pick(100) < percent
    }

    fn note(&mut self, text: String) {
        if self.log.len() >= 60 {
            self.log.pop_front();
        }
        self.log.push_back(text);
    }

    fn fail(&self, text: String) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "model mismatch: {text}");
        let _ = writeln!(out, "last calls (oldest first):");
        for l in &self.log {
            let _ = writeln!(out, "  {l}");
        }
        out
    }

    /// Records a call's status; an error must leave a message naming the function.
    fn status(&mut self, function: &'static str, got: i32, want: i32) -> Result<(), String> {
        self.figures.calls += 1;
        self.note(format!("{function} -> {}", status_name(got)));
        ensure!(
            self,
            got == want,
            "{function} returned {}, the model expects {}",
            status_name(got),
            status_name(want)
        );
        if got < 0 {
            self.figures.errors_expected += 1;
            self.last_error_fn = Some(function);
            self.check_last_error()?;
        }
        Ok(())
    }

    fn check_last_error(&mut self) -> Result<(), String> {
        let Some(function) = self.last_error_fn else {
            return Ok(());
        };
        let mut needed = 0usize;
        let s = asyncify_last_error(null_mut(), 0, &mut needed);
        ensure!(
            self,
            s == ASYNCIFY_E_BUFFER_TOO_SMALL && needed > 1,
            "last_error size query: {} needed {needed}",
            status_name(s)
        );
        let mut buf = vec![0u8; needed];
        let mut len = 0usize;
        let s = asyncify_last_error(buf.as_mut_ptr().cast(), needed, &mut len);
        ensure!(
            self,
            s == ASYNCIFY_OK && len == needed,
            "last_error: {s}, {len}"
        );
        let text = String::from_utf8_lossy(&buf[..needed - 1]).to_string();
        ensure!(
            self,
            text.starts_with(&format!("{function}: ")),
            "last error {text:?} does not name {function}"
        );
        // A too-small buffer: the size needed, the buffer untouched, the message kept.
        if needed > 2 {
            let mut small = vec![0xAAu8; needed - 1];
            let mut n2 = 0usize;
            let s = asyncify_last_error(small.as_mut_ptr().cast(), needed - 1, &mut n2);
            ensure!(
                self,
                s == ASYNCIFY_E_BUFFER_TOO_SMALL
                    && n2 == needed
                    && small.iter().all(|&b| b == 0xAA),
                "last_error into a small buffer: {s}, {n2}"
            );
        }
        Ok(())
    }

    // ---- keys and values ----

    /// A key: (C string to pass, Some(model key) when valid, expected error when not).
    fn key(&mut self) -> (Option<CString>, Result<String, i32>) {
        match self.pick(40) {
            0 => (None, Err(ASYNCIFY_E_NULL)),
            1 => (Some(cstr("")), Err(ASYNCIFY_E_INVALID_ARGUMENT)),
            2 => (
                Some(CString::new(vec![0xffu8, 0xfe, b'k']).expect("no NUL")),
                Err(ASYNCIFY_E_INVALID_ARGUMENT),
            ),
            _ => {
                let k = KEYS[self.pick(KEYS.len() as u32) as usize];
                (Some(cstr(k)), Ok(k.to_string()))
            }
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = self.pick(10) as usize;
        (0..n).map(|_| self.pick(256) as u8).collect()
    }

    fn new_value(&mut self, clone: bool, release: bool) -> Option<Val> {
        if self.next_value >= MAX_VALUES {
            return None;
        }
        let id = self.next_value;
        self.next_value += 1;
        let v = Val::Ptr {
            id: Some(id),
            clone,
            release,
        };
        self.values.push(v.clone());
        Some(v)
    }

    fn ptr_of(v: &Val) -> *mut c_void {
        match v {
            Val::Ptr { id: Some(id), .. } => value_ptr(*id),
            _ => null_mut(),
        }
    }

    /// What a read of `key` on this thread gives: local, table, then global.
    fn read_view(&self, key: &str) -> Option<&Val> {
        self.local
            .get(key)
            .or_else(|| self.table.get(key))
            .or_else(|| self.global.get(key))
    }

    fn seen_of(v: Option<&Val>, in_task: bool) -> Seen {
        match v {
            None => Seen::Absent,
            Some(Val::Bytes(b)) => Seen::Bytes(b.clone()),
            Some(Val::Ptr { id, clone, .. }) => {
                let base = id.map_or(0, |id| value_ptr(id) as usize);
                Seen::Ptr(if in_task && *clone && base != 0 {
                    base | CLONE_TAG
                } else {
                    base
                })
            }
        }
    }

    fn view_of(&self, snapshot: &Map) -> View {
        let keys = KEYS
            .iter()
            .map(|k| {
                let v = snapshot.get(*k).or_else(|| self.global.get(*k));
                // Global values are not cloned; the snapshot's are (5.5).
                let in_snapshot = snapshot.contains_key(*k);
                (cstr(k), Self::seen_of(v, in_snapshot))
            })
            .collect();
        View {
            count: snapshot.len(),
            keys,
        }
    }

    fn clone_ids(map: &Map) -> Vec<usize> {
        map.values()
            .filter_map(|v| match v {
                Val::Ptr {
                    id: Some(id),
                    clone: true,
                    ..
                } => Some(*id),
                _ => None,
            })
            .collect()
    }

    // ---- the operations ----

    fn op_set(&mut self) -> Result<(), String> {
        let (key, want) = self.key();
        let kp = key.as_ref().map_or(null(), |k| k.as_ptr());
        let flags_roll = self.pick(10);
        let flags = match flags_roll {
            0 => 1 << 3,
            1..=3 => ASYNCIFY_KEY_LOCAL,
            _ => 0,
        };
        let is_ptr = self.chance(40);
        if is_ptr {
            let clone = self.chance(40);
            let release = self.chance(85);
            let null_ptr = self.chance(5);
            let v = if null_ptr {
                Val::Ptr {
                    id: None,
                    clone: false,
                    release,
                }
            } else {
                match self.new_value(clone, release) {
                    Some(v) => v,
                    None => return Ok(()),
                }
            };
            let p = Self::ptr_of(&v);
            let rel: asyncify_free_fn = release.then_some(release_value as _);
            // (A NULL value gets no clone function: the contract does not say
            // whether clone is called with NULL.)
            let clo: asyncify_clone_fn = (clone && !null_ptr).then_some(clone_value as _);
            let plain = flags == 0 && clo.is_none() && self.chance(50);
            let (got, function) = if plain {
                (
                    asyncify_override_set_ptr(kp, p, rel),
                    "asyncify_override_set_ptr",
                )
            } else {
                (
                    asyncify_override_set_ptr_ex(kp, p, rel, clo, flags),
                    "asyncify_override_set_ptr_ex",
                )
            };
            let expect = match (&want, flags) {
                (Err(e), _) => *e,
                (Ok(_), f) if f & !ASYNCIFY_KEY_LOCAL != 0 => ASYNCIFY_E_INVALID_ARGUMENT,
                _ => ASYNCIFY_OK,
            };
            self.status(function, got, expect)?;
            if expect == ASYNCIFY_OK {
                let k = want.expect("valid");
                self.put(&k, v, flags & ASYNCIFY_KEY_LOCAL != 0);
            } else if let Val::Ptr { id: Some(id), .. } = v {
                // Refused: the caller keeps it; the library must never release it.
                self.values[id] = Val::Ptr {
                    id: Some(id),
                    clone: false,
                    release: false,
                };
            }
        } else {
            let b = self.bytes();
            let null_value = !b.is_empty() && self.chance(5);
            // NULL is fine for an empty value.
            let null_empty = b.is_empty() && self.chance(50);
            let vp: *const c_void = if null_value || null_empty {
                null()
            } else {
                b.as_ptr().cast()
            };
            let (got, function) = if flags == 0 && self.chance(50) {
                (
                    asyncify_override_set(kp, vp, b.len()),
                    "asyncify_override_set",
                )
            } else {
                (
                    asyncify_override_set_ex(kp, vp, b.len(), flags),
                    "asyncify_override_set_ex",
                )
            };
            let expect = match (&want, flags) {
                (Err(e), _) => *e,
                (Ok(_), f) if f & !ASYNCIFY_KEY_LOCAL != 0 => ASYNCIFY_E_INVALID_ARGUMENT,
                _ if null_value => ASYNCIFY_E_NULL,
                _ => ASYNCIFY_OK,
            };
            self.status(function, got, expect)?;
            if expect == ASYNCIFY_OK {
                let k = want.expect("valid");
                self.put(&k, Val::Bytes(b), flags & ASYNCIFY_KEY_LOCAL != 0);
            }
        }
        Ok(())
    }

    fn put(&mut self, k: &str, v: Val, local: bool) {
        if local {
            self.table.remove(k);
            self.local.insert(k.to_string(), v);
        } else {
            self.local.remove(k);
            self.table.insert(k.to_string(), v);
        }
    }

    fn op_get(&mut self) -> Result<(), String> {
        let (key, want) = self.key();
        let kp = key.as_ref().map_or(null(), |k| k.as_ptr());
        let current = want.as_ref().ok().and_then(|k| self.read_view(k)).cloned();
        if let Some(Val::Ptr { id: Some(id), .. }) = &current {
            if let Ok(k) = &want {
                if !self.table.contains_key(k) && !self.local.contains_key(k) {
                    self.maybe_pinned.push(*id);
                }
            }
        }
        match self.pick(3) {
            0 => {
                // Bytes.
                let len = match &current {
                    Some(Val::Bytes(b)) => b.len(),
                    _ => 4,
                };
                let cap = match self.pick(4) {
                    0 => 0,
                    1 => len.saturating_sub(1),
                    2 => len,
                    _ => len + 3,
                };
                let null_len = want.is_ok() && self.chance(5);
                let null_buf = cap == 0 || (want.is_ok() && self.chance(4));
                let mut buf = vec![0xA5u8; cap.max(1)];
                let mut out_len = 0x5A5Ausize;
                let got = asyncify_override_get(
                    kp,
                    if null_buf {
                        null_mut()
                    } else {
                        buf.as_mut_ptr().cast()
                    },
                    cap,
                    if null_len { null_mut() } else { &mut out_len },
                );
                // buf may be NULL only with cap 0 (a size query).
                let expect = match (&want, &current) {
                    (Err(e), _) => *e,
                    _ if null_len => ASYNCIFY_E_NULL,
                    _ if null_buf && cap > 0 => ASYNCIFY_E_NULL,
                    (_, None) => ASYNCIFY_E_NOT_FOUND,
                    (_, Some(Val::Ptr { .. })) => ASYNCIFY_E_INVALID_ARGUMENT,
                    (_, Some(Val::Bytes(b))) if cap < b.len() => ASYNCIFY_E_BUFFER_TOO_SMALL,
                    _ => ASYNCIFY_OK,
                };
                self.status("asyncify_override_get", got, expect)?;
                if let Some(Val::Bytes(b)) = &current {
                    if expect == ASYNCIFY_OK {
                        ensure!(
                            self,
                            out_len == b.len(),
                            "get wrote out_len {out_len}, value has {}",
                            b.len()
                        );
                        if !null_buf {
                            ensure!(
                                self,
                                &buf[..b.len()] == b.as_slice(),
                                "get copied the wrong bytes"
                            );
                            ensure!(
                                self,
                                buf[b.len()..cap].iter().all(|&x| x == 0xA5),
                                "get wrote past the value"
                            );
                        }
                    } else if expect == ASYNCIFY_E_BUFFER_TOO_SMALL {
                        ensure!(
                            self,
                            out_len == b.len(),
                            "BUFFER_TOO_SMALL: out_len {out_len}, needed {}",
                            b.len()
                        );
                        ensure!(
                            self,
                            buf.iter().all(|&x| x == 0xA5),
                            "BUFFER_TOO_SMALL wrote the buffer"
                        );
                    }
                }
                if expect < 0 && expect != ASYNCIFY_E_BUFFER_TOO_SMALL {
                    ensure!(self, out_len == 0x5A5A, "an error wrote out_len");
                }
            }
            which => {
                let ex = which == 2;
                let null_out = want.is_ok() && self.chance(6);
                let null_rel = ex && want.is_ok() && !null_out && self.chance(6);
                let mut out = 0xDEADusize as *mut c_void;
                let mut rel: asyncify_free_fn = None;
                let (got, function) = if ex {
                    (
                        asyncify_override_get_ptr_ex(
                            kp,
                            if null_out { null_mut() } else { &mut out },
                            if null_rel { null_mut() } else { &mut rel },
                        ),
                        "asyncify_override_get_ptr_ex",
                    )
                } else {
                    (
                        asyncify_override_get_ptr(kp, if null_out { null_mut() } else { &mut out }),
                        "asyncify_override_get_ptr",
                    )
                };
                let expect = if null_out || null_rel {
                    ASYNCIFY_E_NULL
                } else {
                    match (&want, &current) {
                        (Err(e), _) => *e,
                        (_, None) => ASYNCIFY_E_NOT_FOUND,
                        (_, Some(Val::Bytes(_))) => ASYNCIFY_E_INVALID_ARGUMENT,
                        _ => ASYNCIFY_OK,
                    }
                };
                self.status(function, got, expect)?;
                if expect == ASYNCIFY_OK {
                    let v = current.clone().expect("present");
                    let want_ptr = Self::ptr_of(&v);
                    ensure!(
                        self,
                        out == want_ptr,
                        "{function} gave {out:?}, the value is {want_ptr:?}"
                    );
                    if ex {
                        let want_rel = matches!(v, Val::Ptr { release: true, .. });
                        ensure!(
                            self,
                            rel.is_some() == want_rel,
                            "get_ptr_ex release function: {}, expected {}",
                            rel.is_some(),
                            want_rel
                        );
                    }
                } else {
                    ensure!(self, out as usize == 0xDEAD, "an error wrote out_ptr");
                }
            }
        }
        Ok(())
    }

    fn op_remove_clear_count(&mut self) -> Result<(), String> {
        match self.pick(6) {
            0..=2 => {
                let (key, want) = self.key();
                let kp = key.as_ref().map_or(null(), |k| k.as_ptr());
                let got = asyncify_override_remove(kp);
                let expect = match &want {
                    Err(e) => *e,
                    Ok(k) if self.table.contains_key(k) || self.local.contains_key(k) => {
                        ASYNCIFY_OK
                    }
                    Ok(_) => ASYNCIFY_E_NOT_FOUND,
                };
                self.status("asyncify_override_remove", got, expect)?;
                if let Ok(k) = want {
                    self.table.remove(&k);
                    self.local.remove(&k);
                }
            }
            3 => {
                let got = asyncify_override_clear();
                self.status("asyncify_override_clear", got, ASYNCIFY_OK)?;
                self.table.clear();
                self.local.clear();
            }
            _ => {
                let null_out = self.chance(15);
                let mut n = 777usize;
                let got = asyncify_override_count(if null_out { null_mut() } else { &mut n });
                self.status("asyncify_override_count", got, ok_unless_null(null_out))?;
                let want = self.table.len() + self.local.len();
                ensure!(
                    self,
                    null_out || n == want,
                    "count {n}, the model has {want}"
                );
            }
        }
        Ok(())
    }

    fn op_scope(&mut self) -> Result<(), String> {
        if self.chance(45) {
            let null_out = self.chance(8);
            let mut t = 0u64;
            let got = asyncify_scope_enter(if null_out { null_mut() } else { &mut t });
            self.status("asyncify_scope_enter", got, ok_unless_null(null_out))?;
            if !null_out {
                ensure!(self, t != 0, "scope token 0");
                self.scopes
                    .push((t, self.table.clone(), self.local.clone()));
            }
            return Ok(());
        }
        let (token, valid) = match self.pick(6) {
            0 => (0, false),
            1 if self.scopes.len() >= 2 => {
                let i = self.pick(self.scopes.len() as u32 - 1) as usize;
                (self.scopes[i].0, false)
            }
            2 if !self.exited_tokens.is_empty() => {
                let i = self.pick(self.exited_tokens.len() as u32) as usize;
                (self.exited_tokens[i], false)
            }
            3 => (0x7fff_0000_0000_0000 | u64::from(self.pick(1000)), false),
            _ => match self.scopes.last() {
                Some(s) => (s.0, true),
                None => (12345, false),
            },
        };
        let got = asyncify_scope_exit(token);
        let expect = if token == 0 {
            ASYNCIFY_E_INVALID_ARGUMENT
        } else if valid {
            ASYNCIFY_OK
        } else {
            ASYNCIFY_E_SCOPE_MISMATCH
        };
        self.status("asyncify_scope_exit", got, expect)?;
        if valid {
            let (t, table, local) = self.scopes.pop().expect("top");
            self.table = table;
            self.local = local;
            self.exited_tokens.push(t);
        }
        Ok(())
    }

    fn op_global(&mut self) -> Result<(), String> {
        let (key, want) = self.key();
        let kp = key.as_ref().map_or(null(), |k| k.as_ptr());
        match self.pick(5) {
            0 | 1 => {
                let b = self.bytes();
                let null_value = !b.is_empty() && self.chance(5);
                let got = asyncify_global_set(
                    kp,
                    if null_value {
                        null()
                    } else {
                        b.as_ptr().cast()
                    },
                    b.len(),
                );
                let expect = match &want {
                    Err(e) => *e,
                    _ if null_value => ASYNCIFY_E_NULL,
                    _ => ASYNCIFY_OK,
                };
                self.status("asyncify_global_set", got, expect)?;
                if let (Ok(k), ASYNCIFY_OK) = (want, expect) {
                    self.global.insert(k.clone(), Val::Bytes(b));
                    self.globals_touched.push(k);
                }
            }
            2 => {
                let release = self.chance(80);
                let Some(v) = self.new_value(false, release) else {
                    return Ok(());
                };
                let got = asyncify_global_set_ptr(
                    kp,
                    Self::ptr_of(&v),
                    release.then_some(release_value as _),
                );
                let expect = match &want {
                    Err(e) => *e,
                    _ => ASYNCIFY_OK,
                };
                self.status("asyncify_global_set_ptr", got, expect)?;
                match (want, expect) {
                    (Ok(k), ASYNCIFY_OK) => {
                        self.global.insert(k.clone(), v);
                        self.globals_touched.push(k);
                    }
                    _ => {
                        if let Val::Ptr { id: Some(id), .. } = v {
                            self.values[id] = Val::Ptr {
                                id: Some(id),
                                clone: false,
                                release: false,
                            };
                        }
                    }
                }
            }
            _ => {
                let got = asyncify_global_remove(kp);
                let expect = match &want {
                    Err(e) => *e,
                    Ok(k) if self.global.contains_key(k) => ASYNCIFY_OK,
                    Ok(_) => ASYNCIFY_E_NOT_FOUND,
                };
                self.status("asyncify_global_remove", got, expect)?;
                if let Ok(k) = want {
                    self.global.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn context_pick(&mut self) -> Option<usize> {
        (!self.contexts.is_empty()).then(|| self.pick(self.contexts.len() as u32) as usize)
    }

    fn op_context(&mut self) -> Result<(), String> {
        match self.pick(8) {
            0 | 1 => {
                let empty = self.chance(30);
                let null_out = self.chance(8);
                let mut out = 0xBEEFusize as *mut asyncify_context;
                let outp = if null_out { null_mut() } else { &mut out };
                let (got, function) = if empty {
                    (asyncify_context_empty(outp), "asyncify_context_empty")
                } else {
                    (asyncify_context_capture(outp), "asyncify_context_capture")
                };
                self.status(function, got, ok_unless_null(null_out))?;
                if !null_out {
                    let map = if empty {
                        Map::new()
                    } else {
                        self.table.clone()
                    };
                    self.contexts.push((out, map));
                } else {
                    ensure!(self, out as usize == 0xBEEF, "an error wrote out");
                }
            }
            2 | 3 => {
                let Some(i) = self.context_pick() else {
                    return Ok(());
                };
                let fault = self.pick(12);
                let ctx = if fault == 0 {
                    null()
                } else {
                    self.contexts[i].0 as *const _
                };
                let (key, want) = self.key();
                let kp = key.as_ref().map_or(null(), |k| k.as_ptr());
                let mut out = 0xBEEFusize as *mut asyncify_context;
                let outp = if fault == 1 { null_mut() } else { &mut out };
                let kind = self.pick(3);
                let mut value = None;
                let (got, function, null_value) = match kind {
                    0 => {
                        let b = self.bytes();
                        let null_value = fault == 2 && !b.is_empty();
                        let g = asyncify_context_with(
                            ctx,
                            kp,
                            if null_value {
                                null()
                            } else {
                                b.as_ptr().cast()
                            },
                            b.len(),
                            outp,
                        );
                        value = Some(Val::Bytes(b));
                        (g, "asyncify_context_with", null_value)
                    }
                    1 => {
                        let release = self.chance(85);
                        let Some(v) = self.new_value(false, release) else {
                            return Ok(());
                        };
                        let g = asyncify_context_with_ptr(
                            ctx,
                            kp,
                            Self::ptr_of(&v),
                            release.then_some(release_value as _),
                            outp,
                        );
                        value = Some(v);
                        (g, "asyncify_context_with_ptr", false)
                    }
                    _ => (
                        asyncify_context_without(ctx, kp, outp),
                        "asyncify_context_without",
                        false,
                    ),
                };
                let expect = if null_value || fault == 0 || fault == 1 {
                    ASYNCIFY_E_NULL
                } else {
                    match &want {
                        Err(e) => *e,
                        Ok(_) => ASYNCIFY_OK,
                    }
                };
                self.status(function, got, expect)?;
                if expect == ASYNCIFY_OK {
                    let mut map = self.contexts[i].1.clone();
                    let k = want.expect("valid");
                    match value {
                        Some(v) => {
                            map.insert(k, v);
                        }
                        None => {
                            map.remove(&k);
                        }
                    }
                    self.contexts.push((out, map));
                } else {
                    ensure!(self, out as usize == 0xBEEF, "an error wrote out");
                    if let Some(Val::Ptr { id: Some(id), .. }) = value {
                        self.values[id] = Val::Ptr {
                            id: Some(id),
                            clone: false,
                            release: false,
                        };
                    }
                }
            }
            4 | 5 => {
                // Run a function with a context installed, here.
                let null_ctx = self.chance(6);
                let null_fn = !null_ctx && self.chance(6);
                let Some(i) = self.context_pick() else {
                    return Ok(());
                };
                let Some(id) = self.new_task_id() else {
                    return Ok(());
                };
                let code = if self.chance(70) { 0 } else { 3 };
                let sets_result = self.chance(50);
                TASK_RECS[id].code.store(code, SeqCst);
                TASK_RECS[id]
                    .sets_result
                    .store(u32::from(sets_result), SeqCst);
                let map = self.contexts[i].1.clone();
                VIEWS.lock().unwrap_or_else(|e| e.into_inner())[id] = Some(self.view_of(&map));
                let mut result = 0xF00Dusize as *mut c_void;
                let mut code_out = 4242;
                let got = asyncify_context_run(
                    if null_ctx { null() } else { self.contexts[i].0 },
                    if null_fn { None } else { Some(work) },
                    (id + 1) as *mut c_void,
                    &mut result,
                    &mut code_out,
                );
                let expect = if null_ctx || null_fn {
                    ASYNCIFY_E_NULL
                } else if code == 0 {
                    ASYNCIFY_OK
                } else {
                    ASYNCIFY_FAILED
                };
                self.status("asyncify_context_run", got, expect)?;
                if expect >= 0 {
                    // The function itself probed keys on this thread: its own
                    // failed reads are now the last error.
                    self.last_error_fn = None;
                }
                let ran = TASK_RECS[id].ran.load(SeqCst);
                if expect >= 0 {
                    ensure!(self, ran == 1, "context_run: fn ran {ran} times");
                    ensure!(
                        self,
                        TASK_RECS[id].view_bad.load(SeqCst) == 0,
                        "context_run: the function saw the wrong table: {}",
                        VIEW_TEXT.lock().unwrap_or_else(|e| e.into_inner())
                    );
                    ensure!(self, code_out == code, "context_run code {code_out}");
                    let want_result = if sets_result {
                        result_ptr(id)
                    } else {
                        null_mut()
                    };
                    ensure!(self, result == want_result, "context_run result {result:?}");
                    for cid in Self::clone_ids(&map) {
                        self.expect_clone(cid);
                    }
                } else {
                    ensure!(self, ran == 0, "context_run refused but fn ran");
                    ensure!(
                        self,
                        result as usize == 0xF00D && code_out == 4242,
                        "an error wrote outputs"
                    );
                }
            }
            _ => {
                let null_ctx = self.chance(10);
                if null_ctx {
                    let got = asyncify_context_free(null_mut());
                    return self.status("asyncify_context_free", got, ASYNCIFY_E_NULL);
                }
                let Some(i) = self.context_pick() else {
                    return Ok(());
                };
                let (p, _) = self.contexts.swap_remove(i);
                let got = asyncify_context_free(p);
                self.status("asyncify_context_free", got, ASYNCIFY_OK)?;
            }
        }
        Ok(())
    }

    fn expect_clone(&mut self, id: usize) {
        // Checked in check_values: made == released == expected.
        while self.clone_expect.len() <= id {
            self.clone_expect.push(0);
        }
        self.clone_expect[id] += 1;
    }

    fn new_task_id(&mut self) -> Option<usize> {
        let id = self.task_ids;
        if id >= MAX_TASKS {
            return None;
        }
        self.task_ids += 1;
        Some(id)
    }
}

// ---- tasks, handles, queues, pools ----

/// Where the published layouts of `asyncify_submit_options` end: 0.1's at
/// `context`, 0.2's at `start_within_ms` (then tail padding).
const SUBMIT_0_1_END: usize = offset_of!(asyncify_submit_options, context) + size_of::<usize>();
const SUBMIT_0_2_END: usize =
    offset_of!(asyncify_submit_options, start_within_ms) + size_of::<u32>();

#[repr(C)]
struct BigSubmitOptions {
    opts: asyncify_submit_options,
    tail: [u8; 8],
}

/// Where `asyncify_limiter_options` ends (its one published layout).
const LIMITER_OPTIONS_END: usize =
    offset_of!(asyncify_limiter_options, name) + size_of::<*const c_char>();

/// A rate whose next token would come after days: within a run, only the
/// bucket's burst is admitted, as the model says.
const TINY_RATE: f64 = 1e-6;

#[repr(C)]
struct BigPoolOptions {
    opts: asyncify_pool_options,
    tail: [u8; 8],
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// A valid handle of task `i`.
    Live(usize),
    /// Anything else: zero, released, stale, forged.
    Invalid,
}

impl<C: Choices> Interp<C> {
    fn valid_handle(t: &MTask) -> Option<u64> {
        (!t.released).then_some(t.handle).flatten()
    }

    fn target_of(&self, h: u64) -> Target {
        self.tasks
            .iter()
            .position(|t| Self::valid_handle(t) == Some(h))
            .map_or(Target::Invalid, Target::Live)
    }

    /// A handle to use: mostly live ones, else zero, stale, forged or random.
    fn some_handle(&mut self) -> (u64, Target) {
        let live: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| Self::valid_handle(&self.tasks[i]).is_some())
            .collect();
        let h = match self.pick(12) {
            0 => 0,
            1 if !self.stale.is_empty() => {
                let i = self.pick(self.stale.len() as u32) as usize;
                self.stale[i]
            }
            2 if !live.is_empty() => {
                let i = live[self.pick(live.len() as u32) as usize];
                let bit = self.pick(64);
                self.tasks[i].handle.expect("live") ^ (1u64 << bit)
            }
            3 => (u64::from(self.pick(u32::MAX)) << 32) | u64::from(self.pick(u32::MAX)),
            _ if !live.is_empty() => {
                let i = live[self.pick(live.len() as u32) as usize];
                self.tasks[i].handle.expect("live")
            }
            _ => 0x0000_0001_1000_0001,
        };
        (h, self.target_of(h))
    }

    fn op_submit(&mut self) -> Result<(), String> {
        let Some(id) = self.new_task_id() else {
            return Ok(());
        };
        let pool = self.pick(2) as usize;
        let code = [0, 0, 0, 1, -7][self.pick(5) as usize];
        let sets_result = self.chance(80);
        let on_done_on = self.chance(40);
        let live_cqs: Vec<usize> = (0..self.cqs.len())
            .filter(|&i| self.cqs[i].is_some())
            .collect();
        let cq = (!on_done_on && !live_cqs.is_empty() && self.chance(50))
            .then(|| live_cqs[self.pick(live_cqs.len() as u32) as usize]);
        let detached = self.chance(20);
        let ctx_roll = self.pick(10);
        let ctx = if ctx_roll == 1 {
            self.context_pick()
        } else {
            None
        };
        let empty = ctx_roll == 0;
        let live_limiters: Vec<usize> = (0..self.limiters.len())
            .filter(|&l| !self.limiters[l].ptr.is_null())
            .collect();
        let limiter = (!live_limiters.is_empty() && self.chance(45))
            .then(|| live_limiters[self.pick(live_limiters.len() as u32) as usize]);
        // 0: none; long deadlines are never reached during a run; short ones
        // always are (the pool is paused), and the interpreter waits for them.
        let start_within_ms: u32 = match self.pick(20) {
            0..=2 => [600_000, 3_600_000, u32::MAX][self.pick(3) as usize],
            3 | 4 => 1,
            _ => 0,
        };
        let mut fault = if self.chance(20) { 1 + self.pick(8) } else { 0 };
        if fault == 7 && self.contexts.is_empty() {
            fault = 0;
        }
        if fault == 6 && detached && start_within_ms != 0 {
            fault = 0; // (accepted without a handle: nothing to wait with)
        }
        // The layout the caller was built with: the current one, or an older
        // one (0.1 ends at `context`), or a size between two layouts.
        let size = match (fault, self.pick(10)) {
            (0, 0) => SUBMIT_0_1_END,
            (0, 1) => SUBMIT_0_1_END + size_of::<usize>(),
            (0, 2) => SUBMIT_0_2_END,
            (0, 3) => size_of::<asyncify_submit_options>() - 1,
            _ => size_of::<asyncify_submit_options>(),
        };
        // A short deadline is waited for through the handle.
        let null_out_ok = detached && start_within_ms == 0 && self.chance(30);
        TASK_RECS[id].code.store(code, SeqCst);
        TASK_RECS[id]
            .sets_result
            .store(u32::from(sets_result), SeqCst);

        let mut big = BigSubmitOptions {
            // SAFETY: plain old data; init fills it.
            opts: unsafe { std::mem::zeroed() },
            tail: [0; 8],
        };
        let s = asyncify_submit_options_init(&mut big.opts, size_of::<asyncify_submit_options>());
        self.status("asyncify_submit_options_init", s, ASYNCIFY_OK)?;
        let o = &mut big.opts;
        o.struct_size = size as u32;
        o.pool = self.pools[pool];
        o.on_done_data = (id + 1) as *mut c_void;
        o.free_arg = Some(free_arg);
        o.free_result = Some(free_result);
        if on_done_on {
            o.on_done = Some(on_done);
        }
        if let Some(q) = cq {
            o.cq = self.cqs[q].as_ref().expect("live").ptr;
        }
        if detached {
            o.flags |= ASYNCIFY_SUBMIT_DETACHED;
        }
        if empty {
            o.flags |= ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
        }
        if let Some(c) = ctx {
            o.context = self.contexts[c].0;
        }
        if let Some(l) = limiter {
            o.limiter = self.limiters[l].ptr;
        }
        o.start_within_ms = start_within_ms;
        match fault {
            2 => {
                o.struct_size = [0, 4, SUBMIT_0_1_END as u32 - 1][self.pick(3) as usize];
            }
            3 => {
                o.struct_size = size_of::<BigSubmitOptions>() as u32;
                big.tail[self.pick(8) as usize] = 1;
            }
            4 => big.opts.struct_size = size_of::<BigSubmitOptions>() as u32,
            5 => big.opts.flags |= 1 << (2 + self.pick(30)),
            7 => {
                big.opts.flags |= ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
                big.opts.context = self.contexts[0].0;
            }
            8 => {
                // The padding after the last field is past every layout's end.
                o.struct_size = size_of::<asyncify_submit_options>().max(SUBMIT_0_2_END + 1) as u32;
                let bytes = &mut big as *mut BigSubmitOptions as *mut u8;
                // SAFETY: within `big`, which is SUBMIT_0_2_END + 1 bytes or more.
                unsafe { *bytes.add(SUBMIT_0_2_END) = 1 };
            }
            _ => {}
        }
        // What the library reads: the fields of the newest layout that the
        // struct_size covers; every byte from there to struct_size must be zero.
        let struct_size = big.opts.struct_size as usize;
        let covered = [SUBMIT_0_1_END, SUBMIT_0_2_END]
            .into_iter()
            .rev()
            .find(|&end| end <= struct_size);
        let tail_dirty = covered.is_some_and(|c| {
            // SAFETY: `big` is plain old data of at least `struct_size` bytes
            // (struct_size is at most the size of BigSubmitOptions).
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    &big as *const BigSubmitOptions as *const u8,
                    struct_size,
                )
            };
            bytes[c..].iter().any(|&b| b != 0)
        });
        let reads_new = covered == Some(SUBMIT_0_2_END);
        let limiter = limiter.filter(|_| reads_new);
        let start_within_ms = if reads_new { start_within_ms } else { 0 };
        let mut h = 0xAAAA_u64;
        let out: *mut u64 = if fault == 6 || null_out_ok {
            null_mut()
        } else {
            &mut h
        };
        let got = asyncify_submit(
            if fault == 1 { None } else { Some(work) },
            (id + 1) as *mut c_void,
            &big.opts,
            out,
        );
        let expect = match fault {
            1 => ASYNCIFY_E_NULL,
            2 | 3 | 5 | 7 | 8 => ASYNCIFY_E_INVALID_ARGUMENT,
            _ if covered.is_none() || tail_dirty => ASYNCIFY_E_INVALID_ARGUMENT,
            6 if !detached => ASYNCIFY_E_NULL,
            _ if pool == 1 && self.counts[1].queued >= 2 => ASYNCIFY_E_BUSY,
            _ => ASYNCIFY_OK,
        };
        self.status("asyncify_submit", got, expect)?;
        if expect != ASYNCIFY_OK {
            ensure!(self, h == 0xAAAA, "a refused submit wrote out_handle");
            return Ok(());
        }
        self.figures.tasks += 1;
        let handle = (!out.is_null()).then_some(h);
        if let Some(h) = handle {
            ensure!(self, h != 0, "submit gave handle 0");
            ensure!(
                self,
                self.target_of(h) == Target::Invalid,
                "submit gave a live handle again"
            );
            ensure!(
                self,
                !self.stale.contains(&h),
                "submit gave a released handle again"
            );
        }
        let snapshot = if empty {
            Map::new()
        } else if let Some(c) = ctx {
            self.contexts[c].1.clone()
        } else {
            self.table.clone()
        };
        self.counts[pool].submitted += 1;
        self.counts[pool].queued += 1;
        let i = self.tasks.len();
        self.tasks.push(MTask {
            id,
            handle,
            pool,
            code,
            sets_result,
            on_done: on_done_on,
            cq,
            detached,
            released: false,
            state: if limiter.is_some() {
                State::Waiting
            } else {
                State::Queued
            },
            result: ResultAt::Nowhere,
            snapshot,
            arg_freed: 0,
            result_freed: 0,
            limiter,
            holds_place: false,
        });
        if let Some(l) = limiter {
            self.figures.limited += 1;
            self.limiters[l].submitted += 1;
            self.limiters[l].waiting.push_back(i);
            self.admit(l, false);
        } else {
            self.queues[pool].push_back(i);
        }
        if start_within_ms == 1 {
            self.settle_expiry(i)?;
        }
        Ok(())
    }

    /// Admits the waiting tasks of limiter `l` while a place and (with a rate)
    /// a token allow, in order: they move into their pools' queues.
    fn admit(&mut self, l: usize, later: bool) {
        loop {
            let lim = &mut self.limiters[l];
            if lim.running >= u64::from(lim.max_running) || (lim.rate > 0.0 && lim.tokens == 0) {
                return;
            }
            let Some(i) = lim.waiting.pop_front() else {
                return;
            };
            lim.running += 1;
            lim.admitted += 1;
            if lim.rate > 0.0 {
                lim.tokens -= 1;
            }
            let t = &mut self.tasks[i];
            t.state = State::Queued;
            t.holds_place = true;
            self.queues[t.pool].push_back(i);
            if later {
                self.figures.admitted_later += 1;
            }
        }
    }

    /// Task `i` gives its limiter's place back (it returned, or left queued).
    fn give_place_back(&mut self, i: usize) {
        if !std::mem::take(&mut self.tasks[i].holds_place) {
            return;
        }
        let l = self.tasks[i].limiter.expect("a place of its limiter");
        self.limiters[l].running -= 1;
        self.admit(l, true);
    }

    /// Task `i`, not started, leaves with `status` (CANCELLED or EXPIRED):
    /// the counts, its limiter, `free_arg`, then the report.
    fn left_unstarted(&mut self, i: usize, status: i32) {
        let expired = status == ASYNCIFY_EXPIRED;
        let pool = self.tasks[i].pool;
        let c = &mut self.counts[pool];
        c.queued -= 1;
        if expired {
            c.expired += 1;
            self.figures.expired += 1;
        } else {
            c.cancelled += 1;
        }
        if self.tasks[i].state == State::Queued {
            self.queues[pool].retain(|&q| q != i);
        }
        if self.tasks[i].state == State::Waiting {
            let l = self.tasks[i].limiter.expect("waits for its limiter");
            let lim = &mut self.limiters[l];
            lim.waiting.retain(|&w| w != i);
            if expired {
                lim.expired += 1;
            } else {
                lim.cancelled_waiting += 1;
                self.figures.cancelled_waiting += 1;
            }
        }
        self.give_place_back(i);
        self.tasks[i].arg_freed += 1;
        self.terminal(i, status, 0);
    }

    /// Task `i` was submitted with a start deadline of a few milliseconds and
    /// cannot start (its pool is paused): waits until the library's timer has
    /// expired it and reported it completely (`free_arg`, `on_done`, the
    /// completion published; a detached handle gone), then models the expiry.
    fn settle_expiry(&mut self, i: usize) -> Result<(), String> {
        let t = self.tasks[i].clone();
        let h = t.handle.expect("short deadlines are given a handle");
        let r = &TASK_RECS[t.id];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let freed = r.arg_freed.load(SeqCst) == 1;
            let done = !t.on_done || r.done_calls.load(SeqCst) == 1;
            let polled = asyncify_poll(h, null_mut(), null_mut());
            let reported = if t.detached {
                polled == ASYNCIFY_E_INVALID_HANDLE
            } else {
                polled == ASYNCIFY_EXPIRED
            };
            if freed && done && reported {
                if polled < 0 {
                    self.last_error_fn = Some("asyncify_poll");
                }
                break;
            }
            ensure!(
                self,
                Instant::now() < deadline,
                "task {} (start_within_ms of a few ms, pool paused) not expired after 20 s: free_arg {}, on_done {}, poll {}",
                t.id,
                r.arg_freed.load(SeqCst),
                r.done_calls.load(SeqCst),
                status_name(polled)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        self.note(format!("task {} expired", t.id));
        self.left_unstarted(i, ASYNCIFY_EXPIRED);
        Ok(())
    }

    /// The task `i` reached a terminal state: report it as the library does.
    fn terminal(&mut self, i: usize, status: i32, code: i32) {
        let t = &self.tasks[i];
        let ran = matches!(status, ASYNCIFY_OK | ASYNCIFY_FAILED);
        let result_here = t.sets_result && ran;
        let queue = t.cq.filter(|&q| !t.on_done && self.cqs[q].is_some());
        let result = if !result_here {
            ResultAt::Nowhere
        } else if t.on_done {
            ResultAt::OnDone
        } else if queue.is_some() {
            ResultAt::Queue
        } else if t.released || t.detached {
            ResultAt::Freed
        } else {
            ResultAt::Handle
        };
        if let Some(q) = queue {
            let rec = Completion {
                task: i,
                status,
                code,
                result: if result_here {
                    result_ptr(t.id) as usize
                } else {
                    0
                },
            };
            self.cqs[q].as_mut().expect("live").items.push_back(rec);
        }
        let t = &mut self.tasks[i];
        // The task's snapshot goes as soon as it is terminal (run or cancelled).
        t.snapshot.clear();
        if result == ResultAt::Freed {
            t.result_freed += 1;
        }
        t.result = result;
        t.state = match status {
            ASYNCIFY_CANCELLED => State::Cancelled,
            ASYNCIFY_EXPIRED => State::Expired,
            _ => State::Done { status, code },
        };
        if t.detached && !t.released {
            t.released = true;
            if let Some(h) = t.handle {
                self.stale.push(h);
            }
        }
    }

    fn op_handle(&mut self) -> Result<(), String> {
        let (h, target) = self.some_handle();
        match self.pick(10) {
            0..=2 => {
                let want_result = self.chance(60);
                let want_code = self.chance(70);
                let mut result = 0xC0DEusize as *mut c_void;
                let mut code = 31337;
                let got = asyncify_poll(
                    h,
                    if want_result { &mut result } else { null_mut() },
                    if want_code { &mut code } else { null_mut() },
                );
                self.observe(
                    "asyncify_poll",
                    target,
                    got,
                    want_result,
                    want_code,
                    result,
                    code,
                    false,
                )
            }
            3 | 4 => {
                let want_result = self.chance(60);
                let mut result = 0xC0DEusize as *mut c_void;
                let mut code = 31337;
                let forever = matches!(target, Target::Live(i) if !self.tasks[i].state.pending())
                    && self.chance(30);
                let got = asyncify_wait(
                    h,
                    if forever { -1 } else { 0 },
                    if want_result { &mut result } else { null_mut() },
                    &mut code,
                );
                self.observe(
                    "asyncify_wait",
                    target,
                    got,
                    want_result,
                    true,
                    result,
                    code,
                    true,
                )
            }
            5 | 6 => {
                let got = asyncify_cancel(h);
                let expect = match target {
                    Target::Invalid => ASYNCIFY_E_INVALID_HANDLE,
                    Target::Live(i) => match self.tasks[i].state {
                        State::Waiting | State::Queued => ASYNCIFY_CANCELLED,
                        State::Done { status, .. } => status,
                        State::Cancelled => ASYNCIFY_CANCELLED,
                        State::Expired => ASYNCIFY_EXPIRED,
                    },
                };
                self.status("asyncify_cancel", got, expect)?;
                if let Target::Live(i) = target {
                    if self.tasks[i].state.pending() {
                        self.left_unstarted(i, ASYNCIFY_CANCELLED);
                    }
                }
                Ok(())
            }
            _ => {
                let got = asyncify_release(h);
                let expect = match target {
                    Target::Invalid => ASYNCIFY_E_INVALID_HANDLE,
                    Target::Live(_) => ASYNCIFY_OK,
                };
                self.status("asyncify_release", got, expect)?;
                if let Target::Live(i) = target {
                    let t = &mut self.tasks[i];
                    t.released = true;
                    self.stale.push(h);
                    if t.result == ResultAt::Handle {
                        t.result = ResultAt::Freed;
                        t.result_freed += 1;
                    }
                }
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        function: &'static str,
        target: Target,
        got: i32,
        want_result: bool,
        want_code: bool,
        result: *mut c_void,
        code: i32,
        is_wait: bool,
    ) -> Result<(), String> {
        let Target::Live(i) = target else {
            self.status(function, got, ASYNCIFY_E_INVALID_HANDLE)?;
            ensure!(
                self,
                result as usize == 0xC0DE && code == 31337,
                "{function}: an error wrote outputs"
            );
            return Ok(());
        };
        let t = self.tasks[i].clone();
        let (expect, want_code_value) = match t.state {
            State::Waiting | State::Queued => (
                if is_wait {
                    ASYNCIFY_TIMEOUT
                } else {
                    ASYNCIFY_PENDING
                },
                0,
            ),
            State::Done { status, code } => (status, code),
            State::Cancelled => (ASYNCIFY_CANCELLED, 0),
            State::Expired => (ASYNCIFY_EXPIRED, 0),
        };
        self.status(function, got, expect)?;
        if want_code {
            ensure!(
                self,
                code == want_code_value,
                "{function}: code {code}, expected {want_code_value}"
            );
        }
        if want_result {
            let moves = t.result == ResultAt::Handle;
            let want_ptr = if moves { result_ptr(t.id) } else { null_mut() };
            ensure!(
                self,
                result == want_ptr,
                "{function}: result {result:?}, expected {want_ptr:?}"
            );
            if moves {
                self.tasks[i].result = ResultAt::Taken;
            }
        }
        Ok(())
    }

    fn op_wait_any(&mut self) -> Result<(), String> {
        let n = 1 + self.pick(4) as usize;
        let mut hs = Vec::new();
        let mut targets = Vec::new();
        for _ in 0..n {
            let (h, t) = self.some_handle();
            hs.push(h);
            targets.push(t);
        }
        let fault = if self.chance(15) { 1 + self.pick(3) } else { 0 };
        let mut index = 999usize;
        let got = asyncify_wait_any(
            if fault == 1 { null() } else { hs.as_ptr() },
            if fault == 2 { 0 } else { hs.len() },
            0,
            if fault == 3 { null_mut() } else { &mut index },
        );
        let first_terminal = targets.iter().position(|t| match t {
            Target::Live(i) => !self.tasks[*i].state.pending(),
            Target::Invalid => false,
        });
        let expect = match fault {
            1 | 3 => ASYNCIFY_E_NULL,
            2 => ASYNCIFY_E_INVALID_ARGUMENT,
            _ if targets.contains(&Target::Invalid) => ASYNCIFY_E_INVALID_HANDLE,
            _ if first_terminal.is_some() => ASYNCIFY_OK,
            _ => ASYNCIFY_TIMEOUT,
        };
        self.status("asyncify_wait_any", got, expect)?;
        if expect == ASYNCIFY_OK {
            ensure!(
                self,
                Some(index) == first_terminal,
                "wait_any index {index}, expected {first_terminal:?}"
            );
        } else {
            ensure!(self, index == 999, "wait_any wrote out_index without OK");
        }
        Ok(())
    }

    /// Stats of `pool` (quiet) against the model's counts, and the identity
    /// submitted = completed + failed + cancelled + abandoned + expired + queued.
    fn check_pool_stats(&self, pool: usize, st: &asyncify_pool_stats) -> Result<(), String> {
        let c = self.counts[pool];
        let got = Counts {
            submitted: st.submitted,
            completed: st.completed,
            failed: st.failed,
            cancelled: st.cancelled,
            expired: st.expired,
            queued: st.queued,
        };
        ensure!(
            self,
            got == c,
            "stats of pool {pool}: {got:?}, the model has {c:?}"
        );
        ensure!(
            self,
            st.limit == 0 && st.running == 0 && st.abandoned == 0,
            "stats of pool {pool}: limit {}, running {}, abandoned {} (all 0 expected; threads {}, idle {})",
            st.limit,
            st.running,
            st.abandoned,
            st.threads,
            st.idle_threads
        );
        ensure!(
            self,
            st.submitted
                == st.completed + st.failed + st.cancelled + st.abandoned + st.expired + st.queued,
            "pool {pool}: the stats identity does not hold: {got:?}"
        );
        Ok(())
    }

    fn stats(&mut self, pool: usize) -> Result<asyncify_pool_stats, String> {
        // SAFETY: plain old data.
        let mut s: asyncify_pool_stats = unsafe { std::mem::zeroed() };
        s.struct_size = size_of::<asyncify_pool_stats>() as u32;
        let got = asyncify_stats(self.pools[pool], &mut s);
        self.status("asyncify_stats", got, ASYNCIFY_OK)?;
        Ok(s)
    }

    /// Lets one pool run everything queued (limit 1: FIFO, one at a time),
    /// waits until it is quiet, and pauses it again.
    fn op_run(&mut self) -> Result<(), String> {
        let pool = self.pick(2) as usize;
        self.run_pool(pool)
    }

    fn run_pool(&mut self, pool: usize) -> Result<(), String> {
        self.figures.runs += 1;
        // Every task of this pool that may start during the run: the queued
        // ones, and the waiting ones that a place given back may admit.
        {
            let mut views = VIEWS.lock().unwrap_or_else(|e| e.into_inner());
            for t in self
                .tasks
                .iter()
                .filter(|t| t.pool == pool && t.state.pending())
            {
                views[t.id] = Some(self.view_of(&t.snapshot));
            }
        }
        // The run, in the model: one at a time, each callable that returns
        // gives its limiter's place back, which may admit waiting tasks (into
        // this pool's queue, to run in this run, or into the other's).
        let mut ran = Vec::new();
        while let Some(i) = self.queues[pool].pop_front() {
            let t = &self.tasks[i];
            let (status, code) = if t.code == 0 {
                (ASYNCIFY_OK, 0)
            } else {
                (ASYNCIFY_FAILED, t.code)
            };
            if status == ASYNCIFY_OK {
                self.counts[pool].completed += 1;
            } else {
                self.counts[pool].failed += 1;
            }
            self.counts[pool].queued -= 1;
            for cid in Self::clone_ids(&self.tasks[i].snapshot) {
                self.expect_clone(cid);
            }
            self.tasks[i].snapshot.clear();
            if let (0, Some(l)) = (pool, self.tasks[i].limiter) {
                self.limiters[l].recorded += 1;
            }
            self.give_place_back(i);
            self.terminal(i, status, code);
            ran.push(i);
        }
        let left = self.counts[pool].queued;
        let got = asyncify_set_max_workers(self.pools[pool], 1);
        self.status("asyncify_set_max_workers", got, ASYNCIFY_OK)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Tasks still waiting for a limiter stay counted as queued.
            let s = self.stats(pool)?;
            if s.queued == left && s.running == 0 {
                break;
            }
            ensure!(
                self,
                Instant::now() < deadline,
                "pool {pool} never ran its queue after set_max_workers(1): {} queued ({left} expected to wait for a limiter), {} running, {} threads, {} idle, limit {}",
                s.queued,
                s.running,
                s.threads,
                s.idle_threads,
                s.limit
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let got = asyncify_set_max_workers(self.pools[pool], 0);
        self.status("asyncify_set_max_workers", got, ASYNCIFY_OK)?;
        // A worker that took the queue entry of a task that left early (a
        // tombstone) holds a slot until it has skipped it: running shows it
        // for that moment, with no callable. Paused, it gives the slot back.
        loop {
            let s = self.stats(pool)?;
            if s.running == 0 {
                break;
            }
            ensure!(
                self,
                Instant::now() < deadline,
                "pool {pool}: {} running after it was paused with its queue run",
                s.running
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        self.note(format!(
            "ran pool {pool} ({} tasks, run {})",
            ran.len(),
            self.figures.runs
        ));
        Ok(())
    }

    fn op_cq(&mut self) -> Result<(), String> {
        let live: Vec<usize> = (0..self.cqs.len())
            .filter(|&i| self.cqs[i].is_some())
            .collect();
        let pick_live =
            |me: &mut Self| (!live.is_empty()).then(|| live[me.pick(live.len() as u32) as usize]);
        match self.pick(8) {
            0 => {
                if live.len() >= 3 {
                    return Ok(());
                }
                let null_out = self.chance(10);
                let mut q = null_mut();
                let got = asyncify_cq_new(if null_out { null_mut() } else { &mut q });
                self.status("asyncify_cq_new", got, ok_unless_null(null_out))?;
                if !null_out {
                    self.cqs.push(Some(MCq {
                        ptr: q,
                        items: VecDeque::new(),
                    }));
                }
            }
            1 => {
                let Some(q) = pick_live(self) else {
                    return Ok(());
                };
                let fault = self.pick(6);
                let mut fd = -7;
                let got = asyncify_cq_fd(
                    if fault == 0 {
                        null()
                    } else {
                        self.cqs[q].as_ref().expect("live").ptr
                    },
                    if fault == 1 { null_mut() } else { &mut fd },
                );
                self.status(
                    "asyncify_cq_fd",
                    got,
                    if fault <= 1 {
                        ASYNCIFY_E_NULL
                    } else {
                        ASYNCIFY_OK
                    },
                )?;
                ensure!(self, fault <= 1 || fd >= 0, "cq_fd gave {fd}");
            }
            2 => {
                let Some(q) = pick_live(self) else {
                    return Ok(());
                };
                let got = asyncify_cq_wait(self.cqs[q].as_ref().expect("live").ptr, 0);
                let expect = if self.cqs[q].as_ref().expect("live").items.is_empty() {
                    ASYNCIFY_TIMEOUT
                } else {
                    ASYNCIFY_OK
                };
                self.status("asyncify_cq_wait", got, expect)?;
            }
            3..=5 => {
                let Some(q) = pick_live(self) else {
                    return Ok(());
                };
                let cap = self.pick(4) as usize;
                let fault = self.pick(10);
                // SAFETY: plain old data.
                let mut buf: [asyncify_completion; 4] = unsafe { std::mem::zeroed() };
                let mut n = 99usize;
                let ptr = self.cqs[q].as_ref().expect("live").ptr;
                let got = asyncify_cq_drain(
                    if fault == 0 { null_mut() } else { ptr },
                    if fault == 1 || cap == 0 {
                        null_mut()
                    } else {
                        buf.as_mut_ptr()
                    },
                    cap,
                    if fault == 2 { null_mut() } else { &mut n },
                );
                let expect = if fault == 0 || fault == 2 || (fault == 1 && cap > 0) {
                    ASYNCIFY_E_NULL
                } else {
                    ASYNCIFY_OK
                };
                self.status("asyncify_cq_drain", got, expect)?;
                if expect == ASYNCIFY_OK {
                    let want_n = cap.min(self.cqs[q].as_ref().expect("live").items.len());
                    ensure!(self, n == want_n, "cq_drain gave {n}, expected {want_n}");
                    for rec in buf.iter().take(n) {
                        let c = self.cqs[q]
                            .as_mut()
                            .expect("live")
                            .items
                            .pop_front()
                            .expect("counted");
                        let t = self.tasks[c.task].clone();
                        ensure!(
                            self,
                            rec.status == c.status
                                && rec.code == c.code
                                && rec.result as usize == c.result,
                            "cq record {}/{}/{:?}, expected {}/{}/{:#x} (task {})",
                            rec.status,
                            rec.code,
                            rec.result,
                            c.status,
                            c.code,
                            c.result,
                            t.id
                        );
                        ensure!(
                            self,
                            rec.user_data as usize == t.id + 1,
                            "cq record user_data"
                        );
                        if let Some(h) = t.handle {
                            ensure!(self, rec.handle == h, "cq record handle");
                        }
                        if c.result != 0 {
                            self.tasks[c.task].result = ResultAt::Taken;
                        }
                    }
                }
            }
            _ => {
                if self.chance(10) {
                    let got = asyncify_cq_free(null_mut());
                    return self.status("asyncify_cq_free", got, ASYNCIFY_E_NULL);
                }
                let Some(q) = pick_live(self) else {
                    return Ok(());
                };
                self.free_cq(q)?;
            }
        }
        Ok(())
    }

    fn free_cq(&mut self, q: usize) -> Result<(), String> {
        let cq = self.cqs[q].take().expect("live");
        let got = asyncify_cq_free(cq.ptr);
        self.status("asyncify_cq_free", got, ASYNCIFY_OK)?;
        for c in cq.items {
            if c.result != 0 {
                let t = &mut self.tasks[c.task];
                t.result = ResultAt::Freed;
                t.result_freed += 1;
            }
        }
        Ok(())
    }

    /// A versioned struct the library filled in `buf` (pre-filled with 0xAB):
    /// its `struct_size` says `filled` bytes, and nothing past them changed.
    fn check_versioned_out(&self, buf: &[u8], filled: usize, function: &str) -> Result<(), String> {
        ensure!(
            self,
            u32::from_ne_bytes(buf[..4].try_into().expect("4")) as usize == filled,
            "{function}: struct_size is not the bytes filled ({filled})"
        );
        ensure!(
            self,
            buf[filled..].iter().all(|&b| b == 0xAB),
            "{function} wrote past struct_size"
        );
        Ok(())
    }

    fn op_structs(&mut self) -> Result<(), String> {
        match self.pick(8) {
            0 => {
                let pool = self.pick(2) as usize;
                let fault = self.pick(8);
                let mut s = [0xABu8; size_of::<asyncify_pool_stats>() + 8];
                let size: u32 = match fault {
                    0 => 0,
                    1 => 3,
                    2 => 8,
                    // A caller built before `expired` was appended (0.1).
                    5 => offset_of!(asyncify_pool_stats, expired) as u32,
                    _ => size_of::<asyncify_pool_stats>() as u32 + if fault == 3 { 8 } else { 0 },
                };
                s[..4].copy_from_slice(&size.to_ne_bytes());
                let null_out = fault == 4;
                let got = asyncify_stats(
                    self.pools[pool],
                    if null_out {
                        null_mut()
                    } else {
                        s.as_mut_ptr().cast()
                    },
                );
                let expect = match fault {
                    0 | 1 => ASYNCIFY_E_INVALID_ARGUMENT,
                    4 => ASYNCIFY_E_NULL,
                    _ => ASYNCIFY_OK,
                };
                self.status("asyncify_stats", got, expect)?;
                if expect == ASYNCIFY_OK {
                    let filled = (size as usize).min(size_of::<asyncify_pool_stats>());
                    self.check_versioned_out(&s, filled, "asyncify_stats")?;
                    if filled >= offset_of!(asyncify_pool_stats, expired) {
                        // SAFETY: the bytes hold a filled stats struct (its
                        // `expired` only when filled that far).
                        let mut st: asyncify_pool_stats =
                            unsafe { std::ptr::read_unaligned(s.as_ptr().cast()) };
                        if filled < size_of::<asyncify_pool_stats>() {
                            st.expired = self.counts[pool].expired;
                        }
                        self.check_pool_stats(pool, &st)?;
                    }
                }
            }
            1 => {
                let pool = self.pick(2) as usize;
                let null_out = self.chance(20);
                let mut n = 77u32;
                let got = asyncify_get_max_workers(
                    self.pools[pool],
                    if null_out { null_mut() } else { &mut n },
                );
                self.status("asyncify_get_max_workers", got, ok_unless_null(null_out))?;
                ensure!(self, null_out || n == 0, "a paused pool's limit is {n}");
            }
            2 | 3 => {
                let pool_opts = self.pick(2) == 1;
                let fault = self.pick(4);
                let mut buf = [0xABu8; size_of::<BigPoolOptions>() + size_of::<BigSubmitOptions>()];
                let ours = if pool_opts {
                    size_of::<asyncify_pool_options>()
                } else {
                    size_of::<asyncify_submit_options>()
                };
                // The oldest published layout (0.1) is the least a caller may pass.
                let least = if pool_opts {
                    offset_of!(asyncify_pool_options, hook_data) + size_of::<usize>()
                } else {
                    SUBMIT_0_1_END
                };
                let size = match fault {
                    0 => least - 1,
                    1 => ours + 8,
                    2 => least,
                    _ => ours,
                };
                let null_opts = fault == 3 && self.chance(50);
                let p: *mut u8 = if null_opts {
                    null_mut()
                } else {
                    buf.as_mut_ptr()
                };
                let (got, function) = if pool_opts {
                    (
                        asyncify_pool_options_init(p.cast(), size),
                        "asyncify_pool_options_init",
                    )
                } else {
                    (
                        asyncify_submit_options_init(p.cast(), size),
                        "asyncify_submit_options_init",
                    )
                };
                let expect = if null_opts {
                    ASYNCIFY_E_NULL
                } else if fault == 0 {
                    ASYNCIFY_E_INVALID_ARGUMENT
                } else {
                    ASYNCIFY_OK
                };
                self.status(function, got, expect)?;
                if expect == ASYNCIFY_OK {
                    self.check_versioned_out(&buf, size, function)?;
                    if pool_opts {
                        // SAFETY: the bytes hold an initialised options struct.
                        let o: asyncify_pool_options =
                            unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
                        ensure!(
                            self,
                            o.max_workers == 8 && o.max_queued == 0 && o.flags == 0,
                            "pool defaults"
                        );
                        ensure!(
                            self,
                            buf[size.min(size_of::<asyncify_pool_options>())..size]
                                .iter()
                                .all(|&b| b == 0),
                            "tail not zeroed"
                        );
                    } else {
                        ensure!(
                            self,
                            buf[8..size].iter().all(|&b| b == 0),
                            "submit options not zeroed"
                        );
                    }
                } else {
                    ensure!(
                        self,
                        buf.iter().all(|&b| b == 0xAB),
                        "{function} wrote on error"
                    );
                }
            }
            4 | 5 => {
                let mut big = BigPoolOptions {
                    // SAFETY: plain old data; init fills it.
                    opts: unsafe { std::mem::zeroed() },
                    tail: [0; 8],
                };
                let s =
                    asyncify_pool_options_init(&mut big.opts, size_of::<asyncify_pool_options>());
                self.status("asyncify_pool_options_init", s, ASYNCIFY_OK)?;
                big.opts.max_workers = 0;
                let bad_name = CString::new(vec![0xc3u8, 0x28]).expect("no NUL");
                let fault = self.pick(7);
                match fault {
                    0 => big.opts.struct_size = 4,
                    // Bits 0 and 1 are flags; every other one is unknown.
                    1 => big.opts.flags = 1 << (2 + self.pick(30)),
                    2 => big.opts.thread_name = bad_name.as_ptr(),
                    3 => {
                        big.opts.struct_size = size_of::<BigPoolOptions>() as u32;
                        big.tail[7] = 9;
                    }
                    4 => big.opts.struct_size = size_of::<BigPoolOptions>() as u32,
                    _ => {}
                }
                let null_out = fault == 5;
                let mut p = 0xFACEusize as *mut asyncify_pool;
                let got =
                    asyncify_pool_new_ex(&big.opts, if null_out { null_mut() } else { &mut p });
                let expect = match fault {
                    0..=3 => ASYNCIFY_E_INVALID_ARGUMENT,
                    5 => ASYNCIFY_E_NULL,
                    _ => ASYNCIFY_OK,
                };
                self.status("asyncify_pool_new_ex", got, expect)?;
                if expect == ASYNCIFY_OK {
                    let got = asyncify_pool_free(p, 0);
                    self.status("asyncify_pool_free", got, ASYNCIFY_OK)?;
                } else {
                    ensure!(self, p as usize == 0xFACE, "pool_new_ex wrote out on error");
                }
            }
            6 => {
                let got = asyncify_pool_free(null_mut(), 0);
                self.status("asyncify_pool_free", got, ASYNCIFY_E_NULL)?;
                let got = asyncify_pool_new(1, null_mut());
                self.status("asyncify_pool_new", got, ASYNCIFY_E_NULL)?;
            }
            _ => {
                // Status texts, the version, cancel_requested outside a task,
                // and last_error's own failure keeping the message.
                let s = self.pick(40) as i32 - 20;
                let text = asyncify_status_str(if self.chance(10) { i32::MIN } else { s });
                ensure!(self, !text.is_null(), "status_str returned NULL");
                // SAFETY: non-NULL, static, NUL-terminated.
                let text = unsafe { CStr::from_ptr(text) };
                ensure!(self, !text.to_bytes().is_empty(), "status_str empty");
                // SAFETY: as above.
                let v = unsafe { CStr::from_ptr(asyncify_version()) };
                let parts: Vec<&str> = v.to_str().unwrap_or("").split('.').collect();
                ensure!(
                    self,
                    parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
                    "version {v:?} is not MAJOR.MINOR.PATCH"
                );
                if let Some(want) = self.expected_version {
                    ensure!(
                        self,
                        v.to_str() == Ok(want),
                        "version {v:?}, expected {want}"
                    );
                }
                ensure!(
                    self,
                    !asyncify_cancel_requested(),
                    "cancel_requested outside a task"
                );
                let mut len = 5usize;
                let got = asyncify_last_error(null_mut(), 100_000, &mut len);
                self.figures.calls += 1;
                ensure!(
                    self,
                    got == ASYNCIFY_E_NULL,
                    "last_error(NULL, big cap): {got}"
                );
                self.check_last_error()?;
            }
        }
        Ok(())
    }

    // ---- limiters (8.2) ----

    fn live_limiter(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.limiters.len())
            .filter(|&l| !self.limiters[l].ptr.is_null())
            .collect();
        (!live.is_empty()).then(|| live[self.pick(live.len() as u32) as usize])
    }

    /// A rate the model can follow: none, or so low that no token is earned
    /// during a run.
    fn model_rate(&mut self) -> f64 {
        match self.pick(10) {
            0..=5 => 0.0,
            6..=8 => TINY_RATE,
            _ => -0.0,
        }
    }

    fn bad_rate(&mut self) -> f64 {
        [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, -1e-300][self.pick(5) as usize]
    }

    fn op_limiter(&mut self) -> Result<(), String> {
        match self.pick(10) {
            0 | 1 => self.limiter_new(),
            2..=4 => self.limiter_set(),
            5 | 6 => {
                let Some(l) = self.live_limiter() else {
                    return Ok(());
                };
                self.limiter_stats_call(l)
            }
            7 => self.latency_call(),
            8 => {
                let Some(l) = self.live_limiter() else {
                    return Ok(());
                };
                self.free_limiter(l)
            }
            _ => {
                // NULL limiters.
                let (got, function, want) = match self.pick(4) {
                    0 => (
                        asyncify_limiter_set(null_mut(), 1, 0.0, 0),
                        "asyncify_limiter_set",
                        ASYNCIFY_E_NULL,
                    ),
                    1 => {
                        // SAFETY: plain old data.
                        let mut st: asyncify_limiter_stats = unsafe { std::mem::zeroed() };
                        st.struct_size = size_of::<asyncify_limiter_stats>() as u32;
                        (
                            asyncify_limiter_stats_get(null(), &mut st),
                            "asyncify_limiter_stats_get",
                            ASYNCIFY_E_NULL,
                        )
                    }
                    2 => (
                        asyncify_limiter_free(null_mut()),
                        "asyncify_limiter_free",
                        ASYNCIFY_E_NULL,
                    ),
                    _ => {
                        // SAFETY: plain old data.
                        let mut lat: asyncify_latency = unsafe { std::mem::zeroed() };
                        lat.struct_size = size_of::<asyncify_latency>() as u32;
                        (
                            asyncify_limiter_latency(null(), ASYNCIFY_LATENCY_RUN, &mut lat),
                            "asyncify_limiter_latency",
                            ASYNCIFY_E_NULL,
                        )
                    }
                };
                self.status(function, got, want)
            }
        }
    }

    fn limiter_new(&mut self) -> Result<(), String> {
        let live = self.limiters.iter().filter(|l| !l.ptr.is_null()).count();
        if live >= 4 || self.limiters.len() >= 16 {
            return Ok(());
        }
        let fault = if self.chance(35) { 1 + self.pick(9) } else { 0 };
        let mut buf = [0xABu8; size_of::<asyncify_limiter_options>() + 8];
        let init_size = match fault {
            1 => [0, 4, LIMITER_OPTIONS_END - 1][self.pick(3) as usize],
            6 | 9 => buf.len(),
            _ => size_of::<asyncify_limiter_options>(),
        };
        let got = asyncify_limiter_options_init(
            if fault == 2 {
                null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            init_size,
        );
        let want = match fault {
            1 => ASYNCIFY_E_INVALID_ARGUMENT,
            2 => ASYNCIFY_E_NULL,
            _ => ASYNCIFY_OK,
        };
        self.status("asyncify_limiter_options_init", got, want)?;
        if want != ASYNCIFY_OK {
            ensure!(
                self,
                buf.iter().all(|&b| b == 0xAB),
                "asyncify_limiter_options_init wrote on error"
            );
            return Ok(());
        }
        self.check_versioned_out(&buf, init_size, "asyncify_limiter_options_init")?;
        // SAFETY: the bytes hold an initialised options struct.
        let mut o: asyncify_limiter_options =
            unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        ensure!(
            self,
            o.max_running == u32::MAX
                && o.rate_per_s == 0.0
                && o.burst == 0
                && o.name.is_null()
                && buf[size_of::<asyncify_limiter_options>()..init_size]
                    .iter()
                    .all(|&b| b == 0),
            "limiter option defaults: max_running {}, rate {}, burst {}",
            o.max_running,
            o.rate_per_s,
            o.burst
        );
        o.max_running = [0, 1, 1, 2, 3, u32::MAX][self.pick(6) as usize];
        o.rate_per_s = self.model_rate();
        o.burst = self.pick(4);
        let n = self.limiters.len();
        let name = cstr(&format!("limiter-{n}"));
        let bad_name = CString::new(vec![b'l', 0xC3, 0x28]).expect("no NUL");
        o.name = match (fault, self.pick(3)) {
            (8, _) => bad_name.as_ptr(),
            (_, 0) => null(),
            _ => name.as_ptr(),
        };
        match fault {
            5 => o.struct_size = [0, 4, LIMITER_OPTIONS_END as u32 - 1][self.pick(3) as usize],
            7 => o.rate_per_s = self.bad_rate(),
            _ => {}
        }
        // SAFETY: `buf` holds the struct and 8 bytes past it.
        unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), o) };
        if fault == 6 {
            buf[size_of::<asyncify_limiter_options>() + self.pick(8) as usize] = 1;
        }
        let mut out = 0xFACE_usize as *mut asyncify_limiter;
        let got = asyncify_limiter_new(
            if fault == 3 {
                null()
            } else {
                buf.as_ptr().cast()
            },
            if fault == 4 { null_mut() } else { &mut out },
        );
        let want = match fault {
            3 | 4 => ASYNCIFY_E_NULL,
            5..=8 => ASYNCIFY_E_INVALID_ARGUMENT,
            _ => ASYNCIFY_OK,
        };
        self.status("asyncify_limiter_new", got, want)?;
        if want != ASYNCIFY_OK {
            ensure!(
                self,
                out as usize == 0xFACE,
                "asyncify_limiter_new wrote out on error"
            );
            return Ok(());
        }
        ensure!(
            self,
            !out.is_null() && out as usize != 0xFACE,
            "asyncify_limiter_new gave {out:?}"
        );
        let bucket = o.burst.max(1);
        self.figures.limiters += 1;
        self.limiters.push(MLimiter {
            ptr: out,
            max_running: o.max_running,
            rate: o.rate_per_s,
            bucket,
            tokens: bucket,
            running: 0,
            waiting: VecDeque::new(),
            admitted: 0,
            expired: 0,
            cancelled_waiting: 0,
            submitted: 0,
            recorded: 0,
        });
        Ok(())
    }

    fn limiter_set(&mut self) -> Result<(), String> {
        let Some(l) = self.live_limiter() else {
            return Ok(());
        };
        let bad = self.chance(15);
        let cur = self.limiters[l].max_running;
        let max_running = [
            0,
            1,
            2,
            3,
            u32::MAX,
            cur.saturating_add(1),
            cur.saturating_sub(1),
        ][self.pick(7) as usize];
        let rate = if bad {
            self.bad_rate()
        } else {
            self.model_rate()
        };
        let burst = self.pick(4);
        let got = asyncify_limiter_set(self.limiters[l].ptr, max_running, rate, burst);
        let want = if bad {
            ASYNCIFY_E_INVALID_ARGUMENT
        } else {
            ASYNCIFY_OK
        };
        self.status("asyncify_limiter_set", got, want)?;
        if !bad {
            self.set_limiter_model(l, max_running, rate, burst);
        }
        Ok(())
    }

    /// What a successful `asyncify_limiter_set` does to the model.
    fn set_limiter_model(&mut self, l: usize, max_running: u32, rate: f64, burst: u32) {
        let lim = &mut self.limiters[l];
        let bucket = burst.max(1);
        // A rate set where there was none starts with a full bucket.
        lim.tokens = if lim.rate == 0.0 {
            bucket
        } else {
            lim.tokens.min(bucket)
        };
        lim.max_running = max_running;
        lim.rate = rate;
        lim.bucket = bucket;
        self.admit(l, true);
    }

    /// The library's stats of limiter `l` (quietly: not a logged call).
    fn limiter_stats(&self, l: usize) -> Result<asyncify_limiter_stats, String> {
        // SAFETY: plain old data.
        let mut st: asyncify_limiter_stats = unsafe { std::mem::zeroed() };
        st.struct_size = size_of::<asyncify_limiter_stats>() as u32;
        let got = asyncify_limiter_stats_get(self.limiters[l].ptr, &mut st);
        ensure!(
            self,
            got == ASYNCIFY_OK,
            "asyncify_limiter_stats_get of limiter {l}: {}",
            status_name(got)
        );
        Ok(st)
    }

    /// Stats of limiter `l` against the model, and its identity: every task
    /// submitted with it waits, was admitted, or left while waiting.
    fn check_limiter_stats(&self, l: usize, st: &asyncify_limiter_stats) -> Result<(), String> {
        let m = &self.limiters[l];
        let got = (
            st.max_running,
            st.waiting,
            st.running,
            st.admitted,
            st.expired,
            st.cancelled_waiting,
        );
        let want = (
            m.max_running,
            m.waiting.len() as u64,
            m.running,
            m.admitted,
            m.expired,
            m.cancelled_waiting,
        );
        ensure!(
            self,
            got == want,
            "limiter {l} stats (max_running, waiting, running, admitted, expired, cancelled_waiting) {got:?}, the model has {want:?}"
        );
        ensure!(
            self,
            st.waiting + st.admitted + st.expired + st.cancelled_waiting == m.submitted,
            "limiter {l}: waiting + admitted + expired + cancelled_waiting is not the {} tasks submitted with it",
            m.submitted
        );
        Ok(())
    }

    fn limiter_stats_call(&mut self, l: usize) -> Result<(), String> {
        let fault = self.pick(8);
        let full = size_of::<asyncify_limiter_stats>();
        let size: u32 = match fault {
            1 => [0, 3][self.pick(2) as usize],
            2 => 8,
            3 => offset_of!(asyncify_limiter_stats, admitted) as u32,
            4 => full as u32 + 8,
            _ => full as u32,
        };
        let mut buf = [0xABu8; size_of::<asyncify_limiter_stats>() + 8];
        buf[..4].copy_from_slice(&size.to_ne_bytes());
        let null_out = fault == 5;
        let got = asyncify_limiter_stats_get(
            self.limiters[l].ptr,
            if null_out {
                null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
        );
        let want = match fault {
            1 => ASYNCIFY_E_INVALID_ARGUMENT,
            5 => ASYNCIFY_E_NULL,
            _ => ASYNCIFY_OK,
        };
        self.status("asyncify_limiter_stats_get", got, want)?;
        if want != ASYNCIFY_OK {
            ensure!(
                self,
                null_out || buf[4..].iter().all(|&b| b == 0xAB),
                "asyncify_limiter_stats_get wrote on error"
            );
            return Ok(());
        }
        let filled = (size as usize).min(full);
        self.check_versioned_out(&buf, filled, "asyncify_limiter_stats_get")?;
        // SAFETY: the bytes hold a (maybe partly) filled stats struct.
        let st: asyncify_limiter_stats = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        ensure!(
            self,
            st.max_running == self.limiters[l].max_running,
            "limiter {l}: max_running {}, the model has {}",
            st.max_running,
            self.limiters[l].max_running
        );
        if filled == full {
            self.check_limiter_stats(l, &st)?;
        }
        Ok(())
    }

    /// asyncify_limiter_latency (tasks that ran on pool 0, which records) and
    /// asyncify_pool_latency: counts exact, percentiles in order.
    fn latency_call(&mut self) -> Result<(), String> {
        let limiter = if self.chance(70) {
            match self.live_limiter() {
                Some(l) => Some(l),
                None => return Ok(()),
            }
        } else {
            None
        };
        let pool = self.pick(2) as usize;
        // Pool 1 does not record latency: asked with no other fault (the
        // contract does not order the checks).
        let not_recorded = limiter.is_none() && pool == 1;
        let fault = if not_recorded { 0 } else { self.pick(8) };
        let which = match fault {
            1 => [0, 3, 99][self.pick(3) as usize],
            _ => [ASYNCIFY_LATENCY_QUEUE_WAIT, ASYNCIFY_LATENCY_RUN][self.pick(2) as usize],
        };
        let mut buf = [0xABu8; size_of::<asyncify_latency>() + 8];
        let size: u32 = match fault {
            2 => [0, 3][self.pick(2) as usize],
            3 => 16,
            _ => size_of::<asyncify_latency>() as u32,
        };
        buf[..4].copy_from_slice(&size.to_ne_bytes());
        let null_out = fault == 4;
        let out: *mut asyncify_latency = if null_out {
            null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        let (got, function, count) = match limiter {
            Some(l) => (
                asyncify_limiter_latency(self.limiters[l].ptr, which, out),
                "asyncify_limiter_latency",
                self.limiters[l].recorded,
            ),
            None => (
                asyncify_pool_latency(self.pools[pool], which, out),
                "asyncify_pool_latency",
                self.counts[pool].completed + self.counts[pool].failed,
            ),
        };
        let want = match fault {
            _ if not_recorded => ASYNCIFY_E_NOT_FOUND,
            1 | 2 => ASYNCIFY_E_INVALID_ARGUMENT,
            4 => ASYNCIFY_E_NULL,
            _ => ASYNCIFY_OK,
        };
        self.status(function, got, want)?;
        if want != ASYNCIFY_OK {
            ensure!(
                self,
                null_out || buf[4..].iter().all(|&b| b == 0xAB),
                "{function} wrote on error"
            );
            return Ok(());
        }
        let filled = (size as usize).min(size_of::<asyncify_latency>());
        self.check_versioned_out(&buf, filled, function)?;
        if filled == size_of::<asyncify_latency>() {
            // SAFETY: the bytes hold a filled latency struct.
            let lat: asyncify_latency = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            ensure!(
                self,
                lat.count == count,
                "{function}: count {}, the model has {count} tasks that ran where latency is recorded",
                lat.count
            );
            ensure!(
                self,
                lat.p50_ns <= lat.p90_ns
                    && lat.p90_ns <= lat.p99_ns
                    && lat.p99_ns <= lat.max_ns
                    && lat.max_ns <= lat.sum_ns
                    && (count > 0 || lat.sum_ns == 0),
                "{function}: figures out of order: p50 {} p90 {} p99 {} max {} sum {}",
                lat.p50_ns,
                lat.p90_ns,
                lat.p99_ns,
                lat.max_ns,
                lat.sum_ns
            );
        }
        Ok(())
    }

    fn free_limiter(&mut self, l: usize) -> Result<(), String> {
        let st = self.limiter_stats(l)?;
        self.check_limiter_stats(l, &st)?;
        let got = asyncify_limiter_free(self.limiters[l].ptr);
        self.status("asyncify_limiter_free", got, ASYNCIFY_OK)?;
        // Its tasks keep the limiter: those waiting are still admitted by
        // places their limiter gets back.
        self.limiters[l].ptr = null_mut();
        Ok(())
    }

    // ---- checks after every step ----

    fn held_values(&self) -> Vec<bool> {
        let mut held = vec![false; MAX_VALUES];
        let mut mark = |m: &Map| {
            for v in m.values() {
                if let Val::Ptr { id: Some(id), .. } = v {
                    held[*id] = true;
                }
            }
        };
        mark(&self.table);
        mark(&self.local);
        mark(&self.global);
        for (_, t, l) in &self.scopes {
            mark(t);
            mark(l);
        }
        for (_, m) in &self.contexts {
            mark(m);
        }
        for t in &self.tasks {
            mark(&t.snapshot);
        }
        held
    }

    fn holders(&self, id: usize) -> String {
        let has = |m: &Map| {
            m.values()
                .any(|v| matches!(v, Val::Ptr { id: Some(i), .. } if *i == id))
        };
        let mut out = Vec::new();
        if has(&self.table) {
            out.push("table".to_string());
        }
        if has(&self.local) {
            out.push("local".to_string());
        }
        if has(&self.global) {
            out.push("global".to_string());
        }
        for (i, (_, t, l)) in self.scopes.iter().enumerate() {
            if has(t) || has(l) {
                out.push(format!("scope {i}"));
            }
        }
        for (i, (_, m)) in self.contexts.iter().enumerate() {
            if has(m) {
                out.push(format!("context {i}"));
            }
        }
        for t in &self.tasks {
            if has(&t.snapshot) {
                out.push(format!("task {} ({:?})", t.id, t.state));
            }
        }
        out.join(", ")
    }

    fn check_all(&mut self) -> Result<(), String> {
        ensure!(
            self,
            STRAY.load(SeqCst) == 0,
            "a callback got a pointer it should not have: {}",
            STRAY_TEXT.lock().unwrap_or_else(|e| e.into_inner())
        );
        for i in 0..self.tasks.len() {
            let t = self.tasks[i].clone();
            let r = &TASK_RECS[t.id];
            let ran = u32::from(matches!(t.state, State::Done { .. }));
            ensure!(
                self,
                r.ran.load(SeqCst) == ran,
                "task {}: fn ran {} times, the model says {ran}",
                t.id,
                r.ran.load(SeqCst)
            );
            ensure!(
                self,
                r.view_bad.load(SeqCst) == 0,
                "task {} saw the wrong table: {}",
                t.id,
                VIEW_TEXT.lock().unwrap_or_else(|e| e.into_inner())
            );
            ensure!(
                self,
                r.arg_freed.load(SeqCst) == t.arg_freed,
                "task {}: free_arg {} times, the model says {}",
                t.id,
                r.arg_freed.load(SeqCst),
                t.arg_freed
            );
            ensure!(
                self,
                r.result_freed.load(SeqCst) == t.result_freed,
                "task {}: free_result {} times, the model says {}",
                t.id,
                r.result_freed.load(SeqCst),
                t.result_freed
            );
            let terminal = !t.state.pending();
            let want_done = u32::from(t.on_done && terminal);
            ensure!(
                self,
                r.done_calls.load(SeqCst) == want_done,
                "task {}: on_done {} times, the model says {want_done}",
                t.id,
                r.done_calls.load(SeqCst)
            );
            if want_done == 1 {
                let (status, code) = match t.state {
                    State::Done { status, code } => (status, code),
                    State::Expired => (ASYNCIFY_EXPIRED, 0),
                    _ => (ASYNCIFY_CANCELLED, 0),
                };
                let result = if t.result == ResultAt::OnDone {
                    result_ptr(t.id) as usize
                } else {
                    0
                };
                ensure!(
                    self,
                    r.done_status.load(SeqCst) == status && r.done_code.load(SeqCst) == code && r.done_result.load(SeqCst) == result,
                    "task {}: on_done({}, {}, {:#x}), the model says ({status}, {code}, {result:#x})",
                    t.id,
                    r.done_status.load(SeqCst),
                    r.done_code.load(SeqCst),
                    r.done_result.load(SeqCst)
                );
                if let Some(h) = t.handle {
                    ensure!(
                        self,
                        r.done_handle.load(SeqCst) == h as usize,
                        "task {}: on_done handle",
                        t.id
                    );
                }
            }
        }
        // Nothing moves between steps (the pools are paused, no deadline or
        // token is due): the stats of each pool and limiter are exact.
        for pool in 0..2 {
            if self.pools[pool].is_null() {
                continue;
            }
            // SAFETY: plain old data.
            let mut st: asyncify_pool_stats = unsafe { std::mem::zeroed() };
            st.struct_size = size_of::<asyncify_pool_stats>() as u32;
            let got = asyncify_stats(self.pools[pool], &mut st);
            ensure!(self, got == ASYNCIFY_OK, "asyncify_stats: {got}");
            self.check_pool_stats(pool, &st)?;
        }
        for l in 0..self.limiters.len() {
            if !self.limiters[l].ptr.is_null() {
                let st = self.limiter_stats(l)?;
                self.check_limiter_stats(l, &st)?;
            }
        }
        let held = self.held_values();
        for (id, v) in self.values.iter().enumerate() {
            let released = RELEASED[id].load(SeqCst);
            let Val::Ptr { release, .. } = v else {
                continue;
            };
            ensure!(self, released <= 1, "value {id} released {released} times");
            if !release {
                ensure!(
                    self,
                    released == 0,
                    "value {id} has no release function (or was refused) but was released"
                );
            } else if held[id] && !self.maybe_pinned.contains(&id) {
                ensure!(
                    self,
                    released == 0,
                    "value {id} released while the model still holds it ({})",
                    self.holders(id)
                );
            }
            let want = self.clone_expect.get(id).copied().unwrap_or(0);
            let made = CLONES_MADE[id].load(SeqCst);
            let gone = CLONES_RELEASED[id].load(SeqCst);
            ensure!(
                self,
                made == want,
                "value {id}: {made} clones made, the model expects {want}"
            );
            let rel = matches!(v, Val::Ptr { release: true, .. });
            ensure!(
                self,
                gone == if rel { made } else { 0 },
                "value {id}: {gone} clones released of {made}"
            );
        }
        Ok(())
    }

    // ---- a whole run ----

    fn setup(&mut self) -> Result<(), String> {
        reset_statics();
        for pool in 0..2 {
            // SAFETY: plain old data; init fills it.
            let mut o: asyncify_pool_options = unsafe { std::mem::zeroed() };
            let s = asyncify_pool_options_init(&mut o, size_of::<asyncify_pool_options>());
            self.status("asyncify_pool_options_init", s, ASYNCIFY_OK)?;
            o.max_workers = 0;
            o.max_queued = if pool == 1 { 2 } else { 0 };
            // Pool 0 records latency (its own, and its limited tasks').
            o.flags = if pool == 0 {
                ASYNCIFY_POOL_RECORD_LATENCY
            } else {
                0
            };
            o.thread_name = c"model".as_ptr();
            let mut p = null_mut();
            let s = asyncify_pool_new_ex(&o, &mut p);
            self.status("asyncify_pool_new_ex", s, ASYNCIFY_OK)?;
            self.pools[pool] = p;
        }
        // The thread starts empty (this thread may have run other code: clear it).
        let s = asyncify_override_clear();
        self.status("asyncify_override_clear", s, ASYNCIFY_OK)
    }

    fn step(&mut self) -> Result<(), String> {
        self.figures.steps += 1;
        match self.pick(100) {
            0..=13 => self.op_set()?,
            14..=24 => self.op_get()?,
            25..=30 => self.op_remove_clear_count()?,
            31..=37 => self.op_scope()?,
            38..=42 => self.op_global()?,
            43..=49 => self.op_context()?,
            50..=62 => self.op_submit()?,
            63..=76 => self.op_handle()?,
            77..=79 => self.op_wait_any()?,
            80..=84 => self.op_run()?,
            85..=89 => self.op_cq()?,
            90..=95 => self.op_limiter()?,
            _ => self.op_structs()?,
        }
        self.check_all()
    }

    /// Leaves nothing behind, and checks that every value was released once.
    fn teardown(&mut self) -> Result<(), String> {
        self.note("teardown".into());
        // Either every limiter opens (its waiting tasks are admitted and run),
        // or the tasks still waiting are cancelled by their pool's free.
        if self.chance(50) {
            for l in 0..self.limiters.len() {
                if !self.limiters[l].ptr.is_null() {
                    let got = asyncify_limiter_set(self.limiters[l].ptr, u32::MAX, 0.0, 0);
                    self.status("asyncify_limiter_set", got, ASYNCIFY_OK)?;
                    self.set_limiter_model(l, u32::MAX, 0.0, 0);
                }
            }
        }
        // A run of one pool may admit tasks of the other: run until no task
        // is queued.
        loop {
            for pool in 0..2 {
                self.run_pool(pool)?;
            }
            if !self.tasks.iter().any(|t| t.state == State::Queued) {
                break;
            }
        }
        for i in 0..self.tasks.len() {
            if let Some(h) = Self::valid_handle(&self.tasks[i]) {
                let got = asyncify_release(h);
                self.status("asyncify_release", got, ASYNCIFY_OK)?;
                let t = &mut self.tasks[i];
                t.released = true;
                if t.result == ResultAt::Handle {
                    t.result = ResultAt::Freed;
                    t.result_freed += 1;
                }
            }
        }
        for q in 0..self.cqs.len() {
            if self.cqs[q].is_some() {
                self.free_cq(q)?;
            }
        }
        for (p, _) in std::mem::take(&mut self.contexts) {
            let got = asyncify_context_free(p);
            self.status("asyncify_context_free", got, ASYNCIFY_OK)?;
        }
        while let Some((t, table, local)) = self.scopes.pop() {
            let got = asyncify_scope_exit(t);
            self.status("asyncify_scope_exit", got, ASYNCIFY_OK)?;
            self.table = table;
            self.local = local;
        }
        let got = asyncify_override_clear();
        self.status("asyncify_override_clear", got, ASYNCIFY_OK)?;
        self.table.clear();
        self.local.clear();
        let touched = std::mem::take(&mut self.globals_touched);
        for k in touched {
            if self.global.remove(&k).is_some() {
                let key = cstr(&k);
                let got = asyncify_global_remove(key.as_ptr());
                self.status("asyncify_global_remove", got, ASYNCIFY_OK)?;
            }
        }
        // A table change drops the pins of global values read on this thread.
        let got = asyncify_override_clear();
        self.status("asyncify_override_clear", got, ASYNCIFY_OK)?;
        for pool in 0..2 {
            let got = asyncify_pool_free(self.pools[pool], 10_000);
            self.status("asyncify_pool_free", got, ASYNCIFY_OK)?;
            self.pools[pool] = null_mut();
            // Its shutdown cancelled the tasks still waiting for a limiter.
            for i in 0..self.tasks.len() {
                if self.tasks[i].pool == pool && self.tasks[i].state == State::Waiting {
                    self.left_unstarted(i, ASYNCIFY_CANCELLED);
                }
            }
        }
        self.maybe_pinned.clear();
        self.check_all()?;
        for l in 0..self.limiters.len() {
            let m = &self.limiters[l];
            ensure!(
                self,
                m.waiting.is_empty() && m.running == 0,
                "model: limiter {l} not quiet after the pools were freed"
            );
            if !m.ptr.is_null() {
                self.free_limiter(l)?;
            }
        }
        for (id, v) in self.values.iter().enumerate() {
            if let Val::Ptr { release: true, .. } = v {
                let n = RELEASED[id].load(SeqCst);
                ensure!(
                    self,
                    n == 1,
                    "value {id}: released {n} times after everything was dropped (expected once)"
                );
            }
        }
        for t in &self.tasks {
            ensure!(
                self,
                matches!(
                    t.result,
                    ResultAt::Nowhere | ResultAt::OnDone | ResultAt::Taken | ResultAt::Freed
                ),
                "task {}: result left at {:?}",
                t.id,
                t.result
            );
        }
        Ok(())
    }

    /// Runs up to `max_steps` steps (fewer if the choices run out), then tears
    /// everything down. Returns the figures, or the first mismatch.
    pub fn run(mut self, max_steps: u64) -> Result<Figures, String> {
        let _one_at_a_time = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.setup()?;
        let mut result = Ok(());
        while self.figures.steps < max_steps && !self.exhausted {
            if let Err(e) = self.step() {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = result {
            // Best effort: free the pools so the process stays usable.
            for pool in 0..2 {
                if !self.pools[pool].is_null() {
                    asyncify_set_max_workers(self.pools[pool], 4);
                    asyncify_pool_free(self.pools[pool], 1000);
                }
            }
            for l in &self.limiters {
                if !l.ptr.is_null() {
                    asyncify_limiter_free(l.ptr);
                }
            }
            return Err(e);
        }
        self.teardown()?;
        Ok(self.figures)
    }
}

/// The last-error text of this thread, for failure messages.
pub fn last_error_text() -> String {
    let mut buf = [0 as c_char; 512];
    let mut n = 0usize;
    if asyncify_last_error(buf.as_mut_ptr(), buf.len(), &mut n) != ASYNCIFY_OK || n == 0 {
        return String::new();
    }
    // SAFETY: NUL-terminated by the library.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
