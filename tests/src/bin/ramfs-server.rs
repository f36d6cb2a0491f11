//! The in-memory server in a process of its own, for benchmarks that must not share a runtime
//! with it: `ramfs-server ADDR MSIZE` serves an empty tree with room for large files (1 GiB a
//! file, 2 GiB in all) and prints `listening ADDR` once bound.

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(msize)) = (args.next(), args.next().and_then(|m| m.parse().ok())) else {
        eprintln!("usage: ramfs-server ADDR MSIZE");
        std::process::exit(2);
    };
    let addr = runtime_tokio::Addr::listen(&addr).unwrap_or_else(|e| {
        eprintln!("ramfs-server: {e}");
        std::process::exit(2)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let limits = ramfs::Limits {
            max_file_size: 1 << 30,
            max_bytes: 2 << 30,
            ..ramfs::Limits::default()
        };
        let server = runtime_tokio::RamfsServer::new(ramfs::Fs::with_limits(limits), msize);
        let listener = runtime_tokio::Listener::bind(&addr)
            .await
            .unwrap_or_else(|e| {
                eprintln!("ramfs-server: {e}");
                std::process::exit(1)
            });
        println!("listening {addr}");
        let _ = std::io::stdout().flush();
        let (_stop, never) = tokio::sync::watch::channel(false);
        let _ = server.serve(listener, never).await;
    });
}
