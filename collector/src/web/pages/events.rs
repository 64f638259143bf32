//! Verdict changes as server-sent events (`/events`), from the same channel and with the same
//! authorisation as `WatchEvents`: only organisations the reader may see device rows of. At
//! most [`super::super::MAX_EVENT_STREAMS`] at once; a comment every 25 s keeps proxies from
//! closing an idle stream; a stream that falls behind is told (`event: lagged`) and goes on.

use super::super::Web;
use super::{Ctx, page};
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const KEEPALIVE: Duration = Duration::from_secs(25);

pub async fn events(axum::extract::State(web): axum::extract::State<Web>, ctx: Ctx) -> Response {
    let Ok(slot) = web.event_streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open event streams",
        )
            .into_response();
    };
    let who = ctx.signed.who.clone();
    let allowed = match web.blocking(move |c| c.watch(&who, None)).await {
        Ok(a) => a,
        Err(e) => return page::error(ctx.lang, e),
    };
    let mut rx = web.collector.subscribe_events();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_owned(),
                e = rx.recv() => match e {
                    Ok(e) if allowed.covers(&e.organisation) => {
                        let data = serde_json::json!({
                            "device_id": e.device_id,
                            "organisation": e.organisation,
                            "hostname": e.hostname,
                            "from": e.from.as_str(),
                            "to": e.to.as_str(),
                            "at": e.at.unix_timestamp(),
                        });
                        format!("event: verdict\ndata: {data}\n\n")
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {n}\n\n"),
                    Err(RecvError::Closed) => return,
                },
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out)),
    )
        .into_response()
}
