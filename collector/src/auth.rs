//! People: bearer tokens resolved to principals, and the one authorisation function every
//! query passes through.
//!
//! Bearer tokens are stored as SHA-256 hashes ([`crate::secrets`]). Today there is one role,
//! `admin`; the [`authorize`] seam is where scoped roles (officer, analyst, auditor) plug in.

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::secrets;
use crate::store::records::Role;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Their name.
    pub name: String,
    /// Their role.
    pub role: Role,
}

/// What is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Device rows and details.
    ReadDevices,
    /// Aggregates.
    ReadSummaries,
}

/// Decides whether `who` may perform `access` on `organisation` (all organisations if `None`).
pub fn authorize(
    who: &Principal,
    access: Access,
    organisation: Option<&str>,
) -> Result<(), CollectorError> {
    match who.role {
        Role::Admin => {
            tracing::debug!(principal = %who.name, ?access, organisation = organisation.unwrap_or("*"), "allowed");
            Ok(())
        }
    }
}

impl Collector {
    /// Resolves a bearer token to a principal.
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, CollectorError> {
        let token = bearer.ok_or_else(|| {
            CollectorError::Unauthenticated("missing `authorization: Bearer <token>`".into())
        })?;
        let person = self
            .store
            .person(&secrets::hash(token))?
            .ok_or_else(|| CollectorError::Unauthenticated("unknown bearer token".into()))?;
        Ok(Principal {
            name: person.name,
            role: person.role,
        })
    }
}
