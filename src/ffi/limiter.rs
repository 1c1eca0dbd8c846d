//! Limiters (contract section 8.2): a cap per model, provider or tenant on
//! top of each pool's own limit, shared by every pool and thread.
//!
//! A limiter pointer from `asyncify_limiter_new` belongs to the caller until
//! `asyncify_limiter_free`; tasks submitted with it keep their own reference.

use std::ffi::{c_char, CStr};
use std::sync::Arc;

use super::pool::{asyncify_latency, write_latency};
use super::{
    fail, guard, init_struct, required, required_out, versioned_arg, write_out,
    write_versioned_out, Fail,
};
use crate::limiter::{BadRate, Limiter, LimiterOptions};
use crate::status::*;

/// A limiter: at most `max_running` callables holding it run at once, and,
/// with a rate, at most `rate_per_s` of them start per second (a token bucket
/// of `burst` tokens), whatever pool they run on. Pass it as `limiter` in
/// ::asyncify_submit_options. Made by asyncify_limiter_new(), the caller's
/// until asyncify_limiter_free(). (Since 0.2.)
// On a line pair of its own: a submit reads it, and workers may write the
// caller's data beside it (a completion counter): a shared line would cost
// the submitting thread a cache miss per task.
#[repr(align(128))]
pub struct asyncify_limiter {
    pub(crate) inner: Arc<Limiter>,
}

/// How asyncify_limiter_new() makes a limiter, a versioned struct: prepare it
/// with asyncify_limiter_options_init(), then set the fields you need.
/// (Since 0.2.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_limiter_options {
    /// The size of the layout the caller was built with; set by
    /// asyncify_limiter_options_init().
    pub struct_size: u32,
    /// Callables holding this limiter at once: 0 pauses it (tasks wait until it
    /// is raised), `UINT32_MAX` is no cap. asyncify_limiter_options_init() sets
    /// `UINT32_MAX`.
    pub max_running: u32,
    /// Admissions per second (a token bucket that starts full); 0: no rate cap.
    /// Negative, NaN or infinite: ::ASYNCIFY_E_INVALID_ARGUMENT.
    pub rate_per_s: f64,
    /// The bucket's size when `rate_per_s > 0` (how many may start at once
    /// after a quiet spell); 0 means 1.
    pub burst: u32,
    /// Nullable: copied; shown in messages and by bindings. NULL: "".
    pub name: *const c_char,
}

// SAFETY: repr(C), all fields valid when zero (a cap of 0 is a paused
// limiter, the documented zero value; NULL name); one published layout.
unsafe impl super::Versioned for asyncify_limiter_options {
    const NAME: &'static str = "asyncify_limiter_options";
    const LAYOUT_ENDS: &'static [usize] =
        &[std::mem::offset_of!(asyncify_limiter_options, name)
            + std::mem::size_of::<*const c_char>()];
}

/// A limiter's counters, from asyncify_limiter_stats_get(). It only ever grows
/// by appending fields: set `struct_size` to `sizeof` before the call.
/// (Since 0.2.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_limiter_stats {
    /// In: the size of the caller's struct. Out: how many bytes were filled.
    pub struct_size: u32,
    /// The cap.
    pub max_running: u32,
    /// Tasks waiting to be admitted.
    pub waiting: u64,
    /// Places held: admitted tasks not started yet, and callables running
    /// (abandoned ones included) until they return.
    pub running: u64,
    /// Admissions so far.
    pub admitted: u64,
    /// Tasks whose start deadline passed while they waited for this limiter.
    pub expired: u64,
    /// Tasks cancelled (or cancelled by their pool's shutdown) while they waited
    /// for this limiter.
    pub cancelled_waiting: u64,
}

/// The limiter behind a non-NULL pointer.
pub(crate) fn limiter_ref<'a>(lim: *const asyncify_limiter) -> &'a Arc<Limiter> {
    // SAFETY: a non-NULL limiter pointer came from `asyncify_limiter_new` and
    // has not been freed (the caller's promise, as with `free()`).
    unsafe { &(*lim).inner }
}

fn bad_rate(_: BadRate) -> Fail {
    fail(
        ASYNCIFY_E_INVALID_ARGUMENT,
        "rate_per_s must be a finite number >= 0",
    )
}

/// Prepares `*opts` for asyncify_limiter_new(): zeroes `size` bytes, sets
/// `struct_size` to `size` and `max_running` to `UINT32_MAX` (no cap).
/// (Since 0.2.)
///
/// @param opts The struct to prepare.
/// @param size `sizeof(*opts)`.
/// @retval ASYNCIFY_OK Prepared.
/// @retval ASYNCIFY_E_NULL `opts` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `size` is smaller than the first
/// published layout, or above `UINT32_MAX`; nothing is written.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_limiter_options_init(
    opts: *mut asyncify_limiter_options,
    size: usize,
) -> asyncify_status {
    guard("asyncify_limiter_options_init", || {
        let opts = required_out(opts, "opts")?;
        // SAFETY: the caller promises `size` writable bytes at `opts`.
        unsafe { init_struct(opts, size) }?;
        // SAFETY: `size` covers the first layout, which has `max_running`.
        unsafe { (*opts).max_running = u32::MAX };
        Ok(ASYNCIFY_OK)
    })
}

/// Makes a limiter. (Since 0.2.)
///
/// @param opts Options from asyncify_limiter_options_init() (required: its
/// zero `max_running` would be a paused limiter).
/// @param out Receives the limiter, the caller's until asyncify_limiter_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `opts` or `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `opts->struct_size` is too small or
/// bytes past the known fields are not zero, `rate_per_s` is negative, NaN or
/// infinite, or `name` is not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_limiter_new(
    opts: *const asyncify_limiter_options,
    out: *mut *mut asyncify_limiter,
) -> asyncify_status {
    guard("asyncify_limiter_new", || {
        required(opts, "opts")?;
        let out = required_out(out, "out")?;
        let mut spare = None;
        let o = versioned_arg(opts, &mut spare)?.expect("checked non-NULL");
        let name = if o.name.is_null() {
            String::new()
        } else {
            // SAFETY: the caller promises a NUL-terminated string for the call.
            let name = unsafe { CStr::from_ptr(o.name) };
            name.to_str()
                .map_err(|_| fail(ASYNCIFY_E_INVALID_ARGUMENT, "name is not valid UTF-8"))?
                .to_string()
        };
        let inner = Limiter::new(LimiterOptions {
            max_running: o.max_running,
            rate_per_s: o.rate_per_s,
            burst: o.burst,
            name,
        })
        .map_err(bad_rate)?;
        write_out(out, Box::into_raw(Box::new(asyncify_limiter { inner })));
        Ok(ASYNCIFY_OK)
    })
}

/// Changes a limiter's cap and rate, at once, for every pool. Raising either
/// admits waiting tasks at once; lowering interrupts nothing (callables that
/// run go on). A rate set where there was none starts with a full bucket.
/// (Since 0.2.)
///
/// @param lim The limiter.
/// @param max_running The cap: 0 pauses, `UINT32_MAX` is no cap.
/// @param rate_per_s Admissions per second; 0: no rate cap.
/// @param burst The bucket's size with a rate; 0 means 1.
/// @retval ASYNCIFY_OK Changed.
/// @retval ASYNCIFY_E_NULL `lim` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `rate_per_s` is negative, NaN or
/// infinite; nothing changed.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_limiter_set(
    lim: *mut asyncify_limiter,
    max_running: u32,
    rate_per_s: f64,
    burst: u32,
) -> asyncify_status {
    guard("asyncify_limiter_set", || {
        let lim = required_out(lim, "lim")?;
        limiter_ref(lim)
            .set(max_running, rate_per_s, burst)
            .map_err(bad_rate)?;
        Ok(ASYNCIFY_OK)
    })
}

/// Reads a limiter's counters. Fills `min(out->struct_size,
/// sizeof(asyncify_limiter_stats))` bytes of `*out` and sets `out->struct_size`
/// to the bytes filled. (Since 0.2.)
///
/// @param lim The limiter.
/// @param out The counters; set `out->struct_size = sizeof *out` first.
/// @retval ASYNCIFY_OK `*out` is filled.
/// @retval ASYNCIFY_E_NULL `lim` or `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `out->struct_size` is below 4.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_limiter_stats_get(
    lim: *const asyncify_limiter,
    out: *mut asyncify_limiter_stats,
) -> asyncify_status {
    guard("asyncify_limiter_stats_get", || {
        let lim = required(lim, "lim")?;
        let out = required_out(out, "out")?;
        let s = limiter_ref(lim).stats();
        write_versioned_out(
            out,
            asyncify_limiter_stats {
                struct_size: 0,
                max_running: s.max_running,
                waiting: s.waiting,
                running: s.running,
                admitted: s.admitted,
                expired: s.expired,
                cancelled_waiting: s.cancelled_waiting,
            },
            "asyncify_limiter_stats",
        )
    })
}

/// Reads a latency histogram of a limiter's tasks: queue wait (submit, the wait
/// for this limiter included, to the start) or run time. Tasks are recorded
/// when their pool records latency (::ASYNCIFY_POOL_RECORD_LATENCY); `count`
/// is 0 until one was. (Since 0.2.)
///
/// @param lim The limiter.
/// @param which ::ASYNCIFY_LATENCY_QUEUE_WAIT or ::ASYNCIFY_LATENCY_RUN.
/// @param out The figures; set `out->struct_size = sizeof *out` first.
/// @retval ASYNCIFY_OK `*out` is filled.
/// @retval ASYNCIFY_E_NULL `lim` or `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `which` is neither value, or
///         `out->struct_size` is below 4.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_limiter_latency(
    lim: *const asyncify_limiter,
    which: u32,
    out: *mut asyncify_latency,
) -> asyncify_status {
    guard("asyncify_limiter_latency", || {
        let lim = required(lim, "lim")?;
        let out = required_out(out, "out")?;
        let (queue_wait, run) = limiter_ref(lim).latency();
        write_latency(which, queue_wait, run, out)
    })
}

/// Frees the caller's limiter. Tasks submitted with it keep it alive until
/// they are done (those waiting are still admitted by it). (Since 0.2.)
///
/// @param lim The limiter; do not use it again.
/// @retval ASYNCIFY_OK Freed.
/// @retval ASYNCIFY_E_NULL `lim` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_limiter_free(lim: *mut asyncify_limiter) -> asyncify_status {
    guard("asyncify_limiter_free", || {
        let lim = required_out(lim, "lim")?;
        // SAFETY: a non-NULL limiter pointer came from `asyncify_limiter_new`
        // and is freed here once (the caller's promise).
        drop(unsafe { Box::from_raw(lim) });
        Ok(ASYNCIFY_OK)
    })
}
