//! What the p9persist binary's tests share: ports, waiting, scratch directories, children
//! that do not outlive a failing test, real diods, and scraping the metrics endpoint.
#![allow(dead_code)] // each test file uses its own part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on now, and one this process has not handed out before: two taken
/// in a row (a server's and a proxy's, or a name made unique by one) never coincide, as the
/// kernel's choice alone may (it hands a port just released out again).
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (at most 10 s) until the file at `path` contains `text`.
pub fn wait_for_line(path: &Path, text: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{text:?} never appeared in {}; it holds:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/test.sh (it apt-installs it) or `apt-get install -y {package}`");
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("p9persist-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed when dropped (a failing test leaves nothing running).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then wait (at most 5 s) for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        exit_of(&mut self.0, Duration::from_secs(5));
    }
}

/// The exit status of `child`, which must come within `limit`.
pub fn exit_of(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `p9persist proxy` on `port` to the server on `server` (redialing from 50 ms), with `extra`
/// arguments, logging to `log`; returned once it says it is proxying.
pub fn proxy(port: u16, server: u16, log: &Path, extra: &[&str]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_p9persist"))
        .args(["proxy", "--listen", &port.to_string()])
        .args(["--server", &format!("127.0.0.1:{server}")])
        .args(["--backoff-initial", "50ms"])
        .args(extra)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_for_line(log, "proxying");
    Running(child)
}

pub fn diod(port: u16, export: &Path) -> Running {
    let child = Command::new(tool("diod", "diod"))
        .args(["-f", "-n", "-c", "/dev/null", "-L", "stderr", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-e")
        .arg(export)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("diod starts");
    wait_listening(port, "diod");
    Running(child)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// GET `path` from 127.0.0.1:`port`: the status line and the body.
pub fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the metrics endpoint accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
pub fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{scrape}"))
        .parse()
        .unwrap()
}

/// Attach fid 0 as root to the diod export `export` (its attach name), through `c`.
pub async fn attach_export(c: &mut runtime_tokio::client::NineP, export: &Path) {
    use p9_core::{Fid, Msg, Tattach, NOFID};
    let attach = Tattach {
        fid: Fid(0),
        afid: NOFID,
        uname: "root".into(),
        aname: export.display().to_string().into(),
        n_uname: Some(0),
    };
    let a = c.call(attach).await.expect("a reply").msg;
    assert!(matches!(a, Msg::Rattach(_)), "{a:?}");
}
