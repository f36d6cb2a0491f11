//! Shared code of p9persist's integration tests: the deterministic simulation harness.

pub mod sim;
