//! What an operator runs p9persist with, tried with the real tools: socket activation through
//! systemd's own `systemd-socket-activate`, the metrics endpoint scraped after a real diod
//! restart and checked by Prometheus's `promtool`, JSON logs, and the man pages and completion
//! scripts generated from the command line's definition.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p9_core::{Dialect, Fid, Msg, Tattach, Tlopen, Tread, Twalk, NOFID};
use runtime_tokio::client::NineP;
use runtime_tokio::Addr;

mod common;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_p9persist");

/// A directory in `scratch` exporting one file, `motd`, holding `text`.
fn export_with_motd(scratch: &Scratch, text: &[u8]) -> PathBuf {
    let export = scratch.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::write(export.join("motd"), text).unwrap();
    export
}

/// systemd-socket-activate listening on each of `listen`, starting `command` (logging to
/// `log`) at the first connection: it passes the sockets the way systemd does (LISTEN_FDS,
/// LISTEN_PID).
fn socket_activate(listen: &[&str], command: &[&str], log: &Path) -> Child {
    let mut cmd = Command::new(tool("systemd-socket-activate", "systemd"));
    for l in listen {
        cmd.args(["-l", l]);
    }
    cmd.args(command)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Attach to `export` through `port` and open `file` (fid 2) for reading; fid 1 is the root.
async fn attach_and_open(port: u16, export: &Path, file: &str) -> NineP {
    attach_and_open_at(&Addr::Tcp(format!("127.0.0.1:{port}")), export, file).await
}

async fn attach_and_open_at(addr: &Addr, export: &Path, file: &str) -> NineP {
    let mut c = NineP::connect(addr, 65536, Dialect::DotL)
        .await
        .expect("a 9P session through the proxy");
    let r = c
        .call(Tattach {
            fid: Fid(1),
            afid: NOFID,
            uname: "root".into(),
            aname: bytes::Bytes::copy_from_slice(export.to_str().unwrap().as_bytes()),
            n_uname: Some(0),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rattach(_)), "{:?}", r.msg);
    let r = c
        .call(Twalk {
            fid: Fid(1),
            newfid: Fid(2),
            wnames: p9_core::WalkNames::new([file]).unwrap(),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rwalk(_)), "{:?}", r.msg);
    let r = c
        .call(Tlopen {
            fid: Fid(2),
            flags: 0,
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rlopen(_)), "{:?}", r.msg);
    c
}

async fn read_all(c: &mut NineP) -> Vec<u8> {
    let r = c
        .call(Tread {
            fid: Fid(2),
            offset: 0,
            count: 4096,
        })
        .await
        .expect("a reply");
    match r.msg {
        Msg::Rread(r) => r.data.0.to_vec(),
        other => panic!("Tread answered {other:?}"),
    }
}

/// What one proxy run went through: diod, the proxy with `extra` arguments, a client holding
/// an open file, diod killed and restarted, the file read again, the client gone.
struct RestartRun {
    log: String,
    /// The metrics scraped after the read that followed the restart.
    scrape: Option<String>,
    /// From the kill to that read's answer: the longest the proxy's outage can have been.
    down_at_most: Duration,
}

fn restart_run(extra: &[&str], metrics_port: Option<u16>) -> RestartRun {
    let scratch = Scratch::new(&format!("restart-{}", extra.join("")));
    let export = export_with_motd(&scratch, b"still here\n");
    let (diod_port, proxy_port) = (free_port(), free_port());
    let mut server = diod(diod_port, &export);
    let log_path = scratch.0.join("log");
    let proxy = Command::new(BIN)
        .args(["proxy", "--listen", &proxy_port.to_string()])
        .args(["--server", &format!("127.0.0.1:{diod_port}")])
        .args(["--backoff-initial", "50ms"])
        .args(extra)
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let proxy = Running(proxy);
    // Not a probing connect: that would be a session of its own.
    wait_for_line(&log_path, "proxying");
    if let Some(p) = metrics_port {
        wait_listening(p, "the metrics endpoint");
    }
    let rt = runtime();
    let mut client = rt.block_on(attach_and_open(proxy_port, &export, "motd"));
    assert_eq!(rt.block_on(read_all(&mut client)), b"still here\n");

    // A crash: SIGKILL, and a new diod on the same port a moment later.
    let killed = std::time::Instant::now();
    drop(server);
    std::thread::sleep(Duration::from_millis(300));
    server = diod(diod_port, &export);
    assert_eq!(
        rt.block_on(read_all(&mut client)),
        b"still here\n",
        "the open file reads the same after the restart"
    );
    let down_at_most = killed.elapsed();
    let scrape = metrics_port.map(|p| {
        let (status, body) = http_get(p, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        body
    });
    drop(client);
    // The proxy notices the client left before it is stopped.
    wait_for_line(&log_path, "client disconnected");
    proxy.stop();
    drop(server);
    RestartRun {
        log: std::fs::read_to_string(&log_path).unwrap(),
        scrape,
        down_at_most,
    }
}

#[test]
fn metrics_count_a_server_restart() {
    let port = free_port();
    let run = restart_run(&["--metrics", &port.to_string()], Some(port));
    let scrape = run.scrape.unwrap();
    assert_eq!(sample(&scrape, "p9persist_sessions_open"), 1.0);
    assert_eq!(sample(&scrape, "p9persist_sessions_total"), 1.0);
    assert_eq!(sample(&scrape, "p9persist_outages_total"), 1.0, "{scrape}");
    assert_eq!(sample(&scrape, "p9persist_sessions_without_server"), 0.0);
    // Timed by the proxy from noticing the loss (however late it is scheduled) to the end of
    // the recovery: more than nothing, and within the test's own view of the outage.
    let outage = sample(&scrape, "p9persist_outage_seconds_total");
    assert!(
        outage > 0.0 && outage <= run.down_at_most.as_secs_f64(),
        "outage {outage} s, the test saw at most {:?}",
        run.down_at_most
    );
    assert_eq!(
        sample(&scrape, "p9persist_recovery_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "p9persist_recovery_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        1.0
    );
    // The root and the open file were walked again (and the file reopened).
    assert_eq!(sample(&scrape, "p9persist_fids_rebuilt_total"), 2.0);
    assert_eq!(
        sample(&scrape, "p9persist_fids_lost_total{reason=\"stale\"}"),
        0.0
    );
    assert!(sample(&scrape, "p9persist_redials_total") >= 1.0);
    assert_eq!(
        sample(
            &scrape,
            "p9persist_requests_failed_total{reason=\"not_completed\"}"
        ),
        0.0
    );
    assert!(
        sample(
            &scrape,
            "p9persist_forwarded_bytes_total{direction=\"to_server\"}"
        ) > 0.0
    );
    // Two Rreads of 11 bytes at least, besides Rversion, Rattach, Rwalk, Rlopen.
    assert!(
        sample(
            &scrape,
            "p9persist_forwarded_bytes_total{direction=\"to_client\"}"
        ) > 22.0
    );
    // The backend label is the --server address as the log writes it.
    let proxying = run.log.lines().find(|l| l.contains("proxying")).unwrap();
    let backend = proxying.split(" to ").nth(1).unwrap();
    let backend = backend.split(" (").next().unwrap();
    assert_eq!(
        sample(
            &scrape,
            &format!("p9persist_backend_sessions{{backend=\"{backend}\"}}")
        ),
        1.0,
        "{scrape}"
    );

    // Prometheus's own checker accepts the exposition (it exits non-zero on format errors).
    let mut check = Command::new(tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_metrics_endpoint_answers_only_what_it_serves() {
    let port = free_port();
    let proxy = Running(
        Command::new(BIN)
            .args(["proxy", "--listen", &free_port().to_string()])
            .args(["--server", "127.0.0.1:1", "--metrics", &port.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port, "the metrics endpoint");
    let (status, _) = http_get(port, "/nothing-here");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // A scraper that sends half a request and waits does not hold up others, and is cut off
    // (after 5 s without a whole request).
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /metr").unwrap();
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "p9persist_sessions_open"), 0.0);
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    let n = idle
        .read_to_end(&mut rest)
        .expect("the endpoint closes the connection");
    assert_eq!(n, 0, "nothing is answered to half a request: {rest:?}");
    assert!(start.elapsed() < Duration::from_secs(8));
    proxy.stop();
}

#[test]
fn json_logs_parse_line_by_line_and_carry_the_events() {
    let json = restart_run(&["--log-format", "json"], None);
    let text = restart_run(&[], None);
    let mut kinds = Vec::new();
    let mut json_messages = Vec::new();
    for line in json.log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        for field in ["timestamp", "level", "message"] {
            assert!(v[field].is_string(), "no {field} in {line}");
        }
        if let Some(kind) = v["event"].as_str() {
            kinds.push(kind.to_string());
            json_messages.push(v["message"].as_str().unwrap().to_string());
        }
    }
    for kind in [
        "connected",
        "disconnected",
        "redialing",
        "recovered",
        "client_closed",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} event in the JSON log:\n{}",
            json.log
        );
    }
    // The same sentences as the text log, less the numbers that differ from run to run
    // (ports, times, attempts).
    let words = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect()
    };
    let text_lines: Vec<String> = text.log.lines().map(words).collect();
    for m in json_messages {
        if m.contains("redialing") || m.contains("dial ") {
            continue; // how many redials an outage takes varies
        }
        let m = words(&m);
        assert!(
            text_lines.iter().any(|l| l.ends_with(&m)),
            "the JSON event {m:?} is not in the text log:\n{}",
            text.log
        );
    }
    // The text log carries no JSON and no event field.
    assert!(!text.log.contains("event="), "{}", text.log);
    assert!(!text.log.contains('{'), "{}", text.log);
}

/// The words of packaging/systemd/p9persist.service's ExecStart, with `vars` substituted.
fn unit_exec_start(vars: &[(&str, &str)]) -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/p9persist.service");
    let unit = std::fs::read_to_string(unit).unwrap();
    let mut line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
        .to_string();
    for (var, value) in vars {
        line = line.replace(var, value);
    }
    assert!(!line.contains('$'), "a variable left unset: {line}");
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn the_socket_unit_listens_where_the_readme_mounts() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/p9persist.socket");
    let unit = std::fs::read_to_string(unit).unwrap();
    assert!(unit.contains("\nListenStream=127.0.0.1:5640\n"), "{unit}");
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(readme).unwrap();
    assert!(
        readme.contains("trans=tcp,port=5640"),
        "README's fstab recipe"
    );
}

#[test]
fn socket_activation_serves_a_client_that_connected_first() {
    let scratch = Scratch::new("activation");
    let export = export_with_motd(&scratch, b"activated\n");
    let (diod_port, proxy_port) = (free_port(), free_port());
    let _server = diod(diod_port, &export);
    let log_path = scratch.0.join("log");
    // The command line is the service unit's own, with its settings filled in as systemd
    // would (${VAR} one word, $VAR split into words).
    let exec = unit_exec_start(&[
        ("${P9PERSIST_SERVER}", &format!("tcp!127.0.0.1!{diod_port}")),
        ("$P9PERSIST_OPTIONS", "--backoff-initial 50ms"),
    ]);
    assert_eq!(exec[0], "/usr/bin/p9persist", "{exec:?}");
    // The proxy starts only when the first client connects.
    let mut command = vec![BIN];
    command.extend(exec[1..].iter().map(String::as_str));
    let activator = Running(socket_activate(
        &[&format!("127.0.0.1:{proxy_port}")],
        &command,
        &log_path,
    ));
    wait_for_line(&log_path, "Listening on");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("proxying"),
        "the proxy started before any client: {log}"
    );
    let rt = runtime();
    let mut client = rt.block_on(attach_and_open(proxy_port, &export, "motd"));
    assert_eq!(rt.block_on(read_all(&mut client)), b"activated\n");
    // A second client is accepted on the same passed socket.
    let mut second = rt.block_on(attach_and_open(proxy_port, &export, "motd"));
    assert_eq!(rt.block_on(read_all(&mut second)), b"activated\n");
    drop((client, second));
    activator.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&format!(
            "proxying tcp!127.0.0.1!{proxy_port} to tcp!127.0.0.1!{diod_port}"
        )),
        "the proxy did not serve the passed socket: {log}"
    );
}

#[test]
fn every_socket_passed_is_served_unix_ones_too() {
    let scratch = Scratch::new("activation-two");
    let export = export_with_motd(&scratch, b"both\n");
    let (diod_port, proxy_port) = (free_port(), free_port());
    let sock = scratch.0.join("p9.sock");
    let _server = diod(diod_port, &export);
    let log_path = scratch.0.join("log");
    let activator = Running(socket_activate(
        &[&format!("127.0.0.1:{proxy_port}"), sock.to_str().unwrap()],
        &[BIN, "proxy", "--server", &format!("127.0.0.1:{diod_port}")],
        &log_path,
    ));
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no unix socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rt = runtime();
    // The unix socket's first client starts the proxy; the TCP socket is then served too.
    let mut over_unix = rt.block_on(attach_and_open_at(
        &Addr::Unix(sock.clone()),
        &export,
        "motd",
    ));
    assert_eq!(rt.block_on(read_all(&mut over_unix)), b"both\n");
    let mut over_tcp = rt.block_on(attach_and_open(proxy_port, &export, "motd"));
    assert_eq!(rt.block_on(read_all(&mut over_tcp)), b"both\n");
    drop((over_unix, over_tcp));
    activator.stop();
    // The socket is systemd's: the proxy leaves its file in place.
    assert!(sock.exists(), "the passed unix socket's file was removed");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&format!(
            "proxying tcp!127.0.0.1!{proxy_port}, unix!{}",
            sock.display()
        )),
        "{log}"
    );
}

#[test]
fn listen_beside_passed_sockets_is_an_error() {
    let scratch = Scratch::new("activation-listen");
    let port = free_port();
    let log_path = scratch.0.join("log");
    let mut activator = socket_activate(
        &[&format!("127.0.0.1:{port}")],
        &[BIN, "proxy", "--listen", "0", "--server", "127.0.0.1:1"],
        &log_path,
    );
    wait_for_line(&log_path, "Listening on");
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let status = exit_of(&mut activator, Duration::from_secs(10));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success());
    assert!(
        log.contains("--listen 0 was given, but systemd also passed 1 listening socket(s)"),
        "{log}"
    );
}

#[test]
fn without_listen_or_activation_the_proxy_says_what_to_do() {
    let out = Command::new(BIN)
        .args(["proxy", "--server", "127.0.0.1:1"])
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--listen is required"), "{err}");
    assert!(err.contains("socket activation"), "{err}");
}

#[test]
fn man_pages_and_completions_follow_the_command_line() {
    let scratch = Scratch::new("manpages");
    let status = Command::new(BIN)
        .arg("manpages")
        .arg(&scratch.0)
        .status()
        .unwrap();
    assert!(status.success());
    let help = Command::new(BIN)
        .args(["proxy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let page = std::fs::read_to_string(scratch.0.join("p9persist-proxy.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH"),
        "not roff: {page}"
    );
    // Every long option --help lists is in the page (roff writes - as \-).
    let options: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    assert!(options.len() >= 9, "{help}");
    for option in options {
        let roff = option.replace('-', "\\-");
        assert!(
            page.contains(&roff),
            "{option} missing from p9persist-proxy.1"
        );
    }
    for name in ["p9persist.1", "p9persist-ramfs.1", "p9persist-demo.1"] {
        assert!(scratch.0.join(name).exists(), "{name} not written");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        for word in ["--server", "--metrics", "--log-format", "proxy", "ramfs"] {
            let word = if shell == "fish" {
                word.trim_start_matches('-')
            } else {
                word
            };
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash.
    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let path = scratch.0.join("p9persist.bash");
    std::fs::write(&path, &bash.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(check.success(), "bash -n rejects the completion script");
}
