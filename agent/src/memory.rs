//! Keeping a resident agent small between scans.
//!
//! The agent spends nearly all its life waiting; what it holds then is what its allocator kept
//! from the last scan. With glibc (Linux, `target_env = "gnu"`):
//!
//! - [`limit_arenas`] caps malloc's arenas at [`ARENA_MAX`]: glibc gives threads their own
//!   arena (up to 8 per core), each keeping freed memory of its own; the agent's threads run
//!   one scan at a time, so more arenas only hold more memory.
//! - [`trim`] hands freed heap pages back to the kernel (`malloc_trim`) after a scan, whose
//!   buffers (file contents, the inventory, the report) are dropped by then.
//!
//! Elsewhere (musl, macOS, Windows) both do nothing. The figures are in BENCHMARKS.md,
//! "Agent at rest".
#![allow(unsafe_code)]

/// The most malloc arenas a glibc agent uses.
pub const ARENA_MAX: i32 = 2;

/// Caps glibc's malloc arenas at [`ARENA_MAX`]; call first thing in `main`, before threads
/// start (`MALLOC_ARENA_MAX` in the environment, if set, is what glibc read at start and this
/// overrides it).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive int.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Returns the allocator's free memory to the kernel; cheap next to the scan it follows
/// (it walks the free lists once).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim may be called at any time from any thread; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}
