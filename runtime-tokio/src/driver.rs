//! Drives one client connection through a persist-core [`Session`] on tokio: reads frames from
//! the client and the current upstream link, dials when the session asks, sleeps until its
//! timeouts, and writes what it outputs — batched, one vectored write per wakeup, payloads never
//! copied.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p9_core::FrameDecoder;
use persist_core::{BackendId, Config, Event, Instant, LinkId, Output, Peer, Session};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::addr::Addr;
use crate::net::{self, Reader, Writer};

/// Longest a single dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a proxy session needs to know.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub backend: Addr,
    pub session: Config,
}

/// Where a driver's session events go besides the log (the demo counts them).
pub type EventSink = Option<mpsc::UnboundedSender<Event>>;

/// Inputs from link tasks.
enum LinkInput {
    Up(LinkId, Reader, Writer),
    DialFailed(LinkId, String),
    Frame(LinkId, Bytes),
    Down(LinkId, String),
}

struct Link {
    id: LinkId,
    writer: Writer,
    reader: tokio::task::JoinHandle<()>,
}

/// Serve one client until it leaves, is expelled, or `shutdown` turns true.
pub async fn serve_client(
    mut client_r: Reader,
    mut client_w: Writer,
    client: String,
    cfg: ProxyConfig,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) {
    let epoch = tokio::time::Instant::now();
    let now = || Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
    let mut session = Session::new(cfg.session.clone(), BackendId(0), now());
    let (tx, mut rx) = mpsc::channel::<LinkInput>(256);
    let server_msize = Arc::new(AtomicU32::new(session.server_msize()));
    let mut decoder = FrameDecoder::new(session.client_msize());
    let mut link: Option<Link> = None;
    let mut to_client: Vec<Bytes> = Vec::new();
    let mut to_link: Vec<Bytes> = Vec::new();
    info!("client {client} connected; serving {}", cfg.backend);
    loop {
        // Carry out everything the session asked for.
        let mut close_client = false;
        while let Some(o) = session.poll_output() {
            match o {
                Output::ToClient(f) => to_client.push(f),
                Output::ToLink { link: l, frame } => {
                    if link.as_ref().is_some_and(|k| k.id == l) {
                        to_link.push(frame);
                    }
                }
                Output::Dial { link: l, .. } => spawn_dial(l, cfg.backend.clone(), tx.clone()),
                Output::CloseLink { link: l } => {
                    if let Some(k) = link.take_if(|k| k.id == l) {
                        k.reader.abort();
                        to_link.clear();
                    }
                }
                Output::CloseClient => close_client = true,
            }
        }
        while let Some(e) = session.poll_event() {
            log_event(&client, &cfg.backend, &e);
            if let Some(sink) = &events {
                let _ = sink.send(e);
            }
        }
        if !to_link.is_empty() {
            if let Some(k) = &mut link {
                if let Err(e) = write_frames(&mut k.writer, &mut to_link).await {
                    let id = k.id;
                    session.handle_link_down(now(), id, &format!("write to server failed: {e}"));
                    continue;
                }
            }
        }
        if !to_client.is_empty() && write_frames(&mut client_w, &mut to_client).await.is_err() {
            session.handle_client_closed(now());
        }
        if close_client || session.is_closed() {
            break;
        }
        decoder.set_max_size(session.client_msize());
        server_msize.store(session.server_msize(), Ordering::Relaxed);
        let deadline = session
            .poll_timeout()
            .map(|t| epoch + Duration::from_nanos(t.as_nanos()));
        tokio::select! {
            read = net::read_some(&mut client_r, &mut decoder), if session.wants_client_input() => {
                match read {
                    Ok(0) => session.handle_client_closed(now()),
                    Ok(_) => loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => session.handle_client_frame(now(), frame),
                            Ok(None) => break,
                            Err(e) => {
                                warn!("client {client} sent a bad frame ({e}); closing its session");
                                session.handle_client_closed(now());
                                break;
                            }
                        }
                        if !session.wants_client_input() {
                            break;
                        }
                    },
                    Err(e) => {
                        debug!("client {client}: read failed: {e}");
                        session.handle_client_closed(now());
                    }
                }
            }
            Some(input) = rx.recv() => match input {
                LinkInput::Up(id, r, w) => {
                    let reader = tokio::spawn(read_link(id, r, server_msize.clone(), tx.clone()));
                    if let Some(old) = link.replace(Link { id, writer: w, reader }) {
                        old.reader.abort();
                    }
                    session.handle_link_up(now(), id);
                }
                LinkInput::DialFailed(id, why) => session.handle_dial_failed(now(), id, &why),
                LinkInput::Frame(id, frame) => session.handle_server_frame(now(), id, frame),
                LinkInput::Down(id, why) => {
                    if link.as_ref().is_some_and(|k| k.id == id) {
                        link = None;
                    }
                    session.handle_link_down(now(), id, &why);
                }
            },
            _ = sleep_until(deadline) => session.handle_timeout(now()),
            _ = crate::shutdown_requested(&mut shutdown) => {
                info!("client {client}: shutting down");
                break;
            }
        }
    }
    if let Some(k) = link {
        k.reader.abort();
    }
    let _ = client_w.shutdown().await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn spawn_dial(link: LinkId, addr: Addr, tx: mpsc::Sender<LinkInput>) {
    tokio::spawn(async move {
        let input = match tokio::time::timeout(DIAL_TIMEOUT, net::dial(&addr)).await {
            Ok(Ok((r, w))) => LinkInput::Up(link, r, w),
            Ok(Err(e)) => LinkInput::DialFailed(link, e.to_string()),
            Err(_) => LinkInput::DialFailed(link, format!("no answer within {DIAL_TIMEOUT:?}")),
        };
        let _ = tx.send(input).await;
    });
}

/// Read frames from a link until it fails, passing them on in order.
async fn read_link(
    link: LinkId,
    mut r: Reader,
    msize: Arc<AtomicU32>,
    tx: mpsc::Sender<LinkInput>,
) {
    let mut decoder = FrameDecoder::new(msize.load(Ordering::Relaxed));
    let why = loop {
        decoder.set_max_size(msize.load(Ordering::Relaxed));
        match net::read_some(&mut r, &mut decoder).await {
            Ok(0) => break "the server closed the connection".to_string(),
            Err(e) => break format!("read from server failed: {e}"),
            Ok(_) => {}
        }
        let mut failed = None;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if tx.send(LinkInput::Frame(link, frame)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(format!("the server sent a bad frame: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failed {
            break why;
        }
    };
    let _ = tx.send(LinkInput::Down(link, why)).await;
}

/// Write all `frames` with as few system calls as the kernel allows.
pub async fn write_frames(w: &mut Writer, frames: &mut Vec<Bytes>) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    while i < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames[i..]
            .iter()
            .take(64)
            .enumerate()
            .map(|(k, f)| IoSlice::new(if k == 0 { &f[off..] } else { &f[..] }))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = frames[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    frames.clear();
    w.flush().await
}

/// One log line per event, in words a sysadmin reads.
fn log_event(client: &str, backend: &Addr, e: &Event) {
    match e {
        Event::Connected { link, .. } => {
            info!("[{client}] connected to {backend} (link {})", link.0)
        }
        Event::Disconnected { reason, .. } => warn!("[{client}] server {backend} lost: {reason}"),
        Event::Redialing { attempt, delay } => {
            info!(
                "[{client}] redialing {backend} in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            )
        }
        Event::DialFailed { reason, .. } => info!("[{client}] dial {backend} failed: {reason}"),
        Event::Recovered {
            fids,
            stale,
            elapsed,
        } => info!(
            "[{client}] recovered {fids} fids in {} ms ({stale} stale)",
            elapsed.as_millis()
        ),
        Event::FidLost { fid, reason, why } => {
            warn!("[{client}] fid {fid} is lost ({reason:?}): {why}")
        }
        Event::RequestFailed { tag, request, why } => warn!(
            "[{client}] {} (tag {tag}) answered \"operation possibly not completed\": {why}",
            request.name()
        ),
        Event::GaveUp { outage } => warn!(
            "[{client}] server away for {:.1} s: failing requests with EIO until it returns",
            outage.as_secs_f64()
        ),
        Event::RecoveryStalled { .. } => warn!("[{client}] recovery made no progress; redialing"),
        Event::ProtocolViolation { peer, what } => {
            let who = if *peer == Peer::Client {
                "client"
            } else {
                "server"
            };
            warn!("[{client}] the {who} broke the protocol: {what}")
        }
        Event::ClientClosed => info!("[{client}] client disconnected"),
    }
}
