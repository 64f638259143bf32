//! What the collector sends on a `Reporting.Connect` stream: the pump's replies (welcome,
//! acks, throttles, errors) merged with announcements pushed to every connected agent.
//!
//! The stream ends when the pump's channel ends: announcements never keep a finished stream
//! open. Replies are polled first, so the welcome always precedes an announcement. An
//! announcement costs a stream nothing until it fires (a `watch` subscription, no task, no
//! queue); see [`crate::connections`] for why announcements are a state rather than events.

use crate::collector::Collector;
use commscan_proto::v1::{self, CollectorMessage, collector_message};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};

/// The outbound half of one agent's stream.
pub struct Outbound {
    replies: ReceiverStream<Result<CollectorMessage, tonic::Status>>,
    policy_changes: WatchStream<u64>,
    collector: Arc<Collector>,
    organisation: String,
}

impl Outbound {
    /// Merges `replies` with the policy changes announced after `policy_changes` was taken
    /// (take it when the stream is registered, so no reload falls between the two).
    pub fn new(
        replies: mpsc::Receiver<Result<CollectorMessage, tonic::Status>>,
        policy_changes: watch::Receiver<u64>,
        collector: Arc<Collector>,
        organisation: String,
    ) -> Outbound {
        Outbound {
            replies: ReceiverStream::new(replies),
            policy_changes: WatchStream::from_changes(policy_changes),
            collector,
            organisation,
        }
    }

    fn policy_changed(&self) -> CollectorMessage {
        let rules = self.collector.rules();
        CollectorMessage {
            kind: Some(collector_message::Kind::PolicyChanged(v1::PolicyChanged {
                policy_id: rules.policy_for(&self.organisation).id.clone(),
            })),
        }
    }
}

impl Stream for Outbound {
    type Item = Result<CollectorMessage, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Poll::Ready(reply) = Pin::new(&mut this.replies).poll_next(cx) {
            // `None`: the pump is done, and so is the stream.
            return Poll::Ready(reply);
        }
        match Pin::new(&mut this.policy_changes).poll_next(cx) {
            Poll::Ready(Some(_generation)) => Poll::Ready(Some(Ok(this.policy_changed()))),
            // No announcer left (the collector is shutting down): replies only.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}
