//! What the collector sends on a `Reporting.Connect` stream: the pump's replies (welcome,
//! acks, throttles, errors) merged with announcements pushed to every connected agent.
//!
//! The stream ends when the pump's channel ends: announcements never keep a finished stream
//! open. Replies are polled first, so the welcome always precedes an announcement. An
//! announcement costs a stream nothing until it fires (a `watch` subscription, no task, no
//! queue); see [`crate::connections`] for why announcements are a state rather than events.
//!
//! Signed catalogs ride the same path. Once the welcome is out, and again after every rules
//! announcement (applying a catalog is one), the stream compares the signed catalog in force
//! ([`crate::compliance::Rules::signed_catalog`]) with the release the agent stated in its
//! hello and sends a `CatalogUpdate` when it is newer, not the release the agent last
//! refused, and not already sent on this stream. The bytes are the administrator's, unchanged:
//! the collector signs nothing, the agent verifies.
//!
//! The organisation's candidate decisions ([`crate::mappings`]) follow the same pattern: after
//! the welcome and after every announcement (a decision changed anywhere), the stream compares
//! its organisation's cached decisions with the digest the agent stated (or the set last sent)
//! and sends the whole set when they differ. Only agents that stated a digest are sent one.

use crate::collector::Collector;
use crate::connections::Announced;
use commscan_core::mappings::CandidateMappings;
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
    policy_changes: WatchStream<Announced>,
    /// The rules generation last seen: an announcement with another one is a policy change.
    rules_seen: u64,
    collector: Arc<Collector>,
    organisation: String,
    catalog: CatalogOffer,
    /// The digest of the candidate decisions the agent holds (stated in its hello, then the
    /// set last sent); `None`: it predates them and is never sent any.
    mappings_held: Option<[u8; 32]>,
    /// Compare the decisions at the next poll.
    mappings_due: bool,
}

/// What this stream knows of its agent's catalog.
#[derive(Default)]
struct CatalogOffer {
    device: String,
    /// The release the agent stated in its hello.
    agent_release: u64,
    /// The release it last refused (hello); never offered again on this stream.
    refused_release: u64,
    /// The highest release sent on this stream.
    sent: u64,
    /// A reply went out (the welcome): announcements may follow.
    welcomed: bool,
    /// Compare with the catalog in force at the next poll.
    due: bool,
    /// The agent stated its catalog, so it understands catalog updates.
    stated: bool,
}

impl Outbound {
    /// Merges `replies` with the policy changes announced after `policy_changes` was taken
    /// (take it when the stream is registered, so no reload falls between the two), and
    /// `rules_seen`, the rules generation it held when taken
    /// ([`crate::connections::Connections::policy_changes`] returns both).
    pub fn new(
        replies: mpsc::Receiver<Result<CollectorMessage, tonic::Status>>,
        (policy_changes, rules_seen): (watch::Receiver<Announced>, u64),
        collector: Arc<Collector>,
        organisation: String,
    ) -> Outbound {
        Outbound {
            replies: ReceiverStream::new(replies),
            policy_changes: WatchStream::from_changes(policy_changes),
            rules_seen,
            collector,
            organisation,
            catalog: CatalogOffer::default(),
            mappings_held: None,
            mappings_due: false,
        }
    }

    /// Sets the digest of the candidate decisions the agent stated in its hello (32 bytes);
    /// anything else (an agent predating them) means it is never sent any.
    pub fn with_agent_mappings(mut self, stated: &[u8]) -> Outbound {
        self.mappings_held = <[u8; 32]>::try_from(stated).ok();
        self.mappings_due = self.mappings_held.is_some();
        self
    }

    /// The organisation's candidate decisions when they differ from what the agent holds.
    fn mappings_update(&mut self) -> Option<CollectorMessage> {
        let held = self.mappings_held?;
        let served = self.collector.mappings().get(&self.organisation)?;
        if served.digest == held {
            return None;
        }
        self.mappings_held = Some(served.digest);
        tracing::info!(device = %self.catalog.device, organisation = %self.organisation, decisions = served.mappings.len(), "candidate decisions sent");
        Some(CollectorMessage {
            kind: Some(collector_message::Kind::CandidateMappings(to_wire(
                &served.mappings,
            ))),
        })
    }

    /// Sets what the agent stated about its catalog (hello): the release it uses and the one
    /// it last refused. `None`: an agent predating signed catalogs, which would take the
    /// unknown message for the end of the stream and reconnect, forever; it is never offered
    /// one.
    pub fn with_agent_catalog(mut self, device: String, stated: Option<(u64, u64)>) -> Outbound {
        self.catalog.device = device;
        match stated {
            Some((release, refused)) => {
                self.catalog.stated = true;
                self.catalog.agent_release = release;
                self.catalog.refused_release = refused;
            }
            None => self.catalog.stated = false,
        }
        self.catalog.due = self.catalog.stated;
        self
    }

    /// A `CatalogUpdate` when the signed catalog in force is newer than what the agent has, was
    /// not refused by it, and was not sent on this stream yet.
    fn catalog_update(&mut self) -> Option<CollectorMessage> {
        let rules = self.collector.rules();
        let served = rules.signed_catalog.as_ref()?;
        let c = &mut self.catalog;
        if served.release <= c.agent_release.max(c.sent) || served.release == c.refused_release {
            return None;
        }
        c.sent = served.release;
        tracing::info!(device = %c.device, release = served.release, had = c.agent_release, bytes = served.bytes.len(), "signed catalog sent");
        Some(CollectorMessage {
            kind: Some(collector_message::Kind::CatalogUpdate(v1::CatalogUpdate {
                signed_catalog: served.bytes.clone(),
                release: served.release,
            })),
        })
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
            this.catalog.welcomed |= matches!(reply, Some(Ok(_)));
            // `None`: the pump is done, and so is the stream.
            return Poll::Ready(reply);
        }
        if this.catalog.welcomed && this.catalog.due {
            this.catalog.due = false;
            if let Some(update) = this.catalog_update() {
                return Poll::Ready(Some(Ok(update)));
            }
        }
        if this.catalog.welcomed && this.mappings_due {
            this.mappings_due = false;
            if let Some(update) = this.mappings_update() {
                return Poll::Ready(Some(Ok(update)));
            }
        }
        loop {
            match Pin::new(&mut this.policy_changes).poll_next(cx) {
                Poll::Ready(Some(announced)) => {
                    if announced.rules == this.rules_seen {
                        // Only some organisation's decisions changed: compared now, or after
                        // the welcome.
                        if !this.catalog.welcomed {
                            this.mappings_due = this.mappings_held.is_some();
                        } else if let Some(update) = this.mappings_update() {
                            return Poll::Ready(Some(Ok(update)));
                        }
                        continue;
                    }
                    this.mappings_due = this.mappings_held.is_some();
                    this.rules_seen = announced.rules;
                    // The rules changed: the catalog may have too; compared at the next poll.
                    this.catalog.due = this.catalog.stated;
                    return Poll::Ready(Some(Ok(this.policy_changed())));
                }
                // No announcer left (the collector is shutting down): replies only.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The decisions as the wire carries them.
fn to_wire(m: &CandidateMappings) -> v1::CandidateMappings {
    v1::CandidateMappings {
        mappings: m
            .pairs()
            .map(|(name, product)| v1::CandidateMapping {
                name: name.to_owned(),
                product: product.to_owned(),
            })
            .collect(),
    }
}
