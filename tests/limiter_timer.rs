//! A rate limiter after the timer dropped its entries: when the last pool
//! that used the timer shuts down, the timer stops and forgets the entry of
//! a limiter's next token. The limiter must schedule a new one when tasks
//! wait for a token again (it once kept believing its old entry would fire,
//! and its waiting tasks were never admitted). Its own test binary: the
//! timer is process-wide, and here no other test uses it.

use std::ffi::c_void;
use std::time::{Duration, Instant};

use asyncify::limiter::{Limiter, LimiterOptions};
use asyncify::pool::Pool;
use asyncify::status::*;
use asyncify::table::Table;
use asyncify::task::{self, TaskSpec};

extern "C" fn returns_at_once(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    0
}

#[test]
fn a_rate_limiter_admits_on_time_after_the_timer_stopped_and_started_again() {
    let lim = Limiter::new(LimiterOptions {
        rate_per_s: 20.0,
        burst: 1,
        ..LimiterOptions::default()
    })
    .unwrap();
    let spec = || TaskSpec::new(returns_at_once, std::ptr::null_mut()).limiter(Some(&lim));
    let wait_ok = |h: u64| {
        let seen = task::wait(h, Some(Duration::from_secs(5)), false).unwrap();
        assert_eq!(seen.status, ASYNCIFY_OK, "admitted by its rate within 5 s");
        task::release(h).unwrap();
    };

    // The first pool: a token at once, the next one from the timer.
    let first = Pool::new(4);
    let hs = [(); 2].map(|_| first.submit(spec(), Table::new()).unwrap());
    hs.into_iter().for_each(wait_ok);
    // One more waits for a token; the pool's shutdown cancels it and, as the
    // timer's last user, stops the timer (dropping the token's entry).
    let waiting = first.submit(spec(), Table::new()).unwrap();
    assert_eq!(first.shutdown(None), Ok(true));
    assert_eq!(
        task::poll(waiting, false).unwrap().status,
        ASYNCIFY_CANCELLED
    );
    task::release(waiting).unwrap();

    // Another pool, once the bucket is full again: one task at once, two
    // that only the timer (started again) can admit.
    std::thread::sleep(Duration::from_millis(100));
    let second = Pool::new(4);
    let t0 = Instant::now();
    let hs = [(); 3].map(|_| second.submit(spec(), Table::new()).unwrap());
    hs.into_iter().for_each(wait_ok);
    assert!(
        t0.elapsed() >= Duration::from_millis(90),
        "two tokens at 20/s"
    );
    assert_eq!(second.shutdown(None), Ok(true));
    assert_eq!(lim.stats().admitted, 5);
}
