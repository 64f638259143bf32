//! systemd integration without libsystemd: `sd_notify` is one datagram to the socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace on Linux). The agent sends
//! `READY=1` once its spool is open and its loops run, `STATUS=...` as delivery goes,
//! `WATCHDOG=1` at half the unit's `WatchdogSec=` while its scheduling loop is alive, and
//! `STOPPING=1` on SIGTERM. Outside systemd (no variable) every call is a no-op; on other
//! platforms too.

use std::time::Duration;

/// Sends `state` to `$NOTIFY_SOCKET`; returns whether it was sent.
pub fn notify(state: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket.to_string_lossy(), state).is_ok(),
        None => false,
    }
}

/// Sends `state` to the notification socket `socket`.
#[cfg(unix)]
pub fn notify_to(socket: &str, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::other("abstract sockets need Linux"));
        }
    }
    sock.send_to(state.as_bytes(), socket)?;
    Ok(())
}

/// Sends `state` to the notification socket `socket` (no systemd here).
#[cfg(not(unix))]
pub fn notify_to(_socket: &str, _state: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("sd_notify needs Unix"))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` when it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_notification_is_one_datagram_on_the_named_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=spooling").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=spooling");
    }
}
