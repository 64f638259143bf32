//! A real browser for the console's tests: headless Chromium driven over WebDriver.
//!
//! [`Browser::start`] runs `chromedriver` on a free loopback port in a process group of its
//! own, opens one headless Chromium session through it (fantoccini, plain HTTP on loopback)
//! and hands back helpers shaped like what a person does: go to a page, find by CSS selector,
//! read text, fill and submit a form, take a screenshot, run axe-core, switch to a phone-sized
//! viewport.
//!
//! Trust: the collector's certificate is issued by a per-test CA the browser has never seen.
//! Rather than `--ignore-certificate-errors` (which would accept any certificate, so a test
//! could never notice the console serving the wrong one), the browser is told the SHA-256 of
//! exactly one SubjectPublicKeyInfo, the collector's key (`--ignore-certificate-errors-spki-list`,
//! honoured because the session has its own `--user-data-dir`).
//!
//! Skips: without `chromium` or `chromedriver` on PATH, [`Browser::start`] prints `SKIPPED: …`
//! and returns `None`; with `COMMSCAN_REQUIRE_BROWSER=1` (`.ci/run` installs both and sets it)
//! it panics instead.
//!
//! Bounds: at most [`MAX_BROWSERS`] browsers at once per test process (more tests wait for a
//! slot); chromedriver must answer within [`DRIVER_START`]; every WebDriver command runs under
//! [`COMMAND_TIMEOUT`] (page loads and scripts also under the session's own timeouts), waits for
//! elements under [`WAIT`]. Dropping a [`Browser`] kills chromedriver's whole process group,
//! Chromium included, so a failed test leaves no browser behind.
//!
//! Screenshots go to `$COMMSCAN_SCREENSHOTS`, or `console-screenshots/` in the cargo target
//! directory (`target/console-screenshots/` by default).

use base64::Engine;
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long chromedriver may take to accept connections and Chromium to open a session.
pub const DRIVER_START: Duration = Duration::from_secs(30);
/// The bound on any single WebDriver command (navigation and scripts included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Browser::find`] and [`Browser::wait_for`] wait for an element or a condition.
pub const WAIT: Duration = Duration::from_secs(10);
/// The desktop viewport of the issue: readable at 1280×800.
pub const DESKTOP: (u32, u32) = (1280, 800);
/// A phone-sized viewport (an iPhone 12–15's CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);

/// axe-core, vendored (tests/vendor/axe-core/README.md names the version and its source).
const AXE_JS: &str = include_str!("../vendor/axe-core/axe.min.js");

/// Installed into every document before its own scripts: collects CSP violation reports and
/// the `EventSource`s the page opens. (DevTools-injected, so the page's CSP does not apply.)
const PAGE_PROBE: &str = r#"
(() => {
  const probe = { csp: [], streams: [] };
  Object.defineProperty(window, '__commscan_probe', { value: probe });
  document.addEventListener('securitypolicyviolation', e =>
    probe.csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`.trim()));
  const Native = window.EventSource;
  if (Native) {
    window.EventSource = class extends Native {
      constructor(...args) { super(...args); probe.streams.push(this); }
    };
  }
})();
"#;

/// A command of Chromium's DevTools protocol, sent through chromedriver's
/// `POST /session/{id}/goog/cdp/execute`.
#[derive(Debug)]
struct DevTools {
    cmd: &'static str,
    params: Json,
}

impl fantoccini::wd::WebDriverCompatibleCommand for DevTools {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// One accessibility rule axe found broken on a page.
#[derive(Debug, Clone)]
pub struct AxeViolation {
    /// The rule (`color-contrast`, `label`, …).
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// What the rule asks for.
    pub help: String,
    /// The offending elements: their selector and HTML, one a line.
    pub nodes: Vec<String>,
}

impl AxeViolation {
    /// Serious and critical violations fail the console's tests.
    pub fn is_serious(&self) -> bool {
        matches!(self.impact.as_str(), "serious" | "critical")
    }
}

/// What an in-page `fetch` returned.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// HTTP status after redirects.
    pub status: u16,
    /// The final URL (after redirects).
    pub url: String,
    /// Response headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Fetched {
    /// A header's value (name lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Browsers open at once in one test process: each is several processes, and a test binary
/// runs its tests in parallel on machines with two cores.
pub const MAX_BROWSERS: usize = 2;

/// The permits behind [`MAX_BROWSERS`] (a tokio semaphore needs no runtime of its own, so
/// tests on different runtimes share it).
fn browser_slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    SLOTS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_BROWSERS)))
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    client: Option<Client>,
    // Held until drop.
    _slot: tokio::sync::OwnedSemaphorePermit,
    driver: Child,
    driver_log: PathBuf,
    // The profile and the driver's log; removed after the process group is gone.
    profile: Option<tempfile::TempDir>,
    screenshots: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver", &self.driver.id())
            .finish_non_exhaustive()
    }
}

/// What [`Browser::start`] needs to know.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    /// PEM certificates whose keys the browser trusts for TLS (the collector's server
    /// certificate); no other certificate errors are ignored.
    pub trust_certificates: Vec<String>,
    /// `Accept-Language` (Chromium's `--lang`); `en-US` when `None`.
    pub language: Option<String>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1280×800, or `None` (after printing
    /// `SKIPPED: {test}: …`) when either is not installed. Panics when they are missing and
    /// `COMMSCAN_REQUIRE_BROWSER=1`, or when they are installed but do not start.
    pub async fn start(test: &str, options: BrowserOptions) -> Option<Browser> {
        let (chromium, driver) = match (
            find_program(&["chromium", "chromium-browser", "google-chrome"]),
            find_program(&["chromedriver"]),
        ) {
            (Some(c), Some(d)) => (c, d),
            (c, _) => {
                let missing = if c.is_none() {
                    "chromium"
                } else {
                    "chromedriver"
                };
                let required = std::env::var("COMMSCAN_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "{test}: COMMSCAN_REQUIRE_BROWSER=1 but {missing} is not installed"
                );
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {test}: {missing} is not installed (apt-get install chromium chromium-driver)"
                );
                return None;
            }
        };
        Some(Browser::launch(&chromium, &driver, options).await)
    }

    async fn launch(chromium: &Path, driver: &Path, options: BrowserOptions) -> Browser {
        // Bounded too: a test waits for another's browser at most this long.
        let slot = tokio::time::timeout(
            Duration::from_secs(600),
            browser_slots().clone().acquire_owned(),
        )
        .await
        .expect("a browser slot within 10 minutes")
        .expect("the slots are never closed");
        let profile = tempfile::Builder::new()
            .prefix("commscan-browser-")
            .tempdir()
            .expect("browser profile dir");
        let driver_log = profile.path().join("chromedriver.log");
        let log = std::fs::File::create(&driver_log).expect("chromedriver log");
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"))
            // Loopback only, and only loopback clients.
            .arg("--host=127.0.0.1")
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // Its own process group: on drop, one signal ends chromedriver and every Chromium
        // process it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start chromedriver");
        let mut browser = Browser {
            client: None,
            _slot: slot,
            driver: child,
            driver_log,
            profile: Some(profile),
            screenshots: screenshots_dir(),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + DRIVER_START;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before listening: {}",
                    browser.driver_log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {addr} within {DRIVER_START:?}: {}",
                browser.driver_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let user_data = browser
            .profile
            .as_ref()
            .expect("profile")
            .path()
            .join("profile");
        let mut args = vec![
            "--headless=new".to_owned(),
            // Tests run as root in containers, where Chromium's sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            // Containers give /dev/shm 64 MB; Chromium's renderers run out of it.
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            // Required for the SPKI list to be honoured, and a fresh profile per session.
            format!("--user-data-dir={}", user_data.display()),
            format!("--lang={}", options.language.as_deref().unwrap_or("en-US")),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--metrics-recording-only".to_owned(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".to_owned(),
        ];
        if !options.trust_certificates.is_empty() {
            let pins: Vec<String> = options
                .trust_certificates
                .iter()
                .map(|pem| spki_sha256_base64(pem))
                .collect();
            // Trusts exactly these keys despite their unknown issuer; nothing else.
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                pins.join(",")
            ));
        }
        let mut prefs = serde_json::Map::new();
        if let Some(lang) = &options.language {
            prefs.insert("intl.accept_languages".into(), json!(lang));
        }
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args, "prefs": prefs }),
        );
        // Leave dialogs open: a test looks for them (an alert means a script ran).
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        caps.insert("pageLoadStrategy".into(), json!("normal"));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://{addr}");
        let client = match tokio::time::timeout(
            DRIVER_START,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "chromedriver did not open a Chromium session: {e}: {}",
                browser.driver_log_tail()
            ),
            Err(_) => panic!(
                "no Chromium session within {DRIVER_START:?}: {}",
                browser.driver_log_tail()
            ),
        };
        bounded(
            "set timeouts",
            client.update_timeouts(TimeoutConfiguration::new(
                Some(COMMAND_TIMEOUT),
                Some(COMMAND_TIMEOUT),
                Some(Duration::ZERO),
            )),
        )
        .await;
        browser.client = Some(client);
        // Before any page's own script: record CSP violations and the event streams a page
        // opens, so tests can assert on both.
        browser
            .devtools(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": PAGE_PROBE }),
            )
            .await;
        // `--window-size` sizes the window; the pages are to be seen at exactly DESKTOP.
        browser.viewport(DESKTOP).await;
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    fn driver_log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.close()).await;
        }
        // Drop kills whatever is left.
    }

    /// Runs a command of Chromium's DevTools protocol (through chromedriver).
    pub async fn devtools(&self, cmd: &'static str, params: Json) -> Json {
        bounded(
            &format!("DevTools {cmd}"),
            self.client().issue_cmd(DevTools { cmd, params }),
        )
        .await
    }

    /// Content-Security-Policy violations on the current page so far (directive, blocked URI,
    /// sample), as the page's `securitypolicyviolation` events reported them.
    pub async fn csp_violations(&self) -> Vec<String> {
        let v = self
            .eval("return (window.__commscan_probe || { csp: [] }).csp")
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Waits until the page has an open `EventSource` (its response headers arrived).
    pub async fn wait_for_event_stream(&self) {
        self.wait_for("the page's event stream to open", || async {
            let open = self
                .eval(
                    "return (window.__commscan_probe || { streams: [] }).streams\
                     .some(s => s.readyState === 1)",
                )
                .await;
            (open == Json::Bool(true)).then_some(())
        })
        .await;
    }

    /// Opens `url` and waits for the page's load event.
    pub async fn goto(&self, url: &str) {
        bounded(&format!("load {url}"), self.client().goto(url)).await;
    }

    /// Opens `url`; `Err` with the browser's reason when it cannot (a refused certificate).
    pub async fn try_goto(&self, url: &str) -> Result<(), String> {
        bounded_result(self.client().goto(url))
            .await
            .map_err(|e| e.to_string())
    }

    /// The URL shown in the address bar.
    pub async fn url(&self) -> String {
        bounded("current url", self.client().current_url())
            .await
            .to_string()
    }

    /// The URL's path (`/fleet`), without query.
    pub async fn path(&self) -> String {
        bounded("current url", self.client().current_url())
            .await
            .path()
            .to_owned()
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches `{css}` on {} within {WAIT:?}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first element matching `css` now, if any (no waiting).
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        match bounded_result(self.client().find(Locator::Css(css))).await {
            Ok(e) => Some(e),
            Err(e) if is_no_such_element(&e) => None,
            Err(e) => panic!("find `{css}`: {e}"),
        }
    }

    /// Every element matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        bounded(
            &format!("find all `{css}`"),
            self.client().find_all(Locator::Css(css)),
        )
        .await
    }

    /// The rendered text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        bounded(&format!("text of `{css}`"), e.text()).await
    }

    /// An attribute of the first element matching `css` (waiting for it).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css).await;
        bounded(&format!("attribute {name} of `{css}`"), e.attr(name)).await
    }

    /// Replaces the value of the input matching `css` by typing `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        bounded(&format!("clear `{css}`"), e.clear()).await;
        bounded(&format!("type into `{css}`"), e.send_keys(value)).await;
    }

    /// Chooses the option whose value is `value` in the select matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        bounded(
            &format!("select {value} in `{css}`"),
            e.select_by_value(value),
        )
        .await;
    }

    /// Clicks the element matching `css` (a link or a submit button), waiting for it first.
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        bounded(&format!("click `{css}`"), e.click()).await;
    }

    /// Clicks the element matching `button` and waits until the page at a new URL, or the
    /// same URL reloaded, shows an element matching `then`.
    pub async fn submit(&self, button: &str, then: &str) {
        // A marker on the old document: gone once the browser has navigated.
        self.eval("window.__commscan_before_submit = true; return null")
            .await;
        self.click(button).await;
        self.wait_for(&format!("navigation after clicking `{button}`"), || async {
            let gone = self
                .eval("return window.__commscan_before_submit === undefined")
                .await;
            (gone == Json::Bool(true)).then_some(())
        })
        .await;
        self.find(then).await;
    }

    /// Polls `check` until it returns `Some`, or panics after [`WAIT`] naming `what`.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body; `return` its result) in the page.
    pub async fn eval(&self, script: &str) -> Json {
        bounded("execute script", self.client().execute(script, vec![])).await
    }

    /// Runs `script` (a function body) in the page with `args` (`arguments[0]`…).
    pub async fn eval_with(&self, script: &str, args: Vec<Json>) -> Json {
        bounded("execute script", self.client().execute(script, args)).await
    }

    /// The text of an open alert, confirm or prompt dialog, if one is open.
    pub async fn open_dialog(&self) -> Option<String> {
        bounded_result(self.client().get_alert_text()).await.ok()
    }

    /// Dismisses an open dialog, if any.
    pub async fn dismiss_dialog(&self) {
        let _ = bounded_result(self.client().dismiss_alert()).await;
    }

    /// Fetches `url` from inside the page (same origin: the session cookie goes with it),
    /// following redirects.
    pub async fn fetch(&self, url: &str) -> Fetched {
        let script = r#"
            const [url, done] = [arguments[0], arguments[arguments.length - 1]];
            fetch(url, { credentials: 'same-origin' })
              .then(async r => done({
                status: r.status,
                url: r.url,
                headers: Array.from(r.headers.entries()),
                body: await r.text(),
              }))
              .catch(e => done({ error: String(e) }));
        "#;
        let v = bounded(
            &format!("fetch {url}"),
            self.client().execute_async(script, vec![json!(url)]),
        )
        .await;
        if let Some(e) = v.get("error") {
            panic!("fetch {url} failed in the page: {e}");
        }
        Fetched {
            status: v["status"].as_u64().expect("status") as u16,
            url: v["url"].as_str().unwrap_or_default().to_owned(),
            headers: v["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
                .collect(),
            body: v["body"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// The value of a cookie the browser holds for the current page, if any.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        bounded_result(self.client().get_named_cookie(name))
            .await
            .ok()
            .map(|c| c.value().to_owned())
    }

    /// Saves a PNG of the viewport as `{name}.png` in the screenshots folder; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = bounded("screenshot", self.client().screenshot()).await;
        std::fs::create_dir_all(&self.screenshots).expect("screenshots folder");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Makes the viewport (what the page lays out in, CSS pixels) exactly `width`×`height`:
    /// the window is resized, then grown by whatever the browser's own frame takes.
    pub async fn viewport(&self, (width, height): (u32, u32)) {
        let inner = || async {
            let v = self
                .eval("return [window.innerWidth, window.innerHeight]")
                .await;
            (
                v[0].as_u64().unwrap_or_default() as u32,
                v[1].as_u64().unwrap_or_default() as u32,
            )
        };
        bounded(
            "set window size",
            self.client().set_window_size(width, height),
        )
        .await;
        let (w, h) = inner().await;
        if (w, h) != (width, height) {
            bounded(
                "set window size",
                self.client().set_window_size(
                    (2 * width).saturating_sub(w).max(width),
                    (2 * height).saturating_sub(h).max(height),
                ),
            )
            .await;
        }
        self.wait_for(&format!("a {width}×{height} viewport"), || async {
            (inner().await == (width, height)).then_some(())
        })
        .await;
    }

    /// Whether the page scrolls sideways (content wider than the viewport).
    pub async fn overflows_horizontally(&self) -> bool {
        self.eval("return document.documentElement.scrollWidth > window.innerWidth")
            .await
            == Json::Bool(true)
    }

    /// Runs axe-core (WCAG 2.x A and AA rules and best practices) on the page and returns
    /// every violation.
    pub async fn axe(&self) -> Vec<AxeViolation> {
        let loaded = self
            .eval("return typeof window.axe === 'object' && typeof window.axe.run === 'function'")
            .await;
        if loaded != Json::Bool(true) {
            // Runs through the DevTools protocol, so the page's CSP does not apply to it.
            self.eval(&format!("{AXE_JS}\n;return null")).await;
        }
        let script = r#"
            const done = arguments[arguments.length - 1];
            window.axe.run(document, { resultTypes: ['violations'] })
              .then(r => done(r.violations.map(v => ({
                id: v.id,
                impact: v.impact || '',
                help: v.help,
                nodes: v.nodes.map(n => n.target.join(' ') + '  ' + n.html),
              }))))
              .catch(e => done({ error: String(e) }));
        "#;
        let v = bounded("axe.run", self.client().execute_async(script, vec![])).await;
        if let Some(e) = v.get("error") {
            panic!("axe.run failed: {e}");
        }
        v.as_array()
            .expect("violations")
            .iter()
            .map(|v| AxeViolation {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                impact: v["impact"].as_str().unwrap_or_default().to_owned(),
                help: v["help"].as_str().unwrap_or_default().to_owned(),
                nodes: v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect(),
            })
            .collect()
    }

    /// Panics listing every serious or critical axe violation on the page, naming `page`.
    /// Minor and moderate ones are printed, not failed.
    pub async fn assert_accessible(&self, page: &str) {
        let violations = self.axe().await;
        let mut report = String::new();
        for v in &violations {
            let _ = writeln!(report, "[{}] {}: {}", v.impact, v.id, v.help);
            for n in v.nodes.iter().take(5) {
                let _ = writeln!(report, "    {n}");
            }
        }
        if !violations.is_empty() {
            let _ = writeln!(std::io::stderr(), "axe on {page}:\n{report}");
        }
        assert!(
            !violations.iter().any(AxeViolation::is_serious),
            "serious or critical accessibility violations on {page}:\n{report}"
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and Chromium, which it started in its process group.
        if let Some(pid) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        drop(self.profile.take());
    }
}

/// The screenshots folder: `$COMMSCAN_SCREENSHOTS`, else `console-screenshots/` in the cargo
/// target directory this test binary was built into.
pub fn screenshots_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COMMSCAN_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test's own executable");
    // target/<profile>/deps/<test> → target/
    exe.ancestors()
        .nth(3)
        .expect("tests run from target/<profile>/deps")
        .join("console-screenshots")
}

/// The base64 of the SHA-256 of the SubjectPublicKeyInfo of the first certificate in `pem`:
/// what Chromium's `--ignore-certificate-errors-spki-list` takes.
pub fn spki_sha256_base64(pem: &str) -> String {
    use sha2::Digest;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("a PEM certificate");
    let cert = pem.parse_x509().expect("an X.509 certificate");
    let digest = sha2::Sha256::digest(cert.public_key().raw);
    base64::engine::general_purpose::STANDARD.encode(digest)
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    // Released before chromedriver binds it; nothing else on loopback races for it in tests.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn is_no_such_element(e: &fantoccini::error::CmdError) -> bool {
    matches!(e, fantoccini::error::CmdError::Standard(w)
        if w.error() == "no such element")
}

async fn bounded_result<T>(
    fut: impl Future<Output = Result<T, fantoccini::error::CmdError>>,
) -> Result<T, fantoccini::error::CmdError> {
    tokio::time::timeout(COMMAND_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("a WebDriver command took longer than {COMMAND_TIMEOUT:?}"))
}

async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = Result<T, fantoccini::error::CmdError>>,
) -> T {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {COMMAND_TIMEOUT:?}"),
    }
}
