//! Codec throughput: messages per second decoded and encoded for Tread/Rread (8 KiB payload)
//! and Twalk/Rwalk. Prints figures; asserts nothing (run with `cargo bench -p p9-core`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use p9_core::*;

/// Run `f` in batches until `budget` has passed; returns operations per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    const BATCH: u64 = 1024;
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < budget {
        for _ in 0..BATCH {
            f();
        }
        ops += BATCH;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(700),
    );
    let names = WalkNames::new(["usr", "local", "share", "doc", "p9persist", "README"]).unwrap();
    let qid = Qid {
        typ: 0,
        version: 1,
        path: 42,
    };
    let cases: Vec<(&str, Fcall)> = vec![
        (
            "Tread",
            Fcall::new(
                1,
                Tread {
                    fid: Fid(7),
                    offset: 1 << 20,
                    count: 8192,
                },
            ),
        ),
        (
            "Rread 8 KiB",
            Fcall::new(
                1,
                Rread {
                    data: Data(Bytes::from(vec![7u8; 8192])),
                },
            ),
        ),
        (
            "Twalk 6 names",
            Fcall::new(
                1,
                Twalk {
                    fid: Fid(1),
                    newfid: Fid(2),
                    wnames: names,
                },
            ),
        ),
        (
            "Rwalk 6 qids",
            Fcall::new(
                1,
                Rwalk {
                    wqids: WalkQids::new(&[qid; 6]).unwrap(),
                },
            ),
        ),
    ];
    println!("p9-core codec ({} ms per figure)", budget.as_millis());
    println!(
        "{:<16} {:>14} {:>14} {:>16}",
        "message", "decode msg/s", "encode msg/s", "header+fids/s"
    );
    for (name, fcall) in cases {
        let frame = fcall.to_frame().unwrap();
        let decode = rate(budget, || {
            black_box(Fcall::decode(black_box(&frame), Dialect::DotL).unwrap());
        });
        let mut buf = BytesMut::with_capacity(frame.len());
        let encode = rate(budget, || {
            buf.clear();
            black_box(&fcall).encode(&mut buf).unwrap();
            black_box(&buf);
        });
        let header = rate(budget, || {
            let f = black_box(&frame);
            black_box(Header::parse(f).unwrap());
            if fcall.msg.msg_type().is_request() {
                black_box(request_fids(f, Dialect::DotL).unwrap());
            }
        });
        println!("{name:<16} {decode:>14.0} {encode:>14.0} {header:>16.0}");
    }
}
