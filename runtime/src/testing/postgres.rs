//! A throw-away PostgreSQL cluster for tests: the real server, no mock.
//!
//! [`PgCluster::start`] runs `initdb` in a fresh temporary directory and starts the server
//! with `pg_ctl`, listening on `127.0.0.1` only, on a port the kernel just handed out (bind
//! `127.0.0.1:0`, read the port, close; the start is retried on another port, up to
//! [`PORT_ATTEMPTS`] times, when the log says the address is in use). There is no Unix
//! socket (`unix_socket_directories = ''`), so nothing lands in a shared directory and two
//! clusters never meet. Durability is the production one: `fsync = on`,
//! `synchronous_commit = on`; `shared_buffers = 32MB` and `max_connections = 200` keep many
//! clusters side by side affordable. The server logs to `postgres.log` in the data directory;
//! every panic about the server shows its tail.
//!
//! Roles: the superuser `postgres` (the harness's own, for setup) and `commscan`, a plain
//! login role that owns the database `commscan` (and every database
//! [`PgCluster::create_database`] makes). Both authenticate with passwords, `scram-sha-256`
//! (`initdb --auth=scram-sha-256`); the passwords are random per cluster. [`PgCluster::url`]
//! carries no password: tests hand it over by [`PgCluster::password_file`] (mode 0600) or
//! [`PgCluster::password`], as the collector gets it.
//!
//! Binaries: the highest `/usr/lib/postgresql/<version>/bin` holding `initdb`, `pg_ctl`,
//! `postgres` and `psql` (Debian's layout), else `pg_config --bindir`. When they are missing,
//! [`PgCluster::start`] prints `SKIPPED: <test>: …` and returns `None`; with
//! `COMMSCAN_REQUIRE_POSTGRES=1` (CI sets it after installing them) it panics instead.
//!
//! TLS: [`PgCluster::start_with_tls`] starts the same cluster with `ssl = on` and a server
//! certificate the test issued ([`ServerTls`]; the harness makes no certificates itself, so it
//! needs no PKI crate): `server.crt` and `server.key` in the data directory, the key 0600 and
//! owned by the server's user, as PostgreSQL insists. Clients may then use TLS or not
//! (`hostssl` is not forced); `pg_stat_ssl` tells which they did.
//!
//! Root: PostgreSQL refuses to run as root, and CI runs the tests as root. The effective uid
//! comes from `rustix::process::geteuid` (unsafe code is forbidden here, and rustix is already
//! a workspace dependency). When it is 0, `initdb` and `pg_ctl` (and so the server) run as
//! `nobody` through `setpriv --reuid --regid --clear-groups` (plain syscalls, no PAM), or
//! `runuser -u nobody` where setpriv is missing; the data directory is chown'd to `nobody`, the
//! temporary directory around it made 0711 (traversable, not listable), and it is created
//! under `$TMPDIR` only when every ancestor is traversable by others, else under `/tmp`.
//! `psql` always runs as the caller: it is only a client over TCP.
//!
//! Bounds: every child process runs under a deadline and is killed when it passes it; a start
//! (or restart) that does not answer a query within [`START_TIMEOUT`] panics with the log tail.
//! Drop stops the server with `pg_ctl stop -m immediate` (at most ~15 s; if that fails, the
//! postmaster is sent SIGKILL) and deletes the directory; it never panics. A test process
//! killed outright (SIGKILL) leaves its server running: nothing can run after that.
//!
//! Sync and async tests: every method blocks (child processes and `std::thread::sleep`, no
//! runtime of its own). Call them directly from `#[test]`, or from `#[tokio::test]` where
//! nothing else needs the runtime meanwhile (setup, teardown); while code under test must keep
//! running on the runtime (a fault injected in the middle of traffic), call them through
//! `tokio::task::spawn_blocking` (a `PgCluster` is `Send + Sync`; share it in an `Arc`) or use
//! the multi-thread flavour. Dropping one inside a runtime blocks it for the stop (bounded).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a start, a restart or `start_again` may take before it panics.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports a start tries when the one it picked was taken meanwhile.
pub const PORT_ATTEMPTS: usize = 5;
/// `initdb` (which fsyncs what it wrote) may take this long.
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
/// A `psql` call (setup, readiness checks, [`PgCluster::psql`]).
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);
/// `pg_ctl stop` on drop; past it the postmaster is killed.
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A PostgreSQL cluster of its own: initdb in a temp dir, fsync on, listening on 127.0.0.1 on
/// a free port only (no unix socket in a shared dir), password (scram-sha-256) auth for a role
/// `commscan` that owns a database `commscan`, stopped (`pg_ctl stop -m immediate`) and
/// deleted on drop. See the [module documentation](self) for the design and its bounds.
pub struct PgCluster {
    test: String,
    bin: PathBuf,
    run_as: Option<RunAs>,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    superuser_password: String,
    password: String,
    password_file: PathBuf,
    /// Last field: removed after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("test", &self.test)
            .field("url", &self.url())
            .field("data", &self.data)
            .field("run_as", &self.run_as)
            .finish_non_exhaustive()
    }
}

/// How the server's tools run when the tests run as root.
#[derive(Debug, Clone)]
enum RunAs {
    Setpriv {
        setpriv: PathBuf,
        uid: u32,
        gid: u32,
    },
    Runuser {
        runuser: PathBuf,
        user: String,
    },
}

impl RunAs {
    fn ids(&self) -> (u32, u32) {
        match self {
            RunAs::Setpriv { uid, gid, .. } => (*uid, *gid),
            RunAs::Runuser { .. } => nobody(),
        }
    }
}

/// The server certificate of a cluster with TLS ([`PgCluster::start_with_tls`]).
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate (chain), PEM; valid for the name clients dial (`127.0.0.1`).
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8, or any form OpenSSL reads).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl PgCluster {
    /// Starts one, or returns `None` after printing `SKIPPED: {test}: ...why...` to stderr when
    /// the PostgreSQL server binaries are missing; with `COMMSCAN_REQUIRE_POSTGRES=1` a missing
    /// prerequisite panics instead (CI sets it). Any other failure panics, with the log tail.
    pub fn start(test: &str) -> Option<PgCluster> {
        PgCluster::start_inner(test, None)
    }

    /// [`PgCluster::start`] with `ssl = on` and `tls` as the server's certificate and key.
    pub fn start_with_tls(test: &str, tls: &ServerTls) -> Option<PgCluster> {
        PgCluster::start_inner(test, Some(tls))
    }

    fn start_inner(test: &str, tls: Option<&ServerTls>) -> Option<PgCluster> {
        let t0 = Instant::now();
        let bin = match find_bin_dir() {
            Ok(bin) => bin,
            Err(why) => return skip(test, &why),
        };
        let root = rustix::process::geteuid().is_root();
        let run_as = if root {
            match find_run_as() {
                Ok(r) => Some(r),
                Err(why) => return skip(test, &why),
            }
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("commscan-pg-")
            .tempdir_in(temp_base(root))
            .unwrap_or_else(|e| panic!("{test}: cannot create a temporary directory: {e}"));
        let data = dir.path().join("data");
        let mut cluster = PgCluster {
            test: test.to_owned(),
            log: data.join("postgres.log"),
            data,
            bin,
            run_as,
            port: 0,
            superuser_password: random_password(),
            password: random_password(),
            password_file: dir.path().join("password"),
            dir,
        };
        // From here on a panic drops `cluster`, which stops whatever was started.
        cluster.init();
        if let Some(tls) = tls {
            cluster.enable_tls(tls);
        }
        cluster.first_start();
        cluster.setup_roles();
        eprintln!(
            "{test}: PostgreSQL ({}) on 127.0.0.1:{} ready in {} ms",
            cluster.bin.display(),
            cluster.port,
            t0.elapsed().as_millis()
        );
        Some(cluster)
    }

    /// `postgres://commscan@127.0.0.1:PORT/commscan` (no password in it).
    pub fn url(&self) -> String {
        self.url_of("commscan", "commscan")
    }

    /// The port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The role's password (tests pass it through a file or env var, as the collector will).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A path to a file holding the password (mode 0600; the password alone, no newline).
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The server's log file (in the data directory).
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Creates another database owned by `commscan`; returns its URL. `name`: lower-case
    /// letters, digits and `_`, at most 63 bytes.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{}: database name {name:?}: use [a-z0-9_], at most 63 bytes",
            self.test
        );
        self.superuser_sql(&[&format!("CREATE DATABASE \"{name}\" OWNER commscan")]);
        self.url_of("commscan", name)
    }

    /// `pg_ctl restart -m immediate` (crash-restart, for fault tests); returns when it accepts
    /// connections again (crash recovery done), at most [`START_TIMEOUT`].
    pub fn restart_immediate(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let out = self.pg_ctl(&["restart", "-m", "immediate"], true);
        if let Err(e) = out {
            self.fail(&format!("pg_ctl restart -m immediate failed: {e}"));
        }
        self.wait_ready(deadline);
    }

    /// Stops the server (`-m immediate`: no checkpoint, as a crash); returns when it is gone.
    pub fn stop(&self) {
        if let Err(e) = self.pg_ctl(&["stop", "-m", "immediate"], false) {
            self.fail(&format!("pg_ctl stop -m immediate failed: {e}"));
        }
    }

    /// Brings a stopped server back on the same port (retried for a while if the port is
    /// taken meanwhile); returns when it accepts connections, at most [`START_TIMEOUT`] per
    /// attempt.
    pub fn start_again(&self) {
        for attempt in 1..=PORT_ATTEMPTS {
            let deadline = Instant::now() + START_TIMEOUT;
            match self.pg_ctl(&["start"], true) {
                Ok(_) => return self.wait_ready(deadline),
                Err(e) if attempt < PORT_ATTEMPTS && self.port_was_taken() => {
                    eprintln!("{}: port {} taken, retrying: {e}", self.test, self.port);
                    std::thread::sleep(Duration::from_millis(200 * attempt as u64));
                }
                Err(e) => self.fail(&format!("pg_ctl start failed: {e}")),
            }
        }
    }

    /// Runs `sql` with `psql` as the role named in `url` (one of this cluster's URLs) with
    /// `commscan`'s password; the output is unaligned, tuples only (`-At`), one row a line,
    /// without the last newline.
    /// `Err` holds psql's message (a refused login, an SQL error, a stopped server).
    pub fn psql(&self, url: &str, sql: &str) -> Result<String, String> {
        self.psql_with(url, &self.password, &[sql], PSQL_TIMEOUT)
    }

    fn url_of(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    fn init(&self) {
        let root_dir = self.dir.path();
        std::fs::create_dir(&self.data).unwrap();
        set_mode(&self.data, 0o700);
        // initdb reads the superuser's password from a file; as `nobody` when we are root.
        let pwfile = root_dir.join("superuser-password");
        write_private(&pwfile, &self.superuser_password);
        if let Some(r) = &self.run_as {
            // Traversable (not listable) for the server's user; the rest stays root's.
            set_mode(root_dir, 0o711);
            let (uid, gid) = r.ids();
            for p in [&self.data, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("{}: chown {}: {e}", self.test, p.display()));
            }
        }
        let mut initdb = self.server_tool("initdb");
        initdb
            .arg("-D")
            .arg(&self.data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run(&mut initdb, INITDB_TIMEOUT, root_dir);
        let _ = std::fs::remove_file(&pwfile);
        if let Err(e) = out {
            panic!("{}: initdb failed: {e}", self.test);
        }
        let conf = "\n# commscan test cluster (runtime/src/testing/postgres.rs)\n\
            listen_addresses = '127.0.0.1'\n\
            unix_socket_directories = ''\n\
            fsync = on\n\
            synchronous_commit = on\n\
            full_page_writes = on\n\
            shared_buffers = 32MB\n\
            max_connections = 200\n\
            password_encryption = 'scram-sha-256'\n\
            logging_collector = off\n\
            log_min_messages = warning\n\
            log_connections = off\n";
        append(&self.data.join("postgresql.conf"), conf);
    }

    /// Puts the certificate and key in the data directory (the key 0600 and the server's, or
    /// PostgreSQL refuses it) and turns `ssl` on.
    fn enable_tls(&self, tls: &ServerTls) {
        let (cert, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        write_private(&cert, &tls.cert_pem);
        write_private(&key, &tls.key_pem);
        if let Some(r) = &self.run_as {
            let (uid, gid) = r.ids();
            for p in [&cert, &key] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("{}: chown {}: {e}", self.test, p.display()));
            }
        }
        append(
            &self.data.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        );
    }

    /// Picks a port, starts, and retries on a fresh port while the old one turns out taken.
    fn first_start(&mut self) {
        for attempt in 1..=PORT_ATTEMPTS {
            let deadline = Instant::now() + START_TIMEOUT;
            self.port = free_port();
            // The last `port` line of postgresql.conf wins.
            append(
                &self.data.join("postgresql.conf"),
                &format!("port = {}\n", self.port),
            );
            match self.pg_ctl(&["start"], true) {
                Ok(_) => return self.wait_ready(deadline),
                Err(e) if attempt < PORT_ATTEMPTS && self.port_was_taken() => {
                    eprintln!("{}: port {} taken, another: {e}", self.test, self.port);
                }
                Err(e) => self.fail(&format!("pg_ctl start failed: {e}")),
            }
        }
    }

    fn setup_roles(&self) {
        let pw = &self.password;
        self.superuser_sql(&[
            &format!("CREATE ROLE commscan LOGIN PASSWORD '{pw}'"),
            "CREATE DATABASE commscan OWNER commscan",
        ]);
        write_private(&self.password_file, pw);
        if let Err(e) = self.psql(&self.url(), "SELECT 1") {
            self.fail(&format!("commscan cannot log in with its password: {e}"));
        }
    }

    /// Each statement in its own `-c` (CREATE DATABASE cannot run inside a transaction).
    fn superuser_sql(&self, statements: &[&str]) -> String {
        let url = self.url_of("postgres", "postgres");
        self.psql_with(&url, &self.superuser_password, statements, PSQL_TIMEOUT)
            .unwrap_or_else(|e| self.fail(&format!("{statements:?} as postgres: {e}")))
    }

    fn psql_with(
        &self,
        url: &str,
        password: &str,
        statements: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let mut psql = Command::new(self.bin.join("psql"));
        clear_pg_env(&mut psql);
        psql.env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]);
        for s in statements {
            psql.arg("-c").arg(s);
        }
        run(&mut psql, timeout, self.dir.path()).map(|out| out.trim_end_matches('\n').to_owned())
    }

    /// Polls `SELECT 1` as the superuser until it answers or `deadline` passes (then panics).
    fn wait_ready(&self, deadline: Instant) {
        let url = self.url_of("postgres", "postgres");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.psql_with(
                &url,
                &self.superuser_password,
                &["SELECT 1"],
                left.max(Duration::from_secs(1)),
            );
            match r {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => self.fail(&format!(
                    "not accepting connections after {START_TIMEOUT:?}: {e}"
                )),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `pg_ctl <args> -D data -w -t 30 [-l log]`, as the server's user.
    fn pg_ctl(&self, args: &[&str], with_log: bool) -> Result<String, String> {
        let mut c = self.server_tool("pg_ctl");
        c.args(args).arg("-D").arg(&self.data).args(["-w", "-s"]);
        c.arg("-t").arg(START_TIMEOUT.as_secs().to_string());
        if with_log {
            c.arg("-l").arg(&self.log);
        }
        run(
            &mut c,
            START_TIMEOUT + Duration::from_secs(10),
            self.dir.path(),
        )
    }

    /// `initdb` or `pg_ctl`: directly, or as `nobody` when we are root.
    fn server_tool(&self, name: &str) -> Command {
        let tool = self.bin.join(name);
        let mut c = match &self.run_as {
            None => Command::new(tool),
            Some(RunAs::Setpriv { setpriv, uid, gid }) => {
                let mut c = Command::new(setpriv);
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(tool);
                c
            }
            Some(RunAs::Runuser { runuser, user }) => {
                let mut c = Command::new(runuser);
                c.args(["-u", user, "--"]).arg(tool);
                c
            }
        };
        clear_pg_env(&mut c);
        // The caller's working directory may not be readable by `nobody`.
        c.current_dir(self.dir.path());
        c
    }

    fn port_was_taken(&self) -> bool {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.contains("Address already in use") || log.contains("could not bind IPv4")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(no log at {}: {e})", self.log.display()));
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: PostgreSQL on 127.0.0.1:{}: {what}\n--- tail of {} ---\n{}",
            self.test,
            self.port,
            self.log.display(),
            self.log_tail()
        )
    }
}

impl Drop for PgCluster {
    /// Stops the server (`-m immediate`, bounded; SIGKILL to the postmaster if that fails);
    /// the temporary directory goes with the `TempDir` field. Never panics.
    fn drop(&mut self) {
        let pid_file = self.data.join("postmaster.pid");
        if !pid_file.exists() {
            return;
        }
        let mut c = self.server_tool("pg_ctl");
        c.args(["stop", "-m", "immediate", "-w", "-s", "-t", "10", "-D"])
            .arg(&self.data);
        if run(&mut c, DROP_STOP_TIMEOUT, self.dir.path()).is_ok() {
            return;
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            // The backends notice their postmaster is gone and exit by themselves.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn skip<T>(test: &str, why: &str) -> Option<T> {
    let required = std::env::var("COMMSCAN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: COMMSCAN_REQUIRE_POSTGRES=1 but {why}");
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
    None
}

const TOOLS: [&str; 4] = ["initdb", "pg_ctl", "postgres", "psql"];

fn has_tools(dir: &Path) -> bool {
    TOOLS.iter().all(|t| dir.join(t).is_file())
}

/// The highest `/usr/lib/postgresql/<major>/bin` with every tool, else `pg_config --bindir`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match from_pg_config {
        Some(bin) if has_tools(&bin) => Ok(bin),
        _ => Err(format!(
            "the PostgreSQL server binaries ({}) are missing: neither /usr/lib/postgresql/*/bin \
             nor `pg_config --bindir` has them (apt-get install postgresql)",
            TOOLS.join(", ")
        )),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `nobody`'s uid and gid from /etc/passwd (65534 where it is not listed).
fn nobody() -> (u32, u32) {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() > 3 && f[0] == "nobody" {
                    Some((f[2].parse().ok()?, f[3].parse().ok()?))
                } else {
                    None
                }
            })
        })
        .unwrap_or((65534, 65534))
}

fn find_run_as() -> Result<RunAs, String> {
    let (uid, gid) = nobody();
    if let Some(setpriv) = on_path("setpriv") {
        return Ok(RunAs::Setpriv { setpriv, uid, gid });
    }
    if let Some(runuser) = on_path("runuser") {
        return Ok(RunAs::Runuser {
            runuser,
            user: "nobody".to_owned(),
        });
    }
    Err(
        "running as root, PostgreSQL must run as another user, but neither setpriv nor \
         runuser is installed (apt-get install util-linux)"
            .to_owned(),
    )
}

/// `$TMPDIR`, unless we are root and `nobody` could not reach a directory inside it.
fn temp_base(root: bool) -> PathBuf {
    let base = std::env::temp_dir();
    if !root {
        return base;
    }
    let traversable = base
        .ancestors()
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if traversable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn random_password() -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Libpq's and the server's environment variables of the caller (`PGDATA`, `PGPORT`,
/// `PGHOST`, `PGPASSFILE`, …) must not reach this cluster's tools.
fn clear_pg_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("PG")) {
            c.env_remove(k);
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn write_private(p: &Path, content: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(content.as_bytes()).unwrap();
    set_mode(p, 0o600);
}

fn append(p: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(text.as_bytes()).unwrap();
}

/// Runs `c` with stdout and stderr into one unnamed file in `dir` (never a pipe: a daemon
/// that kept a pipe open would block the read) and kills it after `timeout`. `Ok(output)` on
/// success, `Err(description)` otherwise.
fn run(c: &mut Command, timeout: Duration, dir: &Path) -> Result<String, String> {
    let out = tempfile::tempfile_in(dir).map_err(|e| format!("output file: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("output file: {e}"))?;
    // Program and the first arguments only: no environment (PGPASSWORD) and no SQL (a
    // password in CREATE ROLE) in messages.
    let what = std::iter::once(c.get_program())
        .chain(c.get_args().take_while(|a| *a != "-c" && *a != "-d"))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = c
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what}: killed after {timeout:?}: {}",
                    read_all(out)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{what}: wait: {e}")),
        }
    };
    let text = read_all(out);
    if status.success() {
        Ok(text)
    } else {
        Err(format!("{what}: {status}: {}", text.trim()))
    }
}

fn read_all(mut f: File) -> String {
    let mut s = String::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s
}
