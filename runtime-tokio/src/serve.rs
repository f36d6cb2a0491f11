//! Serving the in-memory ramfs over real connections: one `ramfs::Conn` per client, one tree
//! for all. The tree survives [`RamfsServer::cut_off`], which drops every connection and refuses
//! new ones for a while — a server restart, as the demo and the tests need it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use p9_core::FrameDecoder;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::net::write_frames;
use crate::net::{Listener, Reader, Writer};

/// A ramfs tree served on a listener.
pub struct RamfsServer {
    pub fs: Arc<Mutex<ramfs::Fs>>,
    /// Bumped by every cut-off; connections end when it changes.
    generation: watch::Sender<u64>,
    refuse_until: Mutex<Option<tokio::time::Instant>>,
    /// While true, connections read but do not execute requests (a hung server; tests use it
    /// to have a request in flight when the server dies).
    frozen: watch::Sender<bool>,
    msize: u32,
}

impl RamfsServer {
    pub fn new(fs: ramfs::Fs, msize: u32) -> Arc<RamfsServer> {
        Arc::new(RamfsServer {
            fs: Arc::new(Mutex::new(fs)),
            generation: watch::channel(0).0,
            refuse_until: Mutex::new(None),
            frozen: watch::channel(false).0,
            msize,
        })
    }

    /// Stop (or resume) executing requests, keeping connections open.
    pub fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// Drop every connection now and refuse new ones for `down`: a crash and restart.
    pub fn cut_off(&self, down: Duration) {
        *self.refuse_until.lock().expect("lock") = Some(tokio::time::Instant::now() + down);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accept and serve clients until `shutdown` turns true. During a cut-off the listening
    /// socket is closed, so dials are refused as they would be by a stopped server.
    pub async fn serve(
        self: Arc<Self>,
        mut listener: Listener,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr();
        let mut generation = self.generation.subscribe();
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Some((r, w, peer)) = accepted? else {
                        // No more clients will come (stdio): serve the ones there are.
                        while conns.join_next().await.is_some() {}
                        return Ok(());
                    };
                    debug!("ramfs: client {peer} connected");
                    conns.spawn(self.clone().serve_conn(r, w));
                }
                _ = generation.changed() => {
                    let until = || *self.refuse_until.lock().expect("lock");
                    let (Some(addr), Some(_)) = (addr.clone(), until()) else { continue };
                    drop(listener);
                    // Down until the latest cut-off ends: another one moves the end (a zero
                    // one ends it now).
                    while let Some(end) = until() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(end) => break,
                            _ = generation.changed() => {}
                            _ = crate::shutdown_requested(&mut shutdown) => return Ok(()),
                        }
                    }
                    listener = Listener::bind(&addr).await?;
                    info!("ramfs: back on {addr}");
                }
                _ = crate::shutdown_requested(&mut shutdown) => return Ok(()),
            }
        }
    }

    async fn serve_conn(self: Arc<Self>, mut r: Reader, mut w: Writer) {
        let mut conn = ramfs::Conn::new(&mut self.fs.lock().expect("lock"), self.msize);
        let mut gen = self.generation.subscribe();
        gen.borrow_and_update();
        let mut decoder = FrameDecoder::new(self.msize);
        let mut replies: Vec<Bytes> = Vec::new();
        let mut frozen = self.frozen.subscribe();
        loop {
            tokio::select! {
                n = crate::net::read_some(&mut r, &mut decoder) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = gen.changed() => {
                    // Crashed: whatever the connection held is gone with it.
                    drop(conn);
                    return;
                }
            }
            // A frozen server executes nothing; a cut-off still ends the connection.
            tokio::select! {
                biased;
                _ = gen.changed() => return,
                _ = frozen.wait_for(|f| !*f) => {}
            }
            decoder.set_max_size(conn.msize().max(self.msize));
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        let reply = conn.handle(&mut self.fs.lock().expect("lock"), &frame);
                        replies.push(reply);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        info!("ramfs: closing a connection that sent a bad frame: {e}");
                        conn.close(&mut self.fs.lock().expect("lock"));
                        return;
                    }
                }
            }
            if write_frames(&mut w, &mut replies).await.is_err() {
                break;
            }
        }
        conn.close(&mut self.fs.lock().expect("lock"));
    }
}
