//! The simulation's randomness: the session's SplitMix64 from the seed, nothing else.

#[derive(Clone, Debug)]
pub struct Rng(persist_core::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(persist_core::rng::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` % of the time.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as u64
    }

    /// True `per_mille` ‰ of the time.
    pub fn chance_per_mille(&mut self, per_mille: u32) -> bool {
        self.below(1000) < per_mille as u64
    }

    /// Random bytes, between `lo` and `hi` of them.
    pub fn data(&mut self, lo: u64, hi: u64) -> Vec<u8> {
        let n = self.range(lo, hi);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
