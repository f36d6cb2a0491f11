//! The process's allocator, set for a proxy's traffic. A proxy reads each large frame (a 1 MiB
//! Twrite or Rread) into a buffer of its own, holds it while it is in flight or kept for the
//! replay, then frees it. With glibc's defaults those buffers come from fresh memory and go back
//! to the kernel when freed (mmap and munmap, or a heap trimmed and grown again): every frame
//! pays a page fault per 4 KiB and the kernel zeroing the page. Raising the mmap and trim
//! thresholds lets freed frame buffers be reused instead, at the cost of keeping up to
//! [`TRIM_THRESHOLD`] of freed memory per allocator arena.

/// Allocations up to this size come from the heap (frames of msizes up to it).
pub const MMAP_THRESHOLD: usize = 4 << 20;
/// Free memory kept at the top of a heap before it is given back to the kernel.
pub const TRIM_THRESHOLD: usize = 16 << 20;

/// Set the allocator for a proxy process, before its threads start. Returns false when it left
/// the allocator as it was: not glibc, or the operator tuned it (`GLIBC_TUNABLES` naming
/// malloc settings, or `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_`), which wins.
pub fn tune_for_frames() -> bool {
    let operator = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc"))
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
    !operator && set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> bool {
    // SAFETY: mallopt only changes glibc's allocator parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// glibc takes both thresholds, unless the environment already tunes malloc, which must be
    /// left alone (run under `GLIBC_TUNABLES=glibc.malloc.trim_threshold=…` it checks that).
    #[test]
    fn glibc_takes_the_thresholds_unless_the_operator_set_them() {
        let operator = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc"))
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
        assert_eq!(super::tune_for_frames(), !operator);
    }
}
