//! Shared helpers for p9persist's integration tests and simulation harness.
