//! Driver for p9persist sessions (runtime-async).
//!
//! Not written yet: this crate is a shell so the workspace builds.
