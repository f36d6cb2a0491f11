//! A scripted hostile 9P server for the integration tests: the ramfs server behind a TCP port,
//! with a script that sees every request and the reply ramfs made, and decides what the client
//! really gets — the reply, another frame, several, nothing at all, or a hang-up. It stands for
//! the stock servers that do not answer as the manuals say (wrong shapes, wrong types, silence,
//! late replies, odd msizes) in tests of the rules the session keeps against them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use p9_core::{Dialect, Fcall, Msg};

/// What the script sees: which connection (numbered from 0 in accept order), the request, and
/// the reply ramfs made for it.
pub struct Seen<'a> {
    pub conn: usize,
    pub tag: u16,
    pub msg: &'a Msg,
    pub reply: &'a Bytes,
}

/// What the client gets instead.
pub enum Answer {
    /// The reply ramfs made.
    Pass,
    /// These frames instead (none: silence for this request).
    Send(Vec<Bytes>),
    /// Nothing now: the reply is sent after the reply to the next request.
    Hold,
    /// Hang up the connection.
    Close,
    /// Stop reading the connection (and answer nothing more), keeping it open: a server that
    /// does not read. Its thread waits for the process to end.
    Stall,
}

type Script = Box<dyn FnMut(&Seen) -> Answer + Send>;

pub struct Hostile {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Hostile {
    /// Serve a fresh ramfs offering `msize`, every request passing through `script`.
    pub fn start(msize: u32, script: impl FnMut(&Seen) -> Answer + Send + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = listener.local_addr().expect("bound");
        let fs = Arc::new(Mutex::new(ramfs::Fs::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (fs, script) = (fs.clone(), script.clone());
                std::thread::spawn(move || serve(n, stream, fs, script, msize));
            }
        });
        Hostile { addr, accepted }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let n = u32::from_le_bytes(size) as usize;
    if !(7..=16 << 20).contains(&n) {
        return None;
    }
    let mut frame = vec![0u8; n];
    frame[..4].copy_from_slice(&size);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame.into())
}

fn serve(
    n: usize,
    mut s: TcpStream,
    fs: Arc<Mutex<ramfs::Fs>>,
    script: Arc<Mutex<Script>>,
    msize: u32,
) {
    let _ = s.set_nodelay(true);
    let mut conn = ramfs::Conn::new(&mut fs.lock().unwrap(), msize);
    let mut held: Vec<Bytes> = Vec::new();
    while let Some(frame) = read_frame(&mut s) {
        let reply = conn.handle(&mut fs.lock().unwrap(), &frame);
        let dialect = match frame.get(4) {
            Some(100) => Dialect::DotL, // Tversion reads the same in every dialect
            _ => conn.dialect().unwrap_or(Dialect::Base),
        };
        let Ok(fc) = Fcall::decode(&frame, dialect) else {
            let _ = s.write_all(&reply);
            continue;
        };
        let answer = (script.lock().unwrap())(&Seen {
            conn: n,
            tag: fc.tag,
            msg: &fc.msg,
            reply: &reply,
        });
        let mut out: Vec<Bytes> = match answer {
            Answer::Pass => vec![reply],
            Answer::Send(frames) => frames,
            Answer::Hold => {
                held.push(reply);
                continue;
            }
            Answer::Close => break,
            Answer::Stall => loop {
                std::thread::park();
            },
        };
        out.append(&mut held);
        for f in out {
            if s.write_all(&f).is_err() {
                break;
            }
        }
    }
    conn.close(&mut fs.lock().unwrap());
}

/// A frame with any type and body: what a broken server sends.
pub fn raw(ty: u8, tag: u16, body: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(7 + body.len());
    f.put_u32_le(7 + body.len() as u32);
    f.put_u8(ty);
    f.put_u16_le(tag);
    f.put_slice(body);
    f.freeze()
}

/// A blocking 9P client speaking frames, for tests that need to send without waiting (flushes)
/// or to see exactly what comes back.
pub struct RawClient {
    s: TcpStream,
    pub dialect: Dialect,
}

impl RawClient {
    pub fn connect(addr: &str, dialect: Dialect) -> RawClient {
        let s = TcpStream::connect(addr).expect("the proxy accepts");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        RawClient { s, dialect }
    }

    pub fn send(&mut self, tag: u16, msg: impl Into<Msg>) {
        let frame = Fcall::new(tag, msg).to_frame().expect("encodes");
        self.s.write_all(&frame).expect("the proxy reads");
    }

    /// The next reply, decoded (None if the connection closed or timed out).
    pub fn recv(&mut self) -> Option<Fcall> {
        let frame = read_frame(&mut self.s)?;
        let d = if frame[4] == 101 {
            Dialect::DotL
        } else {
            self.dialect
        };
        // Before a version is settled, errors come in plain 9P2000.
        Fcall::decode(&frame, d)
            .or_else(|_| Fcall::decode(&frame, Dialect::Base))
            .ok()
    }

    pub fn call(&mut self, tag: u16, msg: impl Into<Msg>) -> Msg {
        self.send(tag, msg);
        let fc = self.recv().expect("a reply");
        assert_eq!(fc.tag, tag, "a reply to another tag: {fc:?}");
        fc.msg
    }

    /// Version with `msize` and attach fid 0 as "u" (aname ""), returning the msize the proxy
    /// settled.
    pub fn attach(&mut self, msize: u32) -> u32 {
        self.attach_as(msize, "u", "")
    }

    /// Version with `msize` and attach fid 0 as `uname` (uid 0 in .L and .u) to `aname` (diod's
    /// export, say), returning the msize the proxy settled.
    pub fn attach_as(&mut self, msize: u32, uname: &str, aname: &str) -> u32 {
        let v = self.call(
            p9_core::NOTAG,
            p9_core::Tversion {
                msize,
                version: self.dialect.version_string().into(),
            },
        );
        let Msg::Rversion(v) = v else {
            panic!("Tversion answered {v:?}")
        };
        let a = self.call(
            1,
            p9_core::Tattach {
                fid: p9_core::Fid(0),
                afid: p9_core::NOFID,
                uname: uname.to_string().into(),
                aname: aname.to_string().into(),
                n_uname: self.dialect.is_extended().then_some(0),
            },
        );
        assert!(matches!(a, Msg::Rattach(_)), "Tattach answered {a:?}");
        v.msize
    }

    pub fn set_read_timeout(&self, d: std::time::Duration) {
        self.s.set_read_timeout(Some(d)).unwrap();
    }
}
