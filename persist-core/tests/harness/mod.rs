//! A small harness in the style of quinn-proto's `Pair`: one session, a scripted client, a
//! server stub with a tiny file tree, and virtual time that jumps to the next timeout.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use p9_core::*;
use persist_core::{BackendId, Config, Event, Instant, LinkId, Output, Session};

/// The session under test and everything around it.
pub struct Pair {
    pub now: Instant,
    pub s: Session,
    pub dialect: Dialect,
    /// The link the server side holds, if any.
    pub link: Option<LinkId>,
    /// A dial the session asked for and the test has not answered.
    pub pending_dial: Option<LinkId>,
    /// A dial asked for before the session dialed (it dials at the client's first frame):
    /// accepted as soon as it comes.
    accept_next_dial: bool,
    /// Frames the session sent to the server and the test has not delivered.
    pub to_server: VecDeque<(LinkId, Fcall)>,
    /// Replies the client received, in order.
    pub to_client: Vec<Fcall>,
    pub events: Vec<Event>,
    pub client_closed: bool,
    pub closed_links: Vec<LinkId>,
    /// The backend of every dial the session asked for, in order.
    pub dials: Vec<BackendId>,
    pub server: Stub,
}

pub fn config() -> Config {
    Config {
        seed: 7,
        ..Config::default()
    }
}

impl Pair {
    pub fn new(dialect: Dialect) -> Pair {
        Pair::with_config(dialect, config())
    }

    pub fn with_config(dialect: Dialect, cfg: Config) -> Pair {
        let now = Instant::from_millis(1_000);
        Pair::with_session(dialect, Session::new(cfg, BackendId(0), now), now)
    }

    /// A pair around `s`, made at `now`. The stub serves every backend the session dials (they
    /// are copies of one tree).
    pub fn with_session(dialect: Dialect, s: Session, now: Instant) -> Pair {
        let mut p = Pair {
            now,
            s,
            dialect,
            link: None,
            pending_dial: None,
            accept_next_dial: false,
            to_server: VecDeque::new(),
            to_client: Vec::new(),
            events: Vec::new(),
            client_closed: false,
            closed_links: Vec::new(),
            dials: Vec::new(),
            server: Stub::new(dialect),
        };
        p.drain();
        p
    }

    /// A pair with the link up, the version settled and fid 0 attached to the root.
    pub fn attached(dialect: Dialect) -> Pair {
        Pair::attached_with(dialect, config())
    }

    pub fn attached_with(dialect: Dialect, cfg: Config) -> Pair {
        Pair::attach(Pair::with_config(dialect, cfg))
    }

    /// `p` with the link up, the version settled and fid 0 attached to the root.
    pub fn attach(mut p: Pair) -> Pair {
        let dialect = p.dialect;
        p.version();
        p.client(
            1,
            Tattach {
                fid: Fid(0),
                afid: NOFID,
                uname: "glenda".into(),
                aname: "".into(),
                n_uname: dialect.is_extended().then_some(1000),
            },
        );
        p.serve();
        assert_eq!(p.to_client.len(), 2, "version and attach answered");
        p.to_client.clear();
        p
    }

    /// Accept the session's dial and settle the version (msize 8192, the pair's dialect).
    pub fn version(&mut self) {
        self.accept_dial();
        self.client(
            NOTAG,
            Tversion {
                msize: 8192,
                version: self.dialect.version_string().into(),
            },
        );
        self.serve();
    }

    /// Drain every output and event of the session.
    pub fn drain(&mut self) {
        while let Some(o) = self.s.poll_output() {
            match o {
                Output::ToClient(f) => {
                    let d = if f[4] == MsgType::Rversion as u8 {
                        Dialect::DotL
                    } else {
                        self.dialect
                    };
                    let fc = Fcall::decode(&f, d).expect("the session sends valid replies");
                    self.to_client.push(fc);
                }
                Output::ToLink { link, frame } => {
                    let d = if frame[4] == MsgType::Tversion as u8 {
                        Dialect::DotL
                    } else {
                        self.dialect
                    };
                    let fc = Fcall::decode(&frame, d).expect("the session sends valid requests");
                    self.to_server.push_back((link, fc));
                }
                Output::Dial { link, backend } if self.accept_next_dial => {
                    self.dials.push(backend);
                    self.accept_next_dial = false;
                    self.link = Some(link);
                    self.s.handle_link_up(self.now, link);
                }
                Output::Dial { link, backend } => {
                    self.dials.push(backend);
                    self.pending_dial = Some(link);
                }
                Output::CloseLink { link } => {
                    self.closed_links.push(link);
                    if self.link == Some(link) {
                        self.link = None;
                        self.server.crash_connection();
                    }
                    self.to_server.retain(|(l, _)| *l != link);
                }
                Output::CloseClient => self.client_closed = true,
            }
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    pub fn client(&mut self, tag: u16, msg: impl Into<Msg>) {
        let frame = Fcall::new(tag, msg).to_frame().unwrap();
        self.s.handle_client_frame(self.now, frame);
        self.drain();
    }

    pub fn client_raw(&mut self, frame: Bytes) {
        self.s.handle_client_frame(self.now, frame);
        self.drain();
    }

    pub fn accept_dial(&mut self) -> LinkId {
        let Some(link) = self.pending_dial.take() else {
            // A new session dials only once its client speaks: accept that dial when it comes.
            self.accept_next_dial = true;
            return LinkId(1);
        };
        self.link = Some(link);
        self.s.handle_link_up(self.now, link);
        self.drain();
        link
    }

    pub fn refuse_dial(&mut self) {
        let link = self.pending_dial.take().expect("a dial was asked for");
        self.s
            .handle_dial_failed(self.now, link, "connection refused");
        self.drain();
    }

    /// The link dies (the server crashed: its connection state is gone, its files stay).
    pub fn kill(&mut self) {
        let link = self.link.take().expect("a link is up");
        self.to_server.clear();
        self.server.crash_connection();
        self.s.handle_link_down(self.now, link, "connection reset");
        self.drain();
    }

    /// Jump to the session's next timeout and fire it.
    pub fn advance(&mut self) -> Duration {
        let at = self.s.poll_timeout().expect("a timeout is pending");
        let waited = at.since(self.now);
        if at > self.now {
            self.now = at;
        }
        self.s.handle_timeout(self.now);
        self.drain();
        waited
    }

    pub fn advance_by(&mut self, d: Duration) {
        self.now = self.now + d;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    /// Take the next frame sent to the server.
    pub fn next_request(&mut self) -> Fcall {
        self.to_server
            .pop_front()
            .expect("a request was sent to the server")
            .1
    }

    /// Deliver one server reply on the current link.
    pub fn reply(&mut self, tag: u16, msg: impl Into<Msg>) {
        let frame = Fcall::new(tag, msg).to_frame().unwrap();
        let link = self.link.expect("a link is up");
        self.s.handle_server_frame(self.now, link, frame);
        self.drain();
    }

    pub fn reply_raw(&mut self, frame: Bytes) {
        let link = self.link.expect("a link is up");
        self.s.handle_server_frame(self.now, link, frame);
        self.drain();
    }

    /// Let the stub server answer everything sent so far (and what that triggers).
    pub fn serve(&mut self) {
        while let Some((link, fc)) = self.to_server.pop_front() {
            if Some(link) != self.link {
                continue;
            }
            let reply = self.server.answer(&fc);
            self.reply(fc.tag, reply);
        }
    }

    /// Like `serve`, returning every frame the server was given.
    pub fn serve_log(&mut self) -> Vec<Fcall> {
        let mut log = Vec::new();
        while let Some((link, fc)) = self.to_server.pop_front() {
            if Some(link) != self.link {
                continue;
            }
            let reply = self.server.answer(&fc);
            log.push(fc.clone());
            self.reply(fc.tag, reply);
        }
        log
    }

    /// Redial after a kill and let the stub answer the whole recovery.
    pub fn reconnect(&mut self) {
        self.reconnect_log();
    }

    /// `reconnect`, returning every frame the server was given.
    pub fn reconnect_log(&mut self) -> Vec<Fcall> {
        while self.pending_dial.is_none() {
            self.advance();
        }
        self.accept_dial();
        self.serve_log()
    }

    /// Replies the client got for `tag`.
    pub fn replies_to(&self, tag: u16) -> Vec<&Msg> {
        self.to_client
            .iter()
            .filter(|f| f.tag == tag)
            .map(|f| &f.msg)
            .collect()
    }

    /// The single reply to `tag` (fails if there are none or several).
    pub fn reply_to(&self, tag: u16) -> &Msg {
        let r = self.replies_to(tag);
        assert_eq!(
            r.len(),
            1,
            "expected exactly one reply to tag {tag}, got {r:?}"
        );
        r[0]
    }

    /// Requests of type `ty` the server executed.
    pub fn executed(&self, ty: MsgType) -> usize {
        self.server.executed.iter().filter(|t| **t == ty).count()
    }

    /// Walk fid 0 to `newfid` along `path` and open it with `mode` (Topen or Tlopen by
    /// dialect); the stub creates the file if needed.
    pub fn open_file(&mut self, tag: u16, newfid: u32, path: &[&str], mode: u32) {
        self.open_path(tag, newfid, path, false, mode);
        assert!(
            self.is_success(tag),
            "open failed: {:?}",
            self.replies_to(tag)
        );
        self.to_client.clear();
    }

    /// Walk fid 0 to the directory `path` and open it for reading.
    pub fn open_dir(&mut self, tag: u16, newfid: u32, path: &[&str]) {
        let mode = match self.dialect {
            Dialect::DotL => lflags::DIRECTORY,
            _ => open_mode::READ as u32,
        };
        self.open_path(tag, newfid, path, true, mode);
        self.to_client.clear();
    }

    fn open_path(&mut self, tag: u16, newfid: u32, path: &[&str], dir: bool, mode: u32) {
        self.server.touch(path, dir);
        let walk = Twalk {
            fid: Fid(0),
            newfid: Fid(newfid),
            wnames: WalkNames::new(path).unwrap(),
        };
        self.client(tag, walk);
        self.serve();
        match self.dialect {
            Dialect::DotL => self.client(
                tag,
                Tlopen {
                    fid: Fid(newfid),
                    flags: mode,
                },
            ),
            _ => self.client(
                tag,
                Topen {
                    fid: Fid(newfid),
                    mode: mode as u8,
                },
            ),
        }
        self.serve();
    }

    /// Whether every reply to `tag` so far is a success.
    pub fn is_success(&self, tag: u16) -> bool {
        self.replies_to(tag).iter().all(|m| !is_error(m))
    }
}

pub fn is_error(m: &Msg) -> bool {
    matches!(m, Msg::Rerror(_) | Msg::Rlerror(_))
}

/// The errno (.u/.L) or message (9P2000) of an error reply.
pub fn error_of(m: &Msg) -> Option<String> {
    match m {
        Msg::Rerror(e) => Some(String::from_utf8_lossy(&e.ename).into_owned()),
        Msg::Rlerror(e) => Some(format!("errno {}", e.ecode)),
        _ => None,
    }
}

/// A server stub: a tiny tree of paths (kept across crashes), per-connection fids (lost on a
/// crash), and a log of what it executed.
pub struct Stub {
    pub dialect: Dialect,
    /// Path → (qid, contents).
    pub files: BTreeMap<Vec<Vec<u8>>, (Qid, Vec<u8>)>,
    pub fids: BTreeMap<u32, Vec<Vec<u8>>>,
    pub executed: Vec<MsgType>,
    pub msize: u32,
    next_path: u64,
}

impl Stub {
    pub fn new(dialect: Dialect) -> Stub {
        let mut files = BTreeMap::new();
        files.insert(
            Vec::new(),
            (
                Qid {
                    typ: qid_type::DIR,
                    version: 0,
                    path: 1,
                },
                Vec::new(),
            ),
        );
        Stub {
            dialect,
            files,
            fids: BTreeMap::new(),
            executed: Vec::new(),
            msize: 8192,
            next_path: 2,
        }
    }

    pub fn crash_connection(&mut self) {
        self.fids.clear();
    }

    /// Make sure `path` exists (parents become directories).
    pub fn touch(&mut self, path: &[&str], dir: bool) {
        let mut p = Vec::new();
        for (i, name) in path.iter().enumerate() {
            p.push(name.as_bytes().to_vec());
            let is_dir = dir || i + 1 < path.len();
            if !self.files.contains_key(&p) {
                let typ = if is_dir {
                    qid_type::DIR
                } else {
                    qid_type::FILE
                };
                let qid = Qid {
                    typ,
                    version: 0,
                    path: self.next_path,
                };
                self.next_path += 1;
                self.files.insert(p.clone(), (qid, Vec::new()));
            }
        }
    }

    /// Replace the file at `path` with a new one (new qid path).
    pub fn replace(&mut self, path: &[&str]) {
        let p: Vec<Vec<u8>> = path.iter().map(|n| n.as_bytes().to_vec()).collect();
        let qid = Qid {
            typ: qid_type::FILE,
            version: 0,
            path: self.next_path,
        };
        self.next_path += 1;
        self.files.insert(p, (qid, Vec::new()));
    }

    pub fn remove(&mut self, path: &[&str]) {
        let p: Vec<Vec<u8>> = path.iter().map(|n| n.as_bytes().to_vec()).collect();
        self.files.remove(&p);
    }

    fn err(&self, errno: u32) -> Msg {
        match self.dialect {
            Dialect::DotL => Rlerror { ecode: errno }.into(),
            Dialect::DotU => Rerror {
                ename: "error".into(),
                errno: Some(errno),
            }
            .into(),
            Dialect::Base => Rerror {
                ename: "error".into(),
                errno: None,
            }
            .into(),
        }
    }

    fn qid_of(&self, fid: Fid) -> Option<Qid> {
        self.fids
            .get(&fid.0)
            .and_then(|p| self.files.get(p))
            .map(|(q, _)| *q)
    }

    pub fn answer(&mut self, fc: &Fcall) -> Msg {
        self.executed.push(fc.msg.msg_type());
        match &fc.msg {
            Msg::Tversion(v) => Rversion {
                msize: v.msize.min(self.msize),
                version: v.version.clone(),
            }
            .into(),
            Msg::Tattach(a) => {
                self.fids.insert(a.fid.0, Vec::new());
                Rattach {
                    qid: self.files[&Vec::new()].0,
                }
                .into()
            }
            Msg::Twalk(w) => {
                let Some(mut path) = self.fids.get(&w.fid.0).cloned() else {
                    return self.err(errno::EBADF);
                };
                let mut qids = Vec::new();
                for name in w.wnames.iter() {
                    if name == b".." {
                        path.pop();
                    } else {
                        path.push(name.to_vec());
                    }
                    match self.files.get(&path) {
                        Some((q, _)) => qids.push(*q),
                        None => break,
                    }
                }
                if qids.is_empty() && !w.wnames.is_empty() {
                    return self.err(errno::ENOENT);
                }
                if qids.len() == w.wnames.len() {
                    self.fids.insert(w.newfid.0, path);
                }
                Rwalk {
                    wqids: WalkQids::new(&qids).unwrap(),
                }
                .into()
            }
            Msg::Topen(o) => match self.qid_of(o.fid) {
                Some(qid) => Ropen { qid, iounit: 0 }.into(),
                None => self.err(errno::ENOENT),
            },
            Msg::Tlopen(o) => match self.qid_of(o.fid) {
                Some(qid) => Rlopen { qid, iounit: 0 }.into(),
                None => self.err(errno::ENOENT),
            },
            Msg::Tcreate(Tcreate { fid, name, .. }) | Msg::Tlcreate(Tlcreate { fid, name, .. }) => {
                let Some(mut path) = self.fids.get(&fid.0).cloned() else {
                    return self.err(errno::EBADF);
                };
                path.push(name.to_vec());
                let qid = Qid {
                    typ: qid_type::FILE,
                    version: 0,
                    path: self.next_path,
                };
                self.next_path += 1;
                self.files.insert(path.clone(), (qid, Vec::new()));
                self.fids.insert(fid.0, path);
                if matches!(fc.msg, Msg::Tcreate(_)) {
                    Rcreate { qid, iounit: 0 }.into()
                } else {
                    Rlcreate { qid, iounit: 0 }.into()
                }
            }
            Msg::Tread(r) => {
                let Some(path) = self.fids.get(&r.fid.0) else {
                    return self.err(errno::EBADF);
                };
                let Some((qid, data)) = self.files.get(path) else {
                    return self.err(errno::ENOENT);
                };
                let data = if qid.is_dir() {
                    // A listing of 100 bytes per step, enough to test positions.
                    let total = 300u64;
                    let n = (total.saturating_sub(r.offset))
                        .min(r.count as u64)
                        .min(100);
                    // Each 100 bytes are one stat record (a listing is whole records).
                    let mut out = bytes::BytesMut::new();
                    for _ in 0..n / 100 {
                        let mut st = Stat::unchanged(self.dialect);
                        st.name = Bytes::new();
                        let name_len = 100 - st.record_len();
                        st.name = vec![b'd'; name_len].into();
                        st.encode_record(&mut out);
                    }
                    out.to_vec()
                } else {
                    let start = (r.offset as usize).min(data.len());
                    let end = (start + r.count as usize).min(data.len());
                    data[start..end].to_vec()
                };
                Rread {
                    data: Data(data.into()),
                }
                .into()
            }
            Msg::Twrite(w) => {
                let Some(path) = self.fids.get(&w.fid.0).cloned() else {
                    return self.err(errno::EBADF);
                };
                let Some((_, data)) = self.files.get_mut(&path) else {
                    return self.err(errno::ENOENT);
                };
                let end = w.offset as usize + w.data.0.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[w.offset as usize..end].copy_from_slice(&w.data.0);
                Rwrite {
                    count: w.data.0.len() as u32,
                }
                .into()
            }
            Msg::Tclunk(c) => {
                self.fids.remove(&c.fid.0);
                Rclunk {}.into()
            }
            Msg::Tremove(r) => {
                match self.fids.remove(&r.fid.0) {
                    Some(p) if p.is_empty() => return self.err(errno::EPERM),
                    Some(p) => drop(self.files.remove(&p)),
                    None => return self.err(errno::EBADF),
                }
                Rremove {}.into()
            }
            Msg::Tflush(_) => Rflush {}.into(),
            Msg::Tfsync(_) => Rfsync {}.into(),
            Msg::Tlock(_) => Rlock { status: 0 }.into(),
            Msg::Tgetattr(g) => match self.qid_of(g.fid) {
                Some(qid) => Rgetattr {
                    qid,
                    ..Default::default()
                }
                .into(),
                None => self.err(errno::EBADF),
            },
            Msg::Tstat(s) => match self.qid_of(s.fid) {
                Some(qid) => Rstat {
                    stat: Stat {
                        qid,
                        ext: self.dialect.is_extended().then(StatExt::default),
                        ..Default::default()
                    },
                }
                .into(),
                None => self.err(errno::EBADF),
            },
            Msg::Treaddir(r) => {
                // Three entries, "e0".."e2", whose cookies are 100, 200, 300.
                let mut data = bytes::BytesMut::new();
                if r.offset < 300 {
                    let i = r.offset / 100;
                    let entry = dir::Dirent {
                        qid: Qid {
                            typ: 0,
                            version: 0,
                            path: 1000 + i,
                        },
                        offset: r.offset + 100,
                        typ: 0,
                        name: format!("e{i}").into(),
                    };
                    entry.encode(&mut data);
                }
                Rreaddir {
                    data: Data(data.freeze()),
                }
                .into()
            }
            Msg::Tmkdir(_) => Rmkdir {
                qid: Qid::default(),
            }
            .into(),
            Msg::Tsetattr(_) => Rsetattr {}.into(),
            Msg::Twstat(_) => Rwstat {}.into(),
            Msg::Trename(_) => Rrename {}.into(),
            Msg::Trenameat(_) => Rrenameat {}.into(),
            Msg::Tunlinkat(_) => Runlinkat {}.into(),
            _ => self.err(errno::ENOSYS),
        }
    }
}
