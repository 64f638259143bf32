//! The Wine harness of the Windows tests (`tests/tests/windows_*.rs`): what they need from
//! the machine ([`prerequisites`]: `wine64`, MinGW, the cross-built agent named by
//! `COMMSCAN_WINDOWS_AGENT`), and a throw-away WINEPREFIX ([`Prefix`]) with the agent and the
//! `bcryptprimitives.dll` shim in the prefix's `system32`.
//!
//! A missing prerequisite prints `SKIPPED: ...` and the test passes, unless
//! `COMMSCAN_REQUIRE_WINE=1` (set by `.ci/run` after it built the agent) turns the skip into a
//! failure.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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
    mingw_gcc: PathBuf,
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
            mingw_gcc: wine.mingw_gcc.clone(),
        };
        // A fresh prefix's first boot fails now and then on a busy machine (seen: exit 53 with
        // two prefixes booting at once); a second attempt in the same prefix succeeds.
        let mut out = p.wine(&["wineboot", "--init"]);
        for _ in 0..2 {
            if out.status.success() {
                break;
            }
            let _ = writeln!(
                std::io::stderr(),
                "wineboot failed ({}); killing the prefix's wineserver and retrying",
                out.status
            );
            if let Some(ws) = &p.wineserver {
                let _ = p.command(ws).arg("-k").output();
            }
            out = p.wine(&["wineboot", "--init"]);
        }
        assert!(
            out.status.success(),
            "wineboot: {}\nfree space where the prefix is: {}",
            text(&out),
            free_space(p.dir.path())
        );
        // `wineboot --init` returns before the processes it started have finished setting the
        // prefix up (services, their registry); an MSI installed before then finds no SCM
        // database to register its service in. Wait until the prefix is idle.
        if let Some(ws) = &p.wineserver {
            let out = p.command(ws).arg("-w").output().expect("run wineserver -w");
            assert!(out.status.success(), "wineserver -w: {}", text(&out));
        }
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

    /// The Linux path of a `C:\...` path of the prefix (`C:\users\root` →
    /// `<prefix>/drive_c/users/root`). Wine maps names case-insensitively; the Linux side does
    /// not, so name directories as Wine created them.
    pub fn unix_path(&self, windows: &str) -> PathBuf {
        let rest = windows
            .strip_prefix("C:\\")
            .or_else(|| windows.strip_prefix("c:\\"))
            .unwrap_or_else(|| panic!("not a path on C: {windows:?}"));
        rest.split('\\')
            .filter(|p| !p.is_empty())
            .fold(self.dir.path().join("drive_c"), |d, p| d.join(p))
    }

    /// The value of a Windows environment variable in the prefix (`cmd /c echo %NAME%`).
    pub fn env(&self, name: &str) -> String {
        let out = self.wine(&["cmd", "/c", "echo", &format!("%{name}%")]);
        assert!(out.status.success(), "echo %{name}%: {}", text(&out));
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            !value.is_empty() && value != format!("%{name}%"),
            "%{name}% is not set: {}",
            text(&out)
        );
        value
    }

    /// The current user's profile directory on the Linux side (`%USERPROFILE%`,
    /// `drive_c/users/<unix user>` in Wine 8), and the user's name (the folder's).
    pub fn user_profile(&self) -> (PathBuf, String) {
        let path = self.unix_path(&self.env("USERPROFILE"));
        assert!(path.is_dir(), "no profile directory {}", path.display());
        let name = path
            .file_name()
            .expect("profile folder")
            .to_string_lossy()
            .into_owned();
        (path, name)
    }

    /// Builds `tests/wine/<source>` with MinGW into `out` (a Linux path in the prefix).
    pub fn compile(&self, source: &str, out: &Path) {
        std::fs::create_dir_all(out.parent().expect("a file")).expect("output directory");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("wine")
            .join(source);
        let built = Command::new(&self.mingw_gcc)
            .args(["-O2", "-o"])
            .arg(out)
            .arg(&src)
            .output()
            .expect("run x86_64-w64-mingw32-gcc");
        assert!(built.status.success(), "{source}: {}", text(&built));
    }

    /// Starts `wine64 ARGS` in the background, its output discarded. The returned guard kills
    /// it on drop (and the prefix's `wineserver -k` would end it anyway).
    pub fn spawn(&self, args: &[&str]) -> Background {
        let child = self
            .command(&self.wine64)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run wine64");
        Background(child)
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", self.dir.path())
            // Wine's errors, not its fixme chatter: they go to files, shown when a step fails
            // (a bare exit status such as 53, STATUS_DLL_NOT_FOUND's low byte, says little).
            .env("WINEDEBUG", "fixme-all")
            // No Gecko or Mono installer prompts in a fresh prefix.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        c
    }

    /// Runs `wine64 ARGS` to its exit. Output goes through files, not pipes: the Wine
    /// processes a command starts (wineserver, services.exe, explorer.exe) inherit its stdout
    /// and stderr and outlive it, by seconds, or for as long as any program runs in the prefix
    /// (a [`Prefix::spawn`]ed one), and reading pipes to their end would wait for all of them.
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

    /// Keeps the prefix "switched on" until the guard drops: Wine ends its services (and its
    /// wineserver) as soon as no ordinary process runs, so a test of a running service holds
    /// one, an idle `cmd` reading from a pipe.
    pub fn keep_running(&self) -> Background {
        let child = self
            .command(&self.wine64)
            .arg("cmd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wine64 cmd");
        Background(child)
    }

    /// Runs the Windows agent with `args`.
    pub fn agent(&self, args: &[&str]) -> Output {
        let exe = format!(r"{APP}\commscan-agent.exe");
        let mut all = vec![exe.as_str()];
        all.extend_from_slice(args);
        self.wine(&all)
    }
}

/// A program [`Prefix::spawn`] started; killed and reaped on drop, whatever the test did.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        // `wine64 X.exe` becomes the Windows process itself (the preloader execs in place), so
        // killing the child ends X.exe.
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

/// The device id `commscan-agent enroll` printed ("enrolled as device ID in organisation ...").
pub fn enrolled_device_id(enrolled: &Output) -> String {
    let stdout = String::from_utf8_lossy(&enrolled.stdout);
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "device")
        .nth(1)
        .unwrap_or_else(|| panic!("no device id in {stdout:?}"))
        .to_owned()
}

/// `df -h`'s line for the filesystem holding `dir`, for failure messages (a full disk makes
/// Wine fail with nothing but an exit status).
fn free_space(dir: &Path) -> String {
    match Command::new("df").arg("-h").arg(dir).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_owned(),
        Err(e) => format!("df: {e}"),
    }
}
