//! Deterministic inputs and an independent reference for the tests.
//!
//! The reference is the `fastcdc` crate's own `FastCDC` iterator plus a
//! plain `blake3::hash` per chunk: the code under test shares only the cut
//! routine with it, not the loop, the windows, the merge or the streaming.

use fastcdc::v2020::{FastCDC, Normalization};

use crate::batch::Batch;
use crate::cutter::Cutter;
use crate::params::Params;

/// SplitMix64: a tiny, well-mixed generator, so tests need no `rand`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Small parameters: many chunks, and many segments, in little data.
pub fn small() -> Params {
    Params {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        normalization: 1,
        seed: 0,
    }
}

/// A spread of valid parameter sets (levels, seeds, min == avg, wide max).
pub fn param_sets() -> Vec<Params> {
    let d = Params::default();
    vec![
        small(),
        Params {
            normalization: 0,
            ..small()
        },
        Params {
            normalization: 3,
            seed: 666,
            ..small()
        },
        Params {
            min_size: 256,
            avg_size: 256,
            max_size: 2048,
            normalization: 2,
            seed: 0,
        },
        Params {
            min_size: 2048,
            avg_size: 8192,
            max_size: 65536,
            ..d
        },
        d,
    ]
}

fn level(n: u32) -> Normalization {
    [
        Normalization::Level0,
        Normalization::Level1,
        Normalization::Level2,
        Normalization::Level3,
    ][n as usize]
}

/// Chunks of `data` as the `fastcdc` crate's iterator cuts them.
pub fn reference(p: Params, data: &[u8]) -> Batch {
    let (min, avg, max) = (p.min_size, p.avg_size, p.max_size);
    let it = FastCDC::with_level_and_seed(data, min, avg, max, level(p.normalization), p.seed);
    let mut out = Batch::default();
    for ch in it {
        let bytes = &data[ch.offset..ch.offset + ch.length];
        out.push(ch.offset as u64, ch.length, blake3::hash(bytes).as_bytes());
    }
    out
}

pub fn cutter(p: Params) -> Cutter {
    assert!(p.validate().is_ok(), "{p:?}");
    Cutter::new(p)
}

/// Adversarial inputs for the parallel merge, each `len` bytes: runs of
/// zeros (whose max-size chunks never resync when out of phase), runs longer
/// than a segment, a short repeating pattern, and all zeros.
pub fn adversarial(rng: &mut Rng, len: usize, max_size: usize) -> Vec<(String, Vec<u8>)> {
    let random = rng.bytes(len);
    let mut cases = vec![("zeros".to_string(), vec![0u8; len])];
    for (i, &(at, run)) in [
        (1, len / 2),
        (max_size / 3 + 1, len),
        (len / 3 + 7, len / 3),
    ]
    .iter()
    .enumerate()
    {
        let mut v = random.clone();
        let end = (at + run).min(len);
        v[at.min(len)..end].fill(0);
        cases.push((format!("zero-run-{i}"), v));
    }
    let mut runs = random.clone();
    let mut pos = rng.below(max_size);
    while pos < len {
        let run = max_size * 3 + rng.below(len / 4 + 1);
        runs[pos..(pos + run).min(len)].fill(0);
        pos += run + rng.below(max_size * 8) + 1;
    }
    cases.push(("many-zero-runs".to_string(), runs));
    let pattern = rng.bytes(97);
    cases.push((
        "pattern-97".to_string(),
        pattern.iter().copied().cycle().take(len).collect(),
    ));
    let mut one = vec![0u8; len];
    one[len / 2 + 1] = 1;
    cases.push(("zeros-one-byte".to_string(), one));
    cases.push(("random".to_string(), random));
    cases
}
