//! Shared code of p9persist's integration tests: the deterministic simulation harness and the
//! drive layer's fuzz property.

pub mod drive_fuzz;
pub mod sim;
