//! The Wine harness of the Windows tests (`tests/tests/windows_*.rs`): what they need from
//! the machine ([`prerequisites`]: `wine64`, MinGW, the cross-built agent named by
//! `COMMSCAN_WINDOWS_AGENT`), and a throw-away WINEPREFIX ([`Prefix`]) with the agent and the
//! `bcryptprimitives.dll` shim in `C:\commscan`.
//!
//! A missing prerequisite prints `SKIPPED: ...` and the test passes, unless
//! `COMMSCAN_REQUIRE_WINE=1` (set by `.ci/run` after it built the agent) turns the skip into a
//! failure.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        // The shim, next to the agent and nowhere else: see tests/wine/bcryptprimitives.c.
        // Rust's std for x86_64-pc-windows-gnu imports ProcessPrng from bcryptprimitives.dll,
        // which Wine 8 lacks; the DLL in the application's directory is found first. The
        // agent binary itself is the one we ship, unchanged.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine");
        let out = Command::new(&wine.mingw_gcc)
            .args(["-shared", "-O2", "-o"])
            .arg(app.join("bcryptprimitives.dll"))
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

    /// Runs `wine64 ARGS` to its exit. Output goes through files, not pipes: the Wine
    /// processes a command starts (wineserver, services.exe, explorer.exe) inherit its stdout
    /// and stderr and outlive it, by seconds, or for as long as any program runs in the prefix
    /// (a program started in the background), and reading pipes to their end would wait for all of them.
    pub fn wine(&self, args: &[&str]) -> Output {
        let file = || tempfile::tempfile().expect("a temporary file");
        let (stdout, stderr) = (file(), file());
        let status = self
            .command(&self.wine64)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("dup"))
            .stderr(stderr.try_clone().expect("dup"))
            .status()
            .expect("run wine64");
        let read = |mut f: std::fs::File| {
            let mut bytes = Vec::new();
            f.seek(SeekFrom::Start(0))
                .and_then(|_| f.read_to_end(&mut bytes))
                .expect("read the output");
            bytes
        };
        Output {
            status,
            stdout: read(stdout),
            stderr: read(stderr),
        }
    }

    /// `reg add KEY /v NAME /t TYPE /d DATA /f` for each value.
    pub fn reg_add(&self, key: &str, values: &[(&str, &str, &str)]) {
        for (name, ty, data) in values {
            let out = self.wine(&["reg", "add", key, "/v", name, "/t", ty, "/d", data, "/f"]);
            assert!(out.status.success(), "reg add {key} {name}: {}", text(&out));
        }
    }

    /// Runs the Windows agent with `args`.
    pub fn agent(&self, args: &[&str]) -> Output {
        let exe = format!(r"{APP}\commscan-agent.exe");
        let mut all = vec![exe.as_str()];
        all.extend_from_slice(args);
        self.wine(&all)
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
