//! Long simulation runs: `cargo run -p tests --release --bin sim -- --seeds 1000000 [--from N]`.
//! Prints seeds per second, the digest of each seed with `--digest`, and any failing seed with
//! how to replay it. Exits non-zero if a seed failed.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut from, mut digest, mut stop) = (10_000u64, 0u64, false, true);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("sim: {name} needs a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--seeds" => seeds = num("--seeds"),
            "--from" => from = num("--from"),
            "--digest" => digest = true,
            "--keep-going" => stop = false,
            "-h" | "--help" => {
                println!("usage: sim [--seeds N] [--from FIRST] [--digest] [--keep-going]\n\
                          Runs seeds FIRST..FIRST+N of the deterministic simulation.\n\
                          Replay one seed with its trace: SIM_SEED=n cargo test -p tests --test simulation -- --nocapture");
                return;
            }
            other => {
                eprintln!("sim: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let start = Instant::now();
    let mut failed = 0u64;
    let mut last_report = Instant::now();
    // One digest over every seed's digest: two runs of the same range print the same.
    let mut combined: u64 = 0xcbf2_9ce4_8422_2325;
    let mut marks = tests::sim::MarkTotals::default();
    for seed in from..from + seeds {
        match tests::sim::run(seed, false) {
            Ok(r) => {
                combined = (combined ^ r.digest).wrapping_mul(0x100_0000_01b3);
                marks.add(&r.marks);
                if digest {
                    println!("seed {seed} digest {:016x}", r.digest);
                }
            }
            Err(f) => {
                failed += 1;
                println!("{f}");
                if stop {
                    break;
                }
            }
        }
        if last_report.elapsed().as_secs() >= 10 {
            let done = seed + 1 - from;
            eprintln!(
                "{done} seeds, {:.0} seeds/s",
                done as f64 / start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "coverage marks (how often the session reached each rule):\n{}",
        marks.table()
    );
    println!(
        "{seeds} seeds from {from} in {secs:.1} s ({:.0} seeds/s), {failed} failed; digest {combined:016x}",
        seeds as f64 / secs
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
