//! Console sessions: a person signs in with their bearer token (or a one-time link an
//! administrator made with `commscanctl people login NAME`) and gets a session cookie.
//!
//! - The cookie (`__Host-commscan`: HttpOnly, Secure, SameSite=Strict, Path=/, no Domain)
//!   holds a random secret; the store keeps only its SHA-256 ([`crate::store::SessionStore`]),
//!   so every collector sharing the store knows the session and a sign-out anywhere ends it
//!   everywhere.
//! - A session ends after [`IDLE`] without a request, [`ABSOLUTE`] after sign-in whatever
//!   happens, at sign-out, and the moment its person's token is revoked or expires: every
//!   request re-reads the person ([`Collector::authenticate_hash`]), as every gRPC call does.
//! - Each session has a CSRF token, sent in every form and compared in constant time.
//! - A login link is a session-to-be stored the same way, used once (removed when used; of
//!   two collectors racing, one wins) within [`LINK_LIFETIME`].
//!
//! Sign-ins, sign-outs, links made and used are audited; refusals go to the audit log's
//! refusal counts like every other denial.

use crate::auth::{Access, DecisionMark, Principal};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::secrets;
use crate::store::SessionRecord;
use std::time::Duration;

/// The session cookie's name (`__Host-`: the browser refuses it without Secure and Path=/,
/// or with a Domain).
pub const COOKIE: &str = "__Host-commscan";
/// A session unused for this long has ended.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// A login link not used within this is void.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// `last_seen` is written at most this often (a page view is not a store write each time).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A signed-in request's session.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who.
    pub who: Principal,
    /// The session's CSRF token.
    pub csrf: String,
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Collector {
    /// Signs in with a bearer token: a new session's cookie secret.
    pub(crate) fn open_session(&self, bearer: &str) -> Result<(String, Signed), CollectorError> {
        let who = self.authenticate(Some(bearer), DecisionMark::default())?;
        self.new_session(secrets::hash(bearer), who, "console.sign_in")
    }

    fn new_session(
        &self,
        person: String,
        who: Principal,
        action: &str,
    ) -> Result<(String, Signed), CollectorError> {
        let secret = secrets::generate("css");
        let now = self.now();
        let record = SessionRecord {
            person,
            link: false,
            created_at: now,
            last_seen: now,
            csrf: secrets::generate("csrf"),
        };
        self.store().put_session(&secrets::hash(&secret), &record)?;
        self.audit(&who.actor(), action, None, true, "console session opened");
        Ok((
            secret,
            Signed {
                who,
                csrf: record.csrf,
            },
        ))
    }

    /// The session a cookie names, if it is alive and its person still may sign in.
    pub(crate) fn session(&self, secret: &str) -> Result<Signed, CollectorError> {
        let ended = || CollectorError::Unauthenticated("the console session has ended".into());
        let hash = secrets::hash(secret);
        let mut record = match self.store().session(&hash)? {
            Some(r) if !r.link => r,
            _ => return Err(ended()),
        };
        let now = self.now();
        if now - record.last_seen > IDLE || now - record.created_at > ABSOLUTE {
            self.store().remove_session(&hash)?;
            return Err(ended());
        }
        // Revoked or expired tokens end their sessions at the next request.
        let who = match self.authenticate_hash(&record.person, DecisionMark::default()) {
            Ok(who) => who,
            Err(e) => {
                self.store().remove_session(&hash)?;
                return Err(e);
            }
        };
        if now - record.last_seen > TOUCH_EVERY {
            record.last_seen = now;
            self.store().put_session(&hash, &record)?;
        }
        Ok(Signed {
            who,
            csrf: record.csrf,
        })
    }

    /// Signs out: the session is removed from the store.
    pub(crate) fn close_session(
        &self,
        secret: &str,
        who: &Principal,
    ) -> Result<(), CollectorError> {
        self.store().remove_session(&secrets::hash(secret))?;
        self.audit(
            &who.actor(),
            "console.sign_out",
            None,
            true,
            "console session closed",
        );
        Ok(())
    }

    /// A one-time link for person `person_id` (admins only); the code to put in the link.
    pub fn create_login_link(
        &self,
        who: &Principal,
        person_id: &str,
    ) -> Result<(String, String), CollectorError> {
        self.check(who, Access::ManagePeople, None, "people.login_link")?;
        let (hash, person) = self
            .store()
            .people()?
            .into_iter()
            .find(|(h, _)| crate::admin::token_id(h) == person_id)
            .ok_or_else(|| CollectorError::NotFound(format!("no person '{person_id}'")))?;
        if let Some(why) = person.refused(self.now()) {
            return Err(CollectorError::FailedPrecondition(format!(
                "{}: {why}",
                person.name
            )));
        }
        let code = secrets::generate("csl");
        let now = self.now();
        let name = person.name.clone();
        self.audited(
            who,
            "people.login_link",
            None,
            format!(
                "one-time console link for {}",
                crate::auth::person_actor(&name, person_id)
            ),
            || {
                Ok(self.store().put_session(
                    &secrets::hash(&code),
                    &SessionRecord {
                        person: hash,
                        link: true,
                        created_at: now,
                        last_seen: now,
                        csrf: String::new(),
                    },
                )?)
            },
        )?;
        Ok((code, name))
    }

    /// Uses a login link: once, within its lifetime; a new session's cookie secret.
    pub(crate) fn use_login_link(&self, code: &str) -> Result<(String, Signed), CollectorError> {
        let void = || {
            self.audit(
                "anonymous",
                "console.link",
                None,
                false,
                "unknown, used or expired login link",
            );
            CollectorError::Unauthenticated("this sign-in link was used or has expired".into())
        };
        let hash = secrets::hash(code);
        let record = match self.store().session(&hash)? {
            Some(r) if r.link => r,
            _ => return Err(void()),
        };
        if !self.store().remove_session(&hash)? || self.now() - record.created_at > LINK_LIFETIME {
            return Err(void());
        }
        let who = self.authenticate_hash(&record.person, DecisionMark::default())?;
        self.new_session(record.person, who, "console.sign_in_link")
    }

    /// Removes sessions and links idle past [`IDLE`] (the collector's background work).
    pub fn prune_sessions(&self) -> Result<u64, CollectorError> {
        Ok(self.store().prune_sessions(self.now() - IDLE)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
