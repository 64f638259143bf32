//! The Wine harness of the Windows tests (`tests/tests/windows_*.rs`): what they need from
//! the machine ([`prerequisites`]: `wine64`, MinGW, the cross-built agent named by
//! `COMMSCAN_WINDOWS_AGENT`), and a throw-away WINEPREFIX ([`Prefix`]) with the agent and the
//! `bcryptprimitives.dll` shim in the prefix's `system32`.
//!
//! A missing prerequisite prints `SKIPPED: ...` and the test passes, unless
//! `COMMSCAN_REQUIRE_WINE=1` (set by `.ci/run` after it built the agent) turns the skip into a
//! failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What the tests need from the machine, or `None` after printing why they are skipped.
pub struct Wine {
    pub wine64: PathBuf,
    pub wineserver: Option<PathBuf>,
    pub mingw_gcc: PathBuf,
    pub agent: PathBuf,
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub fn prerequisites(test: &str) -> Option<Wine> {
    let required = std::env::var("COMMSCAN_REQUIRE_WINE").is_ok_and(|v| v == "1");
    let wine64 = on_path("wine64").or_else(|| {
        let p = PathBuf::from("/usr/lib/wine/wine64");
        p.is_file().then_some(p)
    });
    let wineserver = wine64
        .as_deref()
        .and_then(Path::parent)
        .map(|d| d.join("wineserver"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("wineserver"));
    let mingw_gcc = on_path("x86_64-w64-mingw32-gcc");
    let agent = std::env::var_os("COMMSCAN_WINDOWS_AGENT")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let mut missing = Vec::new();
    if wine64.is_none() {
        missing.push("wine64 (apt-get install wine64)".to_owned());
    }
    if mingw_gcc.is_none() {
        missing.push("x86_64-w64-mingw32-gcc (apt-get install gcc-mingw-w64-x86-64)".to_owned());
    }
    if agent.is_none() {
        missing.push(format!(
            "the Windows agent (COMMSCAN_WINDOWS_AGENT={:?}; build it with .ci/windows.sh build)",
            std::env::var_os("COMMSCAN_WINDOWS_AGENT").unwrap_or_default()
        ));
    }
    if !missing.is_empty() {
        let why = missing.join(", ");
        assert!(
            !required,
            "{test}: COMMSCAN_REQUIRE_WINE=1 but missing: {why}"
        );
        // Straight to the process's stderr: the test harness captures `eprintln!` of
        // passing tests, and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: missing {why}");
        return None;
    }
    Some(Wine {
        wine64: wine64?,
        wineserver,
        mingw_gcc: mingw_gcc?,
        agent: agent?,
    })
}

/// `name` on PATH (from Debian's `package`), or `None` after printing why `test` is skipped;
/// with `COMMSCAN_REQUIRE_WINE=1` a missing tool fails the test instead.
pub fn tool(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        let required = std::env::var("COMMSCAN_REQUIRE_WINE").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: COMMSCAN_REQUIRE_WINE=1 but {name} is missing (apt-get install {package})"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: missing {name} (apt-get install {package})"
        );
    }
    found
}

/// A fresh WINEPREFIX with the agent and the shim in `C:\commscan`. Its wineserver is killed
/// and the prefix deleted on drop.
pub struct Prefix {
    pub dir: tempfile::TempDir,
    wine64: PathBuf,
    wineserver: Option<PathBuf>,
}

/// `C:\commscan`, where the agent, the shim and the test's files sit.
pub const APP: &str = r"C:\commscan";

impl Prefix {
    pub fn new(wine: &Wine) -> Prefix {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Prefix {
            dir,
            wine64: wine.wine64.clone(),
            wineserver: wine.wineserver.clone(),
        };
        let out = p.wine(&["wineboot", "--init"]);
        assert!(out.status.success(), "wineboot: {}", text(&out));
        let app = p.app_dir();
        std::fs::create_dir_all(&app).expect("C:\\commscan");
        std::fs::copy(&wine.agent, app.join("commscan-agent.exe")).expect("copy agent");
        // The shim, in this prefix's system32 and nowhere else: see
        // tests/wine/bcryptprimitives.c. Rust's std for x86_64-pc-windows-gnu imports
        // ProcessPrng from bcryptprimitives.dll, which Windows 10 and later keep in system32
        // and Wine 8 lacks; there the agent wherever it is installed (C:\commscan, or
        // Program Files by the MSI) finds it. The agent binary itself is the one we ship.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine");
        let out = Command::new(&wine.mingw_gcc)
            .args(["-shared", "-O2", "-o"])
            .arg(
                p.dir
                    .path()
                    .join("drive_c/windows/system32/bcryptprimitives.dll"),
            )
            .arg(src.join("bcryptprimitives.c"))
            .arg(src.join("bcryptprimitives.def"))
            .arg("-ladvapi32")
            .output()
            .expect("run x86_64-w64-mingw32-gcc");
        assert!(out.status.success(), "shim: {}", text(&out));
        p
    }

    /// `drive_c/commscan` on the Linux side.
    pub fn app_dir(&self) -> PathBuf {
        self.dir.path().join("drive_c").join("commscan")
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", self.dir.path())
            .env("WINEDEBUG", "-all")
            // No Gecko or Mono installer prompts in a fresh prefix.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        c
    }

    pub fn wine(&self, args: &[&str]) -> Output {
        self.command(&self.wine64)
            .args(args)
            .output()
            .expect("run wine64")
    }

    /// `reg add KEY /v NAME /t TYPE /d DATA /f` for each value.
    pub fn reg_add(&self, key: &str, values: &[(&str, &str, &str)]) {
        for (name, ty, data) in values {
            let out = self.wine(&["reg", "add", key, "/v", name, "/t", ty, "/d", data, "/f"]);
            assert!(out.status.success(), "reg add {key} {name}: {}", text(&out));
        }
    }

    /// Keeps the prefix "switched on" until the guard drops: Wine ends its services (and its
    /// wineserver) as soon as no ordinary process runs, so a test of a running service holds
    /// one, an idle `cmd` reading from a pipe.
    pub fn keep_running(&self) -> KeepRunning {
        let child = self
            .command(&self.wine64)
            .arg("cmd")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start wine64 cmd");
        KeepRunning(child)
    }

    /// Runs the Windows agent with `args`.
    pub fn agent(&self, args: &[&str]) -> Output {
        let exe = format!(r"{APP}\commscan-agent.exe");
        let mut all = vec![exe.as_str()];
        all.extend_from_slice(args);
        self.wine(&all)
    }
}

/// See [`Prefix::keep_running`].
pub struct KeepRunning(std::process::Child);

impl Drop for KeepRunning {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Some(ws) = &self.wineserver {
            let _ = self.command(ws).arg("-k").output();
        }
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
