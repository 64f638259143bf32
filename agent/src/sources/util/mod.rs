//! Helpers the sources share; none of them is a source. Each bounds the work a hostile or
//! damaged tree can cause, and each reads only the scanned tree, never the host's files:
//!
//! | module | what it does |
//! |---|---|
//! | [`fs`] | directory walks that never follow symlinks and stop at a depth and entry budget; capped file reads |
//! | [`rooted`] | a path of the scanned system resolved inside the root, following links as that system would |
//! | [`winpath`] | a path of a Windows system resolved case-insensitively, never through links |
//! | [`users`] | the users' home directories of the scanned system, from its own files |
//! | [`text`] | lines and fields read with bounded length |
//! | [`outcome`] | how a source words `absent` and `failed: ...`, naming files without user names |
//! | [`hive`] | a reader of offline Windows registry hive files |

pub(crate) mod fs;
pub(crate) mod hive;
pub(crate) mod outcome;
pub(crate) mod rooted;
pub(crate) mod text;
pub(crate) mod users;
pub(crate) mod winpath;
