//! The servers a proxy or a mux serves its clients from, and the health their sessions share:
//! one [`Endpoint`] behind a lock, which every session consults at each dial.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use persist_core::{BackendId, Backends, Config, Endpoint, Health, Instant, ServiceRoot};

use crate::Addr;

/// One server: where to dial it, and where its tree begins for clients.
#[derive(Clone, Debug)]
pub struct Server {
    /// The name logs and metrics give it (the registry's service name, or the address).
    pub name: String,
    pub addr: Addr,
    pub root: ServiceRoot,
}

impl Server {
    /// A server entered as clients ask (`proxy`), named by its address.
    pub fn plain(addr: Addr) -> Server {
        Server {
            name: addr.to_string(),
            addr,
            root: ServiceRoot::default(),
        }
    }
}

/// The servers of a proxy (one) or a mux (several, equivalent), shared by its sessions.
#[derive(Clone)]
pub struct Servers {
    list: Arc<[Server]>,
    names: Arc<[String]>,
    endpoint: Arc<Mutex<Endpoint>>,
}

impl Servers {
    /// A proxy's one server.
    pub fn one(addr: Addr) -> Servers {
        Servers::new(vec![Server::plain(addr)], &Config::default())
    }

    /// Several equivalent servers (at least one; an empty list is taken as none to choose
    /// from and panics). `cfg` gives the pace at which a failed one is avoided.
    pub fn new(list: Vec<Server>, cfg: &Config) -> Servers {
        assert!(!list.is_empty(), "a proxy needs a server");
        let roots = list.iter().map(|s| s.root.clone()).collect();
        let names = list.iter().map(|s| s.name.clone()).collect();
        Servers {
            endpoint: Arc::new(Mutex::new(Endpoint::with_roots(roots, cfg))),
            names,
            list: list.into(),
        }
    }

    /// Server `id` (the first for a number that names none).
    pub fn get(&self, id: BackendId) -> &Server {
        self.list.get(id.0 as usize).unwrap_or(&self.list[0])
    }

    /// Every server, by number.
    pub fn list(&self) -> &[Server] {
        &self.list
    }

    /// Their names, by number (what [`SessionMetrics`](crate::metrics::SessionMetrics)
    /// labels with).
    pub fn names(&self) -> Arc<[String]> {
        self.names.clone()
    }

    /// Server `id`'s name.
    pub fn name(&self, id: BackendId) -> String {
        self.get(id).name.clone()
    }

    /// What a session consults at each dial: the shared endpoint. Sessions measure time each
    /// from their own start, so the endpoint is told times on one clock, its own.
    pub fn backends(&self) -> Box<dyn Backends> {
        Box::new(Shared {
            endpoint: self.endpoint.clone(),
            epoch: *EPOCH,
        })
    }
}

impl fmt::Display for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.list.iter().enumerate() {
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
        f.debug_list().entries(self.list.iter()).finish()
    }
}

/// The process's clock origin for backend health.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

struct Shared {
    endpoint: Arc<Mutex<Endpoint>>,
    epoch: std::time::Instant,
}

impl Shared {
    /// Now on the endpoint's clock (a session's `Instant`s count from its own start).
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Endpoint> {
        self.endpoint.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backends for Shared {
    fn choose(&mut self, _: Instant, current: Option<BackendId>, pick: u64) -> BackendId {
        let now = self.now();
        self.lock().choose(now, current, pick)
    }

    fn report(&mut self, _: Instant, backend: BackendId, health: Health) {
        let now = self.now();
        self.lock().report(now, backend, health);
    }

    fn root(&self, backend: BackendId) -> ServiceRoot {
        self.lock().root(backend)
    }

    fn stable_qids(&self) -> bool {
        self.lock().stable_qids()
    }
}

/// Word a drive's event for the log, naming backends as `servers` does.
pub fn sentence(
    e: &persist_core::Event,
    client: &str,
    drive: &persist_core::Drive,
    servers: &Servers,
) -> persist_core::drive::Sentence {
    let current = servers.get(drive.session().backend());
    persist_core::drive::sentence_named(e, client, &current.name, &|b| servers.name(b))
}
