//! `p9persist mux` with real servers: two diods exporting copies of one tree, named in a
//! registry file; the one serving is SIGKILLed under a client. Unopened fids keep working on
//! the other, open ones answer EIO until clunked, and walks, stats and directory listings show
//! the same qids as before. Also: `--list`, a registry file that changes while the mux runs,
//! and a registry read over 9P.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::*;
use p9_core::{
    dir, lflags, Dialect, Fid, Msg, Qid, Tattach, Tclunk, Tgetattr, Tlcreate, Tlopen, Tread,
    Treaddir, Twalk, Twrite, WalkNames, NOFID,
};
use runtime_tokio::client::NineP;
use runtime_tokio::Addr;

const BIN: &str = env!("CARGO_BIN_EXE_p9persist");

/// An export holding `tree/` with `a.txt` and `sub/b.txt`, and beside it `junk` (outside the
/// service path: clients must not see it).
fn export(scratch: &Scratch, name: &str) -> std::path::PathBuf {
    let e = scratch.0.join(name);
    std::fs::create_dir_all(e.join("tree/sub")).unwrap();
    std::fs::write(e.join("tree/a.txt"), b"alpha\n").unwrap();
    std::fs::write(e.join("tree/sub/b.txt"), b"beta\n").unwrap();
    std::fs::write(e.join("junk"), b"not served\n").unwrap();
    e
}

fn service_line(name: &str, port: u16, export: &Path) -> String {
    format!(
        "{name} name data addr tcp!127.0.0.1!{port} aname {} path tree loc lab\n",
        export.display()
    )
}

/// Start `p9persist mux` on a port of its own, logging to `log`; wait until it serves.
fn mux(args: &[&str], log: &Path) -> (Running, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "mux",
            "--listen",
            &port.to_string(),
            "--backoff-initial",
            "50ms",
        ])
        .args(args)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let running = Running(child);
    wait_for_line(log, "serving");
    (running, port)
}

async fn call(c: &mut NineP, msg: impl Into<Msg>) -> Msg {
    c.call(msg).await.expect("a reply").msg
}

async fn walk(c: &mut NineP, fid: u32, newfid: u32, names: &[&str]) -> Vec<Qid> {
    let wnames = WalkNames::new(names).unwrap();
    match call(
        c,
        Twalk {
            fid: Fid(fid),
            newfid: Fid(newfid),
            wnames,
        },
    )
    .await
    {
        Msg::Rwalk(w) if w.wqids.len() == names.len() => w.wqids.iter().collect(),
        other => panic!("walk {names:?}: {other:?}"),
    }
}

async fn getattr(c: &mut NineP, fid: u32) -> Msg {
    call(
        c,
        Tgetattr {
            fid: Fid(fid),
            request_mask: 0x7ff,
        },
    )
    .await
}

fn qid_of(m: &Msg) -> Qid {
    match m {
        Msg::Rgetattr(g) => g.qid,
        other => panic!("not an Rgetattr: {other:?}"),
    }
}

/// The root's listing (through `fid`, walked from the root and clunked after): name → qid.
async fn listing(c: &mut NineP, fid: u32) -> BTreeMap<String, Qid> {
    walk(c, 0, fid, &[]).await;
    let opened = call(
        c,
        Tlopen {
            fid: Fid(fid),
            flags: lflags::RDONLY | lflags::DIRECTORY,
        },
    )
    .await;
    assert!(matches!(opened, Msg::Rlopen(_)), "{opened:?}");
    let mut entries = BTreeMap::new();
    let mut offset = 0;
    loop {
        let r = call(
            c,
            Treaddir {
                fid: Fid(fid),
                offset,
                count: 8192,
            },
        )
        .await;
        let Msg::Rreaddir(r) = r else {
            panic!("readdir: {r:?}")
        };
        if r.data.0.is_empty() {
            break;
        }
        for e in dir::dirents(&r.data.0) {
            let e = e.unwrap();
            offset = e.offset;
            entries.insert(String::from_utf8_lossy(&e.name).into_owned(), e.qid);
        }
    }
    call(c, Tclunk { fid: Fid(fid) }).await;
    entries
}

async fn attach(port: u16) -> (NineP, Qid) {
    let addr = Addr::Tcp(format!("127.0.0.1:{port}"));
    let mut c = NineP::connect(&addr, 65536, Dialect::DotL).await.unwrap();
    // An empty aname: the service's own is what reaches the server.
    let r = call(
        &mut c,
        Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "root".into(),
            aname: Bytes::new(),
            n_uname: Some(0),
        },
    )
    .await;
    let Msg::Rattach(a) = r else {
        panic!("attach through the mux: {r:?}")
    };
    (c, a.qid)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The name of the service the first session connected to, from the log.
fn serving(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("connected to "))
        .unwrap_or_else(|| panic!("no connection logged:\n{text}"));
    let rest = &line[line.find("connected to ").unwrap() + "connected to ".len()..];
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_serving_diod_killed_open_files_fail_the_rest_move_and_qids_hold() {
    let scratch = Scratch::new("mux-failover");
    let (e1, e2) = (export(&scratch, "one"), export(&scratch, "two"));
    let (p1, p2) = (free_port(), free_port());
    let mut diods = BTreeMap::from([("one", diod(p1, &e1)), ("two", diod(p2, &e2))]);
    let registry = scratch.0.join("registry");
    std::fs::write(
        &registry,
        service_line("one", p1, &e1) + &service_line("two", p2, &e2),
    )
    .unwrap();
    let log = scratch.0.join("log");
    let reg = registry.display().to_string();
    let (mux, port) = mux(&["--registry", &reg, "name", "data"], &log);
    let rt = runtime();
    rt.block_on(async {
        let (mut c, root) = attach(port).await;
        assert!(root.is_dir());
        // The service path is the root: a.txt is there, junk (beside tree/) is not.
        let before = listing(&mut c, 9).await;
        assert!(
            before.contains_key("a.txt") && before.contains_key("sub"),
            "{before:?}"
        );
        assert!(!before.contains_key("junk"), "{before:?}");
        let a = walk(&mut c, 0, 1, &["a.txt"]).await[0];
        let sub_b = walk(&mut c, 0, 2, &["sub", "b.txt"]).await;
        assert_eq!(before["a.txt"].path, a.path, "listing and walk agree");
        assert_eq!(before["sub"].path, sub_b[0].path);
        let opened = call(
            &mut c,
            Tlopen {
                fid: Fid(2),
                flags: lflags::RDONLY,
            },
        )
        .await;
        assert!(matches!(opened, Msg::Rlopen(_)), "{opened:?}");
        assert_eq!(qid_of(&getattr(&mut c, 1).await).path, a.path);

        // SIGKILL the diod serving the session.
        let first = serving(&log);
        let other = if first == "one" { "two" } else { "one" };
        drop(diods.remove(first.as_str()).expect("a known service"));

        // The unopened fid works at once, on the other diod, with the same qid path.
        let moved = getattr(&mut c, 1).await;
        assert_eq!(qid_of(&moved).path, a.path, "{moved:?}");
        // The open one answers EIO, again and again, until clunked.
        for _ in 0..2 {
            let r = call(
                &mut c,
                Tread {
                    fid: Fid(2),
                    offset: 0,
                    count: 100,
                },
            )
            .await;
            assert!(matches!(r, Msg::Rlerror(ref e) if e.ecode == 5), "{r:?}");
        }
        assert!(matches!(
            call(&mut c, Tclunk { fid: Fid(2) }).await,
            Msg::Rclunk(_)
        ));
        // Walks, stats and listings show the qids they showed before.
        let root_again = walk(&mut c, 0, 3, &[]).await;
        assert!(root_again.is_empty());
        assert_eq!(qid_of(&getattr(&mut c, 3).await).path, root.path);
        let again = walk(&mut c, 0, 2, &["sub", "b.txt"]).await;
        assert_eq!(
            again.iter().map(|q| q.path).collect::<Vec<_>>(),
            sub_b.iter().map(|q| q.path).collect::<Vec<_>>()
        );
        let after = listing(&mut c, 9).await;
        let paths = |m: &BTreeMap<String, Qid>| -> BTreeMap<String, u64> {
            m.iter().map(|(k, q)| (k.clone(), q.path)).collect()
        };
        assert_eq!(paths(&before), paths(&after));
        // The file behind a.txt is another server's copy: its version says so.
        assert_ne!(before["a.txt"].version, after["a.txt"].version);
        // New files go to the other server's tree.
        walk(&mut c, 0, 4, &[]).await;
        let made = call(
            &mut c,
            Tlcreate {
                fid: Fid(4),
                name: "new.txt".into(),
                flags: lflags::RDWR,
                mode: 0o644,
                gid: 0,
            },
        )
        .await;
        assert!(matches!(made, Msg::Rlcreate(_)), "{made:?}");
        let wrote = call(
            &mut c,
            Twrite {
                fid: Fid(4),
                offset: 0,
                data: p9_core::Data(Bytes::from_static(b"moved\n")),
            },
        )
        .await;
        assert!(matches!(wrote, Msg::Rwrite(_)), "{wrote:?}");
        let survivor = if other == "one" { &e1 } else { &e2 };
        assert_eq!(
            std::fs::read(survivor.join("tree/new.txt")).unwrap(),
            b"moved\n"
        );
    });
    let first = serving(&log);
    let other = if first == "one" { "two" } else { "one" };
    // Summed up for the operator within a second.
    wait_for_line(
        &log,
        &format!("failover: {first} → {other} for 1 client; 1 open fids failed"),
    );
    mux.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("failover: {first} → {other}; 1 open fids")),
        "{text}"
    );
}

#[test]
fn list_prints_the_matching_services_and_queries_read_the_environment() {
    let scratch = Scratch::new("mux-list");
    let registry = scratch.0.join("registry");
    std::fs::write(
        &registry,
        "# the mux(4) example, with addresses\n\
         pc!who arch Plan9386 loc none path /term/pc/who name who addr tcp!pc!564\n\
         pc!what arch Plan9386 loc none path /term/pc/what name what addr tcp!pc!564\n\
         Atlantian.local!who loc home path /term/Atlantian.local/who name who addr tcp!atl!564\n",
    )
    .unwrap();
    let list = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(["mux", "--list", "--registry"])
            .arg(&registry)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, _) = list(&["name", "who"], &[]);
    assert!(ok);
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["pc!who", "Atlantian.local!who"]);
    let (ok, out, _) = list(&["name", "who", "loc", "$where"], &[("where", "home")]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with("Atlantian.local!who "), "{out}");
    let (ok, out, _) = list(&["arch", "*"], &[]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2);
    let (ok, _, err) = list(&["loc", "$P9PERSIST_UNSET_VARIABLE"], &[]);
    assert!(!ok);
    assert!(err.contains("P9PERSIST_UNSET_VARIABLE"), "{err}");
    let (ok, _, err) = list(&["name"], &[]);
    assert!(!ok && err.contains("no value"), "{err}");
}

/// A registry served in 9P2000 (Styx, as Inferno's and the Octopus's registry(4) speak it), by
/// py9p from a directory holding `index`: the mux offers 9P2000.L and speaks what it is answered.
#[test]
fn a_registry_served_in_9p2000_is_read() {
    let scratch = Scratch::new("mux-styx-registry");
    let e1 = export(&scratch, "one");
    let p1 = free_port();
    let _one = diod(p1, &e1);
    let reg_dir = scratch.0.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    std::fs::write(reg_dir.join("index"), service_line("one", p1, &e1)).unwrap();
    let reg_port = free_port();
    let py9p = Running(
        Command::new("python3")
            .args(["-m", "py9p", "-p", &reg_port.to_string(), "-r"])
            .arg(&reg_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (py9p: pip install p9fs; scripts/test.sh installs it)"),
    );
    wait_listening(reg_port, "py9p");
    serves_from_registry(&scratch, reg_port);
    drop(py9p);
}

/// The registry 9P server on `reg_port` lists service `one`, and the mux serves it: `--list`
/// shows it, and a client walks through the mux to a file on it.
fn serves_from_registry(scratch: &Scratch, reg_port: u16) {
    let registry = format!("tcp!127.0.0.1!{reg_port}");
    let out = Command::new(BIN)
        .args(["mux", "--list", "--registry", &registry, "loc", "lab"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("one name data"),
        "{out:?}"
    );
    let log = scratch.0.join("log");
    let (mux, port) = mux(&["--registry", &registry, "name", "data"], &log);
    runtime().block_on(async {
        let (mut c, _) = attach(port).await;
        walk(&mut c, 0, 1, &["sub", "b.txt"]).await;
    });
    mux.stop();
}

/// A service whose name does not resolve, beside one that works: the mux starts, says which
/// it cannot reach, and serves from the other (whichever a session tries first).
#[test]
fn a_service_that_does_not_resolve_is_passed_over() {
    let scratch = Scratch::new("mux-unresolved");
    let e = export(&scratch, "one");
    let p = free_port();
    let _one = diod(p, &e);
    let registry = scratch.0.join("registry");
    let lost = "gone name data addr tcp!no-such-host.invalid!564 path tree loc lab\n";
    std::fs::write(&registry, format!("{lost}{}", service_line("one", p, &e))).unwrap();
    let log = scratch.0.join("log");
    let reg = registry.display().to_string();
    let (mux, port) = mux(&["--registry", &reg, "name", "data"], &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("service gone: cannot resolve") && text.contains("WARN"),
        "{text}"
    );
    // Each session picks one of the two at random until `gone` has failed a dial: sessions
    // until one has tried it (twenty that never do would take odds of a million to one).
    let rt = runtime();
    let sessions = rt.block_on(async {
        let mut sessions = 0;
        while sessions < 20
            && !std::fs::read_to_string(&log)
                .unwrap()
                .contains("dial gone failed")
        {
            let (mut c, _) = attach(port).await;
            walk(&mut c, 0, 1, &["a.txt"]).await;
            sessions += 1;
        }
        sessions
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("dial gone failed"), "{text}");
    assert_eq!(text.matches("connected to one").count(), sessions, "{text}");
    mux.stop();
}

#[test]
fn a_registry_file_that_changes_is_followed() {
    let scratch = Scratch::new("mux-follow");
    let (e1, e2) = (export(&scratch, "one"), export(&scratch, "two"));
    let (p1, p2) = (free_port(), free_port());
    let _one = diod(p1, &e1);
    let two = diod(p2, &e2);
    let registry = scratch.0.join("registry");
    std::fs::write(&registry, service_line("one", p1, &e1)).unwrap();
    let log = scratch.0.join("log");
    let reg = registry.display().to_string();
    let (mux, port) = mux(&["--registry", &reg, "name", "data"], &log);
    let rt = runtime();
    rt.block_on(async {
        let (mut c, _) = attach(port).await;
        let a = walk(&mut c, 0, 1, &["a.txt"]).await[0];
        assert_eq!(serving(&log), "one");
        // "two" joins; "one" leaves the registry (its session stays while it works).
        std::fs::write(&registry, service_line("two", p2, &e2)).unwrap();
        wait_for_line(&log, "registry: two is in service");
        wait_for_line(&log, "registry: one left");
        assert_eq!(qid_of(&getattr(&mut c, 1).await).path, a.path);
        // A second client goes to the one in service.
        let (mut d, _) = attach(port).await;
        walk(&mut d, 0, 1, &["a.txt"]).await;
        drop(d);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text.matches("connected to two").count(),
            1,
            "the new client is on two:\n{text}"
        );
        // A registry caught empty changes nothing.
        std::fs::write(&registry, "").unwrap();
        wait_for_line(&log, "no service matches");
        drop(two);
    });
    mux.stop();
}

#[test]
fn a_registry_served_over_9p_is_read() {
    let scratch = Scratch::new("mux-9p-registry");
    let e1 = export(&scratch, "one");
    let p1 = free_port();
    let _one = diod(p1, &e1);
    // The registry: a ramfs holding an `index` file.
    let reg_port = free_port();
    let ramfs = Running(
        Command::new(BIN)
            .args(["ramfs", "--listen", &reg_port.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(reg_port, "the registry");
    let rt = runtime();
    rt.block_on(async {
        let (mut r, _) = attach(reg_port).await;
        walk(&mut r, 0, 1, &[]).await;
        let made = call(
            &mut r,
            Tlcreate {
                fid: Fid(1),
                name: "index".into(),
                flags: lflags::RDWR,
                mode: 0o644,
                gid: 0,
            },
        )
        .await;
        assert!(matches!(made, Msg::Rlcreate(_)), "{made:?}");
        let line = service_line("one", p1, &e1);
        let wrote = call(
            &mut r,
            Twrite {
                fid: Fid(1),
                offset: 0,
                data: p9_core::Data(Bytes::from(line.into_bytes())),
            },
        )
        .await;
        assert!(matches!(wrote, Msg::Rwrite(_)), "{wrote:?}");
    });
    serves_from_registry(&scratch, reg_port);
    drop(ramfs);
}
