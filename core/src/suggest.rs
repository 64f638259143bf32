//! "Did you mean": the nearest known name to a mistyped one, and ids given as unambiguous
//! prefixes (as git accepts abbreviated commits). One place, so that every command that
//! refuses an unknown organisation, product, candidate or device answers the same way.

/// The known name nearest to `word`, if it is near enough to be a typo: at most a third of
/// its length apart (at least 1, at most 3 edits), case-insensitively. Never `word` itself.
pub fn nearest<'a, I>(word: &str, known: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    known
        .into_iter()
        .filter(|k| *k != word)
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, k)| k)
}

/// `unknown {what} 'word'`, with `; did you mean 'x'?` when one is near.
pub fn unknown<'a, I>(what: &str, word: &str, known: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match nearest(word, known) {
        Some(k) => format!("unknown {what} '{word}'; did you mean '{k}'?"),
        None => format!("unknown {what} '{word}'"),
    }
}

/// What an abbreviated id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix<'a> {
    /// Exactly one id starts with it (or equals it).
    One(&'a str),
    /// Several do: these, sorted.
    Ambiguous(Vec<&'a str>),
    /// None does.
    None,
}

/// Resolves `prefix` among `ids`: a whole id always wins, otherwise it must start exactly one.
pub fn resolve_prefix<'a, I>(prefix: &str, ids: I) -> Prefix<'a>
where
    I: IntoIterator<Item = &'a str>,
{
    let prefix = prefix.to_lowercase();
    let mut matches: Vec<&str> = Vec::new();
    for id in ids {
        let lower = id.to_lowercase();
        if lower == prefix {
            return Prefix::One(id);
        }
        if !prefix.is_empty() && lower.starts_with(&prefix) {
            matches.push(id);
        }
    }
    matches.sort_unstable();
    matches.dedup();
    match matches.len() {
        0 => Prefix::None,
        1 => Prefix::One(matches[0]),
        _ => Prefix::Ambiguous(matches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_suggests_the_near_name_and_a_stranger_suggests_nothing() {
        let orgs = ["acme", "globex", "initech"];
        assert_eq!(nearest("acmee", orgs), Some("acme"));
        assert_eq!(nearest("Globx", orgs), Some("globex"));
        assert_eq!(nearest("umbrella", orgs), None);
        assert_eq!(nearest("acme", orgs), None, "an exact name is no typo");
        assert_eq!(
            unknown("product", "telegramm", ["telegram", "zoom"]),
            "unknown product 'telegramm'; did you mean 'telegram'?"
        );
        assert_eq!(
            unknown("candidate", "NotThere", ["Chatty"]),
            "unknown candidate 'NotThere'"
        );
    }

    #[test]
    fn prefixes_resolve_like_git_abbreviations() {
        let ids = ["3f2a0c", "3f9b11", "a01234"];
        assert_eq!(resolve_prefix("a0", ids), Prefix::One("a01234"));
        assert_eq!(resolve_prefix("3F2", ids), Prefix::One("3f2a0c"));
        assert_eq!(
            resolve_prefix("3f", ids),
            Prefix::Ambiguous(vec!["3f2a0c", "3f9b11"])
        );
        assert_eq!(resolve_prefix("ff", ids), Prefix::None);
        assert_eq!(resolve_prefix("", ids), Prefix::None);
    }
}
