//! One shutdown signal for a process: Ctrl-C, or SIGTERM on Unix (what systemd and launchd
//! send), cancels the returned token. Every long-running binary uses it.

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM. Call inside a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    #[cfg(unix)]
    {
        let t = token.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                t.cancel();
            }
        });
    }
    token
}
