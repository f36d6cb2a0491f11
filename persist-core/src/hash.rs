//! A fixed (unseeded) hasher for the session's tables: iteration order must not depend on
//! anything but the inputs, or a simulation seed would not replay.

use core::hash::{BuildHasherDefault, Hasher};

/// FxHash-style multiplicative hashing; keys here are small integers and short names.
#[derive(Default, Clone, Copy)]
pub struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64)
    }
    fn write_u16(&mut self, n: u16) {
        self.add(n as u64)
    }
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64)
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n)
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64)
    }
    fn finish(&self) -> u64 {
        // Spread the high bits down: hashbrown takes its control bits from the top.
        self.0 ^ (self.0 >> 29)
    }
}

impl FixedHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub type FixedState = BuildHasherDefault<FixedHasher>;
pub type HashMap<K, V> = hashbrown::HashMap<K, V, FixedState>;

pub fn hash_one<T: core::hash::Hash>(value: T) -> u64 {
    let mut h = FixedHasher::default();
    value.hash(&mut h);
    h.finish()
}
