//! The p9persist binary: clear one-line errors and a non-zero exit for bad input; a unix
//! listener created 0600; a proxy that serves a client end to end.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn p9persist(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p9persist"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_addresses_are_one_line_errors() {
    for (args, expect) in [
        (
            &["proxy", "--listen", "nonsense", "--server", "localhost:1"][..],
            "--listen: cannot read address",
        ),
        (
            &["proxy", "--listen", "0", "--server", "tcp!"][..],
            "--server: cannot read address",
        ),
        (
            &[
                "proxy",
                "--listen",
                "0",
                "--server",
                "no-such-host.invalid:564",
            ][..],
            "--server: cannot resolve",
        ),
        (
            &[
                "proxy",
                "--listen",
                "0",
                "--server",
                "localhost:1",
                "--give-up-after",
                "3x",
            ][..],
            "unknown unit",
        ),
        (
            &[
                "proxy",
                "--listen",
                "0",
                "--server",
                "localhost:1",
                "--give-up-after",
                "99999999999999999999h",
            ][..],
            "too long",
        ),
        (
            &[
                "proxy",
                "--listen",
                "0",
                "--server",
                "localhost:1",
                "--backoff-initial",
                "1m",
            ][..],
            "--backoff-initial (60s) is longer than --backoff-max (30s)",
        ),
        (
            // The address is echoed as typed, in the form socat and QEMU users write.
            &["ramfs", "--listen", "tcp:256.0.0.1:5640"][..],
            "cannot listen on tcp:256.0.0.1:5640",
        ),
        (
            &["ramfs", "--listen", "unix!/nonexistent-dir/sock"][..],
            "cannot listen on unix!/nonexistent-dir/sock",
        ),
        (
            &["mux", "--listen", "0", "name", "data"][..],
            "give --registry FILE",
        ),
        (
            &[
                "mux",
                "--listen",
                "0",
                "--registry",
                "/nonexistent/registry",
                "name",
                "data",
            ][..],
            "--registry /nonexistent/registry: no such file",
        ),
        (
            &[
                "mux",
                "--listen",
                "0",
                "--service",
                "fs9 addr tcp!fs9!564",
                "name",
                "data",
            ][..],
            "no service with an addr matches",
        ),
        (
            &[
                "mux",
                "--listen",
                "0",
                "--service",
                "fs9 name data addr tcp!no-such-host.invalid!564",
                "name",
                "data",
            ][..],
            "service fs9: cannot resolve",
        ),
        (
            &[
                "mux",
                "--service",
                "fs9 name data addr 'unclosed",
                "name",
                "data",
            ][..],
            "--service: line 1",
        ),
    ] {
        let (ok, err) = p9persist(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(
            err.trim().lines().count() <= 3,
            "{args:?}: a short message, got {err}"
        );
    }
}

#[test]
fn a_unix_listener_is_private() {
    let dir = std::env::temp_dir().join(format!("p9persist-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ramfs.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p9persist"))
        .args(["ramfs", "--listen", &format!("unix!{}", sock.display())])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no socket appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(mode, 0o600);
}

#[test]
fn the_demo_reports_exact_data() {
    let out = Command::new(env!("CARGO_BIN_EXE_p9persist"))
        .args([
            "demo",
            "--outages",
            "1",
            "--outage",
            "800ms",
            "--files",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rebuilt"), "{text}");
    assert!(
        text.contains("data read back exact, listings complete  yes"),
        "{text}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = std::env::temp_dir().join(format!("p9persist-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("proxy.sock");
    let log = dir.join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p9persist"))
        .args([
            "proxy",
            "--listen",
            &format!("unix!{}", sock.display()),
            "--server",
            "localhost:1",
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no socket appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let left = sock.exists();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "exit status {status:?}");
    assert!(!left, "the socket file is removed on shutdown");
    // Written to a file, the log is plain sentences: no terminal colour codes.
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a log file: {log:?}");
}

#[test]
fn ramfs_serves_standard_input_and_output() {
    use p9_core::{Dialect, Fcall, Msg, Tversion, NOTAG};
    use std::io::{Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_p9persist"))
        .args(["ramfs", "--listen", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tv = Fcall::new(
        NOTAG,
        Tversion {
            msize: 8192,
            version: "9P2000.L".into(),
        },
    )
    .to_frame()
    .unwrap();
    child.stdin.as_mut().unwrap().write_all(&tv).unwrap();
    let mut size = [0u8; 4];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut size)
        .unwrap();
    let mut rest = vec![0u8; u32::from_le_bytes(size) as usize - 4];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut rest)
        .unwrap();
    let frame: Vec<u8> = size.iter().chain(rest.iter()).copied().collect();
    let reply = Fcall::decode(&frame.into(), Dialect::DotL).unwrap();
    drop(child.stdin.take()); // end of input ends the server
    let status = child.wait().unwrap();
    assert!(
        matches!(reply.msg, Msg::Rversion(ref r) if &r.version[..] == b"9P2000.L"),
        "{reply:?}"
    );
    assert!(status.success());
}
