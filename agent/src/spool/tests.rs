//! Spool behaviour, crash-consistency and corruption, named as what a user would notice.

use super::torture::{MemorySpool, step};
use super::*;
use crate::device_state::State;
use commscan_core::scan::{Evidence, Finding};
use proptest::prelude::*;

fn finding(product: &str, version: &str) -> Finding {
    Finding {
        product: product.into(),
        installed: true,
        running: false,
        version: Some(version.into()),
        evidence: vec![Evidence {
            source: "dpkg".into(),
            detail: format!("package {product} {version}"),
            signature: "dpkg".into(),
        }],
    }
}

fn obs(products: &[(&str, &str)], report: bool) -> Observation {
    Observation {
        state: State::from_parts(
            products.iter().map(|(p, v)| finding(p, v)).collect(),
            vec![],
        ),
        stats: ScanStats::default(),
        scanned_at: 1_700_000_000,
        report,
    }
}

fn open(dir: &std::path::Path) -> LogSpool {
    LogSpool::open(&dir.join("spool.log"), DEFAULT_CAP_BYTES).unwrap()
}

#[test]
fn the_first_record_is_a_snapshot_and_later_changes_are_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert!(s.next_record().unwrap().is_none(), "nothing observed yet");
    s.observe(obs(&[("zoom", "6")], true)).unwrap();
    let r = s.next_record().unwrap().unwrap();
    assert_eq!((r.sequence, r.body.kind()), (1, "snapshot"));
    assert_eq!(
        s.next_record().unwrap().unwrap(),
        r,
        "unacked record is resent as is"
    );
    s.acknowledge(1).unwrap();
    assert!(s.next_record().unwrap().is_none());
    s.observe(obs(&[("zoom", "6"), ("skype", "8")], false))
        .unwrap();
    let r = s.next_record().unwrap().unwrap();
    assert_eq!(r.sequence, 2);
    assert_eq!(
        r.body,
        ReportBody::Delta {
            upserted: vec![finding("skype", "8")],
            removed: vec![],
            unclassified: None
        }
    );
    assert_eq!(
        r.state_digest,
        commscan_core::digest::hex(&s.view().current.digest())
    );
}

#[test]
fn changes_of_one_product_coalesce_while_offline() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.observe(obs(&[], true)).unwrap();
    let first = s.next_record().unwrap().unwrap();
    s.acknowledge(first.sequence).unwrap();
    for v in 0..500 {
        s.observe(obs(&[("zoom", &v.to_string())], false)).unwrap();
    }
    let view = s.view();
    assert_eq!(view.pending.len(), 1, "one pending change per product");
    assert!(view.bytes < 1024, "{} bytes", view.bytes);
    assert_eq!(view.meta.observed_changes, 500);
}

#[test]
fn an_acknowledged_record_is_forgotten_and_its_digest_sent_in_the_next_hello() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.observe(obs(&[("zoom", "6")], true)).unwrap();
    let r = s.next_record().unwrap().unwrap();
    assert_eq!(hello_fields(&s.view()), (0, None));
    s.acknowledge(r.sequence).unwrap();
    let (seq, digest) = hello_fields(&s.view());
    assert_eq!(seq, 1);
    assert_eq!(commscan_core::digest::hex(&digest.unwrap()), r.state_digest);
    assert!(s.view().outbox.is_empty());
}

#[test]
fn reopening_gives_back_exactly_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s = open(dir.path());
        s.observe(obs(&[("zoom", "6")], true)).unwrap();
        s.next_record().unwrap();
        s.observe(obs(&[("zoom", "7"), ("teams", "1")], false))
            .unwrap();
        s.view()
    };
    let s = open(dir.path());
    assert_eq!(s.view(), before);
    assert_eq!(s.view().outbox.len(), 1);
    assert_eq!(s.view().pending.len(), 2);
}

#[test]
fn reaching_the_cap_falls_back_to_a_single_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogSpool::open(&dir.path().join("spool.log"), 2048).unwrap();
    s.observe(obs(&[], true)).unwrap();
    let r = s.next_record().unwrap().unwrap();
    s.acknowledge(r.sequence).unwrap();
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("p{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let o = s.observe(obs(&many, false)).unwrap();
    assert!(o.fell_back);
    let view = s.view();
    assert!(view.bytes <= view.cap, "{} > {}", view.bytes, view.cap);
    assert_eq!(view.meta.fallbacks, 1);
    assert!(
        view.meta
            .last_fallback
            .as_deref()
            .unwrap()
            .contains("cap of 2048 bytes")
    );
    let r = s.next_record().unwrap().unwrap();
    match r.body {
        ReportBody::Snapshot { findings, .. } => assert_eq!(findings.len(), 40),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[test]
fn a_collector_that_wants_a_snapshot_gets_one_instead_of_the_pending_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.observe(obs(&[("zoom", "6")], true)).unwrap();
    let r = s.next_record().unwrap().unwrap();
    s.acknowledge(r.sequence).unwrap();
    s.observe(obs(&[("zoom", "7")], false)).unwrap();
    s.next_record().unwrap();
    // A restored collector backup: stored sequence 40, a state we do not know.
    s.welcome(40, true).unwrap();
    let r = s.next_record().unwrap().unwrap();
    assert_eq!((r.sequence, r.body.kind()), (41, "snapshot"));
}

#[test]
fn an_impossible_stored_sequence_never_wraps_the_agents_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.observe(obs(&[("zoom", "6")], true)).unwrap();
    let r = s.next_record().unwrap().unwrap();
    s.acknowledge(r.sequence).unwrap();
    s.observe(obs(&[("zoom", "7")], false)).unwrap();
    // A collector that stored u64::MAX (before sequences were bounded) welcomes us.
    s.welcome(u64::MAX, false).unwrap();
    let r = s.next_record().unwrap().unwrap();
    assert_eq!(
        (r.sequence, r.body.kind()),
        (2, "snapshot"),
        "our own count goes on, with the whole state"
    );
    // Nor does an ack of it count past the end or drop the record as acknowledged.
    s.acknowledge(u64::MAX).unwrap();
    assert_eq!(s.next_record().unwrap().unwrap(), r, "still unacknowledged");
    assert_eq!(s.view().meta.next_sequence, 3);
    s.welcome(commscan_core::report::SEQUENCE_CEILING, true)
        .unwrap();
    assert_eq!(s.view().meta.next_sequence, 3);
    // A sane stored sequence just below the ceiling is adopted without overflow.
    let high = commscan_core::report::SEQUENCE_CEILING - 1;
    s.welcome(high, true).unwrap();
    assert_eq!(s.view().meta.next_sequence, high + 1);
}

#[test]
fn a_record_the_collector_cannot_have_applied_is_sent_again_under_a_new_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.observe(obs(&[("zoom", "6")], true)).unwrap();
    let r = s.next_record().unwrap().unwrap();
    s.acknowledge(r.sequence).unwrap();
    s.observe(obs(&[("zoom", "7")], false)).unwrap();
    let pending = s.next_record().unwrap().unwrap();
    assert_eq!(pending.sequence, 2);
    // The collector holds our acknowledged state but says it stored sequence 2.
    s.welcome(2, false).unwrap();
    let again = s.next_record().unwrap().unwrap();
    assert_eq!(again.sequence, 3);
    assert_eq!(again.body, pending.body);
}

#[test]
fn a_corrupt_spool_is_quarantined_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(quarantine::SPOOL_FILE);
    {
        let s = open(dir.path());
        s.observe(obs(&[("zoom", "6")], true)).unwrap();
        s.observe(obs(&[("zoom", "7")], true)).unwrap();
    }
    // A bit flipped inside the first batch (a bad sector), with more batches after it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = LogSpool::open(&path, DEFAULT_CAP_BYTES).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let s = quarantine::open_or_quarantine(dir.path(), DEFAULT_CAP_BYTES, 1_700_000_000).unwrap();
    let note = s.view().meta.quarantine.expect("the fresh spool remembers");
    assert!(
        note.path.contains("spool.corrupt-20231114T221320Z"),
        "{}",
        note.path
    );
    assert!(note.reason.contains("checksum"), "{}", note.reason);
    assert_eq!(quarantine::quarantined(dir.path()).len(), 1);
    assert!(s.view().meta.snapshot_needed);
    // Opening again does not quarantine again.
    drop(s);
    let s = quarantine::open_or_quarantine(dir.path(), DEFAULT_CAP_BYTES, 1_700_000_100).unwrap();
    assert!(s.view().meta.quarantine.is_some());
    assert_eq!(quarantine::quarantined(dir.path()).len(), 1);
}

/// Writes `entries` as an older agent's sled spool in `data`.
fn write_sled_spool(data: &std::path::Path, entries: &[(Vec<u8>, Vec<u8>)]) {
    let db = sled::open(data.join(quarantine::SLED_SPOOL_DIR)).unwrap();
    let tree = db.open_tree("spool").unwrap();
    for (k, v) in entries {
        tree.insert(k, v.clone()).unwrap();
    }
    db.flush().unwrap();
}

#[test]
fn an_older_agents_sled_spool_is_taken_over_with_nothing_unacknowledged_lost() {
    // What an older agent had: an acknowledged state, a record in flight, a pending change.
    let before = tempfile::tempdir().unwrap();
    let view = {
        let s = open(before.path());
        s.observe(obs(&[("zoom", "6")], true)).unwrap();
        let r = s.next_record().unwrap().unwrap();
        s.acknowledge(r.sequence).unwrap();
        s.observe(obs(&[("zoom", "7")], false)).unwrap();
        s.next_record().unwrap().unwrap();
        s.observe(obs(&[("zoom", "7"), ("skype", "8")], false))
            .unwrap();
        s.view()
    };
    let bytes = std::fs::read(before.path().join(quarantine::SPOOL_FILE)).unwrap();
    let (entries, _) = super::log_spool::replay(&bytes).unwrap();
    let entries: Vec<_> = entries.into_iter().collect();

    let data = tempfile::tempdir().unwrap();
    write_sled_spool(data.path(), &entries);
    let s = quarantine::open_or_quarantine(data.path(), DEFAULT_CAP_BYTES, 0).unwrap();
    assert_eq!(s.view(), view);
    assert_eq!(
        s.view().outbox.len(),
        1,
        "the record in flight is still there"
    );
    assert!(!data.path().join(quarantine::SLED_SPOOL_DIR).exists());
    assert!(quarantine::quarantined(data.path()).is_empty());
    drop(s);
    // Taken over once: a restart reads the new file.
    let s = quarantine::open_or_quarantine(data.path(), DEFAULT_CAP_BYTES, 0).unwrap();
    assert_eq!(s.view(), view);
}

#[test]
fn an_older_agents_unreadable_sled_spool_is_set_aside() {
    let data = tempfile::tempdir().unwrap();
    write_sled_spool(
        data.path(),
        &[(b"o/garbage".to_vec(), b"{not json".to_vec())],
    );
    let s = quarantine::open_or_quarantine(data.path(), DEFAULT_CAP_BYTES, 1_700_000_000).unwrap();
    let note = s.view().meta.quarantine.expect("noted");
    assert!(note.reason.contains("outbox key"), "{}", note.reason);
    assert_eq!(quarantine::quarantined(data.path()).len(), 1);
    assert!(!data.path().join(quarantine::SLED_SPOOL_DIR).exists());
}

#[test]
fn a_spool_held_by_another_running_agent_is_not_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let _running = open(dir.path());
    // The spool's lock is held while it is open; a second open in this process is refused
    // the same way as another agent's.
    let err = quarantine::open_or_quarantine(dir.path(), DEFAULT_CAP_BYTES, 0).unwrap_err();
    assert!(!err.is_corruption(), "{err}");
    assert!(quarantine::quarantined(dir.path()).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The spool file behaves like the in-memory model for any sequence of operations, and
    /// reopening it gives back the model's content.
    #[test]
    fn the_spool_file_matches_the_model_and_survives_reopening(seed in any::<u64>(), ops in 1u64..120) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.log");
        let model = MemorySpool::new(torture::TORTURE_CAP);
        {
            let real = LogSpool::open(&path, torture::TORTURE_CAP).unwrap();
            for i in 0..ops {
                let a = step(&real, seed, i).unwrap();
                let b = step(&model, seed, i).unwrap();
                prop_assert_eq!(a, b);
                prop_assert!(real.view().bytes <= torture::TORTURE_CAP);
            }
            prop_assert_eq!(real.view(), model.view());
        }
        let reopened = LogSpool::open(&path, torture::TORTURE_CAP).unwrap();
        prop_assert_eq!(reopened.view(), model.view());
    }
}

#[test]
fn a_disk_that_filled_once_is_written_again_once_space_comes_back() {
    let Some(fs) = commscan_runtime::testing::Tmpfs::mount("8m") else {
        return;
    };
    let dir = fs.path().join("spool");
    let s = open(&dir);
    s.observe(obs(&[("zoom", "1")], true)).unwrap();
    let filler = fs.path().join("filler");
    commscan_runtime::testing::fill(&filler);
    // Observe ever larger states until the disk refuses one.
    let mut last_ok = vec![("zoom".to_string(), "1".to_string())];
    let mut failure = None;
    for i in 0..2_000 {
        let mut next = last_ok.clone();
        next.push((format!("product-{i}"), "v".repeat(400)));
        let refs: Vec<(&str, &str)> = next.iter().map(|(p, v)| (p.as_str(), v.as_str())).collect();
        match s.observe(obs(&refs, true)) {
            Ok(_) => last_ok = next,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("the full disk never refused a write");
    assert!(matches!(failure, SpoolError::Backend(_)), "{failure}");
    // The refused observation changed nothing, in memory or on disk (its partial batch was
    // cut off, so the spool reads back as it was).
    assert_eq!(s.view().current.findings.len(), last_ok.len());
    let on_disk = std::fs::read(dir.join(quarantine::SPOOL_FILE)).unwrap();
    let (_, intact) = super::log_spool::replay(&on_disk).unwrap();
    assert_eq!(intact, on_disk.len(), "no torn batch left behind");
    // Space comes back: the next operation reads the file again and succeeds.
    std::fs::remove_file(&filler).unwrap();
    s.observe(obs(&[("zoom", "3")], true))
        .expect("written once space came back");
    assert_eq!(
        s.view().current.findings["zoom"].version.as_deref(),
        Some("3")
    );
    drop(s);
    let reopened = open(&dir);
    assert_eq!(
        reopened.view().current.findings["zoom"].version.as_deref(),
        Some("3"),
        "what was written after recovery is on disk"
    );
}
