//! A session waiting out an outage (its client's request held, the server refusing dials)
//! waits on its timer and sockets: it must not spin. (Its own test binary, one test: the CPU
//! clock read is the whole process's.)

mod support;

use std::time::Duration;

use futures_lite::future;
use p9_core::*;
use runtime_async::Addr;
use rustix::time::{clock_gettime, ClockId};
use support::*;

fn cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

async fn waiting_out_an_outage_is_idle(spawn: Spawn) {
    let mut server = RamfsServer::new(spawn.clone()).await;
    let listen = Addr::Tcp("127.0.0.1:0".into());
    let proxy = start_proxy(&listen, quick_config(server.backend()), &spawn).await;
    let mut c = NineP::connect(&proxy.addr).await.unwrap();
    c.attach().await;
    server.crash().await;
    let walk = Twalk {
        fid: Fid(0),
        newfid: Fid(1),
        wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
    };
    let (r, spent) = future::zip(c.call(walk), async {
        let before = cpu_time();
        sleep(Duration::from_millis(1500)).await;
        let spent = cpu_time() - before;
        server.start().await;
        spent
    })
    .await;
    assert!(
        spent < Duration::from_millis(300),
        "{spent:?} of CPU in 1.5 s of waiting: something spins"
    );
    assert!(
        matches!(r.unwrap().msg, Msg::Rwalk(_)),
        "the held walk completes"
    );
    proxy.shutdown.shutdown();
    within(
        Duration::from_secs(2),
        "run_proxy returning",
        proxy.done.wait(),
    )
    .await;
}

#[test]
fn waiting_out_an_outage_is_idle_on_smol_and_async_std() {
    on_smol(waiting_out_an_outage_is_idle);
    on_async_std(waiting_out_an_outage_is_idle);
}
