//! Alerts: what happened, as every sink sends it. A verdict change becomes a `verdict_changed`
//! alert, or `device_stale` when the device went stale; an enterprise whose figures went
//! stale on a ministry becomes `enterprise_stale`. Each alert gets a random id when it is
//! raised; that id travels with it through the outbox and is the receivers' idempotency key.

use crate::events::VerdictEvent;
use commscan_core::verdict::Status;
use time::OffsetDateTime;

/// Kinds of alert.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A device's verdict changed (to anything but stale).
    VerdictChanged,
    /// A device missed its reporting window.
    DeviceStale,
    /// An enterprise collector stopped pushing to this ministry collector.
    EnterpriseStale,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 3] = [
        AlertKind::VerdictChanged,
        AlertKind::DeviceStale,
        AlertKind::EnterpriseStale,
    ];

    /// The kind's name (also the syslog MSGID).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::VerdictChanged => "verdict_changed",
            AlertKind::DeviceStale => "device_stale",
            AlertKind::EnterpriseStale => "enterprise_stale",
        }
    }
}

impl std::str::FromStr for AlertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AlertKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not an alert kind (verdict_changed, device_stale, enterprise_stale)"
                )
            })
    }
}

/// A device whose verdict changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceChange {
    /// Its id.
    pub device_id: String,
    /// Its host name, as the agent reported it.
    pub hostname: String,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// Products behind the new status.
    pub products: Vec<String>,
}

/// An enterprise that stopped pushing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnterpriseStale {
    /// Its id.
    pub enterprise: String,
    /// When its last push arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub last_push: OffsetDateTime,
}

/// One alert: the JSON body of a webhook, the content of a syslog message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// Unique per alert, the same in every attempt and every sink: the idempotency key.
    pub id: String,
    /// What happened.
    pub kind: AlertKind,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The organisations concerned (one for a device; an enterprise's, for an enterprise).
    pub organisations: Vec<String>,
    /// For device alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceChange>,
    /// For enterprise alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<EnterpriseStale>,
}

/// A fresh random id (UUID v4).
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Alert {
    /// The alert of a verdict change.
    pub fn of_verdict(event: &VerdictEvent) -> Alert {
        Alert {
            id: new_id(),
            kind: if event.to == Status::Stale {
                AlertKind::DeviceStale
            } else {
                AlertKind::VerdictChanged
            },
            at: event.at,
            organisations: vec![event.organisation.clone()],
            device: Some(DeviceChange {
                device_id: event.device_id.clone(),
                hostname: event.hostname.clone(),
                from: event.from,
                to: event.to,
                products: event.products.clone(),
            }),
            enterprise: None,
        }
    }

    /// The alert of `enterprise` (reporting `organisations`) gone stale, detected at `at`.
    pub fn of_stale_enterprise(
        enterprise: &str,
        organisations: Vec<String>,
        last_push: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Alert {
        Alert {
            id: new_id(),
            kind: AlertKind::EnterpriseStale,
            at,
            organisations,
            device: None,
            enterprise: Some(EnterpriseStale {
                enterprise: enterprise.to_owned(),
                last_push,
            }),
        }
    }

    /// A one-line human summary (control characters are the caller's to strip).
    pub fn summary(&self) -> String {
        match (&self.device, &self.enterprise) {
            (Some(d), _) => {
                let mut s = format!(
                    "device {} ({}) of {}: {} -> {}",
                    d.hostname,
                    d.device_id,
                    self.organisations.join(","),
                    d.from.as_str(),
                    d.to.as_str()
                );
                if !d.products.is_empty() {
                    s.push_str(&format!(" ({})", d.products.join(", ")));
                }
                s
            }
            (None, Some(e)) => format!(
                "enterprise {} ({}) has not pushed since {}",
                e.enterprise,
                self.organisations.join(","),
                e.last_push
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
            (None, None) => self.kind.as_str().to_owned(),
        }
    }

    /// The syslog severity (RFC 5424 §6.2.1): warning for what needs a look, notice else.
    pub fn severity(&self) -> u8 {
        let warning = match (&self.kind, &self.device) {
            (AlertKind::EnterpriseStale | AlertKind::DeviceStale, _) => true,
            (_, Some(d)) => d.to == Status::Noncompliant,
            _ => false,
        };
        if warning { 4 } else { 5 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(to: Status) -> VerdictEvent {
        VerdictEvent {
            at: OffsetDateTime::UNIX_EPOCH,
            device_id: "d1".into(),
            organisation: "acme".into(),
            hostname: "pc-1".into(),
            from: Status::Compliant,
            to,
            products: vec!["zoom".into()],
        }
    }

    #[test]
    fn a_device_going_stale_is_its_own_kind_and_every_alert_has_its_own_id() {
        let a = Alert::of_verdict(&verdict(Status::Noncompliant));
        let b = Alert::of_verdict(&verdict(Status::Stale));
        assert_eq!(a.kind, AlertKind::VerdictChanged);
        assert_eq!(b.kind, AlertKind::DeviceStale);
        assert_ne!(a.id, b.id);
        assert_eq!(a.severity(), 4);
        let json: Alert = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(json, a);
    }
}
