//! The one shutdown signal of every long-running subcommand: SIGINT (Ctrl-C) or SIGTERM.
//!
//! Each command used to install its own handlers (four copies, some listening to Ctrl-C
//! only, so `kill PID` of a load run or a reshard killed it without draining). Now every
//! command awaits [`shutdown_signal`] (or hands a token to [`cancel_on_shutdown_signal`])
//! and decides itself what stopping means; the ordering of the stop (stop accepting,
//! drain, stop instances) belongs to the command, not here.
//!
//! The handlers are installed when [`shutdown_signal`] is *called*, not when its future is
//! first polled, so a signal that arrives between the call and the first poll (a test
//! sending SIGTERM right after the listening line) is still caught instead of killing the
//! process with the default action.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Completes on the first SIGINT or SIGTERM (and logs which, at info level). Must be
/// called inside a tokio runtime.
///
/// If a handler cannot be installed (never seen on Linux), that signal keeps its default
/// action and the failure is logged; the other one still works.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let mut term = signal(SignalKind::terminate())
        .inspect_err(|e| tracing::error!("cannot install the SIGTERM handler: {e}"))
        .ok();
    let mut int = signal(SignalKind::interrupt())
        .inspect_err(|e| tracing::error!("cannot install the SIGINT handler: {e}"))
        .ok();
    async move {
        let term = async {
            match term.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let int = async {
            match int.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM: draining"),
            _ = int => tracing::info!("interrupt: draining"),
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM, from a spawned task. Must be called
/// inside a tokio runtime; the handlers are installed before it returns.
pub fn cancel_on_shutdown_signal(token: CancellationToken) {
    let signal = shutdown_signal();
    tokio::spawn(async move {
        tokio::select! {
            _ = signal => token.cancel(),
            // Someone else stopped the command: nothing left to wait for.
            _ = token.cancelled() => {}
        }
    });
}
