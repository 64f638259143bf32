//! The Windows agent as a service, under Wine: the MSI that `deploy/windows/build-msi.sh`
//! builds with wixl from the cross-built agent is installed, upgraded and removed with Wine's
//! `msiexec`, and the service it registers runs under Wine's Service Control Manager against
//! a real collector on loopback.
//!
//! What is shown: the package installs the exe under Program Files and registers and starts
//! the service; the service waits for enrolment, then reports; a product that appears under
//! Program Files while it runs reaches the collector through the file-watch trigger; `Stop`
//! flushes the spool and exits 0; an upgrade keeps the identity and the data; an uninstall
//! removes the service and the exe and keeps the data; `PURGE=1` removes the data;
//! `service install` / `uninstall` work without the MSI.
//!
//! What Wine cannot show: restart on failure (Wine 8's SCM accepts failure actions and does
//! not act on them: "SERVICE_CONFIG_FAILURE_ACTIONS not implemented"), the data directory's
//! DACL (Wine 8 accepts `SetNamedSecurityInfoW` and keeps nothing: a C program calling it
//! reads back Wine's default DACL), LocalSystem's own profile, a real reboot.
//!
//! Prerequisites and skips: those of [`commscan_tests::wine`], plus `wixl` and `msibuild`.

use commscan_tests::wine::{APP, Prefix, enrolled_device_id, prerequisites, text, tool};
use commscan_tests::{TestCollector, device_state};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the MSI installs the agent.
const INSTALLED: &str = r"C:\Program Files\commscan\commscan-agent.exe";

/// Builds the MSI of `version` from the agent under test into the prefix's `C:\commscan`;
/// returns its Windows path.
fn build_msi(p: &Prefix, agent: &Path, version: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/windows/build-msi.sh");
    let name = format!("commscan-agent-{version}.msi");
    let out = Command::new("bash")
        .arg(&script)
        .arg(agent)
        .arg(version)
        .arg(p.app_dir().join(&name))
        .output()
        .expect("run build-msi.sh");
    assert!(out.status.success(), "build-msi.sh: {}", text(&out));
    format!(r"{APP}\{name}")
}

/// `drive_c/ProgramData/commscan` on the Linux side.
fn program_data(p: &Prefix) -> PathBuf {
    p.dir.path().join("drive_c/ProgramData/commscan")
}

fn log(p: &Prefix) -> String {
    std::fs::read_to_string(program_data(p).join("agent.log")).unwrap_or_default()
}

/// Waits until the service's log has `needle` `times` times, or fails showing the log.
fn wait_for_log(p: &Prefix, needle: &str, times: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let l = log(p);
        if l.matches(needle).count() >= times {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{times}) in the service's log within {timeout:?}:\n{l}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The service's state as `sc query` prints it (`RUNNING`, `STOPPED`...), or `None` when the
/// service does not exist.
fn service_state(p: &Prefix) -> Option<String> {
    let out = p.wine(&["sc", "query", "commscan-agent"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with("STATE"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
}

/// Waits until the service is gone: SCM deletes a service marked for deletion once the last
/// handle to it closes, which may be a moment after `msiexec /x` or `service uninstall`.
fn wait_gone(p: &Prefix) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(state) = service_state(p) {
        assert!(
            Instant::now() < deadline,
            "the service is still registered ({state}) 15 s after its removal"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn msiexec(p: &Prefix, args: &[&str]) {
    let mut all = vec!["msiexec"];
    all.extend_from_slice(args);
    all.push("/qn");
    let out = p.wine(&all);
    assert!(out.status.success(), "msiexec {args:?}: {}", text(&out));
}

/// The products the collector holds for `device_id`, once `want` is among them; fails
/// showing the service's log after 40 s.
async fn products_with(c: &TestCollector, p: &Prefix, device_id: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let products = device_state(c, device_id)
            .await
            .map(|(products, _)| products)
            .unwrap_or_default();
        if products.iter().any(|p| p == want) {
            return products;
        }
        assert!(
            Instant::now() < deadline,
            "{want} did not reach the collector in 40 s (it has {products:?}); the service's log:\n{}",
            log(p)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `f` on a blocking thread (Wine commands block for seconds).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("wine thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_msi_installs_a_service_that_reports_watches_flushes_upgrades_and_uninstalls() {
    let test = "the_msi_installs_a_service_that_reports_watches_flushes_upgrades_and_uninstalls";
    let Some(wine) = prerequisites(test) else {
        return;
    };
    if tool(test, "wixl", "wixl").is_none() || tool(test, "msibuild", "msitools").is_none() {
        return;
    }
    let c = TestCollector::start().await;
    let p = std::sync::Arc::new(blocking(move || Prefix::new(&wine)).await);
    let _on = p.keep_running();
    let agent = std::env::var_os("COMMSCAN_WINDOWS_AGENT")
        .map(PathBuf::from)
        .expect("agent");

    // Install: the service is registered, started, and waits for its enrolment.
    let (p1, ca) = (p.clone(), c.ca_pem.clone());
    let (v1, v2) = blocking(move || {
        let p = p1;
        p.reg_add(
            r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\{53F49750-6209-4FBF-9CA8-7A333C87D1ED}_is1",
            &[("DisplayName", "REG_SZ", "Telegram Desktop"), ("DisplayVersion", "REG_SZ", "5.2.3")],
        );
        std::fs::write(p.app_dir().join("ca.pem"), ca).expect("ca");
        let v1 = build_msi(&p, &agent, "0.1.0");
        let v2 = build_msi(&p, &agent, "0.1.1");
        msiexec(&p, &["/i", &v1]);
        assert!(
            p.dir.path().join("drive_c/Program Files/commscan/commscan-agent.exe").is_file(),
            "the exe is not under Program Files"
        );
        assert_eq!(service_state(&p).as_deref(), Some("RUNNING"));
        wait_for_log(&p, "not enrolled yet", 1, Duration::from_secs(20));
        (v1, v2)
    })
    .await;

    // Enrol with the installed exe: the running service picks the identity up and reports.
    let (p1, url, token) = (p.clone(), c.url.clone(), c.enrolment_token.clone());
    let enrolled = blocking(move || {
        let ca = format!(r"{APP}\ca.pem");
        p1.wine(&[
            INSTALLED,
            "enroll",
            "--collector",
            &url,
            "--token",
            &token,
            "--ca",
            &ca,
        ])
    })
    .await;
    assert!(enrolled.status.success(), "enroll: {}", text(&enrolled));
    let device_id = enrolled_device_id(&enrolled);
    let products = products_with(&c, &p, &device_id, "telegram").await;
    eprintln!("the service reported {products:?}");
    assert!(!products.contains(&"zoom".to_owned()), "{products:?}");

    wait_for_log(&p, "watching for installs", 1, Duration::from_secs(10));
    // While it runs, Zoom appears under Program Files: the file-watch trigger rescans (the full
    // scan interval is an hour) and the change reaches the collector.
    let zoom = p.dir.path().join("drive_c/Program Files/Zoom/bin");
    std::fs::create_dir_all(&zoom).expect("Zoom dir");
    std::fs::write(zoom.join("Zoom.exe"), b"MZ").expect("Zoom.exe");
    let t0 = Instant::now();
    let products = products_with(&c, &p, &device_id, "zoom").await;
    eprintln!(
        "zoom installed under Program Files reached the collector in {:?}: {products:?}",
        t0.elapsed()
    );
    assert!(log(&p).contains("scan"), "{}", log(&p));

    // Stop: the spool is flushed and the service exits 0.
    let p1 = p.clone();
    blocking(move || {
        let out = p1.wine(&["net", "stop", "commscan-agent"]);
        assert!(out.status.success(), "net stop: {}", text(&out));
        wait_for_log(
            &p1,
            "service stopped exit_status=0",
            1,
            Duration::from_secs(40),
        );
        let l = log(&p1);
        assert!(l.contains("stopping: flushing the spool"), "{l}");
        assert_eq!(service_state(&p1).as_deref(), Some("STOPPED"));
    })
    .await;

    // Upgrade to 0.1.1: the old package goes first, the data stays, the new service starts
    // with the same identity and reports again.
    let identity = program_data(&p).join("agent/identity.json");
    let before = std::fs::read(&identity).expect("identity after enrolment");
    let p1 = p.clone();
    let v2_install = v2.clone();
    blocking(move || {
        msiexec(&p1, &["/i", &v2_install]);
        assert_eq!(service_state(&p1).as_deref(), Some("RUNNING"));
        wait_for_log(
            &p1,
            "enrolled: scanning and delivering",
            2,
            Duration::from_secs(30),
        );
    })
    .await;
    assert_eq!(
        std::fs::read(&identity).expect("identity after upgrade"),
        before,
        "the upgrade changed the identity"
    );
    let devices = c
        .query()
        .await
        .list_devices(commscan_proto::v1::ListDevicesRequest::default())
        .await
        .expect("list devices")
        .into_inner()
        .devices;
    assert_eq!(
        devices.len(),
        1,
        "one device after the upgrade: {devices:?}"
    );

    // Uninstall: the service and the exe go, the data stays; PURGE=1 removes the data.
    let p1 = p.clone();
    blocking(move || {
        msiexec(&p1, &["/x", &v2]);
        wait_gone(&p1);
        assert!(
            !p1.dir
                .path()
                .join("drive_c/Program Files/commscan/commscan-agent.exe")
                .exists(),
            "the exe is still installed"
        );
        assert!(
            program_data(&p1).join("agent/identity.json").is_file(),
            "data lost"
        );
        msiexec(&p1, &["/i", &v1]);
        msiexec(&p1, &["/x", &v1, "PURGE=1"]);
        assert!(
            !program_data(&p1).exists(),
            "PURGE=1 left {}",
            program_data(&p1).display()
        );
    })
    .await;
}

#[test]
fn service_install_and_uninstall_work_without_the_msi() {
    let test = "service_install_and_uninstall_work_without_the_msi";
    let Some(wine) = prerequisites(test) else {
        return;
    };
    let p = Prefix::new(&wine);
    let _on = p.keep_running();
    // Not under SCM: a clear refusal, not a hang.
    let out = p.agent(&["service", "run"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "service run in a console: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use `commscan-agent run`"),
        "{}",
        text(&out)
    );

    let out = p.agent(&["service", "install"]);
    assert!(out.status.success(), "service install: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("installed service commscan-agent"),
        "{stdout}"
    );
    for dir in [
        r"C:\ProgramData\commscan:",
        r"C:\ProgramData\commscan\agent:",
    ] {
        assert!(stdout.contains(dir), "no access line for {dir} in {stdout}");
    }
    // Registered for automatic start. Wine starts automatic services whenever its
    // services.exe starts (with the prefix's first process), so it may already run.
    let state = service_state(&p).expect("the service is registered");
    if state != "RUNNING" {
        let out = p.wine(&["net", "start", "commscan-agent"]);
        assert!(out.status.success(), "net start: {}", text(&out));
    }
    wait_for_log(&p, "not enrolled yet", 1, Duration::from_secs(20));

    let out = p.agent(&["service", "uninstall"]);
    assert!(out.status.success(), "service uninstall: {}", text(&out));
    wait_gone(&p);
    wait_for_log(
        &p,
        "service stopped exit_status=0",
        1,
        Duration::from_secs(10),
    );
    assert!(
        program_data(&p).join("agent").is_dir(),
        "uninstall removed the data"
    );
}
