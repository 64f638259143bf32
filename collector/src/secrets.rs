//! Bearer and enrolment secrets: generated from the OS random source, shown once, stored
//! only as SHA-256 hashes.

use sha2::{Digest, Sha256};

/// A new secret with a readable prefix, e.g. `cse_…` for enrolment tokens.
pub(crate) fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The hash under which a secret is stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_hashes_stable() {
        let a = generate("cse");
        assert!(a.starts_with("cse_") && a.len() == 68);
        assert_ne!(a, generate("cse"));
        assert_eq!(hash(&a), hash(&format!("{a}\n")));
        assert_ne!(hash(&a), a);
    }
}
