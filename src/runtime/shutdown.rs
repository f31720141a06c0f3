//! SIGINT / SIGTERM -> a cancellation token every pipeline watches, and a
//! flag that jq steps poll.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Cancels `token` on the first SIGINT or SIGTERM. A second signal exits at
/// once (exit code 130): the user asked twice, and nothing is confirmed
/// that a restart would not redo.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(signalled_flag()))?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping reads, draining what is in flight"),
            _ = int.recv() => info!("SIGINT: stopping reads, draining what is in flight"),
        }
        token.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: exiting without draining; unconfirmed messages will be read again");
        std::process::exit(130);
    });
    Ok(())
}

fn signalled_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// True once SIGINT or SIGTERM arrived. Set by the signal handler itself,
/// not by a task: a jq step that keeps a worker thread busy also keeps
/// that thread from polling tokio's signal driver, and must still see the
/// stop request (it polls this flag, see `steps::jq::Budget`).
pub fn signalled() -> bool {
    signalled_flag().load(Ordering::Relaxed)
}
