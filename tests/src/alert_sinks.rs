//! Receivers of the collector's alerts for `tests/tests/alerts.rs`: a local HTTP endpoint
//! that checks every webhook's signature with an HMAC of its own (not the collector's code)
//! and can fail, be slow or accept; and Debian's rsyslog run as a foreground process with a
//! configuration of the test's own, writing what it parsed to a file.
//!
//! rsyslog missing prints `SKIPPED: ...` and the test passes, unless
//! `COMMSCAN_REQUIRE_RSYSLOG=1` (set by `.ci/run` after installing it).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// HMAC-SHA256 (RFC 2104), written here so the test does not check the collector with its own
/// code.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 500 at once.
    Fail = 0,
    /// 200 after [`SLOW`].
    Slow = 1,
    /// 200 at once.
    Accept = 2,
}

/// How long a slow answer takes.
pub const SLOW: Duration = Duration::from_millis(800);

/// One webhook request, as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `Idempotency-Key`.
    pub key: String,
    /// The body's JSON.
    pub body: serde_json::Value,
    /// The body's bytes.
    pub raw: String,
    /// Whether `X-Commscan-Signature` is the HMAC of `<timestamp>.<body>` under the secret.
    pub signed: bool,
    /// `X-Commscan-Timestamp`.
    pub timestamp: i64,
    /// Whether the receiver answered 2xx (the request counts as received by the receiver
    /// from the moment it was read, answered or not).
    pub accepted: bool,
}

/// A local webhook endpoint on `127.0.0.1`.
pub struct WebhookReceiver {
    /// Its port.
    pub port: u16,
    mode: Arc<AtomicU8>,
    seen: Arc<Mutex<Vec<Delivery>>>,
    attempts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listens; requests are checked against `secret`.
    pub async fn start(secret: &[u8], mode: Mode) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(mode as u8));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let secret = secret.to_vec();
        let (m, s, a) = (mode.clone(), seen.clone(), attempts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (m, s, a, secret) = (m.clone(), s.clone(), a.clone(), secret.clone());
                tokio::spawn(async move {
                    let Some((headers, raw)) = read_request(&mut conn).await else {
                        return;
                    };
                    a.fetch_add(1, Ordering::SeqCst);
                    let header = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let timestamp: i64 = header("X-Commscan-Timestamp").parse().unwrap_or(0);
                    let want = format!(
                        "sha256={}",
                        hex_of(&hmac_sha256(
                            &secret,
                            format!("{timestamp}.{raw}").as_bytes()
                        ))
                    );
                    let mode = m.load(Ordering::SeqCst);
                    let accepted = mode != Mode::Fail as u8;
                    let index = {
                        let mut seen = s.lock().unwrap();
                        seen.push(Delivery {
                            key: header("Idempotency-Key"),
                            body: serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null),
                            raw: raw.clone(),
                            signed: header("X-Commscan-Signature") == want,
                            timestamp,
                            accepted: false,
                        });
                        seen.len() - 1
                    };
                    if mode == Mode::Slow as u8 {
                        tokio::time::sleep(SLOW).await;
                    }
                    let status = if accepted {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let answered = conn
                        .write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await
                        .is_ok();
                    if accepted && answered {
                        s.lock().unwrap()[index].accepted = true;
                    }
                });
            }
        });
        WebhookReceiver {
            port,
            mode,
            seen,
            attempts,
            task,
        }
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Every request read so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests read so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One HTTP/1.1 request: headers and a Content-Length body.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(Vec<(String, String)>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        headers,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    ))
}

/// rsyslogd, or `None` after printing why the test is skipped.
pub fn rsyslogd(test: &str) -> Option<PathBuf> {
    let required = std::env::var("COMMSCAN_REQUIRE_RSYSLOG").is_ok_and(|v| v == "1");
    let found = crate::wine::on_path("rsyslogd").or_else(|| {
        let p = PathBuf::from("/usr/sbin/rsyslogd");
        p.is_file().then_some(p)
    });
    if found.is_none() {
        assert!(
            !required,
            "{test}: rsyslogd is missing (apt-get install rsyslog) and COMMSCAN_REQUIRE_RSYSLOG=1"
        );
        eprintln!("SKIPPED: {test}: rsyslogd is missing (apt-get install rsyslog)");
    }
    found
}

/// rsyslogd in the foreground, receiving RFC 5424 over TCP (octet-counted or LF-framed) on
/// `127.0.0.1:port` and writing, per message, what it parsed: MSGID, APP-NAME, HOSTNAME,
/// STRUCTURED-DATA and MSG, tab-separated.
pub struct Rsyslog {
    child: Child,
    /// The file it writes.
    pub out: PathBuf,
}

impl Rsyslog {
    /// Starts `rsyslogd` with its configuration and files in `dir`, listening on `port`.
    pub fn start(rsyslogd: &Path, dir: &Path, port: u16) -> Rsyslog {
        std::fs::create_dir_all(dir).expect("rsyslog dir");
        let out = dir.join("messages.tsv");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imtcp")
template(name="parsed" type="string" string="%msgid%\t%app-name%\t%hostname%\t%structured-data%\t%msg%\n")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="alerts")
ruleset(name="alerts") {{
  action(type="omfile" file="{out}" template="parsed" flushOnTXEnd="on" asyncWriting="off")
}}
"#,
                work = dir.display(),
                out = out.display()
            ),
        )
        .expect("write rsyslog.conf");
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rsyslogd");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd did not listen on {port} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child, out }
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SD-ELEMENT: its SD-ID and its parameters, in order.
pub type SdElement = (String, Vec<(String, String)>);

/// The elements of an RFC 5424 structured-data string `[id k="v" ...]...`, with `\"`, `\\`
/// and `\]` unescaped; `None` if it is malformed.
pub fn parse_structured_data(sd: &str) -> Option<Vec<SdElement>> {
    let mut out = Vec::new();
    let mut chars = sd.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '[' {
            return None;
        }
        let mut id = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == ']' {
                break;
            }
            id.push(c);
            chars.next();
        }
        let mut params = Vec::new();
        loop {
            match chars.next()? {
                ']' => break,
                ' ' => {
                    let mut name = String::new();
                    loop {
                        match chars.next()? {
                            '=' => break,
                            c => name.push(c),
                        }
                    }
                    if chars.next()? != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()? {
                            '\\' => {
                                let n = chars.next()?;
                                if !matches!(n, '"' | '\\' | ']') {
                                    value.push('\\');
                                }
                                value.push(n);
                            }
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    params.push((name, value));
                }
                _ => return None,
            }
        }
        out.push((id, params));
    }
    Some(out)
}
