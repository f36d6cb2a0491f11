//! The proxy between a real client and a real server, on smol's executor and on async-std's: a
//! 9P client on p9-core's sans-IO client talks through `run_proxy` to an in-test ramfs server,
//! which crashes mid-run and comes back; the data must survive and the proxy must stop in time.

mod support;

use std::time::{Duration, Instant};

use futures_lite::future;
use p9_core::*;
use runtime_async::{Addr, Listener};
use support::*;

fn pattern(k: u64) -> Vec<u8> {
    (0..8192u64).map(|i| (k * 13 + i * 7) as u8).collect()
}

async fn attach(proxy: &Addr) -> NineP<async_net::TcpStream> {
    let mut c = NineP::connect(proxy)
        .await
        .expect("connect through the proxy");
    c.attach().await;
    c
}

fn no_names() -> WalkNames {
    WalkNames::new::<[&str; 0], &str>([]).unwrap()
}

/// Write 8 KiB blocks through fid 1 at offset k * 8 KiB and read each back.
async fn write_blocks<S>(c: &mut NineP<S>, blocks: std::ops::Range<u64>, expected: &mut Vec<u8>)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    for k in blocks {
        let data = pattern(k);
        let r = c
            .call(Twrite {
                fid: Fid(1),
                offset: k * 8192,
                data: Data(data.clone().into()),
            })
            .await
            .unwrap();
        assert_eq!(r.msg, Msg::Rwrite(Rwrite { count: 8192 }), "write {k}");
        expected.extend_from_slice(&data);
        let r = c
            .call(Tread {
                fid: Fid(1),
                offset: k * 8192,
                count: 8192,
            })
            .await
            .unwrap();
        let Msg::Rread(d) = r.msg else {
            panic!("read {k}: {:?}", r.msg)
        };
        assert_eq!(&d.data.0[..], &data[..], "read {k}");
    }
}

/// Read all of `fid` from offset 0.
async fn read_all<S>(c: &mut NineP<S>, fid: u32) -> Vec<u8>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let mut got = Vec::new();
    loop {
        let r = c
            .call(Tread {
                fid: Fid(fid),
                offset: got.len() as u64,
                count: 60_000,
            })
            .await
            .unwrap();
        let Msg::Rread(d) = r.msg else {
            panic!("read: {:?}", r.msg)
        };
        if d.data.0.is_empty() {
            return got;
        }
        got.extend_from_slice(&d.data.0);
    }
}

/// Version, attach, walk, create-and-open, write and read through the proxy; the server crashes
/// mid-run (a request waits through the outage) and comes back; every byte is there, through
/// the fid opened before the crash and through one walked and opened after it.
async fn data_survives_a_server_restart(spawn: Spawn) {
    let mut server = RamfsServer::new(spawn.clone()).await;
    let listen = Addr::Tcp("127.0.0.1:0".into());
    let proxy = start_proxy(&listen, quick_config(server.backend()), &spawn).await;
    let mut c = attach(&proxy.addr).await;
    let r = c
        .call(Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: no_names(),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rwalk(_)), "walk: {:?}", r.msg);
    let r = c
        .call(Tlcreate {
            fid: Fid(1),
            name: "data".into(),
            flags: lflags::RDWR,
            mode: 0o644,
            gid: 0,
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rlcreate(_)), "create: {:?}", r.msg);

    let mut expected = Vec::new();
    write_blocks(&mut c, 0..4, &mut expected).await;

    // The server crashes; a write sent during the outage is held and completes once it is back.
    server.crash().await;
    let crashed = Instant::now();
    let data = pattern(4);
    let (r, ()) = future::zip(
        c.call(Twrite {
            fid: Fid(1),
            offset: 4 * 8192,
            data: Data(data.clone().into()),
        }),
        async {
            sleep(Duration::from_millis(500)).await;
            server.start().await;
        },
    )
    .await;
    assert_eq!(r.unwrap().msg, Msg::Rwrite(Rwrite { count: 8192 }));
    assert!(crashed.elapsed() >= Duration::from_millis(500));
    expected.extend_from_slice(&data);
    write_blocks(&mut c, 5..8, &mut expected).await;

    // A second crash, between requests this time.
    server.crash().await;
    sleep(Duration::from_millis(300)).await;
    server.start().await;
    write_blocks(&mut c, 8..10, &mut expected).await;

    // Through the fid opened before the crashes...
    assert!(read_all(&mut c, 1).await == expected, "fid 1 reads back");
    // ...through a fid walked and opened after them...
    let r = c
        .call(Twalk {
            fid: Fid(0),
            newfid: Fid(2),
            wnames: WalkNames::new(["data"]).unwrap(),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rwalk(_)), "walk: {:?}", r.msg);
    let r = c
        .call(Tlopen {
            fid: Fid(2),
            flags: lflags::RDONLY,
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rlopen(_)), "open: {:?}", r.msg);
    assert!(read_all(&mut c, 2).await == expected, "fid 2 reads back");
    // ...and on the server's "disk".
    assert!(server.fs.lock().unwrap().read_file("/data").unwrap() == &expected[..]);
    // The proxy really redialed: one connection per life of the server.
    assert_eq!(server.accepted(), 3);

    // The client leaves: its session ends and drops its link.
    drop(c);
    within(
        Duration::from_secs(2),
        "the session's link closing",
        async {
            while server.connections() > 0 {
                sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;

    let stopping = Instant::now();
    proxy.shutdown.shutdown();
    within(
        Duration::from_secs(2),
        "run_proxy returning",
        proxy.done.wait(),
    )
    .await;
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

#[test]
fn data_survives_a_server_restart_on_smol() {
    on_smol(data_survives_a_server_restart);
}

#[test]
fn data_survives_a_server_restart_on_async_std() {
    on_async_std(data_survives_a_server_restart);
}

/// With a client connected, a request of its held and the server down, `run_proxy` returns
/// within 2 s of shutdown, and the client sees its connection closed.
async fn shutdown_with_the_server_down(spawn: Spawn) {
    let mut server = RamfsServer::new(spawn.clone()).await;
    let listen = Addr::Tcp("127.0.0.1:0".into());
    let proxy = start_proxy(&listen, quick_config(server.backend()), &spawn).await;
    let mut c = attach(&proxy.addr).await;
    server.crash().await;
    // A request the proxy holds: the server is away.
    c.client
        .send(Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: no_names(),
        })
        .unwrap();
    c.transmit().await.unwrap();
    sleep(Duration::from_millis(300)).await;

    let stopping = Instant::now();
    proxy.shutdown.shutdown();
    within(
        Duration::from_secs(2),
        "run_proxy returning",
        proxy.done.wait(),
    )
    .await;
    // The session closed the client's connection.
    within(
        Duration::from_secs(2),
        "the client's stream ending",
        async {
            while let Ok(n) = c.read_some().await {
                if n == 0 {
                    break;
                }
            }
        },
    )
    .await;
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

#[test]
fn shutdown_with_the_server_down_on_smol() {
    on_smol(shutdown_with_the_server_down);
}

#[test]
fn shutdown_with_the_server_down_on_async_std() {
    on_async_std(shutdown_with_the_server_down);
}

/// A proxy on a unix socket: the socket is private, clients are served through it, the backend
/// never answering does not keep shutdown waiting, and the socket file goes with the proxy.
async fn unix_listener(spawn: Spawn) {
    use std::os::unix::fs::PermissionsExt;

    // A directory per proxy: bind_unix_private makes a scratch directory named after the
    // process beside the socket, so two binds at once in one directory would collide.
    let dir = std::env::temp_dir().join(format!(
        "p9persist-async-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.sock");
    let server = RamfsServer::new(spawn.clone()).await;
    let proxy = start_proxy(
        &Addr::Unix(path.clone()),
        quick_config(server.backend()),
        &spawn,
    )
    .await;
    assert_eq!(proxy.addr, Addr::Unix(path.clone()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let stream = async_net::unix::UnixStream::connect(&path).await.unwrap();
    let mut c = NineP::over(stream).await.unwrap();
    c.attach().await;

    proxy.shutdown.shutdown();
    within(
        Duration::from_secs(2),
        "run_proxy returning",
        proxy.done.wait(),
    )
    .await;
    assert!(!path.exists(), "the socket file is removed");
    let _ = std::fs::remove_dir(&dir);
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn unix_listener_on_smol() {
    on_smol(unix_listener);
}

#[test]
fn unix_listener_on_async_std() {
    on_async_std(unix_listener);
}

/// Many clients come and go: each session ends with its client, its link is closed, and the
/// proxy keeps serving; an idle proxy stops at once.
async fn sessions_end_with_their_clients(spawn: Spawn) {
    let server = RamfsServer::new(spawn.clone()).await;
    let listen = Addr::Tcp("127.0.0.1:0".into());
    let proxy = start_proxy(&listen, quick_config(server.backend()), &spawn).await;
    for _ in 0..3 {
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(attach(&proxy.addr).await);
        }
        assert_eq!(server.connections(), 8);
        drop(clients);
        within(Duration::from_secs(2), "every link closing", async {
            while server.connections() > 0 {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    let stopping = Instant::now();
    proxy.shutdown.shutdown();
    within(
        Duration::from_secs(2),
        "run_proxy returning",
        proxy.done.wait(),
    )
    .await;
    assert!(
        stopping.elapsed() < Duration::from_millis(500),
        "idle proxy stops at once"
    );
}

#[test]
fn sessions_end_with_their_clients_on_smol() {
    on_smol(sessions_end_with_their_clients);
}

#[test]
fn sessions_end_with_their_clients_on_async_std() {
    on_async_std(sessions_end_with_their_clients);
}

/// Binding a unix path that is a regular file fails and leaves the file alone.
#[test]
fn a_regular_file_is_never_replaced() {
    let path = std::env::temp_dir().join(format!("p9persist-async-file-{}", rand_suffix()));
    std::fs::write(&path, b"keep").unwrap();
    let r = future::block_on(Listener::bind(&Addr::Unix(path.clone())));
    assert!(r.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    std::fs::remove_file(&path).unwrap();
}
