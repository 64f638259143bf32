//! The web console's server time per page at fleet size (100,000 devices in 50 organisations;
//! `COMMSCAN_BENCH_DEVICES` for another size): the fleet, an organisation, the first page of its
//! noncompliant devices, and a device, each rendered through the console's router (session
//! lookup, authorisation, store reads, HTML) without TLS or a network; plus each page's weight
//! with the stylesheet and script it loads, as a first visit downloads them. Prints figures;
//! asserts nothing. Run: `cargo bench -p commscan-collector --bench console`.

mod fleet;

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use tower::ServiceExt;

async fn get(app: &axum::Router, path: &str, cookie: &str) -> (u16, usize) {
    let r = app
        .clone()
        .oneshot(
            Request::get(path)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, body.len())
}

fn quantiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("COMMSCAN_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (collector, token, _layout) =
        tokio::task::spawn_blocking(move || fleet::load(dir.path(), n))
            .await
            .unwrap();
    println!(
        "console: {n} devices loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let app = commscan_collector::web::router(collector);
    let signed = app
        .clone()
        .oneshot(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={token}")))
                .unwrap(),
        )
        .await
        .unwrap();
    let cookie = signed.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (_, css) = get(&app, "/static/app.css", &cookie).await;
    let (_, js) = get(&app, "/static/app.js", &cookie).await;
    let pages = [
        ("fleet", "/fleet".to_owned()),
        ("organisation", "/org/org-7".to_owned()),
        (
            "first page of noncompliant devices",
            "/org/org-7?status=noncompliant".to_owned(),
        ),
        ("device", format!("/device/{}", fleet::device_id(n / 2))),
    ];
    println!("| page | server time median | p99 | HTML | with CSS and JS |");
    println!("|---|---|---|---|---|");
    for (name, path) in &pages {
        let (status, bytes) = get(&app, path, &cookie).await;
        assert_eq!(status, 200, "{path}");
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            std::hint::black_box(get(&app, path, &cookie).await);
            times.push(t.elapsed());
        }
        let (p50, p99) = quantiles(times);
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.1} KB | {:.1} KB |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            bytes as f64 / 1024.0,
            (bytes + css + js) as f64 / 1024.0
        );
    }
}
