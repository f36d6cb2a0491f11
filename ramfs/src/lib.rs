//! A sans-IO in-memory 9P file server for 9P2000, 9P2000.u and 9P2000.L.
//!
//! Not written yet: this crate is a shell so the workspace builds.
#![no_std]
