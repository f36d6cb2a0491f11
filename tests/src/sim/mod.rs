//! The deterministic simulation (DESIGN §5): one u64 seed chooses the fault knobs and every
//! random decision; virtual time; the real persist-core session between a model client and the
//! ramfs server; invariants checked on every step, then a liveness phase.

mod client;
mod knobs;
mod mux;
mod rng;
mod wire;
mod world;

pub use knobs::{Knobs, Overrides, CALM};
pub use mux::{run_mux, MuxReport, MuxStats, MuxWorld, MUX_MARKS};
pub use world::{Stats, World};

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    /// Digest of every frame and event: equal for equal seeds.
    pub digest: u64,
    pub stats: Stats,
    pub knobs: Knobs,
    /// How often the session reached each rule and recovery step.
    pub marks: persist_core::Marks,
    /// The readable trace, when the run was traced.
    pub trace: Option<String>,
}

/// A seed that broke a promise.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub overrides: Overrides,
    pub what: String,
    /// The readable trace, when the run was traced.
    pub trace: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = if self.overrides.is_empty() {
            String::new()
        } else {
            format!("SIM_OVERRIDES={} ", self.overrides)
        };
        write!(f, "seed {} failed: {}\nreplay with its trace: SIM_SEED={} {o}cargo test -p tests --test simulation -- --nocapture\nshrink with: cargo run -p tests --release --bin sim -- --from {} --seeds 1 --overrides steps=N,calm=KNOB+KNOB (sim --help lists the knobs)", self.seed, self.what, self.seed, self.seed)
    }
}

/// Run one seed; `trace` keeps a readable log of the run.
pub fn run(seed: u64, trace: bool) -> Result<Report, Failure> {
    run_with(seed, &Overrides::default(), trace)
}

/// Run one seed with some of its knobs changed.
pub fn run_with(seed: u64, overrides: &Overrides, trace: bool) -> Result<Report, Failure> {
    let mut world = World::with_overrides(seed, overrides, trace);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    let what = match result {
        Ok(Ok(())) => {
            return Ok(Report {
                seed,
                digest: world.digest(),
                stats: world.stats.clone(),
                knobs: world.knobs.clone(),
                marks: world.marks(),
                trace: world.trace.take(),
            });
        }
        Ok(Err(what)) => what,
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
    };
    Err(Failure {
        seed,
        overrides: overrides.clone(),
        what: format!("{what}\n(knobs: {:?})", world.knobs),
        trace: world.trace.take(),
    })
}

/// Marks summed over many seeds.
#[derive(Clone, Debug, Default)]
pub struct MarkTotals(pub std::collections::BTreeMap<persist_core::Mark, u64>);

impl MarkTotals {
    pub fn add(&mut self, marks: &persist_core::Marks) {
        for (m, n) in marks.iter() {
            *self.0.entry(m).or_default() += n as u64;
        }
    }

    /// The marks never reached, of those the classic world can reach (all but the mux's).
    pub fn missed(&self) -> Vec<persist_core::Mark> {
        let classic: Vec<persist_core::Mark> = persist_core::Mark::ALL
            .iter()
            .copied()
            .filter(|m| !MUX_MARKS.contains(m))
            .collect();
        self.missed_of(&classic)
    }

    /// Which of `marks` were never reached.
    pub fn missed_of(&self, marks: &[persist_core::Mark]) -> Vec<persist_core::Mark> {
        marks
            .iter()
            .copied()
            .filter(|m| self.0.get(m).copied().unwrap_or(0) == 0)
            .collect()
    }

    /// One line per mark: its name and count.
    pub fn table(&self) -> String {
        persist_core::Mark::ALL
            .iter()
            .map(|m| {
                format!(
                    "{:<28} {:>10}\n",
                    m.name(),
                    self.0.get(m).copied().unwrap_or(0)
                )
            })
            .collect()
    }
}
