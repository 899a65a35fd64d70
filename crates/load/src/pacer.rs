//! Waits until a request's scheduled send time with microsecond precision on the
//! generator thread, without blocking the thread's other tasks.
//!
//! Why: tokio's timer wheel has a resolution of one millisecond and its `epoll_wait`
//! timeout is rounded up to whole milliseconds, so a dispatcher that sleeps with
//! `sleep_until` sends up to a millisecond late (issue 10 measured an open-loop p50 of
//! 0.85 ms against nginx, whose service time is 0.019 ms). Here the wait has two phases:
//! a Linux `timerfd` (nanosecond resolution, not subject to timer slack) armed for
//! [`SPIN_WINDOW`] before the due time and awaited through the runtime's reactor, then a
//! spin that yields to the runtime on every turn (`yield_now` polls the reactor without
//! blocking), so responses keep being read while the dispatcher spins. When the timerfd
//! cannot be created the pacer falls back to tokio's timer plus the same spin (and the
//! report's schedule lag shows the cost).
//!
//! The spin costs CPU only for the last [`SPIN_WINDOW`] before each send, so at most
//! `rate x SPIN_WINDOW` of a core (10% at 1,000 req/s). This module must never block the
//! thread for longer than one spin turn.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// How long before the due time the timer wakes the dispatcher, which then spins.
/// Covers the timerfd's wake-up latency on a busy machine (tens of microseconds).
pub(crate) const SPIN_WINDOW: Duration = Duration::from_micros(100);
/// With tokio's millisecond timer (the fallback) the spin must cover a whole tick.
const FALLBACK_WINDOW: Duration = Duration::from_millis(2);

/// `TimerFd` with the `AsRawFd` that `AsyncFd` needs.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// The dispatcher's clock. One per generator thread.
pub(crate) struct Pacer {
    fd: Option<AsyncFd<Fd>>,
}

impl Pacer {
    /// A pacer on a timerfd, or on tokio's timer when the timerfd is unavailable. Must be
    /// called inside the runtime.
    pub fn new() -> Pacer {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .ok()
        .and_then(|t| {
            // `AsyncFd::new` is deprecated because an `AsRawFd` that does not own its fd
            // could close it while registered; `Fd` owns its timerfd for exactly the
            // AsyncFd's lifetime, so the safe constructor is sound here (the workspace
            // forbids `unsafe`, which `register` would need).
            #[allow(deprecated)]
            AsyncFd::new(Fd(t)).ok()
        });
        Pacer { fd }
    }

    /// Whether the high-resolution timer is in use.
    pub fn precise(&self) -> bool {
        self.fd.is_some()
    }

    /// Returns at `due` or within a spin turn after it (immediately when `due` passed).
    pub async fn wait_until(&mut self, due: Instant) {
        let window = if self.fd.is_some() {
            SPIN_WINDOW
        } else {
            FALLBACK_WINDOW
        };
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            let left = due - now;
            if left <= window {
                // Spin, letting the runtime read responses on every turn.
                tokio::task::yield_now().await;
                continue;
            }
            let sleep = left - window;
            if !self.sleep(sleep).await {
                tokio::time::sleep(sleep).await;
            }
        }
    }

    /// Sleeps about `d` on the timerfd; `false` when there is none or it failed (then the
    /// pacer drops it and uses tokio's timer from now on).
    async fn sleep(&mut self, d: Duration) -> bool {
        let Some(fd) = &self.fd else {
            return false;
        };
        let spec = TimeSpec::from_duration(d.max(Duration::from_nanos(1)));
        if fd
            .get_ref()
            .0
            .set(Expiration::OneShot(spec), TimerSetTimeFlags::empty())
            .is_err()
        {
            self.fd = None;
            return false;
        }
        loop {
            let Ok(mut guard) = fd.readable().await else {
                self.fd = None;
                return false;
            };
            // A non-blocking read: EAGAIN until the timer expired (then readiness is
            // cleared and we wait again), success once it did.
            match guard.try_io(|f| {
                f.get_ref()
                    .0
                    .wait()
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            }) {
                Ok(Ok(())) => return true,
                Ok(Err(_)) => {
                    self.fd = None;
                    return false;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pacer never returns before the due time and uses the timerfd. How late it is
    /// depends on the machine's load, so it is printed, not asserted (the open-loop
    /// report carries the same figure as its schedule lag).
    #[test]
    fn waits_end_at_the_due_time_not_a_tick_later() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut p = Pacer::new();
            assert!(p.precise(), "timerfd is available on Linux");
            let start = Instant::now() + Duration::from_millis(5);
            let mut late: Vec<Duration> = Vec::new();
            for i in 0..200u32 {
                let due = start + Duration::from_micros(1300) * i;
                p.wait_until(due).await;
                let now = Instant::now();
                assert!(now >= due, "never early");
                late.push(now - due);
            }
            late.sort();
            let p50 = late[late.len() / 2];
            eprintln!("pacer lateness p50 {p50:?} p99 {:?}", late[198]);
        });
    }
}
