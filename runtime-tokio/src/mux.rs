//! `p9persist mux`: where its servers come from. A registry(4) index — a file (re-read when it
//! changes), a registry served over 9P (its `index` file, read again every few seconds), or
//! lines given with `--service` — and a query of `attr val` pairs choose the services; each
//! needs an `addr`, and may name an `aname` and a root `path`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use p9_core::{
    lflags, open_mode, Dialect, Fid, Msg, Tattach, Tclunk, Tlopen, Topen, Tread, Twalk, WalkNames,
    NOFID,
};
use persist_core::registry::{self, Query, Service};
use runtime_tokio::{Addr, Server, Servers};
use tokio::sync::watch;

/// How often a registry file is looked at for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// How often a registry served over 9P is read again.
const REGISTRY_POLL: Duration = Duration::from_secs(5);
/// How long reading a registry over 9P may take, from dial to the last byte of `index`.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the index comes from.
pub enum Source {
    File(PathBuf),
    /// A registry file server: its `index` file.
    Registry(Addr),
    /// Index lines from the command line.
    Lines(Vec<String>),
}

impl Source {
    /// `--registry` names a file when one is there, and otherwise a registry to dial.
    pub fn from_arg(registry: Option<String>, lines: Vec<String>) -> Result<Source, String> {
        match registry {
            None if lines.is_empty() => Err(
                "give --registry FILE (or a registry's address) or at least one --service line"
                    .into(),
            ),
            None => Ok(Source::Lines(lines)),
            Some(_) if !lines.is_empty() => {
                Err("--registry and --service cannot be used together".into())
            }
            Some(r) if std::path::Path::new(&r).exists() => Ok(Source::File(r.into())),
            Some(r) if r.contains('!') || r.contains(':') => Addr::dial(&r)
                .map(Source::Registry)
                .map_err(|e| format!("--registry {r}: {e}")),
            Some(r) => Err(format!(
                "--registry {r}: no such file (to read a registry over 9P, give tcp!HOST!PORT)"
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Registry(a) => format!("the registry at {a}"),
            Source::Lines(_) => "--service".into(),
        }
    }

    /// The whole index, now.
    pub async fn read(&self) -> Result<Vec<Service>, String> {
        let text = match self {
            Source::File(p) => {
                read_index_file(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
            }
            Source::Registry(a) => {
                // The whole conversation is bounded: a registry that stalls must not stall
                // the mux (at start) or its following of the index (later).
                match tokio::time::timeout(REGISTRY_TIMEOUT, read_registry(a)).await {
                    Ok(read) => {
                        read.map_err(|e| format!("cannot read the registry at {a}: {e}"))?
                    }
                    Err(_) => {
                        return Err(format!(
                            "cannot read the registry at {a}: no whole answer within {} s",
                            REGISTRY_TIMEOUT.as_secs()
                        ))
                    }
                }
            }
            Source::Lines(lines) => lines.join("\n"),
        };
        registry::parse_index(&text).map_err(|e| format!("{}: {e}", self.describe()))
    }
}

/// The servers of the services `query` matches in `index`; a service that cannot be served
/// is left out, and a warning says why.
pub fn servers(index: &[Service], query: &Query) -> Vec<Server> {
    let mut out = Vec::new();
    for s in query.select(index) {
        match Server::from_service(s) {
            Ok(server) => out.push(server),
            Err(why) => tracing::warn!("service {} is left out: {why}", s.name),
        }
    }
    out
}

/// A service as an index line.
pub fn index_line(s: &Service) -> String {
    let mut line = registry::quote(&s.name);
    for (a, v) in &s.attrs {
        line.push(' ');
        line.push_str(&registry::quote(a));
        line.push(' ');
        line.push_str(&registry::quote(v));
    }
    line
}

/// Keep `servers` in step with the index until `shutdown` turns true: a file is looked at
/// every second and read when its size or time changed; a registry over 9P is read every five
/// seconds. A read that fails, or matches nothing, keeps the servers as they were.
pub async fn follow(
    source: Source,
    query: Query,
    serving: Servers,
    mut shutdown: watch::Receiver<bool>,
) {
    let (every, mut seen) = match &source {
        Source::Lines(_) => return,
        Source::File(p) => (FILE_POLL, stamp(p)),
        Source::Registry(_) => (REGISTRY_POLL, None),
    };
    // Trouble is logged when it begins, not at every poll.
    let (mut failing, mut matching_nothing) = (false, false);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Source::File(p) = &source {
            let now = stamp(p);
            if now == seen {
                continue; // waits a poll interval each time round
            }
            seen = now;
        }
        let index = match source.read().await {
            Ok(index) => index,
            Err(e) => {
                if !failing {
                    tracing::warn!("{e}; keeping the servers as they are");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        let list = servers(&index, &query);
        if list.is_empty() {
            if !matching_nothing {
                tracing::warn!(
                    "{}: no service matches {query} now; keeping the servers as they are",
                    source.describe()
                );
            }
            matching_nothing = true;
            continue;
        }
        matching_nothing = false;
        let changes = serving.update(list);
        for name in &changes.added {
            tracing::info!("registry: {name} is in service");
        }
        for name in &changes.withdrawn {
            tracing::info!("registry: {name} left; no session will dial it again");
        }
    }
}

/// Every second, one warning per pair of servers sessions moved between (each session says
/// so at info level too): "failover: fs1 → fs2 for 3 clients; 2 open fids failed".
pub async fn sum_failovers(servers: Servers, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        for line in servers.failover_summary() {
            tracing::warn!(event = "failover_summary", "{line}");
        }
    }
}

/// A file's size and modification time, to notice changes.
fn stamp(p: &std::path::Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The largest index read (a file or a registry's `index`): past it the read fails, and the
/// mux keeps the servers it has.
pub const INDEX_MAX: usize = 16 << 20;

/// An index file, refused if larger than [`INDEX_MAX`] (a mistaken path to a huge file must
/// not be read into memory).
fn read_index_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(INDEX_MAX as u64 + 1)
        .read_to_string(&mut text)?;
    if text.len() > INDEX_MAX {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            INDEX_MAX >> 20
        )));
    }
    Ok(text)
}

/// The `index` file of a registry file server (attached with an empty aname): 9P2000.L
/// offered, and 9P2000 or 9P2000.u spoken when the server answers so (Inferno's and the
/// Octopus's registry(4) speak Styx, which is 9P2000).
async fn read_registry(addr: &Addr) -> std::io::Result<String> {
    use runtime_tokio::client::NineP;
    let fail = |what: String| std::io::Error::other(what);
    let mut c = NineP::connect_offering(addr, 65536, Dialect::DotL).await?;
    let dialect = c.dialect();
    let ok = |m: &Msg, what: &str| -> std::io::Result<()> {
        match m {
            Msg::Rlerror(e) => Err(fail(format!("{what}: errno {}", e.ecode))),
            Msg::Rerror(e) => Err(fail(format!(
                "{what}: {}",
                String::from_utf8_lossy(&e.ename)
            ))),
            _ => Ok(()),
        }
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "none".into());
    let attach = Tattach {
        fid: Fid(0),
        afid: NOFID,
        uname: user.into(),
        aname: Bytes::new(),
        n_uname: dialect.is_extended().then_some(u32::MAX),
    };
    ok(&c.call(attach).await?.msg, "attach")?;
    let walk = Twalk {
        fid: Fid(0),
        newfid: Fid(1),
        wnames: WalkNames::new(["index"]).expect("one name"),
    };
    let r = c.call(walk).await?;
    ok(&r.msg, "walk to index")?;
    if !matches!(&r.msg, Msg::Rwalk(w) if w.wqids.len() == 1) {
        return Err(fail("it has no file named index".into()));
    }
    let open: Msg = match dialect {
        Dialect::DotL => Tlopen {
            fid: Fid(1),
            flags: lflags::RDONLY,
        }
        .into(),
        _ => Topen {
            fid: Fid(1),
            mode: open_mode::READ,
        }
        .into(),
    };
    ok(&c.call(open).await?.msg, "open index")?;
    let mut text = Vec::new();
    loop {
        let read = Tread {
            fid: Fid(1),
            offset: text.len() as u64,
            count: c.iounit(),
        };
        let r = c.call(read).await?;
        ok(&r.msg, "read index")?;
        match r.msg {
            Msg::Rread(d) if !d.data.0.is_empty() => text.extend_from_slice(&d.data.0),
            _ => break,
        }
        if text.len() > INDEX_MAX {
            return Err(fail(format!(
                "index is larger than {} MiB",
                INDEX_MAX >> 20
            )));
        }
    }
    for fid in [1, 0] {
        let _ = c.call(Tclunk { fid: Fid(fid) }).await;
    }
    String::from_utf8(text).map_err(|_| fail("index is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_file_past_the_bound_is_refused_not_read() {
        let dir = std::env::temp_dir().join(format!("p9persist-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("index");
        std::fs::write(&path, "fs1 addr tcp!a!564\n").unwrap();
        assert_eq!(read_index_file(&path).unwrap(), "fs1 addr tcp!a!564\n");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(INDEX_MAX as u64 + 1).unwrap();
        let e = read_index_file(&path).unwrap_err();
        assert!(e.to_string().contains("larger than 16 MiB"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
