//! The open-files limit: every agent's stream holds one socket, so the collector raises its
//! soft `RLIMIT_NOFILE` to the hard limit at start (the usual soft default, 1024, would cap it
//! at about a thousand agents). The hard limit is the administrator's to raise (systemd's
//! `LimitNOFILE=`); [`crate::server::Limits::max_connections`] should stay below it, leaving
//! room for the store's files and queries.

/// The open-files limits after raising the soft one as far as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now in force; `None` means unlimited.
    pub soft: Option<u64>,
    /// The hard limit; `None` means unlimited.
    pub hard: Option<u64>,
}

/// Raises the soft open-files limit to the hard limit and returns both.
pub fn raise_to_hard_limit() -> std::io::Result<OpenFiles> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(OpenFiles {
        soft: limit.current,
        hard: limit.maximum,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let l = super::raise_to_hard_limit().unwrap();
        assert_eq!(l.soft, l.hard);
    }
}
