//! The simulated fleet on disk, built once and reused between runs.
//!
//! Enrolling over gRPC signs a certificate per device and is rate-limited (bursts of 500, then
//! 50 a second), so enrolling 16,000 simulated devices that way would take minutes per run. The
//! setup does what enrolment does, through the library: a fresh key and CSR per device
//! ([`device_key_and_csr`]), signed by the deployment CA ([`Authority::sign_device_csr`]), and
//! the device record ([`DeviceRecord::enrolled`]) written to the store. Every simulated agent
//! therefore has its own key and certificate, verified by the collector in each handshake.
//!
//! The cache directory holds:
//!
//! | path | what |
//! |---|---|
//! | `pristine/` | an initialised collector data directory with every device enrolled; never served |
//! | `devices.jsonl` | one [`SimDevice`] per line, in enrolment order |
//! | `fleet.json` | what the cache holds ([`FleetMeta`]); a cache too small, for other organisations or with certificates expiring within a day is rebuilt |
//!
//! Runs serve a copy of `pristine/` ([`Fleet::fresh_data_dir`]), so each starts from the same
//! store.

use crate::LoadgenError;
use commscan_collector::layout::{InitOptions, Layout};
use commscan_collector::store::DeviceRecord;
use commscan_collector::store::sled_store::SledStore;
use commscan_collector::store::{DeviceStore, Durable};
use commscan_core::identity::DeviceIdentity;
use commscan_core::pki::{Authority, DEVICE_VALIDITY, device_key_and_csr};
use commscan_core::platform::Platform;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The trust domain of the simulated deployment.
pub const TRUST_DOMAIN: &str = "loadgen.local";

/// One simulated device's identity and credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimDevice {
    /// Its device id.
    pub device_id: String,
    /// Its organisation.
    pub organisation: String,
    /// Its client certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
}

/// What a cache holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetMeta {
    /// Devices enrolled.
    pub devices: usize,
    /// Organisations they are spread over.
    pub organisations: usize,
    /// When the first certificate expires (Unix seconds).
    pub not_after: i64,
}

/// A prepared fleet.
#[derive(Debug)]
pub struct Fleet {
    /// The cache directory.
    pub dir: PathBuf,
    /// The devices asked for.
    pub devices: Vec<SimDevice>,
    /// The deployment CA certificate (PEM).
    pub ca_pem: String,
}

/// The organisation of the `i`-th device: `org-00`, `org-01`, ... round-robin.
pub fn organisation(i: usize, organisations: usize) -> String {
    format!("org-{:02}", i % organisations.max(1))
}

impl Fleet {
    /// Opens the cache in `dir`, building it (or rebuilding it) if it cannot serve `devices`
    /// devices over `organisations` organisations for at least another day.
    pub fn prepare(
        dir: &Path,
        devices: usize,
        organisations: usize,
    ) -> Result<Fleet, LoadgenError> {
        let meta: Option<FleetMeta> = std::fs::read(dir.join("fleet.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let fresh_enough = |m: &FleetMeta| {
            m.devices >= devices
                && m.organisations == organisations
                && m.not_after > (OffsetDateTime::now_utc() + time::Duration::DAY).unix_timestamp()
        };
        if !meta.as_ref().is_some_and(fresh_enough) {
            build(dir, devices, organisations)?;
        }
        Fleet::open(dir, 0, devices)
    }

    /// Opens a prepared cache, reading devices `from..from + count` only; never builds.
    pub fn open(dir: &Path, from: usize, count: usize) -> Result<Fleet, LoadgenError> {
        let file = std::fs::File::open(dir.join("devices.jsonl"))
            .map_err(LoadgenError::io("devices.jsonl"))?;
        let mut list = Vec::with_capacity(count);
        for line in std::io::BufReader::new(file).lines().skip(from).take(count) {
            let line = line.map_err(LoadgenError::io("devices.jsonl"))?;
            list.push(
                serde_json::from_str(&line)
                    .map_err(|e| LoadgenError::Setup(format!("devices.jsonl: {e}")))?,
            );
        }
        if list.len() < count {
            return Err(LoadgenError::Setup(format!(
                "{}: holds fewer than {} devices",
                dir.display(),
                from + count
            )));
        }
        let ca_pem = std::fs::read_to_string(dir.join("pristine/pki/ca.crt"))
            .map_err(LoadgenError::io("pristine/pki/ca.crt"))?;
        Ok(Fleet {
            dir: dir.to_owned(),
            devices: list,
            ca_pem,
        })
    }

    /// Copies the pristine collector data directory to `run/collector` (replacing it) and
    /// returns its layout.
    pub fn fresh_data_dir(&self, run: &Path) -> Result<Layout, LoadgenError> {
        let to = run.join("collector");
        if to.exists() {
            std::fs::remove_dir_all(&to).map_err(LoadgenError::io(to.display().to_string()))?;
        }
        copy_dir(&self.dir.join("pristine"), &to)?;
        Ok(Layout::new(to))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), LoadgenError> {
    std::fs::create_dir_all(to).map_err(LoadgenError::io(to.display().to_string()))?;
    for entry in std::fs::read_dir(from).map_err(LoadgenError::io(from.display().to_string()))? {
        let entry = entry.map_err(LoadgenError::io(from.display().to_string()))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(LoadgenError::io(target.display().to_string()))?;
        }
    }
    Ok(())
}

/// Builds the cache from scratch: `init`, then keys, certificates and device records.
fn build(dir: &Path, devices: usize, organisations: usize) -> Result<(), LoadgenError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(LoadgenError::io(dir.display().to_string()))?;
    }
    let layout = Layout::new(dir.join("pristine"));
    layout
        .init(&InitOptions {
            trust_domain: TRUST_DOMAIN.into(),
            server_names: vec!["127.0.0.1".into(), "localhost".into()],
            organisation: organisation(0, organisations),
            import_ca: None,
            import_server: None,
        })
        .map_err(|e| LoadgenError::Setup(e.to_string()))?;
    let read = |rel: &str| {
        std::fs::read_to_string(layout.path(rel)).map_err(LoadgenError::io(rel.to_owned()))
    };
    let ca = Authority::from_pem(&read("pki/ca.crt")?, &read("pki/ca.key")?)
        .map_err(|e| LoadgenError::Setup(e.to_string()))?;

    // Key generation and signing are the slow part (ECDSA, about a millisecond each): spread
    // them over the cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let signed: Vec<Result<Vec<(SimDevice, i64)>, LoadgenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ca = &ca;
                s.spawn(move || {
                    (t..devices)
                        .step_by(threads)
                        .map(|i| issue(ca, i, organisations))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread"))
            .collect()
    });
    let mut all: Vec<(usize, SimDevice, i64)> = Vec::with_capacity(devices);
    for (t, chunk) in signed.into_iter().enumerate() {
        for (k, (device, not_after)) in chunk?.into_iter().enumerate() {
            all.push((t + k * threads, device, not_after));
        }
    }
    all.sort_by_key(|(i, _, _)| *i);

    let store =
        SledStore::open(&layout.path("store")).map_err(|e| LoadgenError::Setup(e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(dir.join("devices.jsonl"))
            .map_err(LoadgenError::io("devices.jsonl"))?,
    );
    for (i, device, _) in &all {
        let record = DeviceRecord::enrolled(
            device.device_id.clone(),
            device.organisation.clone(),
            format!("sim-{i:06}"),
            Some(Platform::Linux),
            "Debian GNU/Linux 12".into(),
            commscan_core::VERSION.into(),
            now,
        );
        store
            .put_device(&record, now)
            .map_err(|e| LoadgenError::Setup(e.to_string()))?;
        serde_json::to_writer(&mut out, device).expect("serialises");
        out.write_all(b"\n")
            .map_err(LoadgenError::io("devices.jsonl"))?;
    }
    out.flush().map_err(LoadgenError::io("devices.jsonl"))?;
    store
        .flush()
        .map_err(|e| LoadgenError::Setup(e.to_string()))?;
    drop(store);
    let meta = FleetMeta {
        devices,
        organisations,
        not_after: all.iter().map(|(_, _, t)| *t).min().unwrap_or(i64::MAX),
    };
    std::fs::write(
        dir.join("fleet.json"),
        serde_json::to_vec_pretty(&meta).expect("serialises"),
    )
    .map_err(LoadgenError::io("fleet.json"))?;
    Ok(())
}

fn issue(ca: &Authority, i: usize, organisations: usize) -> Result<(SimDevice, i64), LoadgenError> {
    let setup = |e: commscan_core::pki::PkiError| LoadgenError::Setup(e.to_string());
    let (key_pem, csr_pem) = device_key_and_csr().map_err(setup)?;
    let identity = DeviceIdentity {
        trust_domain: TRUST_DOMAIN.into(),
        organisation: organisation(i, organisations),
        device_id: uuid_from(i),
    };
    let (cert_pem, not_after) = ca
        .sign_device_csr(&csr_pem, &identity, DEVICE_VALIDITY)
        .map_err(setup)?;
    Ok((
        SimDevice {
            device_id: identity.device_id,
            organisation: identity.organisation,
            cert_pem,
            key_pem,
        },
        not_after.unix_timestamp(),
    ))
}

/// A UUID-shaped, deterministic device id (the collector only needs it to be unique).
fn uuid_from(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}
