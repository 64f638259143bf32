//! The Windows Service Control Manager glue (the `windows-service` crate over advapi32).
//!
//! | command | what it does |
//! |---|---|
//! | `service install` | registers `commscan-agent` (own process, LocalSystem, automatic start) running `<exe> service run`, then `configure` |
//! | `service configure` | failure actions (restart after 10 s, 10 s, 60 s; count reset after a day; also on a non-zero exit), creates the configuration and data directories with their protected DACL ([`super::acl`]); the MSI runs it after registering the service itself |
//! | `service stop` | stops the service and waits until it has (the MSI's removals run it) |
//! | `service uninstall` | stops the service (its spool is flushed) and deletes it; data stays |
//! | `service purge` | deletes what the agent keeps under `%ProgramData%` (identity, spool, log, configuration); the MSI runs it on uninstall only when `PURGE=1` |
//! | `service run` | what SCM starts: [`dispatch`] hands the thread to SCM's dispatcher, which calls `service_main` |
//!
//! `service_main` registers the control handler, reports `Running`, and runs the body the
//! binary gave to [`dispatch`] with a cancellation token: `Stop` and `Shutdown` report
//! `StopPending` with [`STOP_WAIT_HINT`] and cancel the token, exactly what SIGTERM does on
//! Unix (the agent stops its loops, flushes the spool and returns). The body's exit status
//! becomes the service's exit code: 0, or a service-specific 1 or 64, which SCM counts as a
//! failure and answers with the failure actions.

// `define_windows_service!` expands to the `extern "system"` entry point SCM calls, whose
// argument parsing is an `unsafe` block inside the macro; nothing else here is unsafe.
#![allow(unsafe_code)]

use super::SERVICE_NAME;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

/// What SCM is told to wait for after `Stop`: the agent's shutdown grace plus the flush.
pub const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

/// The service's description in `services.msc`.
pub const DESCRIPTION: &str =
    "Inventories communication software on this device and reports it to the commscan collector";

/// Failed SCM or file-system work, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A Service Control Manager call failed.
    #[error("{what}: {source}")]
    Scm {
        /// What was being done.
        what: &'static str,
        /// The failure (its Win32 error in the chain).
        #[source]
        source: windows_service::Error,
    },
    /// A directory could not be created, secured or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// `service run` was started from a console, not by SCM.
    #[error(
        "`service run` is what the Service Control Manager starts; in a console use `commscan-agent run`"
    )]
    NotUnderScm,
}

fn scm(what: &'static str) -> impl FnOnce(windows_service::Error) -> ServiceError {
    move |source| ServiceError::Scm { what, source }
}

/// The directories the service keeps under `%ProgramData%`.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The configuration file (`agent.toml`), which may not exist.
    pub config: PathBuf,
    /// The data directory (identity, key, spool).
    pub data: PathBuf,
}

impl Dirs {
    /// The directory holding the configuration file and the service's log.
    pub fn config_dir(&self) -> &Path {
        self.config.parent().unwrap_or(Path::new("."))
    }

    /// The service's log file, beside the configuration.
    pub fn log(&self) -> PathBuf {
        self.config_dir().join("agent.log")
    }
}

/// Registers the service to run `exe service run [--config CONFIG]`, then [`configure`]s it.
/// Returns the DACL of each directory as read back from the system.
pub fn install(
    exe: &Path,
    config: Option<&Path>,
    dirs: &Dirs,
) -> Result<Vec<(PathBuf, String)>, ServiceError> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(scm("connecting to the Service Control Manager"))?;
    let mut launch_arguments: Vec<OsString> = vec!["service".into(), "run".into()];
    if let Some(c) = config {
        launch_arguments.push("--config".into());
        launch_arguments.push(c.as_os_str().to_owned());
    }
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: "commscan agent".into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_owned(),
        launch_arguments,
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .map_err(scm("creating the service"))?;
    service
        .set_description(DESCRIPTION)
        .map_err(scm("setting the service's description"))?;
    drop(service);
    configure(dirs)
}

/// Sets the failure actions of the registered service and creates and secures `dirs`.
pub fn configure(dirs: &Dirs) -> Result<Vec<(PathBuf, String)>, ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(scm("connecting to the Service Control Manager"))?;
    let service = manager
        .open_service(SERVICE_NAME, ServiceAccess::CHANGE_CONFIG)
        .map_err(scm("opening the service (is it installed?)"))?;
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart(10), restart(10), restart(60)]),
        })
        .map_err(scm("setting the failure actions"))?;
    match service.set_failure_actions_on_non_crash_failures(true) {
        Ok(()) => {}
        // ERROR_INVALID_LEVEL: an SCM without SERVICE_CONFIG_FAILURE_ACTIONS_FLAG (Wine 8).
        Err(windows_service::Error::Winapi(ref e)) if e.raw_os_error() == Some(124) => {
            tracing::warn!(
                "this Service Control Manager cannot apply failure actions to non-zero exits; \
                 they apply to crashes only"
            );
        }
        Err(e) => return Err(scm("applying the failure actions to non-zero exits")(e)),
    }
    let mut access = Vec::new();
    for dir in [dirs.config_dir(), dirs.data.as_path()] {
        let io = |source| ServiceError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        super::acl::restrict(dir).map_err(io)?;
        access.push((dir.to_owned(), super::acl::describe(dir).map_err(io)?));
    }
    Ok(access)
}

/// Stops the service if it runs and waits up to [`STOP_WAIT_HINT`] for it to report
/// `Stopped` (its spool flushed). Returns whether it was running. The MSI runs it before
/// removing files: Windows Installer's own StopServices does not wait on every SCM (Wine's
/// returns at once), and a running exe cannot be removed.
pub fn stop() -> Result<bool, ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(scm("connecting to the Service Control Manager"))?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP,
        )
        .map_err(scm("opening the service (is it installed?)"))?;
    stop_and_wait(&service)
}

fn stop_and_wait(service: &windows_service::service::Service) -> Result<bool, ServiceError> {
    let status = service
        .query_status()
        .map_err(scm("querying the service"))?;
    if status.current_state == ServiceState::Stopped {
        return Ok(false);
    }
    if status.current_state != ServiceState::StopPending {
        service.stop().map_err(scm("stopping the service"))?;
    }
    let deadline = std::time::Instant::now() + STOP_WAIT_HINT;
    while std::time::Instant::now() < deadline {
        let s = service
            .query_status()
            .map_err(scm("querying the service"))?;
        if s.current_state == ServiceState::Stopped {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(true)
}

/// Stops the service if it runs (waiting up to [`STOP_WAIT_HINT`] for its flush) and deletes
/// it. Data stays.
pub fn uninstall() -> Result<(), ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(scm("connecting to the Service Control Manager"))?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(scm("opening the service (is it installed?)"))?;
    stop_and_wait(&service)?;
    service.delete().map_err(scm("deleting the service"))
}

/// Deletes the data directory, the log and the configuration file, then the configuration
/// directory if nothing else is left in it. Returns what was removed.
pub fn purge(dirs: &Dirs) -> Result<Vec<PathBuf>, ServiceError> {
    let mut removed = Vec::new();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServiceError::Io { path, source }
    };
    if dirs.data.exists() {
        std::fs::remove_dir_all(&dirs.data).map_err(io(&dirs.data))?;
        removed.push(dirs.data.clone());
    }
    let log = dirs.log();
    for file in [log.with_extension("log.1"), log, dirs.config.clone()] {
        if file.exists() {
            std::fs::remove_file(&file).map_err(io(&file))?;
            removed.push(file);
        }
    }
    let dir = dirs.config_dir();
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        std::fs::remove_dir(dir).map_err(io(dir))?;
        removed.push(dir.to_owned());
    }
    Ok(removed)
}

/// What runs as the service: given the stop token, returns the exit status (0, 1, 64).
pub type Body = Box<dyn FnOnce(CancellationToken) -> u8 + Send>;

static BODY: Mutex<Option<Body>> = Mutex::new(None);

windows_service::define_windows_service!(ffi_service_main, service_main);

/// Hands this thread to SCM's dispatcher, which runs `body` as the service; returns when the
/// service has stopped.
pub fn dispatch(body: Body) -> Result<(), ServiceError> {
    *BODY.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| match e {
        // ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: not started by SCM.
        windows_service::Error::Winapi(ref io) if io.raw_os_error() == Some(1063) => {
            ServiceError::NotUnderScm
        }
        other => ServiceError::Scm {
            what: "starting the service dispatcher",
            source: other,
        },
    })
}

fn status(state: ServiceState, exit: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: exit,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let Some(body) = BODY.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let stop = CancellationToken::new();
    let handle = Arc::new(OnceLock::new());
    let handler = {
        let (stop, handle) = (stop.clone(), handle.clone());
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(h) = handle.get() {
                    let h: &service_control_handler::ServiceStatusHandle = h;
                    let _ = h.set_service_status(status(
                        ServiceState::StopPending,
                        ServiceExitCode::Win32(0),
                        STOP_WAIT_HINT,
                    ));
                }
                stop.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let h = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the service control handler");
            return;
        }
    };
    let _ = handle.set(h);
    if let Err(e) = h.set_service_status(status(
        ServiceState::Running,
        ServiceExitCode::Win32(0),
        Duration::ZERO,
    )) {
        tracing::error!(error = %e, "cannot report the service as running");
    }
    let code = body(stop);
    let exit = match code {
        0 => ServiceExitCode::Win32(0),
        n => ServiceExitCode::ServiceSpecific(u32::from(n)),
    };
    tracing::info!(exit_status = code, "service stopped");
    let _ = h.set_service_status(status(ServiceState::Stopped, exit, Duration::ZERO));
}

/// Opens the service's log for appending; a log over `max_bytes` is moved to `agent.log.1`
/// first (one generation kept), so a service that restarts keeps at most twice that.
pub fn open_log(path: &Path, max_bytes: u64) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > max_bytes) {
        std::fs::rename(path, path.with_extension("log.1"))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}
