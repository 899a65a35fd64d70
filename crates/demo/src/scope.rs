//! Ownership of everything an act starts: instances, balancers, fleets, autoscalers.
//!
//! An act runs its body inside [`scoped`]: every process or task it starts is registered
//! with the [`Scope`], and when the body returns — `Ok`, or `Err` through `?` — the scope
//! stops each of them, newest first, and awaits it (a child is killed and reaped, a task
//! is cancelled and joined, an envelope is removed after its process is gone). No act
//! writes teardown by hand.
//!
//! If the body panics or the future is dropped, [`Scope`]'s `Drop` cancels every token;
//! the owning tasks then kill their children, and a child whose task never runs again is
//! killed by `kill_on_drop`.
//!
//! Must never: return from [`scoped`] while something it started still runs.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DemoError;

/// One owned thing: cancel its token, then await its task.
#[derive(Debug)]
struct Owned {
    /// What it is, for errors ("instance out-2-1", "balancer").
    name: String,
    /// Cancelling asks it to stop.
    stop: CancellationToken,
    /// Finishes once it has stopped (child reaped, task returned).
    done: JoinHandle<()>,
}

/// Everything an act started, stopped and awaited when the act ends.
#[derive(Debug, Default)]
pub struct Scope {
    owned: Vec<Owned>,
}

/// Runs `body` with a fresh [`Scope`], then stops and awaits everything registered in it,
/// whatever `body` returned.
pub async fn scoped<T>(
    body: impl AsyncFnOnce(&mut Scope) -> Result<T, DemoError>,
) -> Result<T, DemoError> {
    let mut scope = Scope::default();
    let result = body(&mut scope).await;
    scope.close().await;
    result
}

impl Scope {
    /// Registers a task that stops when `stop` is cancelled; it is awaited at the end.
    pub fn own(&mut self, name: &str, stop: CancellationToken, done: JoinHandle<()>) {
        self.owned.push(Owned {
            name: name.to_string(),
            stop,
            done,
        });
    }

    /// Spawns `fut` (which must return once `stop` is cancelled) and owns it.
    pub fn spawn<F>(&mut self, name: &str, stop: CancellationToken, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let done = tokio::spawn(fut);
        self.own(name, stop, done);
    }

    /// Owns a child process: it is killed and reaped when the scope closes or when
    /// [`Scope::stop`] names it; `after` runs once it is reaped (removing its envelope).
    /// Returns its pid.
    pub fn child(
        &mut self,
        name: &str,
        mut child: tokio::process::Child,
        after: impl FnOnce() + Send + 'static,
    ) -> u32 {
        let pid = child.id().unwrap_or(0);
        let stop = CancellationToken::new();
        let token = stop.clone();
        self.spawn(name, stop, async move {
            tokio::select! {
                _ = token.cancelled() => {
                    let _ = child.kill().await;
                }
                _ = child.wait() => {}
            }
            after();
        });
        pid
    }

    /// Stops and awaits the one thing registered as `name` (SIGKILL for a child).
    pub async fn stop(&mut self, name: &str) -> Result<(), DemoError> {
        let i = self
            .owned
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| DemoError::Step(format!("{name} is not running")))?;
        let o = self.owned.remove(i);
        o.stop.cancel();
        let _ = o.done.await;
        Ok(())
    }

    /// Stops everything, newest first, awaiting each.
    pub async fn close(&mut self) {
        while let Some(o) = self.owned.pop() {
            o.stop.cancel();
            let _ = o.done.await;
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Only reached with something still owned after a panic or a dropped future:
        // ask everything to stop; the tasks (or kill_on_drop) finish the job.
        for o in &self.owned {
            o.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry; a zombie would still show as 'Z'.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    fn sleeper() -> tokio::process::Child {
        tokio::process::Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .expect("sleep(1) runs")
    }

    #[tokio::test]
    async fn an_error_through_question_mark_still_stops_and_reaps_children() {
        let mut pids = Vec::new();
        let cleaned = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r: Result<(), DemoError> = scoped(async |s| {
            for i in 0..2 {
                let c = cleaned.clone();
                pids.push(s.child(&format!("sleep-{i}"), sleeper(), move || {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }));
            }
            assert!(pids.iter().all(|&p| alive(p)));
            Err(DemoError::Step("a step failed".into()))?;
            Ok(())
        })
        .await;
        assert!(r.is_err());
        assert_eq!(pids.len(), 2);
        for p in &pids {
            assert!(!alive(*p), "pid {p} still running after the scope closed");
        }
        assert_eq!(cleaned.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stop_by_name_kills_one_and_leaves_the_rest() {
        scoped(async |s| {
            let a = s.child("a", sleeper(), || {});
            let b = s.child("b", sleeper(), || {});
            s.stop("a").await?;
            assert!(!alive(a));
            assert!(alive(b));
            assert!(s.stop("a").await.is_err(), "a stopped twice");
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn tasks_are_cancelled_and_joined() {
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = finished.clone();
        scoped(async |s| {
            let stop = CancellationToken::new();
            let t = stop.clone();
            s.spawn("waiter", stop, async move {
                t.cancelled().await;
                f.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            Ok(())
        })
        .await
        .unwrap();
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }
}
