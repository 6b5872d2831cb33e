//! One FastCDC 2020 cut decision, with masks and gear tables computed once.
//!
//! The masks and gear tables come from the `fastcdc` crate (`select_masks`,
//! `get_gear_with_seed`); the scan is the crate's `cut_gear` arithmetic,
//! rewritten over `chunks_exact(2)` so that it carries no bounds checks and
//! with the table values kept in registers (see `in_register`): 1.2-1.5x
//! faster than `cut_gear` here, and the cut is half of fused chunk + hash. Tests pin it to the crate's `cut_gear` and `FastCDC` iterator
//! (and, from Python, to `pyfastcdc` and a golden file).

use fastcdc::v2020::{get_gear_with_seed, select_masks, Normalization};

use crate::params::Params;

type Gear = [u64; 256];

/// Finds the end of the chunk that starts at the beginning of a slice.
#[derive(Clone, Debug)]
pub struct Cutter {
    params: Params,
    mask_s: u64,
    mask_l: u64,
    gear: Box<Gear>,
    gear_ls: Box<Gear>,
}

fn level(bits: u32) -> Normalization {
    match bits {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    }
}

fn table(t: &[u64]) -> Box<Gear> {
    Box::new(
        t.try_into()
            .expect("the fastcdc gear table has 256 entries"),
    )
}

/// `x` in a register, its origin hidden from the compiler.
///
/// Without it LLVM folds each table load into its add (`shl; add mem`),
/// two dependent instructions on the hash chain; with the value in a
/// register the shift and add become one `lea (x, h, 4)`, as GCC emits for
/// the C reference: about 1.25x faster cutting on x86-64. No instruction is
/// emitted for the barrier itself.
#[inline(always)]
fn in_register(mut x: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: an empty asm block that claims to rewrite the one register it
    // is given; it reads and writes no memory, stack or flags.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    x
}

/// Gear-hashes `src` two bytes at a time from `hash`; the index of the first
/// byte whose hash matches (`mask_ls` on even, `mask` on odd positions).
#[inline(always)]
fn scan(
    src: &[u8],
    hash: &mut u64,
    masks: (u64, u64),
    gear: &Gear,
    gear_ls: &Gear,
) -> Option<usize> {
    let (mask, mask_ls) = masks;
    let mut h = *hash;
    for (i, pair) in src.chunks_exact(2).enumerate() {
        h = (h << 2).wrapping_add(in_register(gear_ls[pair[0] as usize]));
        if h & mask_ls == 0 {
            return Some(2 * i);
        }
        h = h.wrapping_add(in_register(gear[pair[1] as usize]));
        if h & mask == 0 {
            return Some(2 * i + 1);
        }
    }
    *hash = h;
    None
}

impl Cutter {
    /// `params` must have been validated.
    pub fn new(params: Params) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg_size, level(params.normalization));
        let (gear, gear_ls) = get_gear_with_seed(params.seed);
        Cutter {
            params,
            mask_s,
            mask_l,
            gear: table(&gear),
            gear_ls: table(&gear_ls),
        }
    }

    pub fn max_size(&self) -> usize {
        self.params.max_size
    }

    /// Length of the chunk starting at `data[0]`.
    ///
    /// The decision depends only on `data[..max_size]`, so a caller that is
    /// not at the end of its input must pass at least `max_size` bytes; at
    /// the end of input the whole remainder is passed.
    #[inline]
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let mut remaining = data.len();
        if remaining <= p.min_size {
            return remaining;
        }
        let mut center = p.avg_size;
        if remaining > p.max_size {
            remaining = p.max_size;
        } else if remaining < center {
            center = remaining;
        }
        // Sizes are even (validated), so these are the crate's pair bounds:
        // strict mask from min_size to center, relaxed mask up to the end; an
        // odd last byte is never a candidate.
        let (mid, end) = (center & !1, remaining & !1);
        let (g, gl) = (&*self.gear, &*self.gear_ls);
        let mut hash = 0;
        let strict = (self.mask_s, self.mask_s << 1);
        if let Some(i) = scan(&data[p.min_size..mid], &mut hash, strict, g, gl) {
            return p.min_size + i;
        }
        let relaxed = (self.mask_l, self.mask_l << 1);
        match scan(&data[mid..end], &mut hash, relaxed, g, gl) {
            Some(i) => mid + i,
            None => remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use fastcdc::v2020::cut_gear;

    use super::*;
    use crate::testutil::{param_sets, Rng};

    #[test]
    fn cut_equals_the_crate_cut_gear() {
        let mut rng = Rng::new(31);
        for p in param_sets() {
            let c = Cutter::new(p);
            let (gear, gear_ls) = get_gear_with_seed(p.seed);
            let (ms, ml) = (c.mask_s, c.mask_l);
            let data = rng.bytes(p.max_size + 3);
            let mut zeros = data.clone();
            zeros[p.min_size / 2..].fill(0);
            let lens = [
                0,
                1,
                p.min_size,
                p.min_size + 1,
                p.avg_size - 1,
                p.avg_size + 1,
            ];
            let more = [p.max_size - 1, p.max_size, p.max_size + 3];
            for src in [&data, &zeros] {
                for len in lens
                    .into_iter()
                    .chain(more)
                    .chain((0..50).map(|_| rng.below(src.len())))
                {
                    let s = &src[..len];
                    let (_, want) = cut_gear(
                        s,
                        p.min_size,
                        p.avg_size,
                        p.max_size,
                        ms,
                        ml,
                        ms << 1,
                        ml << 1,
                        &gear,
                        &gear_ls,
                    );
                    assert_eq!(c.cut(s), want, "{p:?} len {len}");
                }
            }
        }
    }
}
