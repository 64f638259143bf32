//! Standard output that ends quietly when its reader goes away.
//!
//! `commscanctl devices --output json | head -1` closes the pipe after one line. Rust ignores
//! `SIGPIPE`, so the next write fails with `BrokenPipe`; `println!` turns that into a panic
//! (exit 101). Every commscan binary writes its results through [`out!`](crate::out) and
//! [`outln!`](crate::outln) instead: they return the write error, which travels up as any other
//! error, and [`Main::run`](crate::bootstrap::Main::run) ends the process quietly with exit
//! code 0 when it finds a closed pipe in the chain ([`is_closed_pipe`]). Each call flushes, so
//! a line that matters (a secret shown once) has reached the reader before anything else is
//! attempted. A panic hook ([`quiet_on_closed_pipe`]) catches any `println!` left behind.

use std::io::Write;

/// The reader of standard output went away: carried inside the `BrokenPipe` error that
/// [`write_fmt`] returns, so that only standard output's closed pipe ends a process quietly,
/// never a broken pipe or socket elsewhere (a connection to the collector, a child process).
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes formatted text to standard output and flushes it.
pub fn write_fmt(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
            }
            _ => e,
        })
}

/// `print!` that returns the write error instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` that returns the write error instead of panicking.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Whether `e` is (or was caused by) a write to standard output whose reader has gone.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<StdoutClosed>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// Set by a long-running service ([`serving`]): its panics are never turned into a quiet,
/// successful exit, so a supervisor sees them and restarts it.
static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Declares this process a long-running service (`collector serve`, `agent run`): from now
/// on a `print!` failing on a closed pipe panics as any bug does, instead of ending the
/// process quietly with code 0 (which a supervisor would take for a clean stop).
pub fn serving() {
    SERVING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Installs a panic hook that exits quietly (code 0) when the panic is `print!` failing on a
/// closed pipe in a command (not a service, see [`serving`]), and otherwise defers to the
/// previous hook.
pub fn quiet_on_closed_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if SERVING.load(std::sync::atomic::Ordering::SeqCst) {
            return previous(info);
        }
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_closed_pipe_is_found_under_context() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed);
        let e = Err::<(), _>(closed)
            .context("printing devices")
            .unwrap_err();
        assert!(is_closed_pipe(&e));
        assert!(!is_closed_pipe(&anyhow::anyhow!("disk full")));
        // A broken pipe elsewhere (a socket, a child's stdin) is an error like any other.
        let elsewhere = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("sending to the collector")
            .unwrap_err();
        assert!(!is_closed_pipe(&elsewhere));
    }
}
