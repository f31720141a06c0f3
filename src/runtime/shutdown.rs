//! SIGINT / SIGTERM -> a cancellation token every pipeline watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Cancels `token` on the first SIGINT or SIGTERM. A second signal exits at
/// once (exit code 130): the user asked twice, and nothing is confirmed
/// that a restart would not redo.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
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
