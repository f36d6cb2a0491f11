//! Driver for p9persist sessions (runtime-std).
//!
//! Not written yet: this crate is a shell so the workspace builds.
