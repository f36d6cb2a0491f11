//! The `event_loop` example is a working proxy: one client, through a server restart.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The example's binary, which `cargo test` builds beside the tests.
fn example() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/event_loop");
    assert!(
        path.exists(),
        "{path:?} is missing: run `cargo build -p runtime-std --examples`"
    );
    path
}

/// Kills the example if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn event_loop_example_survives_a_restart() {
    let server = RamServer::start(ramfs::Fs::new());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Running(
        Command::new(example())
            .args(["--listen", &listen, "--server"])
            .arg(server.addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // It serves exactly one client: connect once it listens.
    let start = Instant::now();
    let stream = loop {
        if let Ok(s) = TcpStream::connect(&listen) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the example never listened"
        );
        thread::sleep(Duration::from_millis(20));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut c = NineP::over(Box::new(stream));
    c.attach_root();
    c.create(10, "f");
    c.write(10, 0, &pattern(0, 0));
    // Down for longer than the first redial delay; the write made meanwhile is held.
    let back = server.outage(Duration::from_millis(1500));
    c.write(10, 8192, &pattern(0, 1));
    back.join().unwrap();
    let mut expected = pattern(0, 0);
    expected.extend_from_slice(&pattern(0, 1));
    assert!(c.read_all(10) == expected);
    assert!(server.fs.lock().unwrap().read_file("f").unwrap() == &expected[..]);
    // The client leaves: the example is done.
    drop(c);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the example did not exit"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}
