//! Out of file descriptors, the proxy's accept backs off instead of spinning, and serves the
//! clients waiting once descriptors are free again. (A test binary of its own: it lowers the
//! whole process's descriptor limit, with util-linux's prlimit.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;
use runtime_std::Addr;
use socket2::{Domain, Socket, Type};

/// A shell that changes this process's limits: it runs prlimit with descriptors of its own,
/// so it works while this process has none left.
struct Limits {
    shell: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Limits {
    fn new() -> Limits {
        let mut shell = Command::new("sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = shell.stdin.take().unwrap();
        let stdout = BufReader::new(shell.stdout.take().unwrap());
        Limits {
            shell,
            stdin,
            stdout,
        }
    }

    /// Set the soft limit on open descriptors (descriptors from `limit` up cannot be made).
    fn set_nofile(&mut self, limit: u64) {
        let pid = std::process::id();
        writeln!(
            self.stdin,
            "prlimit --pid {pid} --nofile={limit}: && echo ok || echo failed"
        )
        .unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "prlimit (from util-linux) must work");
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// CPU time the acceptor thread used, in clock ticks (waiting for it to start).
fn acceptor_cpu() -> u64 {
    for _ in 0..200 {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.starts_with("p9persist-accep") {
                let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
                let (_, after_name) = stat.rsplit_once(')').unwrap();
                let fields: Vec<&str> = after_name.split_whitespace().collect();
                // utime and stime: fields 14 and 15 of proc_pid_stat(5), counted from the
                // state (field 3) here.
                return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("no acceptor thread");
}

/// The soft limit on open descriptors now.
fn soft_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn accept_backs_off_out_of_descriptors() {
    init_log();
    let server = RamServer::start(ramfs::Fs::new());
    let proxy = Proxy::start(&Addr::Tcp("127.0.0.1:0".into()), server.backend());
    let Addr::Tcp(proxy_addr) = &proxy.addr else {
        unreachable!()
    };
    let proxy_addr: std::net::SocketAddr = proxy_addr.parse().unwrap();
    let mut limits = Limits::new();
    // The clients' sockets are made while descriptors are plentiful; connecting needs none.
    let socks: Vec<Socket> = (0..3)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    let original = soft_nofile();
    let before = acceptor_cpu();
    // The lowest free descriptor number: from it up, none can be made.
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    limits.set_nofile(lowest_free);
    for s in &socks {
        s.connect(&proxy_addr.into()).unwrap();
    }
    // The proxy cannot accept them: it retries, pausing up to half a second between tries.
    thread::sleep(Duration::from_secs(2));
    limits.set_nofile(original);
    let used = acceptor_cpu() - before;
    assert!(
        used <= 10,
        "the acceptor used {used} ticks of CPU in 2 s out of descriptors: it spins"
    );
    // Descriptors are back: the waiting clients are served.
    for (i, s) in socks.into_iter().enumerate() {
        let stream: std::net::TcpStream = s.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut c = NineP::over(Box::new(stream));
        c.attach_root();
        c.create(10, &format!("f{i}"));
        c.write(10, 0, b"served");
    }
    proxy.stop();
}
