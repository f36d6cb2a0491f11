//! `p9persist`: keeps 9P sessions alive across file server restarts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use persist_core::registry::Query;
use persist_core::{Backoff, Config};
use runtime_std::Limits;
use runtime_tokio::net::Passed;
use runtime_tokio::{
    run_proxy, Addr, Listener, Metrics, ProxyConfig, RamfsServer, Server, Servers,
};
use tokio::sync::watch;

mod demo;
mod mux;

#[derive(Parser)]
#[command(
    name = "p9persist",
    version,
    about = "Keep 9P sessions alive while the file server restarts or the network drops",
    long_about = "p9persist sits between a 9P client (Linux v9fs, Plan 9, QEMU, FUSE) and its \
                  server. When the server goes away it holds the client's requests, redials, \
                  rebuilds every fid the client had, resends what is safe to resend and fails \
                  only what may already have happened. Start with `p9persist demo`.",
    after_help = "Addresses: tcp!HOST!PORT or HOST:PORT, unix!/PATH or unix:/PATH; PORT may be a \
                  service (9fs and 9pfs: 564, styx: 6666), and tcp!HOST dials 9fs. To listen, a \
                  bare PORT means 127.0.0.1:PORT, tcp!*!PORT every IPv4 interface and `-` standard \
                  input/output.\n\
                  Example: p9persist proxy --listen 5640 --server tcp!fileserver!564\n\
                  then:    mount -t 9p -o trans=tcp,port=5640,version=9p2000.L 127.0.0.1 /mnt\n\
                  Logs go to standard error; P9PERSIST_LOG=debug (or a tracing filter) overrides -v."
)]
struct Cli {
    /// More log output (-v: recovery details, -vv: every connection)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log lines as sentences (text; coloured only on a terminal unless NO_COLOR is set) or
    /// as one JSON object per line (json: timestamp, level, message, and the event's kind)
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

const MUX_HELP: &str = "A registry index has one service per line: its name, then attribute \
and value words (quote a word with spaces in single quotes). `addr` says where to dial it; \
`aname` what to attach to (it replaces the client's; without it the client's goes through); \
`path` a directory under that attach which clients see as the root.\n\n\
  fs1 name data addr tcp!fs1!564 aname /export loc home\n\
  fs2 name data addr tcp!fs2!564 aname /export loc office\n\n\
Example: p9persist mux --listen 5640 --registry /etc/p9persist/registry name data\n\
Sessions keep the server they have while it works; when it fails they move to another match \
(failed servers are avoided for a while). Files open on the failed server answer i/o errors \
(EIO) until closed; other fids move by path; qids name paths, the same on every server.";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What `proxy` and `mux` share: how sessions wait, redial and report.
#[derive(clap::Args)]
struct SessionOpts {
    /// Soft mode: after this long without a server, fail requests with EIO (e.g. 30s, 2m);
    /// the default is hard mode, waiting forever like an NFS hard mount
    #[arg(long, value_parser = parse_duration)]
    give_up_after: Option<Duration>,
    /// Delay before the first redial, and the base of every later one (±25 % jitter); it
    /// grows ×1.5 to at most 0.5 s (or this, if larger) while the outage is under 15 s old
    /// (a restarting server is found fast), then to a quarter of the outage
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    backoff_initial: Duration,
    /// Longest delay between redials
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    backoff_max: Duration,
    /// A server that sends nothing this long while requests wait is declared hung: the link
    /// is dropped and the server redialed (soft mode: the give-up time, if shorter)
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    server_timeout: Duration,
    /// A client that has not sent its Tversion this long after connecting is closed; no
    /// server connection is made for a client before its Tversion
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    version_timeout: Duration,
    /// Serve Prometheus metrics over HTTP at ADDR (PORT, HOST:PORT, tcp!HOST!PORT or
    /// unix!/PATH; a bare port is on 127.0.0.1): sessions, outages, recoveries, fids
    /// rebuilt and lost, failed requests, redials, bytes forwarded
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Most unsynced writes kept (all files of a session together) to be checked against the
    /// server after a reconnect, so that a later fsync tells the truth (e.g. 64M, 512K); past it, a file's
    /// next fsync after an outage fails with EIO. Each kept write counts at least 16K
    #[arg(long, value_parser = parse_size, default_value = "64M", value_name = "SIZE")]
    replay_budget: usize,
    /// Most bytes of client requests a session holds — in flight, or waiting while its server
    /// is away — each counted as at least 16K (e.g. 16M); past it the client is not read until
    /// replies free some
    #[arg(long, value_parser = parse_size, default_value = "16M", value_name = "SIZE")]
    held_max: usize,
    /// Most bytes of replies a session queues for a client that is not reading them, each
    /// counted as at least 16K (e.g. 4M; never less than two messages); past it the server's
    /// connection is not read until the client catches up, and the server's own flow control
    /// holds the rest
    #[arg(long, value_parser = parse_size, default_value = "4M", value_name = "SIZE")]
    reply_max: usize,
    /// Most memory all sessions together hold for their clients and servers (requests,
    /// replies, unsynced writes kept for replay). When it is reached new clients are refused
    /// (logged), and each session is held to an equal share: one holding more stops reading
    /// until others free memory or its own client catches up
    #[arg(long, value_parser = parse_size, default_value = "512M", value_name = "SIZE")]
    memory_max: usize,
    /// Most clients served at once; more are refused (logged, at most a line a second)
    #[arg(long, default_value_t = runtime_std::limits::DEFAULT_MAX_CLIENTS, value_name = "N")]
    max_clients: usize,
    /// What a create, remove, link or rename in flight when the server was lost becomes.
    /// `resolve` looks at the server after the reconnect: where the names are as they were
    /// before the request (a name to be made absent, a file to be removed or moved still
    /// there), the request never ran and is sent again; where they show a change that only
    /// this request could have made (a hard link to the session's own file, an open(O_CREAT)
    /// finding a file), it is answered as done; anything else — a name made, removed or moved
    /// that another client could have made so — fails with EIO, as do two such requests in
    /// flight on one name (through any attach) and any on a link given up on as hung (its
    /// server may run them yet). It assumes a link that closed runs nothing more, nobody
    /// reverses the request's change during the outage (removes a name it made, puts back a
    /// file it removed), and nobody else links the linked file at that name. `fail` always
    /// fails it with EIO, as styxpersist does
    #[arg(long, value_enum, default_value = "resolve", value_name = "RULE")]
    ambiguous: Ambiguous,
}

/// `--ambiguous`: how creates, removes and renames in flight at a loss are settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Ambiguous {
    /// Look at the server: not done → sent again, done and provably this request's →
    /// success, anything else → EIO
    Resolve,
    /// Always EIO ("operation possibly not completed"), as Inferno's styxpersist does
    Fail,
}

#[derive(Subcommand)]
enum Command {
    /// Proxy clients to a 9P server, keeping their sessions alive across its restarts
    #[command(
        after_help = "Under systemd socket activation leave out --listen: the proxy serves \
                            the sockets the socket unit passes (see p9persist.socket).\n\
                            Metrics: --metrics 9100, then http://127.0.0.1:9100/metrics"
    )]
    Proxy {
        /// Where clients connect: PORT, HOST:PORT, tcp!HOST!PORT, unix!/PATH (created 0600), or
        /// -; leave it out to serve the sockets systemd passes (socket activation)
        #[arg(long, short)]
        listen: Option<String>,
        /// The 9P server: HOST:PORT, tcp!HOST!PORT or unix!/PATH
        #[arg(long, short)]
        server: String,
        #[command(flatten)]
        opts: SessionOpts,
    },
    /// Serve clients from any of several equivalent servers chosen from a registry, failing
    /// over between them (the Octopus's mux(4))
    #[command(after_help = MUX_HELP)]
    Mux {
        /// Where clients connect (as for proxy); leave it out under socket activation
        #[arg(long, short)]
        listen: Option<String>,
        /// A registry(4) index file (re-read when it changes), or tcp!HOST!PORT of a registry
        /// served over 9P (its `index` file, read every 5 s)
        #[arg(long, short, value_name = "FILE|DIAL")]
        registry: Option<String>,
        /// An index line given here instead of a registry (repeatable):
        /// 'NAME addr tcp!HOST!PORT [aname A] [path P] [attr val]...'
        #[arg(long, value_name = "LINE")]
        service: Vec<String>,
        /// Print the services the query matches, as index lines, and exit
        #[arg(long)]
        list: bool,
        #[command(flatten)]
        opts: SessionOpts,
        /// The query: attribute and value pairs every chosen service has; a value * matches
        /// any, $NAME is the environment variable NAME
        #[arg(value_name = "ATTR VAL", num_args = 0.., trailing_var_arg = true)]
        query: Vec<String>,
    },
    /// Serve an in-memory file tree over 9P (9P2000, 9P2000.u and 9P2000.L)
    Ramfs {
        /// Where clients connect: PORT, HOST:PORT, tcp!HOST!PORT, unix!/PATH or -; leave it out
        /// to serve the sockets systemd passes (socket activation)
        #[arg(long, short)]
        listen: Option<String>,
        /// Largest message size offered to clients
        #[arg(long, default_value_t = 65536)]
        msize: u32,
    },
    /// Run a server, the proxy and a client workload; cut the server off a few times and report
    /// what survived
    Demo {
        /// How many times to cut the server off
        #[arg(long, default_value_t = 3)]
        outages: u32,
        /// How long each outage lasts
        #[arg(long, value_parser = parse_duration, default_value = "1500ms")]
        outage: Duration,
        /// Files the workload keeps open
        #[arg(long, default_value_t = 4)]
        files: u32,
    },
    /// Print a shell completion script (bash: save as
    /// /usr/share/bash-completion/completions/p9persist; zsh: as _p9persist in $fpath; fish: as
    /// ~/.config/fish/completions/p9persist.fish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (p9persist.1 and one per command, p9persist-proxy.1 ...) into DIR
    Manpages {
        /// The directory to write them into (created if missing)
        dir: std::path::PathBuf,
    },
}

/// "64M", "512K", "1G" or plain bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 64M, 512K, or bytes)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// "30s", "500ms", "2m", "1h" or plain seconds; anything else (or too long) is an error.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    // A century is more than any timeout needs and keeps clock arithmetic far from overflow.
    const LONGEST: f64 = 100.0 * 365.0 * 86400.0;
    if !(0.0..=LONGEST).contains(&secs) {
        return Err(format!("{s:?} is too long (at most 100 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn init_logging(verbose: u8, quiet_default: bool, format: LogFormat) {
    let level = match (verbose, quiet_default) {
        (0, true) => "error",
        (0, false) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("P9PERSIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => {
            // The sentence says it all; the event's kind is for the JSON format.
            let fields =
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
                    "message" => write!(w, "{value:?}"),
                    "event" => Ok(()),
                    name => write!(w, " {name}={value:?}"),
                });
            let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.fmt_fields(fields).with_ansi(colour).init()
        }
    }
}

/// A watch that turns true on SIGINT or SIGTERM.
fn shutdown_on_signals() -> watch::Receiver<bool> {
    // Registered here, before anything is bound: a signal that comes as soon as the socket
    // exists must find the handler in place, not the default action.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received: shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// The sockets to serve: `listen` bound, or, without it, those systemd passed.
async fn listeners(
    what: &str,
    listen: Option<&str>,
    passed: Vec<Passed>,
) -> Result<Vec<Listener>, String> {
    let Some(listen) = listen else {
        if passed.is_empty() {
            return Err(
                "--listen is required (or start p9persist under systemd socket \
                        activation, which passes the listening sockets in LISTEN_FDS)"
                    .into(),
            );
        }
        return passed
            .into_iter()
            .map(Listener::from_passed)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("socket activation: {e}"));
    };
    if !passed.is_empty() {
        // Serving --listen alone would leave systemd's sockets unanswered: clients would queue
        // on them and hang.
        return Err(format!(
            "--listen {listen} was given, but systemd also passed {} listening socket(s): \
             leave out --listen to serve those",
            passed.len()
        ));
    }
    let addr = Addr::listen(listen).map_err(|e| format!("--listen: {e}"))?;
    let listener = Listener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {listen} for {what}: {e}"))?;
    Ok(vec![listener])
}

fn describe(listeners: &[Listener]) -> String {
    let names: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map_or("?".into(), |a| a.to_string()))
        .collect();
    names.join(", ")
}

impl SessionOpts {
    /// The sessions' settings, or what is wrong with the options.
    fn config(&self) -> Result<Config, String> {
        if self.backoff_initial > self.backoff_max {
            return Err(format!(
                "--backoff-initial ({:?}) is longer than --backoff-max ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        Ok(Config {
            backoff: Backoff {
                initial: self.backoff_initial,
                max: self.backoff_max,
                ..Backoff::default()
            },
            give_up_after: self.give_up_after,
            server_timeout: self.server_timeout,
            version_timeout: self.version_timeout,
            replay_budget: self.replay_budget,
            queue_max_bytes: self.held_max,
            reply_max: self.reply_max,
            resolve_ambiguous: self.ambiguous == Ambiguous::Resolve,
            seed: std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15,
            ..Config::default()
        })
    }
}

/// A server whose name does not resolve is a mistake (an error); one that is down is what
/// this program is for (a warning), and so is a resolver that does not answer in time.
async fn check_server(name: &str, addr: &Addr) -> Result<(), String> {
    if let Addr::Tcp(a) = addr {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(a)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("cannot resolve {a}: {e}")),
            Err(_) => {
                tracing::warn!(
                    "the name lookup for server {name} did not answer in 5 s; each client's \
                     session will keep trying it"
                );
                return Ok(());
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(2), runtime_tokio::net::dial(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(
            "server {name} is not reachable now ({e}); each client's session will keep redialing it"
        ),
        Err(_) => tracing::warn!(
            "server {name} does not answer now; each client's session will keep redialing it"
        ),
    }
    Ok(())
}

/// Serve clients on `listeners` from `servers` until a signal.
async fn serve(
    listeners: Vec<Listener>,
    servers: Servers,
    opts: &SessionOpts,
    session: Config,
    what: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let metrics = match &opts.metrics {
        None => None,
        Some(at) => {
            let addr = Addr::listen(at).map_err(|e| format!("--metrics: {e}"))?;
            if addr == Addr::Stdio {
                return Err("--metrics: needs a socket address, not -".into());
            }
            let listener = Listener::bind(&addr)
                .await
                .map_err(|e| format!("cannot listen on {at} for metrics: {e}"))?;
            let shared = Metrics::new();
            match &listener {
                Listener::Tcp(l) => match l.local_addr() {
                    Ok(a) => tracing::info!("metrics at http://{a}/metrics"),
                    Err(_) => tracing::info!("metrics at {at}"),
                },
                _ => tracing::info!("metrics over HTTP on {at}, path /metrics"),
            }
            tokio::spawn(runtime_tokio::metrics::serve_metrics(
                listener,
                shared.clone(),
                shutdown.clone(),
            ));
            Some(shared)
        }
    };
    let mode = match session.give_up_after {
        Some(d) => format!("soft mode: requests fail with EIO after {d:?} without a server"),
        None => "hard mode: requests wait for the server however long it takes".into(),
    };
    tracing::info!("{what} ({mode})");
    let mut proxies = tokio::task::JoinSet::new();
    // Every listener's sessions count against one set of limits.
    let limits = Arc::new(Limits::new(opts.memory_max, opts.max_clients));
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut cfg = ProxyConfig {
            servers: servers.clone(),
            session: session.clone(),
            metrics: metrics.clone(),
            limits: limits.clone(),
        };
        // Each listener numbers its sessions from 1: keep their seeds apart.
        cfg.session.seed ^= (i as u64).wrapping_mul(0xa076_1d64_78bd_642f);
        proxies.spawn(run_proxy(listener, cfg, None, shutdown.clone()));
    }
    while let Some(done) = proxies.join_next().await {
        done.map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn run(cli: Cli, passed: Vec<Passed>) -> Result<(), String> {
    let format = cli.log_format;
    match cli.command {
        Command::Proxy {
            listen,
            server,
            opts,
        } => {
            init_logging(cli.verbose, false, format);
            let backend = Addr::dial(&server).map_err(|e| format!("--server: {e}"))?;
            if backend == Addr::Stdio {
                return Err("--server: cannot dial stdio".into());
            }
            check_server(&backend.to_string(), &backend)
                .await
                .map_err(|e| format!("--server: {e}"))?;
            let shutdown = shutdown_on_signals();
            let listeners = listeners("clients", listen.as_deref(), passed).await?;
            let session = opts.config()?;
            let servers = Servers::new(vec![Server::plain(backend.clone())], &session);
            let what = format!("proxying {} to {backend}", describe(&listeners));
            serve(listeners, servers, &opts, session, &what, shutdown).await
        }
        Command::Mux {
            listen,
            registry,
            service,
            list,
            opts,
            query,
        } => {
            init_logging(cli.verbose, list, format);
            let query = Query::new(&query, |name| std::env::var(name).ok())
                .map_err(|e| format!("query: {e}"))?;
            let source = mux::Source::from_arg(registry, service)?;
            let index = source.read().await?;
            if list {
                for s in query.select(&index) {
                    println!("{}", mux::index_line(s));
                }
                return Ok(());
            }
            let chosen = mux::servers(&index, &query);
            if chosen.is_empty() {
                return Err(format!(
                    "no service with an addr matches the query {query:?} (see --list)",
                    query = query.to_string()
                ));
            }
            // A name that does not resolve is a mistake when no service resolves; beside
            // others that do, it is one server the mux cannot reach now: failover passes it.
            let mut checks = tokio::task::JoinSet::new();
            for s in &chosen {
                let (name, addr) = (s.name.clone(), s.addr.clone());
                checks.spawn(async move {
                    let checked = check_server(&name, &addr).await;
                    checked.map_err(|e| format!("service {name}: {e}"))
                });
            }
            let mut unresolved = Vec::new();
            while let Some(checked) = checks.join_next().await {
                if let Err(e) = checked.map_err(|e| e.to_string())? {
                    unresolved.push(e);
                }
            }
            unresolved.sort();
            if unresolved.len() == chosen.len() {
                return Err(unresolved.join("; "));
            }
            for e in &unresolved {
                tracing::warn!("{e}; sessions will use the other services");
            }
            let shutdown = shutdown_on_signals();
            let listeners = listeners("clients", listen.as_deref(), passed).await?;
            let session = opts.config()?;
            let servers = Servers::mux(chosen, &session);
            tokio::spawn(mux::follow(
                source,
                query.clone(),
                servers.clone(),
                shutdown.clone(),
            ));
            tokio::spawn(mux::sum_failovers(servers.clone(), shutdown.clone()));
            let what = format!(
                "serving {} from any of: {servers} (query: {query})",
                describe(&listeners)
            );
            serve(listeners, servers, &opts, session, &what, shutdown).await
        }
        Command::Ramfs { listen, msize } => {
            init_logging(cli.verbose, false, format);
            let shutdown = shutdown_on_signals();
            let listeners = listeners("9P clients", listen.as_deref(), passed).await?;
            tracing::info!(
                "serving an empty in-memory tree on {}",
                describe(&listeners)
            );
            let server = RamfsServer::new(ramfs::Fs::new(), msize);
            let mut servers = tokio::task::JoinSet::new();
            for listener in listeners {
                servers.spawn(server.clone().serve(listener, shutdown.clone()));
            }
            while let Some(done) = servers.join_next().await {
                done.map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Command::Demo {
            outages,
            outage,
            files,
        } => {
            init_logging(cli.verbose, true, format);
            demo::run(outages, outage, files).await
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "p9persist",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpages { dir } => write_manpages(&dir),
    }
}

/// p9persist.1 for the program and p9persist-COMMAND.1 for each command, from the same
/// definitions as `--help`.
fn write_manpages(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = Cli::command();
    // Global options (-v, --log-format) reach the commands' pages only once built.
    cmd.build();
    let write = |name: &str, cmd: clap::Command| -> Result<(), String> {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| format!("{name}.1: {e}"))?;
        std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    for sub in cmd.get_subcommands() {
        let name = format!("p9persist-{}", sub.get_name());
        let bin = format!("p9persist {}", sub.get_name());
        write(&name, sub.clone().name(name.clone()).bin_name(bin))?;
    }
    write("p9persist", cmd)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: taking them edits the environment.
    let passed = match runtime_tokio::net::take_passed() {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("p9persist: socket activation (LISTEN_FDS): {e}");
            return ExitCode::FAILURE;
        }
    };
    // A proxy holds two descriptors per client: take the hard limit, as servers do.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // Large frames reuse freed buffers instead of faulting in fresh pages (before threads start).
    runtime_tokio::allocator::tune_for_frames();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("p9persist: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, passed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p9persist: {e}");
            ExitCode::FAILURE
        }
    }
}
