//! The Linux kernel's own 9P client (v9fs), unmodified, in qemu (TCG), mounting through the
//! proxy while its server is SIGKILLed again and again. The image is Debian's stock kernel and a
//! busybox initramfs built by `scripts/kernel-image.sh` into target/kernel-client/ (the test
//! script runs it). The guest reaches the host's loopback at 10.0.2.2, fetches its scenario
//! from the host, and reports on the serial console: lines starting "KC: ". A failing scenario
//! prints the guest's last lines and the proxy's log.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::servers::{free_port, spawn_diod, spawn_ganesha, wait_listening};

fn image() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kernel-client");
    let (k, i) = (dir.join("vmlinuz"), dir.join("initramfs.cpio.gz"));
    assert!(
        k.exists() && i.exists(),
        "no kernel image in {}: run scripts/kernel-image.sh (scripts/test.sh does)",
        dir.display()
    );
    (k, i)
}

/// A real 9P2000.L server the tests kill and bring back on the same port.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Diod,
    Ganesha,
    /// py9p serving 9P2000, or 9P2000.u with `dotu`.
    Py9p {
        dotu: bool,
    },
}

impl Server {
    fn start(dir: &Path, kind: Kind) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            kind,
        };
        std::fs::create_dir_all(s.export()).unwrap();
        s.spawn();
        s
    }

    /// What the server exports (the attach name).
    fn export(&self) -> PathBuf {
        match self.kind {
            Kind::Ganesha => self.dir.join("export"),
            _ => self.dir.clone(),
        }
    }

    fn spawn(&mut self) {
        self.child = Some(match self.kind {
            Kind::Diod => spawn_diod(self.port, &self.dir),
            Kind::Ganesha => spawn_ganesha(self.port, &self.dir),
            Kind::Py9p { dotu } => spawn_py9p(self.port, &self.dir, dotu),
        });
    }

    /// SIGKILL, after a freeze (SIGSTOP) so that requests pile up in flight, if `frozen`.
    fn kill(&mut self, frozen: bool) {
        let mut c = self.child.take().expect("the server is running");
        if frozen {
            let _ = Command::new("kill")
                .args(["-STOP", &c.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// py9p (PyPI `p9fs`) serving `dir` writable on `port`. Quirk: it derives qids from Python's
/// `hash()`, which is salted per process, so a restarted py9p would give every file a new qid
/// and the proxy would rightly call open files replaced; a fixed PYTHONHASHSEED keeps them.
fn spawn_py9p(port: u16, dir: &Path, dotu: bool) -> Child {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "py9p", "-w", "-p", &port.to_string(), "-r"])
        .arg(dir)
        .env("PYTHONHASHSEED", "9");
    if dotu {
        cmd.arg("-D");
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs (py9p: pip install p9fs; scripts/test.sh installs it)");
    wait_listening(port, "py9p");
    child
}

/// What sits between the guest and the server: the proxy, or (for the control) a plain relay.
struct Hop {
    child: Child,
    port: u16,
    log: PathBuf,
    relay: bool,
}

impl Hop {
    fn proxy(server_port: u16) -> Hop {
        let log = std::env::temp_dir().join(format!(
            "p9persist-kernel-{}-{}.log",
            std::process::id(),
            server_port
        ));
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"))
            .args(["--runtime", "tokio", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--server")
            .arg(format!("127.0.0.1:{server_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("runtime-proxy starts");
        wait_listening(port, "the proxy");
        Hop {
            child,
            port,
            log,
            relay: false,
        }
    }

    /// A mux over `services` (index lines, as `p9persist mux --service` takes them).
    fn mux(services: &[String]) -> Hop {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("p9persist-kernel-mux-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"));
        cmd.args(["--runtime", "tokio", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--backoff-initial-ms", "50"]);
        for s in services {
            cmd.args(["--service", s]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("runtime-proxy starts");
        wait_listening(port, "the mux");
        Hop {
            child,
            port,
            log,
            relay: false,
        }
    }

    /// socat relaying bytes, as a stock setup without the proxy would.
    fn relay(server_port: u16) -> Hop {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("p9persist-relay-{port}.log"));
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("TCP:127.0.0.1:{server_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("socat starts (apt-get install socat)");
        wait_listening(port, "socat");
        Hop {
            child,
            port,
            log,
            relay: true,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A booted guest running `script`; its console lines are collected as they come.
struct Guest {
    child: Child,
    /// Console lines, each with when it arrived.
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Guest {
    fn boot(script: String) -> Guest {
        let (kernel, initrd) = image();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(script.as_bytes());
            }
        });
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "256", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 kc_script={port}"))
            .args(["-nic", "user,model=e1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 starts (scripts/kernel-image.sh installs it)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line).replace('\r', "");
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        Guest { child, lines }
    }

    /// The "KC: " lines so far, without the prefix.
    fn reports(&self) -> Vec<String> {
        self.timed_reports().into_iter().map(|(_, r)| r).collect()
    }

    fn timed_reports(&self) -> Vec<(Instant, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(t, l)| l.find("KC: ").map(|i| (*t, l[i + 4..].trim().to_string())))
            .collect()
    }

    fn saw(&self, what: &str) -> bool {
        self.reports().iter().any(|r| r.starts_with(what))
    }

    fn wait_for(&self, what: &str, limit: Duration, hop: &Hop) {
        let start = Instant::now();
        while !self.saw(what) {
            if start.elapsed() > limit {
                panic!(
                    "{}",
                    self.story(&format!("no {what:?} within {limit:?}"), hop)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What to print when a scenario fails: the guest's last lines and the hop's log.
    fn story(&self, what: &str, hop: &Hop) -> String {
        let lines = self.lines.lock().unwrap();
        let tail: Vec<&String> = lines.iter().rev().take(40).map(|(_, l)| l).collect();
        let log = hop.log();
        let log_tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "{what}\n--- the guest's last lines:\n{}\n--- the proxy's last lines:\n{}",
            tail.into_iter()
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            log_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mixed workload of the kill scenarios, in busybox sh: files overwritten and read back
/// (pre-created, so an overwrite is an open with O_TRUNC and a write: nothing the proxy may fail),
/// appends through a long-held fd, a long-held read fd checked by md5 at the end, directory
/// churn with renames, a file created and removed each round, and listings; it runs until the
/// host creates STOP (or 400 rounds). Creates, mkdirs, renames and removes in flight at a kill
/// are settled by looking at the server: none may fail.
fn kill_workload(mount: &str, rounds: u32, renames: bool, churn: bool) -> String {
    let dirs = match renames {
        true => "mkdir /mnt/d$i 2>/dev/null && mv /mnt/d$i /mnt/e$i 2>/dev/null",
        false => "mkdir /mnt/e$i 2>/dev/null",
    };
    // Beside the workload, a loop of nothing but creates, renames and removes (in a directory
    // of its own, which the workload's listings do not race), so that a kill after a freeze
    // nearly always catches one in flight.
    let churn = match churn {
        true => {
            r#"(j=0
while [ ! -e /mnt/STOP ] && [ $j -lt 100000 ]; do
    j=$((j+1))
    if touch /mnt/churn/c$j 2>/dev/null; then echo "KC: cnew $j"; else echo "KC: EIO cnew $j"; fi
    if mv /mnt/churn/c$j /mnt/churn/k$j 2>/dev/null; then echo "KC: cmv $j"; else echo "KC: EIO cmv $j"; fi
    if rm /mnt/churn/k$j 2>/dev/null; then echo "KC: crm $j"; else echo "KC: EIO crm $j"; fi
done) &
churn=$!"#
        }
        false => "churn=",
    };
    format!(
        r#"{mount} && echo "KC: mounted" || {{ echo "KC: mount failed"; exit 1; }}
{churn}
exec 3>>/mnt/append.log
exec 4</mnt/ref.bin
i=0
while [ ! -e /mnt/STOP ] && [ $i -lt {rounds} ]; do
    i=$((i+1))
    if echo "data $i" > /mnt/f$((i % 200)); then echo "KC: ack f$((i % 200)) $i"; else echo "KC: ERR write $i"; fi
    got=$(cat /mnt/f$((i % 200)) 2>&1) ; [ "$got" = "data $i" ] || echo "KC: ERR read $i: $got"
    if echo "line $i" >&3; then echo "KC: app $i"; else echo "KC: EIO append $i"; fi
    if {dirs}; then echo "KC: dir $i"; else echo "KC: EIO dir $i"; fi
    if touch /mnt/n$i 2>/dev/null; then echo "KC: new $i"; else echo "KC: EIO new $i"; fi
    if [ $i -gt 1 ]; then
        if rm /mnt/n$((i-1)) 2>/dev/null; then echo "KC: rm $((i-1))"; else echo "KC: EIO rm $((i-1))"; fi
    fi
    ls /mnt >/dev/null 2>&1 || echo "KC: ERR ls $i"
done
echo "KC: rounds $i"
[ -z "$churn" ] || wait $churn
echo "KC: md5 $(md5sum <&4 | cut -d' ' -f1)"
# With a cache, written data reaches the server at writeback: sync first, then unmount.
sync || echo "KC: ERR sync"
exec 3>&- 4<&-
umount /mnt || echo "KC: ERR umount"
echo "KC: done"
"#
    )
}

/// Run the kill scenario through `hop` (the proxy or the control relay): boot, mount, kill
/// diod `kills` times at random moments (half of them frozen first, so requests are in flight),
/// stop the workload, and return the guest's reports with the export.
fn kill_scenario(
    server: &mut Server,
    hop: &Hop,
    mount_opts: &str,
    kills: usize,
) -> (Guest, Vec<String>) {
    let export = server.export();
    // The attach name is the export for diod and ganesha; py9p serves its one root.
    let (version, aname) = match server.kind {
        Kind::Py9p { dotu: false } => ("9p2000", String::new()),
        Kind::Py9p { dotu: true } => ("9p2000.u", String::new()),
        _ => ("9p2000.L", format!(",aname={}", export.display())),
    };
    let mount = format!(
        "mount -t 9p -o trans=tcp,port={},version={version}{aname}{mount_opts} 10.0.2.2 /mnt",
        hop.port,
    );
    // Through the proxy the workload runs until STOP; through a relay, whose mount dies at the
    // first kill, STOP is never seen, so the rounds are capped.
    let rounds = if hop.relay { 400 } else { 1_000_000 };
    // diod mishandles directory renames under cache=loose (it fails without the proxy too):
    // that workload makes directories without renaming them.
    let renames = !mount_opts.contains("cache=loose");
    // py9p cannot do all of these (without a kill too); the relay's mount dies at the first.
    let churn = !matches!(server.kind, Kind::Py9p { .. }) && !hop.relay;
    let guest = Guest::boot(kill_workload(&mount, rounds, renames, churn));
    guest.wait_for("mounted", Duration::from_secs(90), hop);
    let mut seed = 0x9e37_79b9_u64;
    let mut rand = |lo: u64, hi: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        lo + (seed >> 33) % (hi - lo + 1)
    };
    let mut outages = Vec::new();
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rand(300, 1500)));
        let killed = Instant::now();
        server.kill(k % 2 == 0);
        std::thread::sleep(Duration::from_millis(rand(100, 800)));
        server.spawn();
        outages.push(killed);
    }
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(export.join("STOP"), b"").unwrap();
    let start = Instant::now();
    while !guest.saw("exit") {
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // How long the client was blocked by each outage: from the kill to its next completed
    // operation.
    let done: Vec<Instant> = guest
        .timed_reports()
        .into_iter()
        .filter(|(_, r)| ["ack ", "app ", "dir "].iter().any(|p| r.starts_with(p)))
        .map(|(t, _)| t)
        .collect();
    let mut blocked: Vec<Duration> = outages
        .iter()
        .filter_map(|k| done.iter().find(|t| *t > k).map(|t| t.duration_since(*k)))
        .collect();
    blocked.sort();
    if !blocked.is_empty() {
        eprintln!(
            "{kills} kills; time blocked per outage: min {:.2} s, median {:.2} s, max {:.2} s",
            blocked[0].as_secs_f64(),
            blocked[blocked.len() / 2].as_secs_f64(),
            blocked[blocked.len() - 1].as_secs_f64()
        );
    }
    let reports = guest.reports();
    (guest, reports)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p9persist-kc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The files the kill workload finds in the export.
fn populate(export: &Path) {
    std::fs::create_dir_all(export).unwrap();
    for f in 0..200 {
        std::fs::write(export.join(format!("f{f}")), b"").unwrap();
    }
    std::fs::write(export.join("append.log"), b"").unwrap();
    std::fs::create_dir_all(export.join("churn")).unwrap();
    let reference: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(export.join("ref.bin"), reference).unwrap();
}

fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The host's check of the export against what the guest was told.
/// `appends`: appends are checked (not in 9P2000/.u); `namespace`: the server can make,
/// rename and remove files and directories, so none of those may fail but those the proxy
/// said it could not settle (`unsettled`: run before a kill, with what the server shows
/// proving nothing — another client could have made the same change).
fn check_export(
    dir: &Path,
    reports: &[String],
    appends: bool,
    namespace: bool,
    unsettled: usize,
) -> Result<String, String> {
    let mut problems = Vec::new();
    if !reports.iter().any(|r| r == "done") {
        problems.push("the workload did not finish".to_string());
    }
    for r in reports.iter().filter(|r| r.starts_with("ERR")) {
        problems.push(format!("the guest saw an error it must not: {r}"));
    }
    // The last acknowledged write of each file is on disk.
    let mut last = std::collections::BTreeMap::new();
    for r in reports.iter().filter_map(|r| r.strip_prefix("ack ")) {
        let mut w = r.split_whitespace();
        if let (Some(f), Some(i)) = (w.next(), w.next()) {
            last.insert(f.to_string(), i.to_string());
        }
    }
    for (f, i) in &last {
        let got = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if got.trim() != format!("data {i}") {
            problems.push(format!(
                "{f}: {:?} on disk, the guest wrote \"data {i}\"",
                got.trim()
            ));
        }
    }
    // Every acknowledged append is in the log exactly once; none is there twice.
    let log = std::fs::read_to_string(dir.join("append.log")).unwrap_or_default();
    let mut count = std::collections::BTreeMap::new();
    for line in log.lines() {
        *count.entry(line.to_string()).or_insert(0) += 1;
    }
    for r in reports
        .iter()
        .filter_map(|r| r.strip_prefix("app "))
        .filter(|_| appends)
    {
        let line = format!("line {r}");
        if count.get(&line).copied().unwrap_or(0) != 1 {
            problems.push(format!(
                "acknowledged append {line:?} is in the log {:?} times",
                count.get(&line)
            ));
        }
    }
    if let Some((line, n)) = count.iter().find(|(_, n)| **n > 1) {
        problems.push(format!("{line:?} was appended {n} times"));
    }
    // A directory made and renamed is there once, under its new name if the guest was told so.
    for r in reports.iter().filter_map(|r| r.strip_prefix("dir ")) {
        if !dir.join(format!("e{r}")).is_dir() {
            problems.push(format!("e{r} is missing though mkdir and mv succeeded"));
        }
    }
    // A file created is there unless its removal succeeded; one removed is gone.
    let removed: std::collections::BTreeSet<&str> = reports
        .iter()
        .filter_map(|r| r.strip_prefix("rm "))
        .collect();
    for r in reports.iter().filter_map(|r| r.strip_prefix("new ")) {
        let there = dir.join(format!("n{r}")).exists();
        if there == removed.contains(r) {
            problems.push(format!(
                "n{r} is {} though the guest was told it was {}",
                if there { "there" } else { "missing" },
                if there { "removed" } else { "created" }
            ));
        }
    }
    // The churn loop's files: each created, renamed and removed in turn, so none is left
    // where the guest was told it was moved or removed.
    for r in reports.iter().filter_map(|r| r.strip_prefix("cmv ")) {
        if dir.join(format!("churn/c{r}")).exists() {
            problems.push(format!("c{r} is still there though mv succeeded"));
        }
    }
    for r in reports.iter().filter_map(|r| r.strip_prefix("crm ")) {
        if dir.join(format!("churn/k{r}")).exists() {
            problems.push(format!("k{r} is still there though rm succeeded"));
        }
    }
    // Creates, mkdirs, renames and removes in flight at a kill are settled by looking: no
    // "possibly not completed" for any of them (where the server can do them at all) but
    // those the proxy logged as unsettled.
    let failures = [
        "EIO dir", "EIO new", "EIO rm", "EIO cnew", "EIO cmv", "EIO crm",
    ];
    let eio: Vec<&String> = reports
        .iter()
        .filter(|_| namespace)
        .filter(|r| failures.iter().any(|p| r.starts_with(p)))
        .collect();
    if eio.len() > unsettled {
        problems.push(format!(
            "the guest got EIO for {} namespace changes, the proxy left {unsettled} unsettled: {eio:?}",
            eio.len()
        ));
    }
    let md5 = reports
        .iter()
        .find_map(|r| r.strip_prefix("md5 "))
        .unwrap_or("");
    if md5 != md5_of(&dir.join("ref.bin")) {
        problems.push(format!("the long-held read fd read {md5:?}, not the file"));
    }
    let count = |p: &str| reports.iter().filter(|r| r.starts_with(p)).count();
    let churned = count("cnew ") + count("cmv ") + count("crm ");
    let ops =
        count("ack ") + count("app ") + count("dir ") + count("new ") + count("rm ") + churned;
    let rounds = reports
        .iter()
        .find_map(|r| r.strip_prefix("rounds "))
        .unwrap_or("?");
    match problems.is_empty() {
        true => Ok(format!(
            "{rounds} rounds, {ops} operations acknowledged ({} mkdir+mv, {} creates, {} removes, {churned} creates, renames and removes in the churn loop); failed: {} appends, {} mkdir+mv, {} creates, {} removes",
            count("dir "),
            count("new "),
            count("rm "),
            count("EIO append"),
            count("EIO dir"),
            count("EIO new") + count("EIO cnew"),
            count("EIO rm") + count("EIO crm") + count("EIO cmv")
        )),
        false => Err(problems.join("\n")),
    }
}

/// Run the kill scenario against `server` through the proxy, and check the export.
fn survives(mut server: Server, mount_opts: &str, kills: usize, what: &str) {
    populate(&server.export());
    let hop = Hop::proxy(server.port);
    let (guest, reports) = kill_scenario(&mut server, &hop, mount_opts, kills);
    // Plain 9P2000 and .u have no append mode: Linux appends at the size it knows, which with no
    // cache is stale, so appends through a held fd land anywhere (py9p or not, proxy or not).
    let appends = !matches!(server.kind, Kind::Py9p { .. });
    // What the proxy settled by looking: requests truly in flight at a kill.
    let log = hop.log();
    let (done, resent) = (
        log.matches("shows it done: answered as done").count(),
        log.matches("shows it not done: sent again").count(),
    );
    // py9p fails some directory renames and creates without any kill (its own limits).
    let namespace = !matches!(server.kind, Kind::Py9p { .. });
    let unsettled = log
        .matches("what the server shows does not tell whether it ran")
        .count();
    match check_export(&server.export(), &reports, appends, namespace, unsettled) {
        Ok(summary) => eprintln!(
            "kernel client, {what}: {summary}; in flight at a kill and settled by looking: {done} found done, {resent} sent again, {unsettled} left unsettled (EIO)"
        ),
        Err(e) => panic!("{what}: {}", guest.story(&e, &hop)),
    }
}

/// 9P2000.L against diod, killed 10 times at random moments (5 of them frozen first): no
/// acknowledged write lost, no append done twice, held fds still work, the mount alive.
#[test]
fn kernel_client_survives_diod_killed_ten_times() {
    // KC_KILLS=120 makes it the soak (scripts/kernel-soak.sh).
    let kills = std::env::var("KC_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10);
    let what = format!("diod killed {kills} times");
    survives(
        Server::start(&scratch("diod"), Kind::Diod),
        "",
        kills,
        &what,
    );
}

/// The same against nfs-ganesha's 9P.
#[test]
fn kernel_client_survives_ganesha_killed() {
    survives(
        Server::start(&scratch("ganesha"), Kind::Ganesha),
        "",
        4,
        "ganesha killed 4 times",
    );
}

/// 9P2000 and 9P2000.u against a second real server, py9p, each killed twice.
#[test]
fn kernel_client_survives_py9p_killed_in_both_dialects() {
    for dotu in [false, true] {
        let what = if dotu { "py9p 9P2000.u" } else { "py9p 9P2000" };
        survives(
            Server::start(
                &scratch(if dotu { "py9p-u" } else { "py9p" }),
                Kind::Py9p { dotu },
            ),
            "",
            2,
            what,
        );
    }
}

/// With the page cache in play: cache=mmap and cache=loose, each with a kill; the data is synced
/// and the mount unmounted before the host checks. Under cache=loose the workload renames no
/// directories: diod mishandles directory renames there, without the proxy too.
#[test]
fn kernel_client_survives_a_kill_with_caches() {
    survives(
        Server::start(&scratch("mmap"), Kind::Diod),
        ",cache=mmap",
        2,
        "cache=mmap",
    );
    survives(
        Server::start(&scratch("loose"), Kind::Diod),
        ",cache=loose",
        2,
        "cache=loose",
    );
}

/// The control: the same scenario through a plain relay must fail — stock v9fs loses the mount
/// at the first restart (every operation EIO until a fresh mount). Proof the test can fail.
#[test]
fn kernel_client_through_a_plain_relay_fails() {
    let mut server = Server::start(&scratch("relay"), Kind::Diod);
    populate(&server.export());
    let hop = Hop::relay(server.port);
    let (_guest, reports) = kill_scenario(&mut server, &hop, "", 2);
    let result = check_export(&server.export(), &reports, true, true, 0);
    assert!(
        result.is_err(),
        "the control passed, so the scenario cannot tell a proxy from a relay: {result:?}"
    );
}

/// All three dialects against `p9persist ramfs` (the in-memory server), no kill: each a mount
/// of its own through one proxy; files written, read back, listed, renamed and removed.
#[test]
fn kernel_client_speaks_every_dialect_to_ramfs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    rt.spawn(async move {
        let server = runtime_tokio::RamfsServer::new(ramfs::Fs::new(), 65536);
        let addr = runtime_tokio::Addr::Tcp(format!("127.0.0.1:{port}"));
        let listener = runtime_tokio::Listener::bind(&addr).await.unwrap();
        let _ = server
            .serve(listener, tokio::sync::watch::channel(false).1)
            .await;
    });
    wait_listening(port, "ramfs");
    let hop = Hop::proxy(port);
    let mut script = String::new();
    for (n, version) in ["9p2000", "9p2000.u", "9p2000.L"].iter().enumerate() {
        script.push_str(&format!(
            r#"mkdir -p /m{n}
if mount -t 9p -o trans=tcp,port={port},version={version} 10.0.2.2 /m{n}; then
    mkdir /m{n}/d{n} && echo "hello {version}" > /m{n}/d{n}/f && mv /m{n}/d{n}/f /m{n}/d{n}/g \
        && [ "$(cat /m{n}/d{n}/g)" = "hello {version}" ] && ls /m{n}/d{n} | grep -qx g \
        && rm /m{n}/d{n}/g && rmdir /m{n}/d{n} && umount /m{n} && echo "KC: ok {version}" \
        || echo "KC: failed {version}"
else
    echo "KC: failed {version} (mount)"
fi
"#,
            port = hop.port
        ));
    }
    let guest = Guest::boot(script);
    guest.wait_for("exit", Duration::from_secs(120), &hop);
    for version in ["9p2000", "9p2000.u", "9p2000.L"] {
        assert!(
            guest.saw(&format!("ok {version}")),
            "{}",
            guest.story(&format!("{version} did not work"), &hop)
        );
    }
}

/// The kernel client through a mux of two diods exporting copies of one tree (entered at a
/// service path, with the services' own attach names: the mount gives none). The serving diod
/// is SIGKILLed (frozen first, so requests are in flight): the mount lives on on the other one;
/// a file held open across the kill answers EIO; new opens, listings and writes work; and the
/// inode numbers (the qids' paths) are the same before and after.
#[test]
fn kernel_client_through_the_mux_survives_its_server_killed() {
    let base = scratch("mux");
    let mut servers: Vec<Server> = ["one", "two"]
        .iter()
        .map(|n| {
            let dir = base.join(n);
            populate(&dir.join("tree"));
            Server::start(&dir, Kind::Diod)
        })
        .collect();
    let services: Vec<String> = ["one", "two"]
        .iter()
        .zip(&servers)
        .map(|(n, s)| {
            format!(
                "{n} name data addr tcp!127.0.0.1!{} aname {} path tree",
                s.port,
                s.export().display()
            )
        })
        .collect();
    let hop = Hop::mux(&services);
    let script = format!(
        r#"mount -t 9p -o trans=tcp,port={},version=9p2000.L 10.0.2.2 /mnt && echo "KC: mounted" || {{ echo "KC: mount failed"; exit 1; }}
[ -e /mnt/ref.bin ] && echo "KC: service root" || echo "KC: ERR not at the service path"
exec 4</mnt/ref.bin
ls -i /mnt | sort > /tmp/before
echo "KC: listed"
while [ ! -e /mnt/KILLED ]; do sleep 0.2; done
if cat /mnt/f1 >/dev/null; then echo "KC: read ok"; else echo "KC: ERR read"; fi
ls -i /mnt | grep -v KILLED | sort > /tmp/after
if cmp -s /tmp/before /tmp/after; then echo "KC: inodes same"; else echo "KC: ERR inodes differ"; diff /tmp/before /tmp/after | grep '^[-+][^-+]' | head -6 | sed 's/^/KC: diff /'; fi
if cat <&4 >/dev/null 2>/tmp/err; then echo "KC: ERR held fd still reads"; else echo "KC: held fd fails: $(cat /tmp/err)"; fi
exec 4<&-
if echo "after the kill" > /mnt/new.txt && [ "$(cat /mnt/new.txt)" = "after the kill" ]; then echo "KC: wrote"; else echo "KC: ERR write"; fi
umount /mnt || echo "KC: ERR umount"
echo "KC: done"
"#,
        hop.port
    );
    let guest = Guest::boot(script);
    guest.wait_for("listed", Duration::from_secs(90), &hop);
    let log = hop.log();
    let first = match log.lines().find_map(|l| l.split("connected to ").nth(1)) {
        Some(rest) => rest.split_whitespace().next().unwrap_or("").to_string(),
        None => panic!("{}", guest.story("the mux logged no connection", &hop)),
    };
    let (killed, survivor) = if first == "one" { (0, 1) } else { (1, 0) };
    let started = Instant::now();
    servers[killed].kill(true);
    std::fs::write(servers[survivor].export().join("tree/KILLED"), b"").unwrap();
    guest.wait_for("done", Duration::from_secs(60), &hop);
    eprintln!(
        "kernel client through the mux: failed over and finished in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let reports = guest.reports();
    let errors: Vec<&String> = reports.iter().filter(|r| r.starts_with("ERR")).collect();
    assert!(
        errors.is_empty(),
        "{}",
        guest.story(&format!("{errors:?}"), &hop)
    );
    for want in [
        "service root",
        "read ok",
        "inodes same",
        "held fd fails: ",
        "wrote",
    ] {
        assert!(
            reports.iter().any(|r| r.starts_with(want)),
            "{}",
            guest.story(&format!("no {want:?}"), &hop)
        );
    }
    let held = reports
        .iter()
        .find(|r| r.starts_with("held fd fails"))
        .unwrap();
    assert!(
        held.contains("Input/output error"),
        "{}",
        guest.story(held, &hop)
    );
    assert_eq!(
        std::fs::read(servers[survivor].export().join("tree/new.txt")).unwrap(),
        b"after the kill\n"
    );
    assert!(
        hop.log().contains(&format!("failover: {first} →")),
        "{}",
        hop.log()
    );
}

/// The kernel client's own throughput, direct to diod and through the proxy, in one boot (for
/// `scripts/bench.sh`'s table; printed, not asserted — the ratio is what matters, and these
/// machines are noisy): `dd` of 16 MiB with 64 KiB blocks, written and read back through two
/// mounts of one export (msize 64 KiB, no cache: each read(2) or write(2) is one request in
/// flight), rounds alternated. Asserted: what each mount reads is the file on disk.
#[test]
fn kernel_client_dd_direct_and_through_the_proxy() {
    let server = Server::start(&scratch("dd"), Kind::Diod);
    let export = server.export();
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(export.join("big"), &data).unwrap();
    let hop = Hop::proxy(server.port);
    let opts = format!(
        "trans=tcp,version=9p2000.L,aname={},msize=65536",
        export.display()
    );
    let script = format!(
        r#"mkdir -p /d /p
mount -t 9p -o {opts},port={direct} 10.0.2.2 /d || echo "KC: mount failed"
mount -t 9p -o {opts},port={proxy} 10.0.2.2 /p || echo "KC: mount failed"
for r in 1 2 3; do
    for m in d p; do
        echo "KC: wstart $m"; dd if=/dev/zero of=/$m/w$m$r bs=65536 count=256 2>/dev/null; echo "KC: wend $m"
        echo "KC: rstart $m"; dd if=/$m/big of=/dev/null bs=65536 2>/dev/null; echo "KC: rend $m"
    done
done
echo "KC: md5 d $(md5sum /d/big | cut -d' ' -f1)"
echo "KC: md5 p $(md5sum /p/big | cut -d' ' -f1)"
umount /d; umount /p
echo "KC: done"
"#,
        direct = server.port,
        proxy = hop.port,
    );
    let guest = Guest::boot(script);
    guest.wait_for("done", Duration::from_secs(300), &hop);
    let want = md5_of(&export.join("big"));
    for m in ["d", "p"] {
        assert!(
            guest.saw(&format!("md5 {m} {want}")),
            "{}",
            guest.story(&format!("mount /{m} read another file"), &hop)
        );
    }
    assert!(
        !guest.saw("mount failed"),
        "{}",
        guest.story("a mount failed", &hop)
    );
    // Each phase's time, from its start line to its end line as the host saw them.
    let reports = guest.timed_reports();
    let mb_per_s = |what: &str, m: &str| {
        let (start, end) = (format!("{what}start {m}"), format!("{what}end {m}"));
        let mut times = Vec::new();
        let mut began = None;
        for (t, r) in &reports {
            if *r == start {
                began = Some(*t);
            } else if *r == end {
                if let Some(b) = began.take() {
                    times.push(16.0 / t.duration_since(b).as_secs_f64());
                }
            }
        }
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let (rd, rp) = (mb_per_s("r", "d"), mb_per_s("r", "p"));
    let (wd, wp) = (mb_per_s("w", "d"), mb_per_s("w", "p"));
    eprintln!(
        "kernel client dd, 64 KiB blocks, median of 3 (MB/s): read direct {rd:.1}, proxy {rp:.1} (ratio {:.2}); write direct {wd:.1}, proxy {wp:.1} (ratio {:.2})",
        rp / rd,
        wp / wd
    );
}

/// The guest's side of the lock race: two processes take and let go of a lock directory
/// (`mkdir`/`rmdir`, the shell's lock idiom) and a lock file (O_CREAT|O_EXCL through the
/// shell's noclobber, then `rm`), each operation reported with its window on the guest's clock
/// (/proc/uptime, in hundredths of a second) and how it ended, until the host creates STOP.
fn lock_race_workload(mount: &str) -> String {
    format!(
        r#"{mount} && echo "KC: mounted" || {{ echo "KC: mount failed"; exit 1; }}
now() {{ cut -d' ' -f1 /proc/uptime | tr -d . ; }}
class() {{
    if grep -q "exists" /tmp/err$1; then echo refused
    elif grep -q "No such file" /tmp/err$1; then echo refused
    elif grep -q "I/O error" /tmp/err$1; then echo unknown
    else echo "failed:$(cat /tmp/err$1)"; fi
}}
race() {{
    p=$1
    # noclobber: > opens with O_EXCL (>| is how the error files are still overwritten).
    set -C
    while [ ! -e /mnt/STOP ]; do
        for kind in dir file; do
            t0=$(now)
            if [ $kind = dir ]; then mkdir /mnt/lockdir 2>|/tmp/err$p; r=$?; else (echo $p > /mnt/lock) 2>|/tmp/err$p; r=$?; fi
            t1=$(now)
            if [ $r = 0 ]; then c=ok; else c=$(class $p); fi
            echo "KC: lk $p $kind make $t0 $t1 $c"
            if [ $c = ok ] || [ $c = unknown ]; then
                t0=$(now)
                if [ $kind = dir ]; then rmdir /mnt/lockdir 2>|/tmp/err$p; r=$?; else rm /mnt/lock 2>|/tmp/err$p; r=$?; fi
                t1=$(now)
                if [ $r = 0 ]; then c=ok; else c=$(class $p); fi
                echo "KC: lk $p $kind remove $t0 $t1 $c"
            fi
        done
    done
}}
# The shared file: 64-byte blocks, each written whole with a value of its writer's own
# (p * 10000000 + n) and read back; reported with windows as the lock operations are.
dclass() {{
    if grep -q "I/O error" /tmp/derr$1; then echo unknown; else echo "failed:$(cat /tmp/derr$1)"; fi
}}
write() {{
    p=$1
    n=0
    while [ ! -e /mnt/STOP ]; do
        b=$((RANDOM % 8))
        if [ $((RANDOM % 2)) = 0 ]; then
            n=$((n + 1))
            v=$((p * 10000000 + n))
            t0=$(now)
            printf "%-64s" "V$v" | dd of=/mnt/shared bs=64 seek=$b count=1 conv=notrunc 2>|/tmp/derr$p >/dev/null
            r=$?
            t1=$(now)
            if [ $r = 0 ]; then c=ok; else c=$(dclass $p); fi
            echo "KC: dw $p write $b $v $t0 $t1 $c"
        else
            t0=$(now)
            got=$(dd if=/mnt/shared bs=64 skip=$b count=1 2>|/tmp/derr$p | tr -d '\000')
            r=$?
            t1=$(now)
            if [ $r = 0 ]; then c=ok; else c=$(dclass $p); fi
            set -- $got
            v=${{1#V}}
            echo "KC: dw $p read $b ${{v:-none}} $t0 $t1 $c"
        fi
    done
}}
race 1 &
a=$!
race 2 &
b=$!
write 3 &
c=$!
write 4 &
d=$!
wait $a $b $c $d
umount /mnt || echo "KC: ERR umount"
echo "KC: done"
"#
    )
}

/// The guest's lock-race reports as a history: windows in microseconds of the guest's clock,
/// widened by its resolution (a hundredth of a second) so that no real order is ruled out.
fn lock_race_history(reports: &[String]) -> Result<tests::history::History, String> {
    use tests::history::{History, Kind, Op, Outcome};
    let mut h = History::new();
    for r in reports.iter().filter_map(|r| r.strip_prefix("lk ")) {
        let w: Vec<&str> = r.split_whitespace().collect();
        let [p, kind, what, t0, t1, how] = w[..] else {
            return Err(format!("unreadable report: lk {r}"));
        };
        let tick = |t: &str| t.parse::<u64>().map_err(|e| format!("{t}: {e}"));
        let outcome = match how {
            "ok" => Outcome::Ok,
            "refused" => Outcome::Refused,
            "unknown" => Outcome::Unknown,
            other => return Err(format!("process {p}: {kind} {what} failed: {other}")),
        };
        h.push(Op {
            process: p.parse().map_err(|e| format!("{p}: {e}"))?,
            name: kind.to_string(),
            kind: match what {
                "make" => Kind::CreateExclusive,
                _ => Kind::Remove,
            },
            invoked: tick(t0)? * 10_000,
            answered: (tick(t1)? + 1) * 10_000,
            outcome,
        });
    }
    Ok(h)
}

/// The guest's shared-file reports as data operations, on the same clock as the locks.
fn shared_file_history(reports: &[String]) -> Result<Vec<tests::history::DataOp>, String> {
    use tests::history::{Data, DataOp, Outcome};
    let mut ops = Vec::new();
    for r in reports.iter().filter_map(|r| r.strip_prefix("dw ")) {
        let w: Vec<&str> = r.split_whitespace().collect();
        let [p, what, block, value, t0, t1, how] = w[..] else {
            return Err(format!("unreadable report: dw {r}"));
        };
        let num = |t: &str| t.parse::<u64>().map_err(|e| format!("{t}: {e}"));
        let outcome = match how {
            "ok" => Outcome::Ok,
            "unknown" => Outcome::Unknown,
            other => {
                return Err(format!(
                    "process {p}: {what} of block {block} failed: {other}"
                ))
            }
        };
        let block = num(block)? as u32;
        let data = match (what, value) {
            ("write", v) => Data::Write {
                block,
                value: num(v)?,
            },
            (_, "none") => Data::Read { block, seen: None },
            // Anything but a value written whole reads as one nobody wrote.
            (_, v) => Data::Read {
                block,
                seen: Some(v.parse().unwrap_or(u64::MAX)),
            },
        };
        ops.push(DataOp {
            process: num(p)? as usize,
            data,
            invoked: num(t0)? * 10_000,
            answered: (num(t1)? + 1) * 10_000,
            outcome,
        });
    }
    Ok(ops)
}

/// Two processes in the guest race for a lock directory (mkdir) and a lock file (O_EXCL)
/// through the proxy, and two more write and read blocks of one shared file, while diod is
/// frozen and killed eight times: the history checkers find an order that explains every
/// answer (no two holders of one lock, none let go twice; every read a value a write that
/// may have run left there and nothing acknowledged since replaced), and the test prints how
/// many operations ended each way.
#[test]
fn kernel_clients_racing_for_locks_through_a_killed_diod() {
    let dir = scratch("locks");
    let mut server = Server::start(&dir, Kind::Diod);
    let hop = Hop::proxy(server.port);
    let mount = format!(
        "mount -t 9p -o trans=tcp,port={},version=9p2000.L,aname={} 10.0.2.2 /mnt",
        hop.port,
        server.export().display()
    );
    std::fs::write(server.export().join("shared"), [0u8; 512]).unwrap();
    let guest = Guest::boot(lock_race_workload(&mount));
    guest.wait_for("mounted", Duration::from_secs(90), &hop);
    let kills = 8;
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(400 + 150 * (k % 5) as u64));
        server.kill(k % 2 == 0);
        std::thread::sleep(Duration::from_millis(150));
        server.spawn();
    }
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(server.export().join("STOP"), b"").unwrap();
    guest.wait_for("done", Duration::from_secs(120), &hop);
    let history = match lock_race_history(&guest.reports()) {
        Ok(h) => h,
        Err(e) => panic!("{}", guest.story(&e, &hop)),
    };
    let violations = history.violations();
    if !violations.is_empty() {
        panic!("{}", guest.story(&violations.join("\n"), &hop));
    }
    let counts = history.counts();
    eprintln!(
        "kernel lock race, two processes, diod killed {kills} times: {} operations: {counts}",
        history.len()
    );
    assert!(counts.ok > 10, "{counts}");
    let data = match shared_file_history(&guest.reports()) {
        Ok(ops) => ops,
        Err(e) => panic!("{}", guest.story(&e, &hop)),
    };
    let violations = tests::history::data_violations(&data);
    if !violations.is_empty() {
        panic!("{}", guest.story(&violations.join("\n"), &hop));
    }
    let counts = tests::history::data_counts(&data);
    let seen = data
        .iter()
        .filter(|o| matches!(o.data, tests::history::Data::Read { seen: Some(_), .. }))
        .count();
    eprintln!(
        "kernel shared-file writers, two processes: {} operations: {counts}; {seen} reads saw a write",
        data.len()
    );
    assert!(counts.ok > 10 && seen > 3, "{counts}");
}
