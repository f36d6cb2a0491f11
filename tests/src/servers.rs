//! Real 9P servers for the integration tests and benchmarks: Debian's diod and nfs-ganesha
//! (9P over TCP with the VFS backend), started in the foreground on a port of their own.

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

/// Where Debian installs diod.
pub fn diod_path() -> &'static str {
    for p in ["/usr/sbin/diod", "/usr/bin/diod"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("diod is not installed: run scripts/test.sh (it apt-installs diod) or `apt-get install -y diod`");
}

/// Start diod exporting `dir` on `port`, without authentication (the attach name must be
/// `dir`), without waiting for it to listen.
pub fn start_diod(port: u16, dir: &std::path::Path) -> Child {
    Command::new(diod_path())
        .args(["-f", "-n", "-c", "/dev/null", "-L", "stderr", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-e")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("diod starts")
}

/// [`start_diod`], then wait until it listens.
pub fn spawn_diod(port: u16, dir: &std::path::Path) -> Child {
    let child = start_diod(port, dir);
    wait_listening(port, "diod");
    child
}

/// The address a proxy process (runtime-proxy, p9persist) announces on its standard output
/// once bound: the text after "listening ".
pub fn announced(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    let out = child.stdout.take().expect("the proxy's stdout is piped");
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("the proxy's stdout");
    line.strip_prefix("listening ")
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|| panic!("no address announced: {line:?}"))
}

/// [`announced`], for a TCP listener: `HOST:PORT`, as a socket address is written.
pub fn announced_tcp(child: &mut Child) -> String {
    let addr = announced(child);
    addr.trim_start_matches("tcp!").replacen('!', ":", 1)
}

/// Start nfs-ganesha serving `dir/export` over 9P on `port`, and wait until it listens.
pub fn spawn_ganesha(port: u16, dir: &std::path::Path) -> Child {
    let bin = "/usr/bin/ganesha.nfsd";
    assert!(
        std::path::Path::new(bin).exists(),
        "nfs-ganesha is not installed: run scripts/test.sh (it apt-installs nfs-ganesha and nfs-ganesha-vfs)"
    );
    let export = dir.join("export");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::create_dir_all(dir.join("recovery")).unwrap();
    // Ganesha serves 9P only with an NFS protocol enabled; it listens for 9P on the wildcard
    // address. Graceless: no grace period after a restart (there is no NFS client to reclaim).
    let conf = format!(
        "NFS_CORE_PARAM {{ Protocols = 4, 9P; NFS_Port = {nfs}; Bind_addr = 127.0.0.1;\n\
           Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}\n\
         NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {recovery}; }}\n\
         _9P {{ _9P_TCP_Port = {port}; }}\n\
         EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {export}; Access_Type = RW;\n\
           Squash = No_Root_Squash; Protocols = 4, 9P; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
         LOG {{ Default_Log_Level = WARN; }}\n",
        nfs = free_port(),
        recovery = dir.join("recovery").display(),
        export = export.display(),
    );
    let conf_path = dir.join("ganesha.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-F")
        .arg("-L")
        .arg(dir.join("ganesha.log"))
        .arg("-f")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.join("ganesha.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ganesha.nfsd starts");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ganesha did not start listening for 9P; its log:\n{}",
            std::fs::read_to_string(dir.join("ganesha.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Wait until something listens on `port` of the loopback (at most 30 s).
pub fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
