//! The stdio listener: this test runs itself as a child process whose stdin and stdout are the
//! proxy's one client, and talks 9P to it through the pipes while the server crashes and comes
//! back. The child's `run_proxy` returns once the client closes its end. (A harness of its own:
//! libtest would print on the stdout the child serves 9P on.)

mod support;

use std::io;
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use blocking::Unblock;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use p9_core::*;
use runtime_async::{run_proxy, Addr, Listener, Shutdown};
use support::*;

const CHILD: &str = "P9PERSIST_ASYNC_STDIO_CHILD";
const BACKEND: &str = "P9PERSIST_ASYNC_STDIO_BACKEND";

fn main() {
    if let Ok(executor) = std::env::var(CHILD) {
        return child(&executor);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let mut passed = 0;
    for (name, executor) in [
        ("stdio_proxy_on_smol", "smol"),
        ("stdio_proxy_on_async_std", "async-std"),
    ] {
        if !wanted(name) {
            continue;
        }
        on_smol(|spawn| stdio_proxy(spawn, executor));
        println!("test {name} ... ok");
        passed += 1;
    }
    println!("\ntest result: ok. {passed} passed; 0 failed; 0 ignored");
}

/// The child: a proxy whose one client is this process's stdin and stdout.
fn child(executor: &str) {
    let backend = Addr::dial(&std::env::var(BACKEND).expect("backend address")).unwrap();
    let serve = |spawn: Spawn| async move {
        let listener = Listener::bind(&Addr::Stdio).await.unwrap();
        assert_eq!(listener.local_addr(), Some(Addr::Stdio));
        let spawn = move |s| spawn(s);
        run_proxy(listener, quick_config(backend), spawn, Shutdown::new())
            .await
            .unwrap();
    };
    match executor {
        "smol" => on_smol(serve),
        _ => on_async_std(serve),
    }
}

/// The child's stdout to read and stdin to write, as one stream.
struct Pipes {
    from: Unblock<ChildStdout>,
    to: Unblock<ChildStdin>,
}

impl AsyncRead for Pipes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.from).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.to).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.to).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.to).poll_close(cx)
    }
}

/// Kills the child if the test fails before it exits.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn stdio_proxy(spawn: Spawn, executor: &str) {
    let mut server = RamfsServer::new(spawn.clone()).await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, executor)
        .env(BACKEND, server.backend().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the test runs itself");
    let pipes = Pipes {
        from: Unblock::new(child.stdout.take().unwrap()),
        to: Unblock::new(child.stdin.take().unwrap()),
    };
    let mut child = Reaper(child);
    let mut c = within(
        Duration::from_secs(10),
        "Tversion through stdio",
        NineP::over(pipes),
    )
    .await
    .unwrap();
    c.attach().await;
    let r = c
        .call(Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rwalk(_)), "walk: {:?}", r.msg);
    let r = c
        .call(Tlcreate {
            fid: Fid(1),
            name: "f".into(),
            flags: lflags::RDWR,
            mode: 0o644,
            gid: 0,
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rlcreate(_)), "create: {:?}", r.msg);
    // Many small writes: every reply must come out of the child's stdout unprompted.
    let mut expected = Vec::new();
    for k in 0..40u64 {
        if k == 20 {
            server.crash().await;
            sleep(Duration::from_millis(300)).await;
            server.start().await;
        }
        let data = format!("block {k};");
        let r = c
            .call(Twrite {
                fid: Fid(1),
                offset: expected.len() as u64,
                data: Data(Bytes::from(data.clone())),
            })
            .await
            .unwrap();
        assert_eq!(
            r.msg,
            Msg::Rwrite(Rwrite {
                count: data.len() as u32
            })
        );
        expected.extend_from_slice(data.as_bytes());
    }
    let r = c
        .call(Tread {
            fid: Fid(1),
            offset: 0,
            count: 8192,
        })
        .await
        .unwrap();
    let Msg::Rread(d) = r.msg else {
        panic!("read: {:?}", r.msg)
    };
    assert_eq!(&d.data.0[..], &expected[..]);
    assert_eq!(server.accepted(), 2, "one redial");

    // The client closes its end: the session ends, and with it the child's run_proxy.
    drop(c);
    let closed = Instant::now();
    let status = within(Duration::from_secs(5), "the child exiting", async {
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                return status;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(status.success(), "the child proxy failed: {status}");
    assert!(
        closed.elapsed() < Duration::from_secs(2),
        "{:?}",
        closed.elapsed()
    );
}
