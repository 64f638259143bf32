//! Backups of the embedded store: `commscan-collector backup DIR` and `restore DIR`.
//!
//! A backup is a directory laid out like a data directory: the deployment's files as they are
//! (`collector.json`, `pki/`, `admin.token` if it is still there, ...), `store/` holding a
//! consistent copy of the sled store, and `BACKUP.json` saying when it was taken and what it
//! holds. Everything is 0700/0600: it holds the CA key and token hashes.
//!
//! *Consistent and online.* sled lets one process open a store, so while a collector runs the
//! copy is its to make. `backup` asks it over the **control socket**, `<data>/control.sock`
//! (a Unix socket, 0600 in a 0700 directory: the collector's user and root only; one JSON line
//! in, one out, at most [`MAX_REQUEST_BYTES`], one request at a time). The collector holds
//! every store call off ([`crate::store::recovering::Recovering`]'s write lock), flushes, copies
//! every tree into a new sled database under `<data>/backups/` (inside its own state directory,
//! the only place its systemd sandbox may write) and lets calls go on: ingest waits for the
//! copy, nothing is refused. `backup` then moves the copy to `DIR` and adds the deployment's
//! files. With no collector running, `backup` opens the store and copies it itself.
//! A PostgreSQL store is the database's to back up (pg_dump, base backups); `backup` says so.
//!
//! *Restore*: stop the collector, `commscan-collector restore DIR --data-dir D` into a `D` that
//! holds no deployment, start it. Devices that reported after the backup heal by themselves:
//! an agent's hello carries the digest of what it last had acknowledged, the restored record's
//! digest differs, and the agent sends a snapshot.
//!
//! A restored store is a new sled database whose id generator starts at 0; the copy records an
//! id floor above every audit position and history id it holds, so new entries never
//! overwrite restored ones ([`crate::store::sled_store::SledStore::copy_to`]).

use crate::collector::Collector;
use crate::layout::{private_dir, private_files};
use crate::store::sled_store::{BackupCounts, SledStore};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The control socket, in the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Where the collector writes copies before `backup` moves them, in the data directory.
pub const STAGING_DIR: &str = "backups";
/// The backup's description file.
pub const MANIFEST: &str = "BACKUP.json";
/// Largest request line on the control socket.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// Time a control connection has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A backup or restore failure, naming the path or what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or directory could not be used.
    #[error("{path}: {message}")]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The store could not be copied.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The running collector refused or failed.
    #[error("the running collector: {0}")]
    Collector(String),
}

fn path_err(path: &Path, message: impl std::fmt::Display) -> BackupError {
    BackupError::Path {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Copy the store into `<data>/backups/<name>/store`.
    Backup {
        /// 1–64 of `a-z`, `0-9`, `-`.
        name: String,
    },
}

/// The answer to a request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    /// The copy is made.
    Copied {
        /// Trees copied.
        trees: usize,
        /// Entries copied.
        entries: u64,
        /// How long store calls were held off, in milliseconds.
        held_ms: u64,
    },
    /// It failed.
    Error(String),
}

/// What `BACKUP.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// When the copy was made (RFC 3339).
    pub taken_at: String,
    /// The collector version that made it.
    pub version: String,
    /// Whether a running collector made it (`online`) or `backup` itself (`offline`).
    pub mode: String,
    /// Trees in `store/`.
    pub trees: usize,
    /// Entries in `store/`.
    pub entries: u64,
    /// How long store calls were held off (online), in milliseconds.
    pub held_ms: u64,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Serves the control socket in `data_dir` until `shutdown`. A stale socket file (a collector
/// that was killed) is replaced: the store's lock, taken before this runs, proves no other
/// collector uses this directory.
pub async fn serve_control(
    collector: Arc<Collector>,
    data_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let path = data_dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&path);
    remove_stale_copies(&data_dir.join(STAGING_DIR));
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no control socket: `backup` cannot reach this collector");
            return;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "control socket: cannot make it 0600; closed");
            let _ = std::fs::remove_file(&path);
            return;
        }
    }
    tracing::info!(path = %path.display(), "control socket");
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // One request at a time: the next connection waits in the backlog. Shutdown does not
        // wait for it: a copy in progress sees the shutdown and stops (its staging directory
        // is removed at the next start if the process ends first).
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = answer(&collector, &data_dir, stream, &shutdown) => r,
        };
        if let Err(e) = reply {
            tracing::warn!(error = %e, "control socket: request failed");
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Removes copies a collector staged and never handed over (it stopped mid-copy): they hold
/// token hashes and take disk.
fn remove_stale_copies(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("backup-") {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::warn!(path = %e.path().display(), "removed a backup copy left unfinished")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an unfinished backup copy")
                }
            }
        }
    }
}

async fn answer(
    collector: &Arc<Collector>,
    data_dir: &Path,
    stream: tokio::net::UnixStream,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut limited = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(
        read,
        MAX_REQUEST_BYTES as u64 + 1,
    ));
    let got = tokio::time::timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line)).await;
    let reply = match got {
        Err(_) => Reply::Error(format!("no request within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => {
            Reply::Error(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Reply::Error(format!("not a request: {e}")),
            Ok(Request::Backup { name }) if !valid_name(&name) => {
                Reply::Error("backup name: 1-64 of a-z, 0-9 and '-'".into())
            }
            Ok(Request::Backup { name }) => {
                let (c, staging) = (collector.clone(), data_dir.join(STAGING_DIR));
                tokio::task::spawn_blocking({
                    let stop = shutdown.clone();
                    move || copy_online(&c, &staging, &name, &|| stop.is_cancelled())
                })
                .await
                .unwrap_or_else(|e| Reply::Error(format!("backup task: {e}")))
            }
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// The collector's side: the copy, audited.
fn copy_online(
    collector: &Collector,
    staging: &Path,
    name: &str,
    cancelled: &dyn Fn() -> bool,
) -> Reply {
    let to = staging.join(name);
    let result = private_dir(staging)
        .map_err(|e| format!("{}: {e}", staging.display()))
        .and_then(|()| {
            if to.exists() {
                return Err(format!("{}: exists already", to.display()));
            }
            private_dir(&to).map_err(|e| format!("{}: {e}", to.display()))?;
            let started = Instant::now();
            let counts = collector
                .store()
                .backup(&to.join("store"), cancelled)
                .map_err(|e| e.to_string())?;
            Ok((counts, started.elapsed()))
        });
    match result {
        Ok((counts, held)) => {
            let detail = format!(
                "store copied to {} ({} trees, {} entries; calls held {} ms)",
                to.display(),
                counts.trees,
                counts.entries,
                held.as_millis()
            );
            collector.audit("local:control-socket", "store.backup", None, true, detail);
            tracing::info!(to = %to.display(), trees = counts.trees, entries = counts.entries, held_ms = held.as_millis() as u64, "store backed up");
            Reply::Copied {
                trees: counts.trees,
                entries: counts.entries,
                held_ms: held.as_millis() as u64,
            }
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&to);
            tracing::warn!(error = %e, "backup failed");
            Reply::Error(e)
        }
    }
}

/// `commscan-collector backup DIR`: a consistent copy of the store in `data_dir` (made by the
/// running collector if there is one) and the deployment's files, into the new directory `dest`.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    if !data_dir.join("collector.json").is_file() {
        return Err(path_err(data_dir, "not a collector data directory"));
    }
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(|e| path_err(dest, e))?
            .next()
            .is_some()
    {
        return Err(path_err(
            dest,
            "exists and is not empty: a backup goes into a new directory",
        ));
    }
    // Inside the data directory only under backups/, which a backup does not copy: anywhere
    // else it would copy itself into itself.
    if let (Ok(data), Some(target)) = (data_dir.canonicalize(), resolved(dest))
        && target.starts_with(&data)
        && !target.starts_with(data.join(STAGING_DIR))
    {
        return Err(path_err(
            dest,
            format!(
                "inside the data directory: put backups elsewhere or under {}",
                data.join(STAGING_DIR).display()
            ),
        ));
    }
    private_dir(dest).map_err(|e| path_err(dest, e))?;
    let result = backup_into(data_dir, dest);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn backup_into(data_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    let taken_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let socket = data_dir.join(CONTROL_SOCKET);
    let (mode, counts, held_ms) = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => {
            let name = format!(
                "backup-{}-{}",
                time::OffsetDateTime::now_utc().unix_timestamp(),
                std::process::id()
            );
            let (counts, held_ms) = ask(stream, &name)?;
            let staged = data_dir.join(STAGING_DIR).join(&name);
            move_dir(&staged.join("store"), &dest.join("store"))?;
            let _ = std::fs::remove_dir_all(&staged);
            ("online", counts, held_ms)
        }
        Err(_) => {
            // No collector answers: open the store (sled's lock refuses if one runs anyway), as
            // its owner only: opening writes files, which another user would then own.
            let store_dir = data_dir.join("store");
            owner_only(&store_dir)?;
            let store = SledStore::open(&store_dir).map_err(|e| {
                path_err(
                    &store_dir,
                    format!(
                        "{e} (a collector holds it but its control socket {} does not answer?)",
                        socket.display()
                    ),
                )
            })?;
            let counts = store.copy_to(&dest.join("store"), &|| false)?;
            ("offline", counts, 0)
        }
    };
    // The deployment's files as they are, beside the store.
    for entry in std::fs::read_dir(data_dir).map_err(|e| path_err(data_dir, e))? {
        let entry = entry.map_err(|e| path_err(data_dir, e))?;
        let name = entry.file_name();
        if ["store", STAGING_DIR, CONTROL_SOCKET]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        copy_tree(&entry.path(), &dest.join(&name))?;
    }
    let manifest = Manifest {
        taken_at,
        version: env!("CARGO_PKG_VERSION").into(),
        mode: mode.into(),
        trees: counts.trees,
        entries: counts.entries,
        held_ms,
    };
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    commscan_runtime::files::write_atomic(&dest.join(MANIFEST), &text, 0o600)
        .map_err(|e| path_err(&dest.join(MANIFEST), e))?;
    private_files(dest).map_err(|e| path_err(dest, e))?;
    Ok(manifest)
}

/// Refuses to open `dir` as anyone but its owner.
fn owner_only(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir).map_err(|e| path_err(dir, e))?.uid();
    // /proc/self belongs to the process's effective user.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if me.is_some_and(|me| me != owner) {
        return Err(path_err(
            dir,
            format!(
                "owned by uid {owner}: with no collector running, run `backup` as the store's owner (e.g. sudo -u commscan)"
            ),
        ));
    }
    Ok(())
}

/// `path` made absolute through its nearest existing ancestor (symbolic links resolved), for
/// a path that may not exist yet.
fn resolved(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p, c| p.join(c)));
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
}

/// Sends the backup request and reads the reply (the copy may take minutes on a large store).
fn ask(
    stream: std::os::unix::net::UnixStream,
    name: &str,
) -> Result<(BackupCounts, u64), BackupError> {
    let mut line = serde_json::to_vec(&Request::Backup { name: name.into() }).unwrap_or_default();
    line.push(b'\n');
    let io = |e: std::io::Error| BackupError::Collector(format!("control socket: {e}"));
    (&stream).write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Copied {
            trees,
            entries,
            held_ms,
        }) => Ok((BackupCounts { trees, entries }, held_ms)),
        Ok(Reply::Error(e)) => Err(BackupError::Collector(e)),
        Err(e) => Err(BackupError::Collector(format!(
            "unreadable reply {reply:?}: {e}"
        ))),
    }
}

/// Renames `from` to `to`, or copies and removes it when they are on different filesystems.
fn move_dir(from: &Path, to: &Path) -> Result<(), BackupError> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_tree(from, to)?;
    std::fs::remove_dir_all(from).map_err(|e| path_err(from, e))
}

/// Copies a file, or a directory recursively (symbolic links are skipped).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    let kind = std::fs::symlink_metadata(from)
        .map_err(|e| path_err(from, e))?
        .file_type();
    if kind.is_dir() {
        private_dir(to).map_err(|e| path_err(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| path_err(from, e))? {
            let entry = entry.map_err(|e| path_err(from, e))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if kind.is_file() {
        std::fs::copy(from, to).map_err(|e| path_err(from, e))?;
    }
    Ok(())
}

/// `commscan-collector restore BACKUP --data-dir D`: the backup's files into `data_dir`, which
/// must hold no deployment (stop the collector and move the old directory aside first).
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let manifest_path = backup.join(MANIFEST);
    let manifest: Manifest = std::fs::read(&manifest_path)
        .map_err(|e| {
            path_err(
                &manifest_path,
                format!("{e} (not a backup made by `commscan-collector backup`?)"),
            )
        })
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| path_err(&manifest_path, e)))?;
    for needed in ["collector.json", "store", "pki"] {
        if !backup.join(needed).exists() {
            return Err(path_err(&backup.join(needed), "missing from the backup"));
        }
    }
    if data_dir.join("collector.json").exists() || data_dir.join("store").exists() {
        return Err(path_err(
            data_dir,
            "holds a deployment: stop its collector and move the directory aside first",
        ));
    }
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map_err(|e| path_err(data_dir, e))?
            .next()
            .is_some()
    {
        return Err(path_err(
            data_dir,
            "is not empty: restore into a new or empty directory",
        ));
    }
    // Into a sibling first, then one rename: a restore that fails (a full disk) leaves no
    // half-restored data directory behind.
    let name = data_dir
        .file_name()
        .ok_or_else(|| path_err(data_dir, "not a directory name"))?;
    let staging = data_dir.with_file_name(format!(
        "{}.restoring-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = restore_into(backup, &staging).and_then(|()| {
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).map_err(|e| path_err(data_dir, e))?;
        }
        std::fs::rename(&staging, data_dir).map_err(|e| path_err(data_dir, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| manifest)
}

fn restore_into(backup: &Path, to: &Path) -> Result<(), BackupError> {
    private_dir(to).map_err(|e| path_err(to, e))?;
    for entry in std::fs::read_dir(backup).map_err(|e| path_err(backup, e))? {
        let entry = entry.map_err(|e| path_err(backup, e))?;
        if entry.file_name() == MANIFEST {
            continue;
        }
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    private_files(to).map_err(|e| path_err(to, e))?;
    // Prove the copy opens before anyone starts a collector on it.
    SledStore::open(&to.join("store"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_plain() {
        assert!(valid_name("backup-1700000000-42"));
        for bad in ["", "../x", "a/b", "UPPER", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
