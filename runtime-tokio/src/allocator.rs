//! The process's allocator, set for a proxy's traffic. A proxy reads each large frame (a 1 MiB
//! Twrite or Rread) into a buffer of its own, holds it while it is in flight or kept for the
//! replay, then frees it. With glibc's defaults those buffers come from fresh memory and go back
//! to the kernel when freed (mmap and munmap, or a heap trimmed and grown again): every frame
//! pays a page fault per 4 KiB and the kernel zeroing the page. Raising the mmap and trim
//! thresholds lets freed frame buffers be reused instead; the cost is that freed memory at the
//! top of each allocator arena's heap, up to [`TRIM_THRESHOLD`], stays resident.

/// Allocations up to this size come from the heap (frames of msizes up to it).
pub const MMAP_THRESHOLD: usize = 4 << 20;
/// Free memory kept at the top of a heap before it is given back to the kernel.
pub const TRIM_THRESHOLD: usize = 16 << 20;

/// Set the allocator for a proxy process, before its threads start. Returns false when it left
/// the allocator as it was (the operator tuned malloc, which wins) or could not set it all
/// (not glibc, or a glibc that refuses a threshold).
pub fn tune_for_frames() -> bool {
    !operator_tuned() && set_thresholds()
}

/// The environment already tunes malloc: `GLIBC_TUNABLES` naming malloc settings, or
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`.
fn operator_tuned() -> bool {
    std::env::var_os("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("malloc"))
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> bool {
    // Each setting is tried on its own: a glibc that refuses one (a 32-bit one caps the mmap
    // threshold lower) still takes the other.
    // SAFETY: mallopt only changes glibc's allocator parameters; it takes no pointers.
    let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
    // SAFETY: as above.
    let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) };
    mmap == 1 && trim == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// This glibc takes both thresholds.
    #[test]
    fn glibc_takes_both_thresholds() {
        assert!(super::set_thresholds());
    }

    /// An operator's malloc settings are left alone, whichever way they are given.
    #[test]
    fn an_operators_malloc_settings_win() {
        let tuned = |vars: &[(&str, &str)]| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "allocator::tests::report_operator_tuned",
                    "--nocapture",
                ])
                .env_remove("GLIBC_TUNABLES")
                .env_remove("MALLOC_MMAP_THRESHOLD_")
                .env_remove("MALLOC_TRIM_THRESHOLD_")
                .envs(vars.iter().copied())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{text}");
            text.contains("operator tuned: true")
        };
        assert!(!tuned(&[]));
        assert!(!tuned(&[("GLIBC_TUNABLES", "glibc.rtld.nns=2")]));
        assert!(tuned(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.trim_threshold=1000000"
        )]));
        assert!(tuned(&[("MALLOC_TRIM_THRESHOLD_", "1000000")]));
        assert!(tuned(&[("MALLOC_MMAP_THRESHOLD_", "1000000")]));
    }

    /// Run by the test above in a child process with the environment it sets.
    #[test]
    fn report_operator_tuned() {
        println!("operator tuned: {}", super::operator_tuned());
    }
}
