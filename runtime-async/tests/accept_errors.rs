//! Out of file descriptors: accept fails with EMFILE while clients wait in the backlog. The
//! proxy must neither spin nor give up, and must serve them once descriptors are free again.
//! (Its own test binary: the open-file limit is the whole process's.)

mod support;

use std::time::Duration;

use async_net::TcpStream;
use runtime_async::{Addr, Listener};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use rustix::time::{clock_gettime, ClockId};
use support::*;

fn cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

async fn accept_errors_back_off(spawn: Spawn) {
    let server = RamfsServer::new(spawn.clone()).await;
    let listener = Listener::bind(&Addr::Tcp("127.0.0.1:0".into()))
        .await
        .unwrap();
    let Some(Addr::Tcp(at)) = listener.local_addr() else {
        panic!("a TCP listener")
    };
    // Clients wait in the backlog before the proxy runs.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(TcpStream::connect(at.as_str()).await.unwrap());
    }
    // No descriptor left: every accept fails.
    let limit = getrlimit(Resource::Nofile);
    let soft = open_fds();
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let proxy = run_on(listener, quick_config(server.backend()), &spawn);
    let before = cpu_time();
    sleep(Duration::from_millis(1500)).await;
    let spent = cpu_time() - before;
    setrlimit(Resource::Nofile, limit).unwrap();
    assert!(
        spent < Duration::from_millis(300),
        "{spent:?} of CPU in 1.5 s of failing accepts: the loop spins"
    );

    // Descriptors are back: the waiting clients are served (after at most a 0.5 s pause).
    for s in streams {
        let mut c = within(
            Duration::from_secs(3),
            "a waiting client's version",
            NineP::over(s),
        )
        .await
        .unwrap();
        c.attach().await;
    }
    proxy.shutdown.shutdown();
    within(
        Duration::from_secs(2),
        "run_proxy returning",
        proxy.done.wait(),
    )
    .await;
}

#[test]
fn accept_errors_back_off_on_smol() {
    on_smol(accept_errors_back_off);
}
