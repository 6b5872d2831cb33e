//! The previous version's chunks, as hints that let the cutter skip
//! unchanged runs.
//!
//! FastCDC's cut of a chunk depends only on the bytes from the chunk's
//! start (at most `max_size` of them). So when the new version has a chunk
//! start at an offset where the previous version had a chunk of length `L`
//! and digest `D`, and the next `L` bytes hash to `D`, those bytes equal the
//! old chunk's and the cut falls at `L` again: the scan is skipped, the
//! BLAKE3 that proves equality is the chunk digest the caller needs anyway.
//! Only chunks cut with their full `max_size` lookahead qualify (in the old
//! version and in the buffer at hand): near an end of input a cut also
//! depends on where the input ends. Results are identical to cutting
//! without hints; wrong hints only cost the hash of a failed guess.

use crate::cutter::Cutter;
use crate::params::Params;

/// Old chunks in order of their absolute start offsets.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    starts: Vec<u64>,
    chunks: Vec<(usize, [u8; 32])>,
}

impl Hints {
    /// Hints from the previous version's chunk list in order (`lengths`,
    /// `digests`: 32 bytes each), cut with `params`; chunks closer than
    /// `max_size` to that version's end are left out (their cut depended on
    /// the end), and so are lengths no cut with full lookahead can have.
    pub fn new(lengths: &[u64], digests: &[u8], params: &Params) -> Self {
        let (min_size, max_size) = (params.min_size, params.max_size);
        let size: u64 = lengths.iter().sum();
        let mut hints = Hints::default();
        let mut start = 0u64;
        for (i, &len) in lengths.iter().enumerate() {
            let Some(d) = digests.get(i * 32..(i + 1) * 32) else {
                break;
            };
            if start + max_size as u64 > size {
                break;
            }
            if (min_size as u64..=max_size as u64).contains(&len) {
                hints.starts.push(start);
                hints
                    .chunks
                    .push((len as usize, d.try_into().expect("32 bytes")));
            }
            start += len;
        }
        hints
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The first hinted start in `[from, until)` (absolute offsets): a
    /// segment of a parallel cut starts there, where the true chain most
    /// likely passes, instead of at an arbitrary offset.
    pub fn start_in(&self, from: u64, until: u64) -> Option<u64> {
        let i = self.starts.partition_point(|&s| s < from);
        self.starts.get(i).copied().filter(|&s| s < until)
    }

    fn get(&self, offset: u64) -> Option<(usize, [u8; 32])> {
        let i = self.starts.binary_search(&offset).ok()?;
        Some(self.chunks[i])
    }
}

/// The chunk starting at `data[pos]` (absolute offset `base + pos`): its
/// length and digest. `data` must hold the chunk's lookahead as for
/// [`Cutter::cut`].
#[inline]
pub fn cut_and_hash(
    c: &Cutter,
    hints: Option<&Hints>,
    data: &[u8],
    base: u64,
    pos: usize,
) -> (usize, [u8; 32]) {
    if let Some((len, want)) = hints.and_then(|h| h.get(base + pos as u64)) {
        if data.len() - pos >= c.max_size() {
            let got = *blake3::hash(&data[pos..pos + len]).as_bytes();
            if got == want {
                return (len, got);
            }
            let cut = c.cut(&data[pos..]);
            if cut == len {
                return (len, got);
            }
            return (cut, *blake3::hash(&data[pos..pos + cut]).as_bytes());
        }
    }
    let len = c.cut(&data[pos..]);
    (len, *blake3::hash(&data[pos..pos + len]).as_bytes())
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
