//! One FastCDC 2020 cut decision, with masks and gear tables computed once.

use std::borrow::Cow;

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};

use crate::params::Params;

/// Finds the end of the chunk that starts at the beginning of a slice.
#[derive(Clone, Debug)]
pub struct Cutter {
    params: Params,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

fn level(bits: u32) -> Normalization {
    match bits {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    }
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
            gear,
            gear_ls,
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
        let (_, end) = cut_gear(
            data,
            p.min_size,
            p.avg_size,
            p.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        end
    }
}
