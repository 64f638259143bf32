//! The delivery oracle of the fault tests: what agents sent and saw acknowledged against what
//! collectors recorded, as sets, whatever happened in between (SIGKILLed collectors, a
//! crash-restarted database, agents failing over between nodes).
//!
//! Two witnesses, neither trusted by the other:
//! - the agent announces every report it sends ([`AgentEvent::Sent`], sequence and the digest
//!   of the state it declares) and every acknowledgement ([`AgentEvent::Acked`]); one report
//!   is in flight at a time, so an ack acknowledges the report last sent. [`AgentRecorder`]
//!   keeps these per agent.
//! - the collector logs `report applied` (device, sequence, stored state digest) after its
//!   store committed and before it acknowledges, and `report already stored` for a resend of
//!   a report it had. [`Recorded::parse`] reads these lines from any number of collector
//!   processes and lives ([`CollectorLog`]), keyed by device and sequence.
//!
//! [`check`] then finds, per device:
//! - *lost*: a report the agent saw acknowledged that no collector recorded (neither applied
//!   nor recognised as already stored);
//! - *unexpected*: a recorded sequence the agent never sent, or recorded with another digest;
//! - *twice*: a sequence with two `report applied` lines, from one process or from two. Each
//!   line follows a commit, so this is the same report committed twice: a flushed write lost
//!   (the next life applied it again) or two nodes applying it (per-device exclusion broken).
//!   A node that committed and died before acknowledging is not "twice": the resend finds the
//!   sequence stored (`report already stored`), or the agent learns at its next welcome that
//!   the collector is past it.
//!
//! [`ChangingDevice`] is the device side of these tests: a Linux fixture tree whose dpkg
//! database holds a subset of [`PACKAGES`], changed at random.

use crate::PACKAGES;
use commscan_agent::delivery::{Agent, AgentEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// A fixture device whose installed packages are a bit mask over [`PACKAGES`].
#[derive(Debug)]
pub struct ChangingDevice {
    /// The tree the agent scans.
    pub root: PathBuf,
    mask: u64,
    rng: u64,
}

impl ChangingDevice {
    /// A device at `root` holding the packages of `mask`, changed by a generator seeded with
    /// `seed` (non-zero).
    pub fn new(root: &Path, mask: u64, seed: u64) -> ChangingDevice {
        let d = ChangingDevice {
            root: root.to_path_buf(),
            mask,
            rng: seed.max(1),
        };
        d.write();
        d
    }

    /// Installs and removes packages: moves to another random subset.
    pub fn change(&mut self) {
        let all = (1u64 << PACKAGES.len()) - 1;
        self.mask = loop {
            let m = self.random() & all;
            if m != self.mask {
                break m;
            }
        };
        self.write();
    }

    /// A pseudo-random number (xorshift64), for the test's own timing choices.
    pub fn random(&mut self) -> u64 {
        let x = &mut self.rng;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// The catalog products installed now, sorted.
    pub fn products(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..PACKAGES.len())
            .filter(|i| self.mask >> i & 1 == 1)
            .map(|i| PACKAGES[i].1.to_owned())
            .collect();
        v.sort();
        v
    }

    fn write(&self) {
        let packages: Vec<&str> = (0..PACKAGES.len())
            .filter(|i| self.mask >> i & 1 == 1)
            .map(|i| PACKAGES[i].0)
            .collect();
        crate::install(&self.root, &packages);
    }
}

/// What one agent sent (sequence → declared state digest) and saw acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Every report sent, by sequence; a resend repeats the same digest.
    pub sent: BTreeMap<u64, String>,
    /// Reports whose acknowledgement the agent received.
    pub acked: BTreeSet<u64>,
    /// The report sent on the open session and not acknowledged yet, if any.
    pub in_flight: Option<u64>,
    /// Policy ids the collector announced, in order.
    pub policy_changes: Vec<String>,
}

/// Records an agent's [`AgentEvent::Sent`], [`AgentEvent::Acked`] and
/// [`AgentEvent::PolicyChanged`] events from now on.
pub struct AgentRecorder {
    record: Arc<Mutex<Sent>>,
    task: JoinHandle<()>,
}

impl AgentRecorder {
    /// Subscribes to `agent`'s events (before it runs, so nothing is missed).
    pub fn start(agent: &Agent) -> AgentRecorder {
        let record: Arc<Mutex<Sent>> = Arc::default();
        let mut events = agent.events();
        let r = record.clone();
        let task = tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                let mut r = r.lock().expect("recorder lock");
                match e {
                    AgentEvent::Sent {
                        sequence,
                        state_digest,
                        ..
                    } => {
                        r.sent.insert(sequence, state_digest);
                        r.in_flight = Some(sequence);
                    }
                    AgentEvent::Acked { .. } => {
                        if let Some(seq) = r.in_flight.take() {
                            r.acked.insert(seq);
                        }
                    }
                    // No ack outlives its session.
                    AgentEvent::Disconnected { .. } => r.in_flight = None,
                    AgentEvent::PolicyChanged { policy_id } => r.policy_changes.push(policy_id),
                    _ => {}
                }
            }
        });
        AgentRecorder { record, task }
    }

    /// What was recorded so far.
    pub fn sent(&self) -> Sent {
        self.record.lock().expect("recorder lock").clone()
    }

    /// The report sent and not acknowledged yet on the open session, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.record.lock().expect("recorder lock").in_flight
    }
}

impl Drop for AgentRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Log lines of one or more collector processes, each tagged with the node that wrote it.
#[derive(Debug, Clone, Default)]
pub struct CollectorLog(Arc<Mutex<Vec<(String, String)>>>);

impl CollectorLog {
    /// Appends a line written by `node` (terminal colour sequences removed).
    pub fn push(&self, node: &str, line: &str) {
        self.0
            .lock()
            .expect("log lock")
            .push((node.to_owned(), strip_ansi(line)));
    }

    /// Every line so far, in arrival order.
    pub fn lines(&self) -> Vec<(String, String)> {
        self.0.lock().expect("log lock").clone()
    }

    /// How many lines arrived so far (a mark for [`CollectorLog::since`]).
    pub fn len(&self) -> usize {
        self.0.lock().expect("log lock").len()
    }

    /// Whether nothing arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines that arrived after `mark`.
    pub fn since(&self, mark: usize) -> Vec<(String, String)> {
        self.0.lock().expect("log lock")[mark..].to_vec()
    }
}

/// What the collectors recorded, from their logs.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// `(device, sequence)` → every `report applied` line for it: (node, stored digest).
    pub applied: BTreeMap<(String, u64), Vec<(String, String)>>,
    /// `(device, sequence)` of every resend found already stored.
    pub already: BTreeSet<(String, u64)>,
}

impl Recorded {
    /// Reads `report applied` and `report already stored` lines of any number of nodes.
    pub fn parse(lines: &[(String, String)]) -> Recorded {
        let mut r = Recorded::default();
        for (node, l) in lines {
            let (Some(device), Some(seq)) = (
                field(l, "device"),
                field(l, "sequence").and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let key = (device.to_owned(), seq);
            if l.contains("report applied") {
                let digest = field(l, "digest").unwrap_or_default().to_owned();
                r.applied
                    .entry(key)
                    .or_default()
                    .push((node.clone(), digest));
            } else if l.contains("report already stored") {
                r.already.insert(key);
            }
        }
        r
    }
}

/// The oracle's finding for one device.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The device.
    pub device: String,
    /// Reports the agent sent.
    pub sent: usize,
    /// Reports it saw acknowledged.
    pub acked: usize,
    /// Sequences the collectors applied.
    pub recorded: usize,
    /// Resends found already stored.
    pub already: usize,
    /// Acknowledged, never recorded.
    pub lost: Vec<u64>,
    /// Recorded, never sent (or with another digest).
    pub unexpected: Vec<u64>,
    /// Applied by two commits, with the nodes that applied them.
    pub twice: Vec<(u64, Vec<String>)>,
}

impl Verdict {
    /// Nothing lost, nothing unexpected, nothing recorded twice, and something recorded.
    pub fn assert_clean(&self) {
        assert!(
            self.lost.is_empty(),
            "{}: lost {:?}",
            self.device,
            self.lost
        );
        assert!(
            self.unexpected.is_empty(),
            "{}: unexpected {:?}",
            self.device,
            self.unexpected
        );
        assert!(
            self.twice.is_empty(),
            "{}: recorded twice (sequence, nodes): {:?}",
            self.device,
            self.twice
        );
        assert!(self.recorded > 0, "{}: nothing recorded", self.device);
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} reports sent, {} acknowledged, {} recorded, {} resends already stored; lost {}, unexpected {}, recorded twice {}",
            self.device,
            self.sent,
            self.acked,
            self.recorded,
            self.already,
            self.lost.len(),
            self.unexpected.len(),
            self.twice.len()
        )
    }
}

/// The set checker for one device (see the [module documentation](self)).
pub fn check(device: &str, agent: &Sent, recorded: &Recorded) -> Verdict {
    let applied: BTreeMap<u64, &Vec<(String, String)>> = recorded
        .applied
        .iter()
        .filter(|((d, _), _)| d == device)
        .map(|((_, s), v)| (*s, v))
        .collect();
    let already: BTreeSet<u64> = recorded
        .already
        .iter()
        .filter(|(d, _)| d == device)
        .map(|(_, s)| *s)
        .collect();
    let lost = agent
        .acked
        .iter()
        .filter(|s| !applied.contains_key(s) && !already.contains(s))
        .copied()
        .collect();
    let unexpected = applied
        .iter()
        .filter(|(s, lines)| {
            agent
                .sent
                .get(s)
                .is_none_or(|want| lines.iter().any(|(_, d)| d != want))
        })
        .map(|(s, _)| *s)
        .collect();
    let twice = applied
        .iter()
        .filter(|(_, lines)| lines.len() > 1)
        .map(|(s, lines)| (*s, lines.iter().map(|(n, _)| n.clone()).collect()))
        .collect();
    Verdict {
        device: device.to_owned(),
        sent: agent.sent.len(),
        acked: agent.acked.len(),
        recorded: applied.len(),
        already: already.len(),
        lost,
        unexpected,
        twice,
    }
}

/// A device's stored history of products, checked against its final state.
#[derive(Debug, Clone, Default)]
pub struct ProductHistory {
    /// `product_seen`/`product_removed` events that repeat the product's previous event (a
    /// transition recorded twice).
    pub repeated: Vec<String>,
    /// Products whose last event is `product_seen`, sorted: the state the history ends in.
    pub present: Vec<String>,
}

impl ProductHistory {
    /// Reads `(kind, product)` events, oldest first; other kinds are skipped.
    pub fn of<'a>(events: impl IntoIterator<Item = (&'a str, &'a str)>) -> ProductHistory {
        let mut last: BTreeMap<&str, &str> = BTreeMap::new();
        let mut repeated = Vec::new();
        for (kind, product) in events {
            if kind != "product_seen" && kind != "product_removed" {
                continue;
            }
            if last.get(product) == Some(&kind) {
                repeated.push(format!("{kind} {product}"));
            }
            last.insert(product, kind);
        }
        ProductHistory {
            repeated,
            present: last
                .iter()
                .filter(|(_, k)| **k == "product_seen")
                .map(|(p, _)| (*p).to_owned())
                .collect(),
        }
    }
}

/// The line without terminal colour sequences.
pub fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of ` name=value` in a log line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split([' ', '\n']).next()
}
