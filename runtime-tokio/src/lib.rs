//! Driver for p9persist sessions (runtime-tokio).
//!
//! Not written yet: this crate is a shell so the workspace builds.
