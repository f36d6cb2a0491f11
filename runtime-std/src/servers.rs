//! The servers a proxy or a mux serves its clients from, and the health their sessions share:
//! one [`Endpoint`] behind a lock, which every session consults at each dial.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use persist_core::registry::Service;
use persist_core::{BackendId, Backends, Config, Endpoint, Health, Instant, ServiceRoot};

use crate::Addr;

/// One server: where to dial it, and where its tree begins for clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The name logs and metrics give it (the registry's service name, or the address).
    pub name: String,
    pub addr: Addr,
    pub root: ServiceRoot,
}

impl Server {
    /// The server a registry service names: `addr` (required), `aname` and `path` (at most 16
    /// names, no `..`).
    pub fn from_service(s: &Service) -> Result<Server, String> {
        let addr = s
            .addr()
            .ok_or("it has no addr attribute (where to dial it)")?;
        let addr = Addr::dial(addr).map_err(|e| format!("addr {addr}: {e}"))?;
        if addr == Addr::Stdio {
            return Err("addr - (standard input) cannot be dialed".into());
        }
        let path: Vec<Bytes> = s
            .path()
            .into_iter()
            .map(|n| Bytes::copy_from_slice(n.as_bytes()))
            .collect();
        if path.len() > p9_core::MAXWELEM {
            return Err(format!(
                "path has {} names; at most {} are supported",
                path.len(),
                p9_core::MAXWELEM
            ));
        }
        if path.iter().any(|n| &n[..] == b"..") {
            return Err("path must not contain ..".into());
        }
        Ok(Server {
            name: s.name.clone(),
            addr,
            root: ServiceRoot {
                aname: s.get("aname").map(|a| Bytes::copy_from_slice(a.as_bytes())),
                path,
            },
        })
    }

    /// A server entered as clients ask (`proxy`), named by its address.
    pub fn plain(addr: Addr) -> Server {
        Server {
            name: addr.to_string(),
            addr,
            root: ServiceRoot::default(),
        }
    }
}

/// The servers of a proxy (one) or a mux (several, equivalent), shared by its sessions. A
/// mux's list can change while it runs ([`update`](Self::update)): servers are only ever
/// added or withdrawn, so a number keeps naming the same server.
#[derive(Clone)]
pub struct Servers {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    list: Vec<Server>,
    endpoint: Endpoint,
    /// Failovers not yet summed up in the log: (from, to) → (sessions, open fids failed).
    failovers: std::collections::BTreeMap<(BackendId, BackendId), (usize, usize)>,
}

/// What an [`update`](Servers::update) changed, by server name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub withdrawn: Vec<String>,
}

impl Servers {
    /// A proxy's one server.
    pub fn one(addr: Addr) -> Servers {
        Servers::new(vec![Server::plain(addr)], &Config::default())
    }

    /// Several equivalent servers (at least one: an empty list panics). `cfg` gives the pace
    /// at which a failed one is avoided. Qids sent to clients name paths when there is more
    /// than one (see [`mux`](Self::mux)).
    pub fn new(list: Vec<Server>, cfg: &Config) -> Servers {
        assert!(!list.is_empty(), "a proxy needs a server");
        let roots = list.iter().map(|s| s.root.clone()).collect();
        Servers {
            inner: Arc::new(Mutex::new(Inner {
                endpoint: Endpoint::with_roots(roots, cfg),
                list,
                failovers: Default::default(),
            })),
        }
    }

    /// A mux's servers: like [`new`](Self::new), but qids always name paths, even while one
    /// server is all there is (more may join, and a client must see one tree throughout).
    pub fn mux(list: Vec<Server>, cfg: &Config) -> Servers {
        let servers = Servers::new(list, cfg);
        servers.lock().endpoint.set_stable_qids(true);
        servers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Server `id` (the first for a number that names none).
    pub fn get(&self, id: BackendId) -> Server {
        let inner = self.lock();
        inner
            .list
            .get(id.0 as usize)
            .unwrap_or(&inner.list[0])
            .clone()
    }

    /// Server `id`'s name.
    pub fn name(&self, id: BackendId) -> String {
        self.get(id).name
    }

    /// A function naming servers by number (for [`SessionMetrics`](crate::metrics::SessionMetrics)).
    pub fn namer(&self) -> impl Fn(BackendId) -> String + Send + 'static {
        let servers = self.clone();
        move |id| servers.name(id)
    }

    /// The servers in service (not withdrawn), in order.
    pub fn in_service(&self) -> Vec<Server> {
        let inner = self.lock();
        (0..inner.list.len())
            .filter(|&i| !inner.endpoint.health(BackendId(i as u32)).withdrawn)
            .map(|i| inner.list[i].clone())
            .collect()
    }

    /// Make `list` the servers in service: new ones are added, ones missing from it withdrawn
    /// (sessions linked to them stay until their link ends), and withdrawn ones listed again
    /// return. An empty `list` changes nothing (a registry caught half-written, or emptied
    /// by mistake, must not leave clients with nowhere to go).
    pub fn update(&self, list: Vec<Server>) -> Changes {
        let mut changes = Changes::default();
        if list.is_empty() {
            return changes;
        }
        let mut inner = self.lock();
        for i in 0..inner.list.len() {
            let id = BackendId(i as u32);
            let listed = list.contains(&inner.list[i]);
            let withdrawn = inner.endpoint.health(id).withdrawn;
            if listed == withdrawn {
                inner.endpoint.withdraw(id, !listed);
                let name = inner.list[i].name.clone();
                match listed {
                    true => changes.added.push(name),
                    false => changes.withdrawn.push(name),
                }
            }
        }
        for server in list {
            if !inner.list.contains(&server) {
                inner.endpoint.add(server.root.clone());
                changes.added.push(server.name.clone());
                inner.list.push(server);
            }
        }
        changes
    }

    /// Log a session's event (naming backends as these servers do), and note a failover for
    /// [`failover_summary`](Self::failover_summary).
    pub fn log_event(&self, e: &persist_core::Event, client: &str, drive: &persist_core::Drive) {
        if let persist_core::Event::Failover {
            from,
            to,
            open_fids_lost,
        } = e
        {
            let mut inner = self.lock();
            let n = inner.failovers.entry((*from, *to)).or_default();
            n.0 += 1;
            n.1 += open_fids_lost;
        }
        let current = self.name(drive.session().backend());
        let line = persist_core::drive::sentence_named(e, client, &current, &|b| self.name(b));
        crate::log_sentence(&line);
    }

    /// One line for each pair of servers sessions failed over between since the last call:
    /// "failover: fs1 → fs2 for 3 clients; 2 open fids failed".
    pub fn failover_summary(&self) -> Vec<String> {
        let moves = std::mem::take(&mut self.lock().failovers);
        moves
            .into_iter()
            .map(|((from, to), (clients, fids))| {
                let clients = match clients {
                    1 => "1 client".to_string(),
                    n => format!("{n} clients"),
                };
                format!(
                    "failover: {} → {} for {clients}; {fids} open fids failed",
                    self.name(from),
                    self.name(to)
                )
            })
            .collect()
    }

    /// What a session consults at each dial: the shared endpoint. Sessions measure time each
    /// from their own start, so the endpoint is told times on one clock, its own.
    pub fn backends(&self) -> Box<dyn Backends> {
        Box::new(Shared {
            servers: self.clone(),
            epoch: *EPOCH,
        })
    }
}

impl fmt::Display for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.in_service().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&s.name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.lock().list.iter()).finish()
    }
}

/// The process's clock origin for backend health.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

struct Shared {
    servers: Servers,
    epoch: std::time::Instant,
}

impl Shared {
    /// Now on the endpoint's clock (a session's `Instant`s count from its own start).
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }
}

impl Backends for Shared {
    fn choose(&mut self, _: Instant, current: Option<BackendId>, pick: u64) -> BackendId {
        let now = self.now();
        self.servers.lock().endpoint.choose(now, current, pick)
    }

    fn report(&mut self, _: Instant, backend: BackendId, health: Health) {
        let now = self.now();
        self.servers.lock().endpoint.report(now, backend, health);
    }

    fn elsewhere(&self, _: Instant, current: BackendId) -> bool {
        let now = self.now();
        self.servers.lock().endpoint.elsewhere(now, current)
    }

    fn root(&self, backend: BackendId) -> ServiceRoot {
        self.servers.lock().endpoint.root(backend)
    }

    fn stable_qids(&self) -> bool {
        self.servers.lock().endpoint.stable_qids()
    }
}
