//! The collector's logs as a SIEM or journald reads them: with `--log-format json` every line
//! is one JSON object with stable fields; in text, no colour codes unless stderr is a
//! terminal; the standard `RUST_LOG` filters (as `COMMSCAN_LOG` does).

use commscan_tests::workspace_binary;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh deployment's data directory.
fn deployment(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("c");
    let out = Command::new(workspace_binary("commscan-collector"))
        .args([
            "init",
            "--org",
            "acme",
            "--server-name",
            "127.0.0.1",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// Serves until the `serving` line (or 30 s), then SIGTERM; every stderr line.
fn serve(data: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new(workspace_binary("commscan-collector"));
    cmd.env("COMMSCAN_CONFIG", "/dev/null")
        .args(extra)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--web-listen",
            "off",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("COMMSCAN_LOG")
        .env_remove("RUST_LOG")
        .env_remove("COMMSCAN_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let serving = l.contains("serving");
                lines.push(l);
                if serving {
                    break;
                }
            }
            Err(_) if child.try_wait().unwrap().is_some() => break,
            Err(_) => {
                // Quiet filters print nothing: give the server a moment, then stop it.
                if lines.is_empty() && Instant::now() + Duration::from_secs(27) > deadline {
                    break;
                }
            }
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    lines.extend(rx.try_iter());
    lines
}

#[test]
fn json_logs_are_one_object_per_line_and_text_logs_have_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = deployment(dir.path());

    let lines = serve(&data, &["--log-format", "json"], &[("RUST_LOG", "info")]);
    assert!(!lines.is_empty());
    let mut saw_serving = false;
    for l in &lines {
        assert!(!l.contains('\u{1b}'), "colour in JSON: {l}");
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for field in ["timestamp", "level", "target"] {
            assert!(v[field].is_string(), "{field} in {l}");
        }
        assert!(v["fields"]["message"].is_string(), "fields.message in {l}");
        saw_serving |= v["fields"]["message"] == "serving";
    }
    assert!(saw_serving, "{lines:?}");

    let lines = serve(&data, &[], &[("RUST_LOG", "info")]);
    assert!(lines.iter().any(|l| l.contains("serving")), "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in a pipe: {lines:?}"
    );

    // RUST_LOG filters: at `warn`, the info line is not written.
    let lines = serve(&data, &[], &[("RUST_LOG", "warn")]);
    assert!(!lines.iter().any(|l| l.contains("serving")), "{lines:?}");
}
