//! The agent as an operating-system service, beyond systemd's `sd_notify` ([`crate::systemd`]).
//!
//! On Windows ([`windows`], behind `cfg(windows)`) the binary registers itself with the
//! Service Control Manager (`commscan-agent service install|configure|uninstall|purge`) and,
//! started by SCM as `commscan-agent service run`, answers it: `Stop` and `Shutdown` cancel the
//! same token SIGTERM cancels on Unix, so the spool is flushed the same way, and the service
//! reports `StopPending` with the configured grace as its wait hint while it does. Failure
//! actions restart it after 10 s, 10 s, then 60 s. Its directories under `%ProgramData%` get a
//! protected DACL for SYSTEM and Administrators only ([`acl`]).
//!
//! This module itself is platform-neutral: the enrolment wait a service needs
//! ([`open_when_enrolled`]). A service manager pushes the package first and enrolment comes
//! later (a script, a GPO), so a service that is not enrolled yet waits for its identity and
//! says so in its log, where the foreground `run` exits 64; exiting would make the Windows
//! failure actions restart it forever.

#[cfg(windows)]
pub mod acl;
#[cfg(windows)]
pub mod windows;

use crate::config::AgentConfig;
use crate::delivery::{Agent, AgentError};
use crate::scanner::Inventory;
use crate::state::StateError;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The service's name in the Service Control Manager (and the MSI's `ServiceInstall`).
pub const SERVICE_NAME: &str = "commscan-agent";

/// How often a service that is not enrolled looks for its identity again.
pub const ENROLMENT_POLL: Duration = Duration::from_secs(5);

/// Opens the agent once its data directory holds an identity, checking every `poll`;
/// `Ok(None)` when `shutdown` comes first. Any other error (a corrupt identity, an unusable
/// spool) is returned at once: waiting cannot fix it.
pub async fn open_when_enrolled(
    config: &AgentConfig,
    inventory: Arc<dyn Inventory>,
    shutdown: &CancellationToken,
    poll: Duration,
) -> Result<Option<Agent>, AgentError> {
    let mut logged = false;
    loop {
        match Agent::open(config.clone(), inventory.clone()) {
            Ok(agent) => return Ok(Some(agent)),
            Err(AgentError::State(StateError::NotEnrolled(path))) => {
                if !logged {
                    tracing::warn!(
                        identity = %path.display(),
                        "not enrolled yet: waiting for `commscan-agent enroll` to store an identity"
                    );
                    logged = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use crate::scanner::{HostInventory, ScanTarget, Scanner};
    use commscan_core::catalog::Catalog;
    use commscan_core::platform::Platform;

    fn setup(dir: &std::path::Path) -> (AgentConfig, Arc<dyn Inventory>) {
        let mut cfg = RawConfig::default().validate().expect("defaults are valid");
        cfg.data_dir = dir.join("data");
        let inventory = Arc::new(HostInventory::new(
            Arc::new(Scanner::new(&Catalog::embedded())),
            ScanTarget::tree(dir, Platform::Linux),
        ));
        (cfg, inventory)
    }

    #[tokio::test]
    async fn a_service_not_enrolled_waits_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, inventory) = setup(dir.path());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.cancel();
        });
        let t0 = std::time::Instant::now();
        let opened = open_when_enrolled(&cfg, inventory, &stop, Duration::from_millis(50))
            .await
            .expect("waiting is not an error");
        assert!(opened.is_none(), "opened without an identity");
        assert!(t0.elapsed() >= Duration::from_millis(300), "did not wait");
    }

    #[tokio::test]
    async fn a_corrupt_identity_is_reported_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, inventory) = setup(dir.path());
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        std::fs::write(cfg.data_dir.join("identity.json"), b"{not json").unwrap();
        let stop = CancellationToken::new();
        let e = tokio::time::timeout(
            Duration::from_secs(5),
            open_when_enrolled(&cfg, inventory, &stop, Duration::from_secs(3600)),
        )
        .await
        .expect("returned without waiting")
        .expect_err("a corrupt identity is an error");
        assert!(
            matches!(e, AgentError::State(StateError::Corrupt { .. })),
            "{e}"
        );
    }
}
