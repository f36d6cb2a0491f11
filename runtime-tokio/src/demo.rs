//! `p9persist demo`: an embedded ramfs server, the proxy in front of it, and a client workload
//! that keeps files open, writes, reads back and lists — while the server is cut off several
//! times. Prints what happened and whether every byte read back was exact.

use std::time::{Duration, Instant};

use p9_core::*;
use persist_core::{Backoff, Config, Event};
use runtime_tokio::client::NineP;
use runtime_tokio::{run_proxy, Addr, Listener, ProxyConfig, RamfsServer, Servers};
use tokio::sync::{mpsc, watch};

/// Bytes written per write.
const BLOCK: usize = 4096;
/// Blocks per file: writes cycle through the first 16 MiB of each file, so however fast the
/// machine, the files stay within the server's size limit.
const SLOTS: u64 = (16 << 20) / BLOCK as u64;

#[derive(Default)]
struct Tally {
    ops: u64,
    bytes_written: u64,
    not_completed: u64,
    mismatches: u64,
    other_errors: u64,
}

fn is_error(m: &Msg) -> bool {
    matches!(m, Msg::Rerror(_) | Msg::Rlerror(_))
}

/// The block written at position `k` of file `f`: recognisable bytes.
fn block(f: u32, k: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (f as u64 * 131 + k * 31 + i as u64) as u8)
        .collect()
}

pub async fn run(outages: u32, outage: Duration, files: u32) -> Result<(), String> {
    let (stop_tx, stop) = watch::channel(false);
    // The server.
    let server = RamfsServer::new(ramfs::Fs::new(), 65536);
    let server_listener = Listener::bind(&Addr::Tcp("127.0.0.1:0".into()))
        .await
        .map_err(|e| e.to_string())?;
    let server_addr = server_listener.local_addr().ok_or("no server address")?;
    tokio::spawn(server.clone().serve(server_listener, stop.clone()));
    // The proxy, with a brisk redial for the demo.
    let proxy_listener = Listener::bind(&Addr::Tcp("127.0.0.1:0".into()))
        .await
        .map_err(|e| e.to_string())?;
    let proxy_addr = proxy_listener.local_addr().ok_or("no proxy address")?;
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let cfg = ProxyConfig {
        servers: Servers::one(server_addr.clone()),
        session: Config {
            backoff: Backoff {
                initial: Duration::from_millis(300),
                max: Duration::from_secs(2),
                ..Backoff::default()
            },
            ..Config::default()
        },
        metrics: None,
        limits: Default::default(),
    };
    tokio::spawn(run_proxy(
        proxy_listener,
        cfg,
        Some(events_tx),
        stop.clone(),
    ));
    println!("p9persist demo");
    println!("  ramfs server  {server_addr}");
    println!("  proxy         {proxy_addr}  (the client talks 9P2000.L to this)");
    println!("  workload      {files} files kept open; write, read back, list; {outages} outages of {:.1} s\n", outage.as_secs_f64());

    // The outages, spread over the run.
    let chaos = {
        let server = server.clone();
        tokio::spawn(async move {
            for k in 1..=outages {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                println!("  !! server cut off: every connection dropped, new ones refused for {:.1} s (outage {k} of {outages})", outage.as_secs_f64());
                server.cut_off(outage);
                tokio::time::sleep(outage).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
        })
    };

    let started = Instant::now();
    let printer = tokio::spawn(async move {
        let mut lost_at = None;
        while let Some(e) = events.recv().await {
            match &e {
                Event::Disconnected { .. } => lost_at = lost_at.or(Some(Instant::now())),
                Event::Recovered { .. } => {
                    if let Some(t) = lost_at.take() {
                        println!(
                            "  {:5.1} s  client: service back after {:.2} s without a server",
                            started.elapsed().as_secs_f64(),
                            t.elapsed().as_secs_f64()
                        );
                    }
                }
                _ => {}
            }
            report(&e, started);
        }
    });
    let mut c = NineP::connect(&proxy_addr, 65536, Dialect::DotL)
        .await
        .map_err(|e| format!("cannot reach the proxy: {e}"))?;
    let attach = Tattach {
        fid: Fid(0),
        afid: NOFID,
        uname: "demo".into(),
        aname: "".into(),
        n_uname: Some(0),
    };
    let r = c.call(attach).await.map_err(|e| e.to_string())?;
    if is_error(&r.msg) {
        return Err(format!("attach failed: {:?}", r.msg));
    }
    let mut t = Tally::default();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for f in 0..files {
        let fid = Fid(10 + f);
        c.call(Twalk {
            fid: Fid(0),
            newfid: fid,
            wnames: WalkNames::new::<[&str; 0], &str>([]).expect("no names"),
        })
        .await
        .map_err(|e| e.to_string())?;
        let r = c
            .call(Tlcreate {
                fid,
                name: format!("file{f}").into(),
                flags: lflags::RDWR,
                mode: 0o644,
                gid: 0,
            })
            .await
            .map_err(|e| e.to_string())?;
        if is_error(&r.msg) {
            return Err(format!("creating file{f} failed: {:?}", r.msg));
        }
        expected.push(Vec::new());
    }
    // A directory fid kept open for listings.
    let dfid = Fid(98);
    c.call(Twalk {
        fid: Fid(0),
        newfid: dfid,
        wnames: WalkNames::new::<[&str; 0], &str>([]).expect("no names"),
    })
    .await
    .map_err(|e| e.to_string())?;
    c.call(Tlopen {
        fid: dfid,
        flags: lflags::DIRECTORY,
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut k = 0u64;
    let mut temp = 0u32;
    while !chaos.is_finished() {
        for f in 0..files {
            let fid = Fid(10 + f);
            // Write the next block, then read back an earlier one.
            let data = block(f, k);
            let slot = k % SLOTS;
            let r = c
                .call(Twrite {
                    fid,
                    offset: slot * BLOCK as u64,
                    data: Data(data.clone().into()),
                })
                .await
                .map_err(|e| e.to_string())?;
            t.ops += 1;
            match &r.msg {
                Msg::Rwrite(w) if w.count as usize == BLOCK => {
                    let file = &mut expected[f as usize];
                    let at = slot as usize * BLOCK;
                    if file.len() < at + BLOCK {
                        file.resize(at + BLOCK, 0);
                    }
                    file[at..at + BLOCK].copy_from_slice(&data);
                    t.bytes_written += BLOCK as u64;
                }
                m => {
                    t.other_errors += 1;
                    println!("  write failed: {m:?}");
                }
            }
            let back = (k / 2) % SLOTS;
            let r = c
                .call(Tread {
                    fid,
                    offset: back * BLOCK as u64,
                    count: BLOCK as u32,
                })
                .await
                .map_err(|e| e.to_string())?;
            t.ops += 1;
            match &r.msg {
                Msg::Rread(d) => {
                    let want =
                        &expected[f as usize][back as usize * BLOCK..(back as usize + 1) * BLOCK];
                    if &d.data.0[..] != want {
                        t.mismatches += 1;
                    }
                }
                m => {
                    t.other_errors += 1;
                    println!("  read failed: {m:?}");
                }
            }
        }
        // A create and remove now and then: if one is in flight at a cut, it may have happened,
        // and the proxy says so rather than guess.
        let tfid = Fid(99);
        c.call(Twalk {
            fid: Fid(0),
            newfid: tfid,
            wnames: WalkNames::new::<[&str; 0], &str>([]).expect("no names"),
        })
        .await
        .map_err(|e| e.to_string())?;
        let r = c
            .call(Tlcreate {
                fid: tfid,
                name: format!("tmp{temp}").into(),
                flags: lflags::RDWR,
                mode: 0o644,
                gid: 0,
            })
            .await
            .map_err(|e| e.to_string())?;
        temp += 1;
        t.ops += 1;
        if matches!(r.msg, Msg::Rlerror(Rlerror { ecode: errno::EIO })) {
            t.not_completed += 1;
        }
        let r = c
            .call(Tremove { fid: tfid })
            .await
            .map_err(|e| e.to_string())?;
        t.ops += 1;
        if matches!(r.msg, Msg::Rlerror(Rlerror { ecode: errno::EIO })) {
            t.not_completed += 1;
        }
        // List the directory: every file must be there.
        let r = c
            .call(Treaddir {
                fid: dfid,
                offset: 0,
                count: 60_000,
            })
            .await
            .map_err(|e| e.to_string())?;
        t.ops += 1;
        match &r.msg {
            Msg::Rreaddir(d) => {
                let names: Vec<Vec<u8>> = dir::dirents(&d.data.0)
                    .filter_map(Result::ok)
                    .map(|e| e.name.to_vec())
                    .collect();
                if (0..files).any(|f| !names.contains(&format!("file{f}").into_bytes())) {
                    t.mismatches += 1;
                }
            }
            m => {
                t.other_errors += 1;
                println!("  listing failed: {m:?}");
            }
        }
        k += 1;
    }
    // Final check: every file read whole through the fids opened before the first outage.
    let mut exact = true;
    for f in 0..files {
        let want = &expected[f as usize];
        let mut got = Vec::new();
        while got.len() < want.len() {
            let r = c
                .call(Tread {
                    fid: Fid(10 + f),
                    offset: got.len() as u64,
                    count: 60_000,
                })
                .await
                .map_err(|e| e.to_string())?;
            match r.msg {
                Msg::Rread(d) if !d.data.0.is_empty() => got.extend_from_slice(&d.data.0),
                _ => break,
            }
        }
        exact &= &got == want;
    }
    let _ = stop_tx.send(true);
    printer.abort();
    let bytes = t.bytes_written;
    println!("\nsummary after {:.1} s:", started.elapsed().as_secs_f64());
    println!("  outages                      {outages}");
    println!(
        "  operations completed         {}",
        t.ops - t.not_completed - t.other_errors
    );
    println!(
        "  failed as possibly-not-completed  {} (creates/removes in flight at a cut)",
        t.not_completed
    );
    println!("  other errors                 {}", t.other_errors);
    println!("  bytes written through {files} fids opened once: {bytes}");
    println!(
        "  data read back exact, listings complete  {}",
        if exact && t.mismatches == 0 {
            "yes"
        } else {
            "NO"
        }
    );
    if !exact || t.mismatches > 0 || t.other_errors > 0 {
        return Err(format!(
            "{} mismatched reads, {} unexpected errors",
            t.mismatches, t.other_errors
        ));
    }
    Ok(())
}

fn report(e: &Event, started: Instant) {
    let at = started.elapsed().as_secs_f64();
    match e {
        Event::Disconnected { reason, .. } => {
            println!("  {at:5.1} s  proxy: server lost ({reason})")
        }
        Event::Redialing { attempt, delay } => println!(
            "  {at:5.1} s  proxy: redialing in {:.2} s (attempt {attempt})",
            delay.as_secs_f64()
        ),
        Event::Recovered {
            fids,
            stale,
            elapsed,
        } => {
            println!(
                "  {at:5.1} s  proxy: rebuilt {fids} fids in {} ms ({stale} stale)",
                elapsed.as_millis()
            )
        }
        Event::RequestFailed { request, .. } => println!(
            "  {at:5.1} s  proxy: {} was in flight at the cut: answered \"possibly not completed\"",
            request.name()
        ),
        Event::FidLost { fid, why, .. } => println!("  {at:5.1} s  proxy: fid {fid} lost: {why}"),
        _ => {}
    }
}
