//! The browser harness itself (`commscan_tests::browser`), against static pages served by a
//! throw-away HTTP server in this test, so a console test that fails is about the console.
//!
//! Proves: chromedriver and headless Chromium start and stop; navigation, finding by CSS,
//! reading text, filling and submitting a form; an alert is seen (how the console's tests tell
//! that an injected script ran); axe-core runs from the vendored file, finds nothing serious
//! on an accessible page and does find the faults of an inaccessible one (so a clean report
//! is not a vacuous one); screenshots are PNG files in the screenshots folder; the phone-sized
//! viewport is what the page sees. The SPKI pin is computed as Chromium expects it.
//!
//! Skips (prints `SKIPPED`) without chromium and chromedriver unless
//! `COMMSCAN_REQUIRE_BROWSER=1` (`.ci/run` installs both and sets it).

use commscan_tests::browser::{Browser, BrowserOptions, DESKTOP, PHONE, spki_sha256_base64};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

const HOME: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Harness home</title></head>
<body><main>
<h1 id="title">Fleet of test devices</h1>
<form id="search" method="get" action="/result">
  <label for="q">Search</label>
  <input id="q" name="q" value="old">
  <button id="go" type="submit">Search</button>
</form>
</main></body></html>"#;

// Faults axe rates serious or critical: an image without alternative text, an input
// without a label, no lang on <html>.
const INACCESSIBLE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Bad</title></head>
<body><main><h1>Bad page</h1>
<img src="/pixel.png">
<input id="nolabel" name="x">
</main></body></html>"#;

const ALERTING: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Alert</title></head>
<body><main><h1>Alert</h1><script>alert("ran")</script></main></body></html>"#;

/// Serves the pages above on `127.0.0.1:0` from a thread; `/result?q=X` echoes `X`
/// (alphanumerics only). Lives until the test process exits.
fn serve_pages() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Read the rest of the head; the pages take no bodies.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
            let path = target.split_once('?').map_or(target.as_str(), |t| t.0);
            // The alert page again, under a CSP that forbids its inline script.
            let csp = if path == "/csp" {
                "Content-Security-Policy: script-src 'self'\r\n"
            } else {
                ""
            };
            let (status, body) = match path {
                "/" => ("200 OK", HOME.to_owned()),
                "/csp" => ("200 OK", ALERTING.to_owned()),
                "/bad" => ("200 OK", INACCESSIBLE.to_owned()),
                "/alert" => ("200 OK", ALERTING.to_owned()),
                "/result" => {
                    let q: String = target
                        .split_once("q=")
                        .map_or("", |t| t.1)
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect();
                    (
                        "200 OK",
                        format!(
                            "<!doctype html><html lang=\"en\"><head><title>Result</title></head>\
                             <body><main><h1>Result</h1><p id=\"echo\">{q}</p></main></body></html>"
                        ),
                    )
                }
                _ => ("404 Not Found", String::new()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n{csp}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn harness_drives_a_real_browser() {
    let Some(browser) =
        Browser::start("harness_drives_a_real_browser", BrowserOptions::default()).await
    else {
        return;
    };
    let base = serve_pages();

    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text("#title").await, "Fleet of test devices");
    assert!(browser.try_find("#absent").await.is_none());
    assert_eq!(browser.find_all("form#search input").await.len(), 1);

    browser.fill("#q", "zoom42").await;
    browser.submit("#go", "#echo").await;
    assert_eq!(browser.path().await, "/result");
    assert_eq!(browser.text("#echo").await, "zoom42");

    // In-page fetch, as the CSV export test reads a download.
    let page = browser.fetch(&format!("{base}/result?q=abc")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"<p id="echo">abc</p>"#),
        "{}",
        page.body
    );
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );

    browser.goto(&format!("{base}/")).await;
    browser.assert_accessible("the harness's home page").await;
    let shot = browser.screenshot("harness-home").await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        shot.display()
    );
    assert_eq!(
        browser
            .eval("return [window.innerWidth, window.innerHeight]")
            .await,
        serde_json::json!([DESKTOP.0, DESKTOP.1])
    );

    browser.goto(&format!("{base}/bad")).await;
    let violations = browser.axe().await;
    let serious: Vec<&str> = violations
        .iter()
        .filter(|v| v.is_serious())
        .map(|v| v.id.as_str())
        .collect();
    for rule in ["image-alt", "label", "html-has-lang"] {
        assert!(serious.contains(&rule), "axe misses {rule}: {violations:?}");
    }

    browser.goto(&format!("{base}/alert")).await;
    assert_eq!(browser.open_dialog().await.as_deref(), Some("ran"));
    browser.dismiss_dialog().await;
    assert!(browser.csp_violations().await.is_empty());

    // The probe sees the CSP refuse the same script; nothing runs.
    browser.goto(&format!("{base}/csp")).await;
    assert_eq!(browser.open_dialog().await, None);
    let violations = browser.csp_violations().await;
    assert!(
        violations.iter().any(|v| v.starts_with("script-src")),
        "{violations:?}"
    );

    browser.close().await;
}

#[tokio::test]
async fn harness_phone_viewport_is_what_the_page_sees() {
    let Some(browser) = Browser::start(
        "harness_phone_viewport_is_what_the_page_sees",
        BrowserOptions::default(),
    )
    .await
    else {
        return;
    };
    let base = serve_pages();
    browser.goto(&format!("{base}/")).await;
    browser.viewport(PHONE).await;
    assert_eq!(
        browser
            .eval("return [window.innerWidth, window.innerHeight]")
            .await,
        serde_json::json!([PHONE.0, PHONE.1])
    );
    assert!(!browser.overflows_horizontally().await);
    let shot = browser.screenshot("harness-home-phone").await;
    assert!(shot.exists());
    browser.viewport(DESKTOP).await;
    browser.close().await;
}

/// Serves [`HOME`] over TLS with `pem` on `127.0.0.1:0`; returns `https://127.0.0.1:PORT`.
async fn serve_tls(pem: &commscan_core::pki::Pem) -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = vec![CertificateDer::from_pem_slice(pem.cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HOME}",
                    HOME.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}")
}

/// The pin trusts exactly the pinned key: a server with that key loads; another server with
/// a certificate from the same unknown CA, but another key, is refused.
#[tokio::test]
async fn harness_trusts_only_the_pinned_key() {
    commscan_tests::init_crypto();
    let (ca, _) = commscan_core::pki::Authority::generate("pin.test").expect("ca");
    let names = vec!["127.0.0.1".to_owned()];
    let pinned = ca.issue_server(&names).expect("pinned server");
    let other = ca.issue_server(&names).expect("other server");
    // A SHA-256 is 32 bytes: 44 characters of padded base64.
    assert_eq!(spki_sha256_base64(&pinned.cert).len(), 44);
    assert_ne!(
        spki_sha256_base64(&pinned.cert),
        spki_sha256_base64(&other.cert)
    );
    let Some(browser) = Browser::start(
        "harness_trusts_only_the_pinned_key",
        BrowserOptions {
            trust_certificates: vec![pinned.cert.clone()],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (good, bad) = (serve_tls(&pinned).await, serve_tls(&other).await);
    browser.goto(&format!("{good}/")).await;
    assert_eq!(browser.text("#title").await, "Fleet of test devices");
    let refused = browser.try_goto(&format!("{bad}/")).await;
    // Chromium shows its certificate error page instead of the page (or chromedriver
    // reports the error).
    if let Err(why) = refused {
        assert!(why.contains("ERR_CERT"), "{why}");
    } else {
        assert!(
            browser.try_find("#title").await.is_none(),
            "a certificate with another key was accepted"
        );
        let shown = browser.eval("return document.body.innerText").await;
        assert!(
            shown
                .as_str()
                .is_some_and(|t| t.contains("ERR_CERT_AUTHORITY_INVALID")),
            "{shown}"
        );
    }
    browser.close().await;
}
