//! Long simulation runs: `cargo run -p tests --release --bin sim -- --seeds 1000000 [--from N]`.
//! Prints seeds per second, the digest of each seed with `--digest`, and any failing seed with
//! how to replay it. Exits non-zero if a seed failed.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut from, mut digest, mut stop) = (10_000u64, 0u64, false, true);
    let mut mux = false;
    let mut trace = false;
    let mut overrides = tests::sim::Overrides::default();
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
            "--mux" => mux = true,
            "--trace" => trace = true,
            "--keep-going" => stop = false,
            "--overrides" => {
                let text = args.next().unwrap_or_default();
                overrides = tests::sim::Overrides::parse(&text).unwrap_or_else(|e| {
                    eprintln!("sim: --overrides: {e}");
                    std::process::exit(2)
                });
            }
            "-h" | "--help" => {
                let calm: Vec<String> = tests::sim::CALM
                    .iter()
                    .map(|(n, what)| format!("  {n:<8} {what}"))
                    .collect();
                println!("usage: sim [--mux] [--seeds N] [--from FIRST] [--digest] [--keep-going] [--trace] [--overrides steps=N,calm=A+B]\n\
                          Runs seeds FIRST..FIRST+N of the deterministic simulation and prints how often the\n\
                          session reached each rule (coverage marks), and a digest two runs reproduce.\n\
                          --trace prints a failing seed's trace (every frame and event).\n\
                          --mux runs the mux's worlds instead (several backends, failovers; no overrides).\n\
                          --overrides shrinks a failure: fewer steps, and faults turned off by name:\n{}\n\
                          Replay one seed with its trace: SIM_SEED=n [SIM_OVERRIDES=...] cargo test -p tests --test simulation -- --nocapture",
                          calm.join("\n"));
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
    let mut history = tests::history::Counts::default();
    let mut ran = 0u64;
    for seed in from..from + seeds {
        ran += 1;
        let run = if mux {
            tests::sim::run_mux(seed, trace).map(|r| (r.digest, r.marks, Default::default()))
        } else {
            tests::sim::run_with(seed, &overrides, trace)
                .map(|r| (r.digest, r.marks, r.stats.history))
        };
        match run {
            Ok((seed_digest, seed_marks, seed_history)) => {
                history.add(seed_history);
                combined = (combined ^ seed_digest).wrapping_mul(0x100_0000_01b3);
                marks.add(&seed_marks);
                if digest {
                    println!("seed {seed} digest {seed_digest:016x}");
                }
            }
            Err(f) => {
                failed += 1;
                if let Some(t) = &f.trace {
                    println!("{t}");
                }
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
    if !mux {
        println!("operations on the shared lock names and file: {history}");
    }
    println!(
        "{ran} seeds from {from} in {secs:.1} s ({:.0} seeds/s), {failed} failed; digest {combined:016x}",
        ran as f64 / secs
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
