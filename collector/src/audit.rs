//! The audit log: every privileged action and every denial, appended to the store.
//!
//! - **Actions** ([`Collector::audited`]): the entry is appended *before* the action's write and
//!   flushed with it, before the action is answered; if the entry cannot be written or flushed
//!   the action is answered with an error. A crash before the flush loses the unanswered action
//!   with its entry; once answered, both are on disk.
//! - **Other allowed entries** (enrolments, renewals, classifications): appended and flushed;
//!   a store error is logged, never returned.
//! - **Refusals** are aggregated ([`Refusals`]), so a flood of them costs a bounded number of
//!   entries: per window of [`REFUSAL_WINDOW`], one group per (action, source, reason), where
//!   the source is the caller's network prefix for anonymous callers (IPv4 /24, IPv6 /64) and
//!   the actor otherwise. The first refusal of a group is written at once, as it happened;
//!   when the window ends, a group refused more than once gets one more entry with its count
//!   ("1,240 refusals from anonymous@127.0.0.0/24 in the minute from …"). At most
//!   [`MAX_GROUPS_PER_WINDOW`] groups are kept per window; refusals beyond them are counted
//!   together in one entry. So a window writes at most `2 × 1,000 + 2` refusal entries
//!   whatever the flood.
//! - **Retention** ([`Collector::sweep_audit`], hourly): entries older than
//!   [`AuditRetention::max_age`] (400 days) and, keeping the newest, entries beyond
//!   [`AuditRetention::max_bytes`] (256 MiB of encoded entries) are removed; the sweep writes
//!   an entry saying how many.
//!
//! [`append`] is the one writer; [`Collector::audit`] and the ministry side
//! ([`crate::federation::ministry::Ministry`]) stamp entries with their clock and call it.

use crate::auth::Principal;
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{AuditRecord, AuditStore};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Refusals are counted per window of this length.
pub const REFUSAL_WINDOW: time::Duration = time::Duration::minutes(1);
/// Distinct (action, source, reason) groups kept per window.
pub const MAX_GROUPS_PER_WINDOW: usize = 1000;
/// Reasons are grouped on (and kept to) this many characters.
const MAX_REASON_CHARS: usize = 300;

/// How long, and how much, of the audit log is kept.
#[derive(Debug, Clone, Copy)]
pub struct AuditRetention {
    /// Entries older than this are removed.
    pub max_age: time::Duration,
    /// Beyond this many bytes of encoded entries, the oldest are removed.
    pub max_bytes: u64,
}

impl Default for AuditRetention {
    fn default() -> Self {
        AuditRetention {
            max_age: time::Duration::days(400),
            max_bytes: 256 << 20,
        }
    }
}

/// Appends an entry at `at` to `log`; a failure is logged, not returned.
pub(crate) fn append(
    log: &dyn AuditStore,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    organisation: Option<&str>,
    allowed: bool,
    detail: String,
) {
    let entry = AuditRecord {
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        organisation: organisation.map(str::to_owned),
        allowed,
        detail,
    };
    if let Err(e) = log.append_audit(&entry) {
        tracing::error!(error = %e, actor, action, "audit entry could not be written");
    }
}

/// `1240` as `1,240`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The source a refusal is grouped under: an anonymous caller's network prefix (IPv4 /24,
/// IPv6 /64), otherwise the actor.
pub(crate) fn source_of(actor: &str) -> String {
    let Some(ip) = actor
        .strip_prefix("anonymous@")
        .and_then(|a| a.parse::<IpAddr>().ok())
    else {
        return actor.to_owned();
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("anonymous@{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("anonymous@{net}/64")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    action: String,
    source: String,
    reason: String,
}

#[derive(Debug)]
struct Window {
    start: OffsetDateTime,
    groups: HashMap<GroupKey, (u64, Option<String>)>,
    /// Refusals beyond [`MAX_GROUPS_PER_WINDOW`] groups.
    overflow: u64,
}

/// Refusals of the current window; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Refusals(Mutex<Option<Window>>);

impl Refusals {
    /// Records a refusal at `at`: written at once if it opens a group, counted otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        log: &dyn AuditStore,
        at: OffsetDateTime,
        actor: &str,
        action: &str,
        organisation: Option<&str>,
        detail: String,
    ) {
        let key = GroupKey {
            action: action.to_owned(),
            source: source_of(actor),
            reason: detail.chars().take(MAX_REASON_CHARS).collect(),
        };
        let mut out = Vec::new();
        {
            let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Self::close(&mut current, at, &mut out);
            let window = current.get_or_insert_with(|| Window {
                start: at,
                groups: HashMap::new(),
                overflow: 0,
            });
            let full = window.groups.len() >= MAX_GROUPS_PER_WINDOW;
            match window.groups.get_mut(&key) {
                Some((count, _)) => *count += 1,
                None if !full => {
                    window
                        .groups
                        .insert(key.clone(), (1, organisation.map(str::to_owned)));
                    out.push(AuditRecord {
                        at,
                        actor: actor.to_owned(),
                        action: action.to_owned(),
                        organisation: organisation.map(str::to_owned),
                        allowed: false,
                        detail: key.reason,
                    });
                }
                None => window.overflow += 1,
            }
        }
        for e in &out {
            write(log, e);
        }
    }

    /// Writes the counts of a window that has ended by `now`.
    pub(crate) fn close_due(&self, log: &dyn AuditStore, now: OffsetDateTime) {
        let mut out = Vec::new();
        Self::close(
            &mut self.0.lock().unwrap_or_else(|p| p.into_inner()),
            now,
            &mut out,
        );
        for e in &out {
            write(log, e);
        }
    }

    fn close(current: &mut Option<Window>, now: OffsetDateTime, out: &mut Vec<AuditRecord>) {
        if current
            .as_ref()
            .is_none_or(|w| now < w.start + REFUSAL_WINDOW)
        {
            return;
        }
        let Some(window) = current.take() else {
            return;
        };
        let since = window.start.replace_nanosecond(0).unwrap_or(window.start);
        let mut groups: Vec<_> = window
            .groups
            .into_iter()
            .filter(|(_, (count, _))| *count > 1)
            .collect();
        groups.sort_by(|a, b| (&a.0.action, &a.0.source).cmp(&(&b.0.action, &b.0.source)));
        for (key, (count, organisation)) in groups {
            out.push(AuditRecord {
                at: now,
                actor: key.source.clone(),
                action: key.action,
                organisation,
                allowed: false,
                detail: format!(
                    "{} refusals from {} in the minute from {since} (the first written at once): {}",
                    thousands(count),
                    key.source,
                    key.reason
                ),
            });
        }
        if window.overflow > 0 {
            out.push(AuditRecord {
                at: now,
                actor: "anonymous".into(),
                action: "audit.refusals".into(),
                organisation: None,
                allowed: false,
                detail: format!(
                    "{} further refusals in the minute from {since}, beyond {} distinct (action, source, reason) groups; counted only",
                    thousands(window.overflow),
                    thousands(MAX_GROUPS_PER_WINDOW as u64)
                ),
            });
        }
    }
}

fn write(log: &dyn AuditStore, e: &AuditRecord) {
    if let Err(err) = log.append_audit(e) {
        tracing::error!(error = %err, actor = %e.actor, action = %e.action, "audit entry could not be written");
    }
}

impl Collector {
    /// Audits an outcome: a refusal is aggregated ([`Refusals`]); an allowed entry is
    /// appended and flushed. A store error is logged, not returned.
    pub(crate) fn audit(
        &self,
        actor: &str,
        action: &str,
        organisation: Option<&str>,
        allowed: bool,
        detail: impl Into<String>,
    ) {
        if !allowed {
            self.metrics().refused(action);
            self.refusals().record(
                &**self.store(),
                self.now(),
                actor,
                action,
                organisation,
                detail.into(),
            );
            return;
        }
        append(
            &**self.store(),
            self.now(),
            actor,
            action,
            organisation,
            true,
            detail.into(),
        );
        if let Err(e) = self.store().flush() {
            tracing::error!(error = %e, actor, action, "audit entry could not be flushed");
        }
    }

    /// Performs an authorised admin action: its entry is appended before `write` runs and
    /// flushed with it before this returns, so an answered action always has its entry on disk.
    /// If the entry cannot be written, the action is not performed; if `write` fails, a second
    /// entry says so.
    pub(crate) fn audited<T>(
        &self,
        who: &Principal,
        action: &str,
        organisation: Option<&str>,
        detail: String,
        write: impl FnOnce() -> Result<T, CollectorError>,
    ) -> Result<T, CollectorError> {
        self.audited_as(who.actor(), action, organisation, detail, write)
    }

    /// [`Collector::audited`] for an action taken by `actor`, a person's or the collector's
    /// own (`federation <ministry>` adopting the ministry's rules).
    pub(crate) fn audited_as<T>(
        &self,
        actor: String,
        action: &str,
        organisation: Option<&str>,
        detail: String,
        write: impl FnOnce() -> Result<T, CollectorError>,
    ) -> Result<T, CollectorError> {
        let entry = AuditRecord {
            at: self.now(),
            actor,
            action: action.to_owned(),
            organisation: organisation.map(str::to_owned),
            allowed: true,
            detail,
        };
        self.store().append_audit(&entry)?;
        match write() {
            Ok(v) => {
                self.store().flush()?;
                Ok(v)
            }
            Err(e) => {
                append(
                    &**self.store(),
                    self.now(),
                    &entry.actor,
                    action,
                    organisation,
                    false,
                    format!("failed after it was allowed: {e}"),
                );
                let _ = self.store().flush();
                Err(e)
            }
        }
    }

    /// Writes the counts of the refusal window if it has ended (the service calls this every
    /// few seconds, so a count is written within seconds of its window's end).
    pub fn close_audit_window(&self) {
        self.refusals().close_due(&**self.store(), self.now());
        self.ministry().close_audit_window();
    }

    /// Retention: removes entries older than `retention.max_age` and beyond
    /// `retention.max_bytes`, and records how many it removed. Returns that number.
    pub fn sweep_audit(&self, retention: &AuditRetention) -> Result<u64, CollectorError> {
        let now = self.now();
        let removed = self
            .store()
            .prune_audit(now - retention.max_age, retention.max_bytes)?;
        if removed > 0 {
            append(
                &**self.store(),
                now,
                "collector",
                "audit.retention",
                None,
                true,
                format!(
                    "{} entries removed: older than {} days or beyond {} MiB",
                    thousands(removed),
                    retention.max_age.whole_days(),
                    retention.max_bytes >> 20
                ),
            );
        }
        self.store().flush()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::RulesConfig;
    use crate::layout::{InitOptions, Layout};
    use std::sync::Arc;

    struct Fixture {
        dir: tempfile::TempDir,
        collector: Arc<Collector>,
        now: Arc<Mutex<OffsetDateTime>>,
        admin_token: String,
    }

    fn fixture() -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("c"));
        let secrets = layout
            .init(&InitOptions {
                trust_domain: "t".into(),
                server_names: vec!["localhost".into()],
                organisation: "acme".into(),
                import_ca: None,
                import_server: None,
            })
            .unwrap();
        let (mut collector, _) = layout.open(&RulesConfig::default()).unwrap();
        let now = Arc::new(Mutex::new(time::macros::datetime!(2026-11-20 09:00 UTC)));
        let clock = now.clone();
        Arc::get_mut(&mut collector)
            .unwrap()
            .set_clock(Arc::new(move || *clock.lock().unwrap()));
        Fixture {
            dir,
            collector,
            now,
            admin_token: secrets.admin_token,
        }
    }

    fn entries(c: &Collector) -> Vec<AuditRecord> {
        c.store()
            .audit(0, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    #[test]
    fn a_flood_of_refusals_writes_a_bounded_number_of_entries_with_the_right_count() {
        let f = fixture();
        let c = &f.collector;
        let before = entries(c).len();
        for i in 0..5_000u32 {
            let actor = format!("anonymous@127.0.0.{}", i % 250);
            c.audit(&actor, "enroll", None, false, "unknown enrolment token");
            if i % 1000 == 0 {
                *f.now.lock().unwrap() += time::Duration::seconds(1);
            }
        }
        // The first refusal is written at once; the rest only counted.
        let during = entries(c)[before..].to_vec();
        assert_eq!(during.len(), 1, "{during:?}");
        assert_eq!(during[0].actor, "anonymous@127.0.0.0");
        assert_eq!(during[0].detail, "unknown enrolment token");
        // Nothing more until the window ends; then one entry with the count.
        c.close_audit_window();
        assert_eq!(entries(c).len(), before + 1);
        *f.now.lock().unwrap() += time::Duration::seconds(60);
        c.close_audit_window();
        let after = entries(c)[before..].to_vec();
        assert_eq!(after.len(), 2, "{after:?}");
        assert_eq!(after[1].actor, "anonymous@127.0.0.0/24");
        assert!(
            after[1]
                .detail
                .starts_with("5,000 refusals from anonymous@127.0.0.0/24 in the minute from"),
            "{}",
            after[1].detail
        );
        // The next window starts afresh.
        c.audit(
            "anonymous@127.0.0.1",
            "enroll",
            None,
            false,
            "unknown enrolment token",
        );
        assert_eq!(entries(c).len(), before + 3);
    }

    #[test]
    fn refusals_from_many_networks_are_capped_per_window() {
        let f = fixture();
        let c = &f.collector;
        let before = entries(c).len();
        for i in 0..3_000u32 {
            let actor = format!("anonymous@10.{}.{}.1", i / 256, i % 256);
            c.audit(
                &actor,
                "tls.handshake",
                None,
                false,
                "no client certificate",
            );
            c.audit(
                &actor,
                "tls.handshake",
                None,
                false,
                "no client certificate",
            );
        }
        *f.now.lock().unwrap() += time::Duration::seconds(61);
        c.close_audit_window();
        let written = entries(c)[before..].to_vec();
        // 1,000 first entries, 1,000 counts, one overflow count.
        assert_eq!(written.len(), 2 * MAX_GROUPS_PER_WINDOW + 1);
        let overflow = written.last().unwrap();
        assert!(
            overflow.detail.starts_with("4,000 further refusals"),
            "{}",
            overflow.detail
        );
    }

    #[test]
    fn refused_enrolments_through_the_domain_are_aggregated() {
        let f = fixture();
        let c = &f.collector;
        let before = entries(c).len();
        for i in 0..500u32 {
            let _ = c.enroll(crate::enrollment::EnrollInput {
                token: format!("cse_wrong_{i}"),
                csr_pem: String::new(),
                hostname: "h".into(),
                platform: None,
                os_version: String::new(),
                agent_version: String::new(),
                expected_organisation: String::new(),
                peer: Some(std::net::IpAddr::from([127, 0, 0, (i % 200) as u8 + 1])),
            });
        }
        *f.now.lock().unwrap() += time::Duration::seconds(61);
        c.close_audit_window();
        let written = entries(c)[before..].to_vec();
        // A few groups (one per refusal reason), each a first entry and a count.
        assert!(written.len() <= 8, "{written:#?}");
        let counted: u64 = written
            .iter()
            .filter(|e| e.actor.ends_with("/24"))
            .map(|e| {
                e.detail
                    .split(' ')
                    .next()
                    .unwrap()
                    .replace(',', "")
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        let singles = written
            .iter()
            .filter(|e| !e.actor.ends_with("/24"))
            .filter(|first| {
                !written.iter().any(|e| {
                    e.actor.ends_with("/24")
                        && e.action == first.action
                        && e.detail.ends_with(&first.detail)
                })
            })
            .count() as u64;
        assert_eq!(counted + singles, 500, "{written:#?}");
    }

    #[test]
    fn an_admin_action_is_answered_only_with_its_entry_on_disk() {
        let f = fixture();
        let c = &f.collector;
        let who = c
            .authenticate(Some(&f.admin_token), Default::default())
            .unwrap();
        let (info, _) = c
            .create_enrollment_token(&who, "acme", Some(1), None, false)
            .unwrap();
        // A SIGKILL now leaves exactly the files as written: copy them while the store is open.
        let live = f.dir.path().join("c/store");
        let crashed = f.dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        for e in std::fs::read_dir(&live).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), crashed.join(e.file_name())).unwrap();
            }
        }
        let store = crate::store::sled_store::SledStore::open(&crashed).unwrap();
        let entries: Vec<AuditRecord> = store
            .audit(0, 10_000)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let entry = entries
            .iter()
            .find(|e| e.action == "tokens.create" && e.allowed)
            .expect("the action's entry survived the crash");
        assert!(entry.detail.contains(&info.token_id));
        assert_eq!(entry.actor, who.actor());
        assert!(entry.actor.starts_with("admin ["));
    }

    #[test]
    fn retention_removes_old_entries_and_keeps_the_newest_within_the_size() {
        let f = fixture();
        let c = &f.collector;
        for _ in 0..10 {
            c.audit("x", "old", None, true, "old");
        }
        *f.now.lock().unwrap() += time::Duration::days(401);
        for _ in 0..10 {
            c.audit("x", "new", None, true, "new");
        }
        let removed = c.sweep_audit(&AuditRetention::default()).unwrap();
        assert!(removed >= 10);
        let left = entries(c);
        assert!(left.iter().all(|e| e.action != "old"));
        assert_eq!(left.iter().filter(|e| e.action == "new").count(), 10);
        assert!(left.iter().any(|e| e.action == "audit.retention"));
        // By size: only the newest fit.
        let removed = c
            .sweep_audit(&AuditRetention {
                max_age: time::Duration::days(400),
                max_bytes: 600,
            })
            .unwrap();
        assert!(removed > 0);
        let left = entries(c);
        assert!(left.len() < 10, "{left:#?}");
        assert_eq!(left.last().unwrap().action, "audit.retention");
    }

    #[test]
    fn people_are_told_apart_and_revocation_and_expiry_bite_on_the_next_call() {
        use crate::store::records::{Grant, Role};
        let f = fixture();
        let c = &f.collector;
        let admin = c
            .authenticate(Some(&f.admin_token), Default::default())
            .unwrap();
        let grant = || {
            vec![Grant {
                role: Role::Auditor,
                organisation: None,
            }]
        };
        let (id1, t1) = c
            .create_access_token(&admin, "alice", grant(), None)
            .unwrap();
        let (id2, t2) = c
            .create_access_token(&admin, "alice", grant(), None)
            .unwrap();
        assert_ne!(id1, id2);
        let alice1 = c.authenticate(Some(&t1), Default::default()).unwrap();
        assert_eq!(alice1.actor(), format!("alice [{id1}]"));
        // An auditor may not manage people: the denial names the person by id.
        assert!(c.list_access_tokens(&alice1).is_err());
        let listed = c.list_access_tokens(&admin).unwrap();
        assert_eq!(
            listed.iter().filter(|p| p.record.name == "alice").count(),
            2
        );
        c.revoke_access_token(&admin, &id1).unwrap();
        assert!(c.authenticate(Some(&t1), Default::default()).is_err());
        assert!(c.authenticate(Some(&t2), Default::default()).is_ok());
        c.expire_access_token(&admin, &id2, std::time::Duration::from_secs(60))
            .unwrap();
        assert!(c.authenticate(Some(&t2), Default::default()).is_ok());
        *f.now.lock().unwrap() += time::Duration::seconds(60);
        assert!(c.authenticate(Some(&t2), Default::default()).is_err());
        let log = entries(c);
        assert!(
            log.iter().any(
                |e| e.action == "people.revoke" && e.detail.contains(&format!("alice [{id1}]"))
            )
        );
        assert!(
            log.iter()
                .any(|e| e.actor == format!("alice [{id1}]") && !e.allowed)
        );
        assert!(
            log.iter().any(
                |e| e.action == "people.expire" && e.detail.contains(&format!("alice [{id2}]"))
            )
        );
    }

    #[test]
    fn sources_are_network_prefixes() {
        assert_eq!(source_of("anonymous@127.0.0.9"), "anonymous@127.0.0.0/24");
        assert_eq!(
            source_of("anonymous@2001:db8:1:2:3:4:5:6"),
            "anonymous@2001:db8:1:2::/64"
        );
        assert_eq!(source_of("device:abc"), "device:abc");
        assert_eq!(thousands(1240), "1,240");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
