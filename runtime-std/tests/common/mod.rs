//! What the tests share: a small threaded ramfs server (crashed and brought back on the same
//! port), a blocking 9P client on p9-core's sans-IO client, and a proxy to start and stop.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p9_core::client::{Client, Reply};
use p9_core::*;
use persist_core::{Backoff, Config};
use runtime_std::{run_proxy, Addr, Listener, ProxyConfig, Servers, Shutdown};

pub fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---- a blocking ramfs server ---------------------------------------------------------------

/// A ramfs tree served over TCP, one thread per connection. The tree outlives
/// [`crash`](RamServer::crash), which cuts every connection and stops listening.
pub struct RamServer {
    pub fs: Arc<Mutex<ramfs::Fs>>,
    pub addr: SocketAddr,
    up: Mutex<Option<Up>>,
}

/// A listening server: its acceptor and its connections.
struct Up {
    listener: Arc<TcpListener>,
    crashed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: JoinHandle<()>,
}

pub const SERVER_MSIZE: u32 = 65536;

impl RamServer {
    pub fn start(fs: ramfs::Fs) -> Arc<RamServer> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Arc::new(RamServer {
            fs: Arc::new(Mutex::new(fs)),
            addr: listener.local_addr().unwrap(),
            up: Mutex::new(None),
        });
        server.listen_on(listener);
        server
    }

    pub fn backend(&self) -> Addr {
        Addr::Tcp(self.addr.to_string())
    }

    fn listen_on(&self, listener: TcpListener) {
        let listener = Arc::new(listener);
        let crashed = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (listener, crashed, conns, fs) = (
                listener.clone(),
                crashed.clone(),
                conns.clone(),
                self.fs.clone(),
            );
            thread::spawn(move || loop {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) if crashed.load(Ordering::SeqCst) => return,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if crashed.load(Ordering::SeqCst) {
                    return;
                }
                conns.lock().unwrap().push(stream.try_clone().unwrap());
                let (fs, crashed) = (fs.clone(), crashed.clone());
                thread::spawn(move || serve_conn(stream, &fs, &crashed));
            })
        };
        *self.up.lock().unwrap() = Some(Up {
            listener,
            crashed,
            conns,
            acceptor,
        });
    }

    /// Listen again on the same address.
    pub fn restart(&self) {
        self.listen_on(TcpListener::bind(self.addr).unwrap());
    }

    /// Die: stop listening (dials are refused) and cut every connection.
    pub fn crash(&self) {
        let up = self.up.lock().unwrap().take().expect("server up");
        up.crashed.store(true, Ordering::SeqCst);
        socket2::SockRef::from(&*up.listener)
            .shutdown(std::net::Shutdown::Read)
            .unwrap();
        up.acceptor.join().unwrap();
        for c in up.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Crash now and come back after `down`, in the background.
    pub fn outage(self: &Arc<Self>, down: Duration) -> JoinHandle<()> {
        self.crash();
        let s = self.clone();
        thread::spawn(move || {
            thread::sleep(down);
            s.restart();
        })
    }
}

/// Serve one connection: frames in, replies out, until it ends. A crash drops the connection's
/// state without the orderly hang-up.
fn serve_conn(mut stream: TcpStream, fs: &Mutex<ramfs::Fs>, crashed: &AtomicBool) {
    let mut conn = ramfs::Conn::new(&mut fs.lock().unwrap(), SERVER_MSIZE);
    let mut decoder = FrameDecoder::new(SERVER_MSIZE);
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.read_buf().extend_from_slice(&buf[..n]);
        decoder.set_max_size(conn.msize().max(SERVER_MSIZE));
        let mut out = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    out.extend_from_slice(&conn.handle(&mut fs.lock().unwrap(), &frame))
                }
                Ok(None) => break,
                Err(_) => {
                    conn.close(&mut fs.lock().unwrap());
                    return;
                }
            }
        }
        if stream.write_all(&out).is_err() {
            break;
        }
    }
    if !crashed.load(Ordering::SeqCst) {
        conn.close(&mut fs.lock().unwrap());
    }
}

// ---- a blocking client ---------------------------------------------------------------------

/// A connection a test client talks over; its reads time out after 30 s.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A 9P client on one blocking connection, one request in flight at a time (or several, sent
/// with [`send`](NineP::send) and collected with [`wait`](NineP::wait)).
pub struct NineP {
    stream: Box<dyn Conn>,
    pub client: Client,
    decoder: FrameDecoder,
}

pub fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl NineP {
    /// Connect to `addr` and negotiate 9P2000.L.
    pub fn connect(addr: &Addr) -> NineP {
        let stream: Box<dyn Conn> = match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect(a).unwrap();
                s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                Box::new(s)
            }
            Addr::Unix(p) => {
                let s = UnixStream::connect(p).unwrap();
                s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                Box::new(s)
            }
            Addr::Stdio => unreachable!(),
        };
        NineP::over(stream)
    }

    /// Negotiate 9P2000.L on `stream` (whose reads should time out, so that a test cannot hang).
    pub fn over(stream: Box<dyn Conn>) -> NineP {
        let mut c = NineP {
            stream,
            client: Client::new(SERVER_MSIZE, Dialect::DotL),
            decoder: FrameDecoder::new(SERVER_MSIZE),
        };
        c.flush().unwrap();
        c.wait(NOTAG).unwrap();
        assert_eq!(c.client.dialect(), Some(Dialect::DotL));
        c.decoder.set_max_size(c.client.msize());
        c
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(frame) = self.client.poll_transmit() {
            self.stream.write_all(&frame)?;
        }
        Ok(())
    }

    pub fn send(&mut self, msg: impl Into<Msg>) -> io::Result<u16> {
        let tag = self.client.send(msg).map_err(other)?;
        self.flush()?;
        Ok(tag)
    }

    /// Read until the reply to `tag` arrives (others are dropped).
    pub fn wait(&mut self, tag: u16) -> io::Result<Reply> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            while let Some(frame) = self.decoder.next_frame().map_err(other)? {
                let reply = self.client.handle_frame(&frame).map_err(other)?;
                if reply.tag == tag {
                    return Ok(reply);
                }
            }
            match self.stream.read(&mut buf)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.decoder.read_buf().extend_from_slice(&buf[..n]),
            }
        }
    }

    pub fn call(&mut self, msg: impl Into<Msg>) -> Msg {
        let tag = self.send(msg).unwrap();
        self.wait(tag).unwrap().msg
    }

    pub fn attach(addr: &Addr) -> NineP {
        let mut c = NineP::connect(addr);
        c.attach_root();
        c
    }

    /// Attach fid 0 to the root.
    pub fn attach_root(&mut self) {
        let r = self.call(Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "root".into(),
            aname: Bytes::new(),
            n_uname: Some(0),
        });
        assert!(matches!(r, Msg::Rattach(_)), "attach: {r:?}");
    }

    /// Walk `fid` to `path` from the root fid 0.
    pub fn walk(&mut self, fid: u32, path: &[&str]) -> Msg {
        self.call(Twalk {
            fid: Fid(0),
            newfid: Fid(fid),
            wnames: WalkNames::new(path).unwrap(),
        })
    }

    pub fn create(&mut self, fid: u32, name: &str) {
        assert!(matches!(self.walk(fid, &[]), Msg::Rwalk(_)));
        let r = self.call(Tlcreate {
            fid: Fid(fid),
            name: Bytes::copy_from_slice(name.as_bytes()),
            flags: lflags::RDWR,
            mode: 0o644,
            gid: 0,
        });
        assert!(matches!(r, Msg::Rlcreate(_)), "create {name}: {r:?}");
    }

    pub fn write(&mut self, fid: u32, offset: u64, data: &[u8]) {
        let r = self.call(Twrite {
            fid: Fid(fid),
            offset,
            data: Data(Bytes::copy_from_slice(data)),
        });
        assert_eq!(
            r,
            Msg::Rwrite(Rwrite {
                count: data.len() as u32
            })
        );
    }

    pub fn read(&mut self, fid: u32, offset: u64, count: u32) -> Bytes {
        match self.call(Tread {
            fid: Fid(fid),
            offset,
            count,
        }) {
            Msg::Rread(d) => d.data.0,
            r => panic!("read: {r:?}"),
        }
    }

    /// Whether the connection ends (rather than a frame coming) within the read timeout.
    pub fn ended(&mut self) -> bool {
        let mut buf = [0; 4096];
        match self.stream.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    pub fn read_all(&mut self, fid: u32) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let d = self.read(fid, got.len() as u64, 60_000);
            if d.is_empty() {
                return got;
            }
            got.extend_from_slice(&d);
        }
    }
}

// ---- the proxy -----------------------------------------------------------------------------

pub struct Proxy {
    pub addr: Addr,
    pub shutdown: Shutdown,
    pub thread: JoinHandle<io::Result<()>>,
}

impl Proxy {
    pub fn start(listen: &Addr, backend: Addr) -> Proxy {
        let listener = Listener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = ProxyConfig {
            servers: Servers::one(backend),
            session: Config {
                backoff: Backoff {
                    initial: Duration::from_millis(300),
                    max: Duration::from_secs(1),
                    ..Backoff::default()
                },
                ..Config::default()
            },
            metrics: None,
            limits: Default::default(),
        };
        let shutdown = Shutdown::new();
        let thread = {
            let shutdown = shutdown.clone();
            thread::spawn(move || run_proxy(listener, cfg, shutdown))
        };
        Proxy {
            addr,
            shutdown,
            thread,
        }
    }

    /// Shut down and check that `run_proxy` returns within 2 s.
    pub fn stop(self) {
        let start = Instant::now();
        self.shutdown.shutdown();
        while !self.thread.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "run_proxy still running 2 s after shutdown"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let took = start.elapsed();
        self.thread.join().unwrap().unwrap();
        // The proxy waits 1.5 s for its threads before abandoning them: none should need it.
        assert!(took < Duration::from_millis(1400), "shutdown took {took:?}");
    }
}

pub fn pattern(f: u32, k: u64) -> Vec<u8> {
    (0..8192u64)
        .map(|i| (f as u64 * 7 + k * 13 + i) as u8)
        .collect()
}
