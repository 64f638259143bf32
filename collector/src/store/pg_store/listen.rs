//! Notifications between collectors sharing the database (LISTEN/NOTIFY).
//!
//! One connection of its own (not pooled: a pooled connection is handed to other work between
//! uses, and LISTEN belongs to a session) listens on every [`Channel`], and forwards each
//! notification to a broadcast channel the collector subscribes to ([`crate::store::Notices`]).
//! When that connection is lost it is made again (after 1 s, then up to 10 s between tries),
//! and a [`Notice::Resync`] tells subscribers that notifications may have been missed
//! meanwhile, so they re-read what they follow (the rules in force) instead of trusting that
//! nothing happened. Verdict events missed during the gap are gone: watchers are told they
//! lagged.
//!
//! Sending is `pg_notify` on a pooled connection, or inside a transaction, where PostgreSQL
//! delivers it when (and only if) the transaction commits.

use crate::store::{Channel, Notice};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

/// Notifications kept for a subscriber that is behind before it misses some.
pub const NOTICE_BUFFER: usize = 1024;

/// The first wait before reconnecting, and the longest.
const RECONNECT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(10));

/// Listens on every channel for as long as the runtime runs, forwarding to `out`.
pub async fn run<T>(config: tokio_postgres::Config, tls: T, out: broadcast::Sender<Notice>)
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + 'static,
    T::Stream: Send + 'static,
{
    let mut wait = RECONNECT.0;
    let mut first = true;
    loop {
        match listen_once(&config, tls.clone(), &out, &mut first).await {
            Ok(()) => tracing::warn!("database notifications: connection closed; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %e, "database notifications: connection lost; reconnecting")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT.1);
    }
}

async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    out: &broadcast::Sender<Notice>,
    first: &mut bool,
) -> Result<(), tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the client's requests to be answered; its
    // notifications come out of the same poll.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listen: String = Channel::ALL
        .iter()
        .map(|c| format!("LISTEN {};", c.name()))
        .collect();
    client.batch_execute(&listen).await?;
    if !std::mem::take(first) {
        // Whatever was announced while we were away is lost; subscribers re-read.
        let _ = out.send(Notice::Resync);
    }
    tracing::info!("database notifications: listening");
    while let Some(n) = rx.recv().await {
        let Some(channel) = Channel::ALL.iter().find(|c| c.name() == n.channel()) else {
            continue;
        };
        // Nobody subscribed is fine.
        let _ = out.send(Notice::Message {
            channel: *channel,
            payload: n.payload().to_owned(),
        });
    }
    drop(client);
    match driver.await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
