//! One shutdown signal for a process: Ctrl-C, or SIGTERM on Unix (what systemd and launchd
//! send), cancels the returned token. Every long-running binary uses it.

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM. Call inside a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    // The handlers are registered before this returns (not when a spawned task first runs),
    // so a signal sent the moment after is never missed.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
            match signal(kind) {
                Ok(mut s) => {
                    let t = token.clone();
                    tokio::spawn(async move {
                        s.recv().await;
                        t.cancel();
                    });
                }
                Err(e) => eprintln!("cannot listen for a stop signal: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let t = token.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            t.cancel();
        });
    }
    token
}
