//! The p9persist session state machine: keeps a 9P session alive across server restarts.
//!
//! Not written yet: this crate is a shell so the workspace builds (see issue "persist-core").
#![no_std]
