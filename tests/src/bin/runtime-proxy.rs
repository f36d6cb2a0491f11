//! One proxy process on a runtime chosen at the command line, for the shared integration suite
//! (tests/tests/runtimes.rs): every runtime is tested as the process a user would run, so its
//! CPU time, memory, file-descriptor limits and signals are its own.
//!
//!   runtime-proxy --runtime tokio|std|smol|async-std --listen ADDR
//!                 (--server ADDR | --service 'NAME addr ADDR [aname A] [path P]'...)
//!                 [--give-up-after-ms N] [--backoff-initial-ms N] [--backoff-max-ms N]
//!                 [--server-timeout-ms N] [--version-timeout-ms N] [--count-metrics]
//!                 [--reply-max BYTES] [--held-max BYTES] [--memory-max BYTES] [--max-clients N]
//!
//! `--service` lines (registry index lines, as `p9persist mux` reads) make it a mux of those
//! servers. `--count-metrics` has the sessions count into a `runtime_std::Metrics` (nothing serves it:
//! the forwarding bench measures what counting costs).
//!
//! Prints `listening ADDR` on standard output once bound (not when serving standard input and
//! output); SIGTERM or SIGINT stop it.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use persist_core::{Backoff, Config};
use runtime_std::{Addr, ProxyConfig, Server, Servers};
use signal_hook::consts::{SIGINT, SIGTERM};

struct Args {
    runtime: String,
    listen: Addr,
    cfg: ProxyConfig,
}

fn args() -> Result<Args, String> {
    let mut runtime = None;
    let mut listen = None;
    let mut server = None;
    let mut services = Vec::new();
    let mut session = Config {
        seed: std::process::id() as u64,
        ..Config::default()
    };
    let mut backoff = Backoff::default();
    let mut metrics = None;
    let mut memory_max = runtime_std::limits::DEFAULT_MEMORY_MAX;
    let mut max_clients = runtime_std::limits::DEFAULT_MAX_CLIENTS;
    let bytes = |v: String| -> Result<usize, String> {
        v.parse().map_err(|_| format!("{v:?} is not a number"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        let ms = |v: String| -> Result<Duration, String> {
            v.parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{v:?} is not a number of milliseconds"))
        };
        match a.as_str() {
            "--runtime" => runtime = Some(value()?),
            "--listen" => listen = Some(Addr::listen(&value()?).map_err(|e| e.to_string())?),
            "--server" => server = Some(Addr::dial(&value()?).map_err(|e| e.to_string())?),
            "--service" => {
                let line = value()?;
                for s in persist_core::registry::parse_index(&line).map_err(|e| e.to_string())? {
                    services.push(Server::from_service(&s).map_err(|e| format!("{line}: {e}"))?);
                }
            }
            "--give-up-after-ms" => session.give_up_after = Some(ms(value()?)?),
            "--backoff-initial-ms" => backoff.initial = ms(value()?)?,
            "--backoff-max-ms" => backoff.max = ms(value()?)?,
            "--server-timeout-ms" => session.server_timeout = ms(value()?)?,
            "--version-timeout-ms" => session.version_timeout = ms(value()?)?,
            "--count-metrics" => metrics = Some(runtime_std::Metrics::new()),
            "--reply-max" => session.reply_max = bytes(value()?)?,
            "--held-max" => session.queue_max_bytes = bytes(value()?)?,
            "--memory-max" => memory_max = bytes(value()?)?,
            "--max-clients" => max_clients = bytes(value()?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    session.backoff = backoff;
    let servers = match (server, services.is_empty()) {
        (Some(addr), true) => Servers::one(addr),
        (None, false) => Servers::mux(services, &session),
        _ => return Err("give --server, or --service lines (not both)".into()),
    };
    Ok(Args {
        runtime: runtime.ok_or("--runtime is required")?,
        listen: listen.ok_or("--listen is required")?,
        cfg: ProxyConfig {
            servers,
            session,
            metrics,
            limits: Arc::new(runtime_std::Limits::new(memory_max, max_clients)),
        },
    })
}

/// Say where clients connect — on standard output, unless that is the client's link.
fn announce(addr: Option<Addr>) {
    if addr == Some(Addr::Stdio) {
        return;
    }
    let addr = addr.map_or("?".into(), |a| a.to_string());
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// Call `stop` on the first SIGTERM or SIGINT.
fn on_signal(stop: impl FnOnce() + Send + 'static) {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).expect("signals");
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            tracing::info!("signal received: shutting down");
            stop();
        }
    });
}

fn run(a: Args) -> std::io::Result<()> {
    match a.runtime.as_str() {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                on_signal(move || {
                    let _ = tx.send(true);
                });
                let listener = runtime_tokio::Listener::bind(&a.listen).await?;
                announce(listener.local_addr());
                runtime_tokio::run_proxy(listener, a.cfg, None, rx).await
            })
        }
        "std" => {
            let shutdown = runtime_std::Shutdown::new();
            let s = shutdown.clone();
            on_signal(move || s.shutdown());
            let listener = runtime_std::Listener::bind(&a.listen)?;
            announce(listener.local_addr());
            runtime_std::run_proxy(listener, a.cfg, shutdown)
        }
        "smol" => {
            let ex = Arc::new(smol::Executor::new());
            // A second thread runs the executor too, as a two-core server would.
            let helper = ex.clone();
            std::thread::spawn(move || smol::block_on(helper.run(std::future::pending::<()>())));
            smol::block_on(ex.clone().run(async {
                let shutdown = runtime_async::Shutdown::new();
                let s = shutdown.clone();
                on_signal(move || s.shutdown());
                let listener = runtime_async::Listener::bind(&a.listen).await?;
                announce(listener.local_addr());
                let spawner = ex.clone();
                let spawn = move |session| spawner.spawn(session).detach();
                runtime_async::run_proxy(listener, a.cfg, spawn, shutdown).await
            }))
        }
        "async-std" => async_std::task::block_on(async {
            let shutdown = runtime_async::Shutdown::new();
            let s = shutdown.clone();
            on_signal(move || s.shutdown());
            let listener = runtime_async::Listener::bind(&a.listen).await?;
            announce(listener.local_addr());
            let spawn = |session| drop(async_std::task::spawn(session));
            runtime_async::run_proxy(listener, a.cfg, spawn, shutdown).await
        }),
        other => Err(std::io::Error::other(format!(
            "unknown runtime {other:?} (tokio, std, smol or async-std)"
        ))),
    }
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("runtime-proxy: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // A proxy holds two descriptors per client: take the hard limit, as servers do.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // Set the allocator as the p9persist binary does.
    runtime_tokio::allocator::tune_for_frames();
    let filter = tracing_subscriber::EnvFilter::try_from_env("P9PERSIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match run(a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtime-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
