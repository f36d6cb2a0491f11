//! What the proxy tests run against: an in-test ramfs server on async-net that can crash and
//! come back, a 9P client on p9-core's sans-IO client, and the two executors.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use p9_core::client::{Client, Reply};
use p9_core::{Dialect, Fid, FrameDecoder, Msg, Tattach, NOFID, NOTAG};
use persist_core::{Backoff, Config};
use runtime_async::{run_proxy, Addr, BoxFuture, Listener, ProxyConfig, Servers, Shutdown};

pub const MSIZE: u32 = 65536;

/// Hands a task to the executor under test.
pub type Spawn = Arc<dyn Fn(BoxFuture) + Send + Sync>;

/// Run `test` on smol's executor (sessions on smol's global executor).
pub fn on_smol<F: Future<Output = ()>>(test: impl FnOnce(Spawn) -> F) {
    let spawn: Spawn = Arc::new(|task| smol::spawn(task).detach());
    smol::block_on(watchdog(test(spawn)));
}

/// Run `test` on async-std's executor.
pub fn on_async_std<F: Future<Output = ()>>(test: impl FnOnce(Spawn) -> F) {
    let spawn: Spawn = Arc::new(|task| drop(async_std::task::spawn(task)));
    async_std::task::block_on(watchdog(test(spawn)));
}

/// No test may hang: a minute is far more than any needs.
async fn watchdog(test: impl Future<Output = ()>) {
    future::or(test, async {
        Timer::after(Duration::from_secs(60)).await;
        panic!("the test did not finish within a minute");
    })
    .await
}

pub async fn sleep(d: Duration) {
    Timer::after(d).await;
}

/// `f`, or a panic saying `what` took longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    future::or(f, async {
        Timer::after(limit).await;
        panic!("{what} took longer than {limit:?}");
    })
    .await
}

/// A ramfs tree served over TCP. [`crash`](Self::crash) closes the listening socket and cuts
/// every connection (the tree, "the disk", survives); [`start`](Self::start) brings it back on
/// the same address.
pub struct RamfsServer {
    pub fs: Arc<Mutex<ramfs::Fs>>,
    pub addr: SocketAddr,
    spawn: Spawn,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// The running accept loop: its stop signal and the signal that it has stopped.
    running: Option<(Shutdown, Shutdown)>,
}

impl RamfsServer {
    pub async fn new(spawn: Spawn) -> RamfsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = RamfsServer {
            fs: Arc::new(Mutex::new(ramfs::Fs::new())),
            addr: listener.local_addr().unwrap(),
            spawn,
            conns: Arc::default(),
            accepted: Arc::default(),
            running: None,
        };
        server.serve(listener);
        server
    }

    pub fn backend(&self) -> Addr {
        Addr::Tcp(self.addr.to_string())
    }

    /// Listen again on the same address.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "already running");
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = (Shutdown::new(), Shutdown::new());
        self.running = Some((stop.clone(), stopped.clone()));
        let (fs, conns, spawn) = (self.fs.clone(), self.conns.clone(), self.spawn.clone());
        let accepted = self.accepted.clone();
        (self.spawn)(Box::pin(async move {
            loop {
                let halt = async {
                    stop.wait().await;
                    None
                };
                let accept = async { Some(listener.accept().await) };
                match future::or(halt, accept).await {
                    None => break,
                    Some(Ok((s, _))) => {
                        s.set_nodelay(true).unwrap();
                        conns.lock().unwrap().push(s.clone());
                        accepted.fetch_add(1, Ordering::SeqCst);
                        spawn(Box::pin(serve_conn(fs.clone(), s)));
                    }
                    Some(Err(_)) => sleep(Duration::from_millis(10)).await,
                }
            }
            drop(listener);
            stopped.shutdown();
        }));
    }

    /// Crash: stop listening (dials are refused) and cut every connection.
    pub async fn crash(&mut self) {
        let (stop, stopped) = self.running.take().expect("running");
        stop.shutdown();
        stopped.wait().await;
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Connections accepted since the server was made.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the tree still counts.
    pub fn connections(&self) -> usize {
        self.fs.lock().unwrap().connection_count()
    }
}

/// One server connection: each request frame gets its reply, in order.
async fn serve_conn(fs: Arc<Mutex<ramfs::Fs>>, mut s: TcpStream) {
    let mut conn = ramfs::Conn::new(&mut fs.lock().unwrap(), MSIZE);
    let mut decoder = FrameDecoder::new(MSIZE);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.read_buf().extend_from_slice(&buf[..n]);
        decoder.set_max_size(conn.msize().max(MSIZE));
        let mut replies = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let reply = conn.handle(&mut fs.lock().unwrap(), &frame);
                    replies.extend_from_slice(&reply);
                }
                Ok(None) => break,
                Err(_) => {
                    conn.close(&mut fs.lock().unwrap());
                    return;
                }
            }
        }
        if s.write_all(&replies).await.is_err() {
            break;
        }
    }
    conn.close(&mut fs.lock().unwrap());
}

/// A proxy under test: where clients connect, and how to stop it.
pub struct Proxy {
    pub addr: Addr,
    pub shutdown: Shutdown,
    /// Given when `run_proxy` returns.
    pub done: Shutdown,
}

/// Settings that redial quickly, so tests are short.
pub fn quick_config(backend: Addr) -> ProxyConfig {
    ProxyConfig {
        servers: Servers::one(backend),
        session: Config {
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(1),
                ..Backoff::default()
            },
            ..Config::default()
        },
        metrics: None,
        limits: Default::default(),
    }
}

/// Start `run_proxy` on `listen`, its sessions handed to `spawn`.
pub async fn start_proxy(listen: &Addr, cfg: ProxyConfig, spawn: &Spawn) -> Proxy {
    let listener = Listener::bind(listen).await.unwrap();
    run_on(listener, cfg, spawn)
}

/// Start `run_proxy` on a bound `listener`.
pub fn run_on(listener: Listener, cfg: ProxyConfig, spawn: &Spawn) -> Proxy {
    let addr = listener.local_addr().unwrap();
    let (shutdown, done) = (Shutdown::new(), Shutdown::new());
    let sessions = spawn.clone();
    let proxy = run_proxy(listener, cfg, move |s| sessions(s), shutdown.clone());
    let finished = done.clone();
    spawn(Box::pin(async move {
        proxy.await.unwrap();
        finished.shutdown();
    }));
    Proxy {
        addr,
        shutdown,
        done,
    }
}

/// A 9P client over any byte stream, one request in flight at a time.
pub struct NineP<S> {
    stream: S,
    pub client: Client,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl NineP<TcpStream> {
    pub async fn connect(addr: &Addr) -> io::Result<NineP<TcpStream>> {
        let Addr::Tcp(a) = addr else {
            panic!("not a TCP address: {addr}")
        };
        NineP::over(TcpStream::connect(a.as_str()).await?).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> NineP<S> {
    /// Negotiate 9P2000.L over `stream`.
    pub async fn over(stream: S) -> io::Result<NineP<S>> {
        let mut c = NineP {
            stream,
            client: Client::new(MSIZE, Dialect::DotL),
            decoder: FrameDecoder::new(MSIZE),
            buf: vec![0u8; 64 * 1024],
        };
        c.transmit().await?;
        let reply = c.wait(NOTAG).await?;
        if c.client.dialect() != Some(Dialect::DotL) {
            return Err(other(format!("Tversion answered with {:?}", reply.msg)));
        }
        c.decoder.set_max_size(c.client.msize());
        Ok(c)
    }

    /// Write every queued request.
    pub async fn transmit(&mut self) -> io::Result<()> {
        let frames: Vec<Bytes> = std::iter::from_fn(|| self.client.poll_transmit()).collect();
        for f in frames {
            self.stream.write_all(&f).await?;
        }
        self.stream.flush().await
    }

    /// Read until the reply to `tag` arrives.
    pub async fn wait(&mut self, tag: u16) -> io::Result<Reply> {
        loop {
            while let Some(frame) = self.decoder.next_frame().map_err(other)? {
                let reply = self.client.handle_frame(&frame).map_err(other)?;
                if reply.tag == tag {
                    return Ok(reply);
                }
            }
            let n = self.read_some().await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Read what has arrived; 0 at the end of the stream.
    pub async fn read_some(&mut self) -> io::Result<usize> {
        let n = self.stream.read(&mut self.buf).await?;
        self.decoder.read_buf().extend_from_slice(&self.buf[..n]);
        Ok(n)
    }

    /// Send one request and wait for its reply.
    /// Attach fid 0 to the root as "root"; the reply must be an Rattach.
    pub async fn attach(&mut self) {
        let r = self
            .call(Tattach {
                fid: Fid(0),
                afid: NOFID,
                uname: "root".into(),
                aname: Bytes::new(),
                n_uname: Some(0),
            })
            .await
            .unwrap();
        assert!(matches!(r.msg, Msg::Rattach(_)), "attach: {:?}", r.msg);
    }

    pub async fn call(&mut self, msg: impl Into<Msg>) -> io::Result<Reply> {
        let tag = self.client.send(msg).map_err(other)?;
        self.transmit().await?;
        self.wait(tag).await
    }
}
