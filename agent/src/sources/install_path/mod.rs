//! The `install_path` source: software found where its vendor installs it, by probing the
//! catalog's known install paths of the platform instead of walking the disk. Linux and Windows
//! differ in what a path looks like (`/opt/zoom`, `~/...` against `%LOCALAPPDATA%\Discord`) and
//! in how it is resolved (inside the root, following links the way the scanned system would,
//! against case-insensitively and never through links), so each has its own module; both report
//! under the one source name, and macOS has none (its bundles are the `macos_app` source).

pub(crate) mod linux;
pub(crate) mod windows;
