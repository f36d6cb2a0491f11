//! `p9persist`: keeps 9P sessions alive across file server restarts.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use persist_core::{Backoff, Config};
use runtime_tokio::{run_proxy, Addr, Listener, ProxyConfig, RamfsServer};
use tokio::sync::watch;

mod demo;

#[derive(Parser)]
#[command(
    name = "p9persist",
    version,
    about = "Keep 9P sessions alive while the file server restarts or the network drops",
    long_about = "p9persist sits between a 9P client (Linux v9fs, Plan 9, QEMU, FUSE) and its \
                  server. When the server goes away it holds the client's requests, redials, \
                  rebuilds every fid the client had, resends what is safe to resend and fails \
                  only what may already have happened. Start with `p9persist demo`.",
    after_help = "Addresses: tcp!HOST!PORT or HOST:PORT, unix!/PATH or unix:/PATH; to listen, a bare \
                  PORT means 127.0.0.1:PORT and `-` means standard input/output.\n\
                  Example: p9persist proxy --listen 5640 --server tcp!fileserver!564\n\
                  then:    mount -t 9p -o trans=tcp,port=5640,version=9p2000.L 127.0.0.1 /mnt"
)]
struct Cli {
    /// More log output (-v: recovery details, -vv: every connection)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Proxy clients to a 9P server, keeping their sessions alive across its restarts
    Proxy {
        /// Where clients connect: PORT, HOST:PORT, tcp!HOST!PORT, unix!/PATH (created 0600), or -
        #[arg(long, short)]
        listen: String,
        /// The 9P server: HOST:PORT, tcp!HOST!PORT or unix!/PATH
        #[arg(long, short)]
        server: String,
        /// Soft mode: after this long without a server, fail requests with EIO (e.g. 30s, 2m);
        /// the default is hard mode, waiting forever like an NFS hard mount
        #[arg(long, value_parser = parse_duration)]
        give_up_after: Option<Duration>,
        /// Delay before the first redial; it grows ×1.5 to at most 0.5 s while the outage is
        /// under 15 s old (a restarting server is found fast), then to a quarter of the outage
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
    },
    /// Serve an in-memory file tree over 9P (9P2000, 9P2000.u and 9P2000.L)
    Ramfs {
        /// Where clients connect: PORT, HOST:PORT, tcp!HOST!PORT, unix!/PATH or -
        #[arg(long, short)]
        listen: String,
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

fn init_logging(verbose: u8, quiet_default: bool) {
    let level = match (verbose, quiet_default) {
        (0, true) => "error",
        (0, false) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("P9PERSIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
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

async fn bind(what: &str, listen: &str) -> Result<Listener, String> {
    let addr = Addr::listen(listen).map_err(|e| format!("--listen: {e}"))?;
    Listener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {listen} for {what}: {e}"))
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Proxy {
            listen,
            server,
            give_up_after,
            backoff_initial,
            backoff_max,
            server_timeout,
            version_timeout,
        } => {
            init_logging(cli.verbose, false);
            let backend = Addr::dial(&server).map_err(|e| format!("--server: {e}"))?;
            match &backend {
                Addr::Stdio => return Err("--server: cannot dial stdio".into()),
                Addr::Tcp(a) => {
                    // A name that does not resolve is a mistake; a server that is down is
                    // what this program is for.
                    let _addresses = tokio::net::lookup_host(a)
                        .await
                        .map_err(|e| format!("--server: cannot resolve {a}: {e}"))?;
                }
                Addr::Unix(_) => {}
            }
            match tokio::time::timeout(Duration::from_secs(2), runtime_tokio::net::dial(&backend)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("server {backend} is not reachable now ({e}); each client's session will keep redialing it"),
                Err(_) => tracing::warn!("server {backend} does not answer now; each client's session will keep redialing it"),
            }
            let shutdown = shutdown_on_signals();
            let listener = bind("clients", &listen).await?;
            let session = Config {
                backoff: Backoff {
                    initial: backoff_initial,
                    max: backoff_max,
                    ..Backoff::default()
                },
                give_up_after,
                server_timeout,
                version_timeout,
                seed: std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15,
                ..Config::default()
            };
            let mode = match give_up_after {
                Some(d) => {
                    format!("soft mode: requests fail with EIO after {d:?} without a server")
                }
                None => "hard mode: requests wait for the server however long it takes".into(),
            };
            tracing::info!(
                "proxying {} to {backend} ({mode})",
                listener.local_addr().map_or("?".into(), |a| a.to_string())
            );
            run_proxy(listener, ProxyConfig { backend, session }, None, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Ramfs { listen, msize } => {
            init_logging(cli.verbose, false);
            let shutdown = shutdown_on_signals();
            let listener = bind("9P clients", &listen).await?;
            tracing::info!(
                "serving an empty in-memory tree on {}",
                listener.local_addr().map_or("?".into(), |a| a.to_string())
            );
            RamfsServer::new(ramfs::Fs::new(), msize)
                .serve(listener, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Demo {
            outages,
            outage,
            files,
        } => {
            init_logging(cli.verbose, true);
            demo::run(outages, outage, files).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A proxy holds two descriptors per client: take the hard limit, as servers do.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p9persist: {e}");
            ExitCode::FAILURE
        }
    }
}
