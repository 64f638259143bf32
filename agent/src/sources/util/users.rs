//! Users of the scanned system, enumerated from the root's own files, never from the machine
//! running the scan.
//!
//! - Linux: `/etc/passwd` under the root (home directories of accounts with UID ≥ 1000 or root,
//!   that exist), plus any directory under `/home` not named there (accounts from LDAP/SSSD
//!   leave no passwd line).
//! - macOS: directories under `/Users` except `Shared` and dot-directories.
//! - Windows: directories under `Users` (also `Documents and Settings` is not followed) except
//!   `Public`, `Default`, `Default User`, `All Users`.
//!
//! Every returned path is absolute *within the scanned system* (e.g. `/home/alice`); join it to
//! the root with [`ScanContext::path`]. Sources take the list from [`ScanContext::homes`], which
//! enumerates it once per scan, and [`in_homes`] joins a folder to every home.

use super::text::for_each_line;
use crate::sources::ScanContext;
use commscan_core::platform::Platform;
use std::collections::BTreeSet;
use std::io::BufReader;
use std::path::PathBuf;

/// A user's home directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Home {
    /// Account or folder name.
    pub(crate) user: String,
    /// Home directory within the scanned system, e.g. `/home/alice` or `/Users/Alice`.
    pub(crate) path: String,
}

const WINDOWS_SKIP: [&str; 4] = ["public", "default", "default user", "all users"];

fn subdirs(ctx: &ScanContext, rel: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(ctx.path(rel)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Every user's home directory on the scanned system, sorted by path, without duplicates.
pub(crate) fn homes(ctx: &ScanContext) -> Vec<Home> {
    let mut set = BTreeSet::new();
    match ctx.platform {
        Platform::Linux => {
            if let Ok(f) = std::fs::File::open(ctx.path("/etc/passwd")) {
                let _ = for_each_line(BufReader::new(f), |line, truncated| {
                    if truncated || line.starts_with('#') {
                        return;
                    }
                    let fields: Vec<&str> = line.split(':').collect();
                    if fields.len() < 7 {
                        return;
                    }
                    let uid: u32 = fields[2].parse().unwrap_or(u32::MAX);
                    let home = fields[5];
                    let human = uid == 0 || (1000..60000).contains(&uid);
                    if human && home.starts_with('/') && home != "/" && ctx.path(home).is_dir() {
                        set.insert((home.to_owned(), fields[0].to_owned()));
                    }
                });
            }
            for name in subdirs(ctx, "/home") {
                let path = format!("/home/{name}");
                if !set.iter().any(|(p, _)| p == &path) {
                    set.insert((path, name));
                }
            }
        }
        Platform::Macos => {
            for name in subdirs(ctx, "/Users") {
                if name != "Shared" && name != "Guest" {
                    set.insert((format!("/Users/{name}"), name));
                }
            }
        }
        Platform::Windows => {
            for name in subdirs(ctx, "/Users") {
                if !WINDOWS_SKIP.contains(&name.to_lowercase().as_str()) {
                    set.insert((format!("/Users/{name}"), name));
                }
            }
        }
    }
    set.into_iter()
        .map(|(path, user)| Home { user, path })
        .collect()
}

/// `rel` under every user's home of the scanned system.
pub(crate) fn in_homes(ctx: &ScanContext, rel: &str) -> Vec<PathBuf> {
    ctx.homes()
        .iter()
        .map(|h| ctx.path(&h.path).join(rel))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(root: &std::path::Path, platform: Platform) -> ScanContext {
        ScanContext::new(root, platform, false)
    }

    #[test]
    fn linux_homes_come_from_the_roots_passwd_and_home() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "etc",
            "home/alice",
            "home/ldapuser",
            "srv/bob",
            "var/lib/daemon",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:2:2::/var/lib/daemon:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1001:1001::/srv/bob:/bin/bash\nghost:x:1002:1002::/home/ghost:/bin/bash\n",
        )
        .unwrap();
        let homes = homes(&ctx(r, Platform::Linux));
        let paths: Vec<&str> = homes.iter().map(|h| h.path.as_str()).collect();
        // root has no /root directory in the fixture; ghost's home does not exist; daemon is a system account.
        assert_eq!(paths, vec!["/home/alice", "/home/ldapuser", "/srv/bob"]);
    }

    #[test]
    fn windows_skips_shared_profiles() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "Users/Public",
            "Users/Default",
            "Users/ivan",
            "Users/All Users",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let homes = homes(&ctx(dir.path(), Platform::Windows));
        assert_eq!(
            homes,
            vec![Home {
                user: "ivan".into(),
                path: "/Users/ivan".into()
            }]
        );
    }
}
