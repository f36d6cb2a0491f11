//! Shared code of p9persist's integration tests: the deterministic simulation harness, the
//! drive layer's fuzz property, and a scripted hostile server.

pub mod drive_fuzz;
pub mod history;
pub mod hostile;
pub mod servers;
pub mod sim;
