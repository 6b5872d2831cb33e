//! The whole-object BLAKE3 as a tree of 1 MiB subtrees, so that an update
//! need not hash again the blocks it proved unchanged.
//!
//! BLAKE3 is a binary tree over 1 KiB chunks whose left subtrees are
//! complete; every block of [`BLOCK`] bytes that starts at a multiple of
//! [`BLOCK`] and lies wholly inside an input longer than one block is one of
//! its subtrees, and so is the partial block at the end. Its chaining value
//! (CV) depends only on its bytes and its offset. [`Tree`] keeps one CV per
//! block and merges them into the root at the end (`blake3::hazmat`); the
//! digest is `blake3::hash` of the input, which the tests check for many
//! lengths.
//!
//! An update passes the previous version's chunks and block CVs ([`Old`]).
//! The CVs are taken only if they merge into the previous version's own
//! digest (so they are that version's, whatever cache they came from), and a
//! block's old CV is used only when every chunk the new version has over
//! the block equals, by offset, length and digest, a chunk of the previous
//! version: the bytes are then the same at the same offsets, and so is the
//! CV. The chunk digests are computed anyway; a reused block skips the
//! second BLAKE3 pass over its bytes.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode,
};
use rayon::prelude::*;

use crate::batch::Batch;
use crate::pool;

/// Bytes per block: 1024 BLAKE3 chunks.
pub const BLOCK: u64 = 1 << 20;

pub type Cv = [u8; 32];

/// The previous version: its chunks by offset and its block CVs.
#[derive(Clone, Debug)]
pub struct Old {
    starts: Vec<u64>,
    chunks: Vec<(u64, [u8; 32])>,
    cvs: Vec<Cv>,
    len: u64,
}

impl Old {
    /// The previous version's chunks (`lengths`, `digests`: 32 bytes each)
    /// with its block CVs (`cvs`: 32 bytes each) and whole `digest`; `None`
    /// unless the CVs merge into `digest` over the chunks' total length.
    pub fn new(lengths: &[u64], digests: &[u8], cvs: &[u8], digest: &[u8]) -> Option<Self> {
        let len: u64 = lengths.iter().sum();
        if len <= BLOCK || digests.len() != 32 * lengths.len() || !cvs.len().is_multiple_of(32) {
            return None;
        }
        let cvs: Vec<Cv> = cvs
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32"))
            .collect();
        if cvs.len() as u64 != len.div_ceil(BLOCK) || root(&cvs, len).as_slice() != digest {
            return None;
        }
        let mut old = Old {
            starts: Vec::with_capacity(lengths.len()),
            chunks: Vec::with_capacity(lengths.len()),
            cvs,
            len,
        };
        let mut start = 0;
        for (i, &n) in lengths.iter().enumerate() {
            old.starts.push(start);
            let d = digests[i * 32..(i + 1) * 32].try_into().expect("32");
            old.chunks.push((n, d));
            start += n;
        }
        Some(old)
    }

    /// Whether the previous version had this chunk at this offset.
    fn has(&self, start: u64, len: u64, digest: &[u8]) -> bool {
        match self.starts.binary_search(&start) {
            Ok(i) => self.chunks[i].0 == len && self.chunks[i].1.as_slice() == digest,
            Err(_) => false,
        }
    }

    /// The old CV of block `k` when that block was a whole one.
    fn full_block(&self, k: u64) -> Option<&Cv> {
        ((k + 1) * BLOCK <= self.len).then(|| &self.cvs[k as usize])
    }
}

/// The CVs of `cvs.len()` consecutive blocks from offset 0 that make up
/// `len` bytes, merged as the subtree they form (`len` > one block).
fn subtree(cvs: &[Cv], len: u64) -> Cv {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let k = (left / BLOCK) as usize;
    merge_subtrees_non_root(
        &subtree(&cvs[..k], left),
        &subtree(&cvs[k..], len - left),
        Mode::Hash,
    )
}

/// The BLAKE3 of `len` (> [`BLOCK`]) bytes from the CVs of their blocks.
pub fn root(cvs: &[Cv], len: u64) -> [u8; 32] {
    debug_assert!(len > BLOCK && cvs.len() as u64 == len.div_ceil(BLOCK));
    // Above one block, the left subtree is a power of two of at least 1024
    // chunks: a whole number of blocks.
    let left = left_subtree_len(len);
    let k = (left / BLOCK) as usize;
    let (l, r) = (subtree(&cvs[..k], left), subtree(&cvs[k..], len - left));
    *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
}

fn block_hasher(k: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    if k > 0 {
        h.set_input_offset(k * BLOCK);
    }
    h
}

/// The whole-input BLAKE3 of a stream, block by block.
pub struct Tree {
    old: Option<Old>,
    threads: usize,
    cvs: Vec<Cv>,
    /// The block being filled: its hasher and whether every byte of it so
    /// far lies in chunks the previous version had at the same offsets.
    partial: blake3::Hasher,
    partial_same: bool,
    /// Block 0 once whole: its CV, or the root if nothing follows.
    first: Option<blake3::Hasher>,
    pos: u64,
    reused: u64,
}

impl Tree {
    pub fn new(old: Option<Old>, threads: usize) -> Self {
        Tree {
            old,
            threads: threads.max(1),
            cvs: Vec::new(),
            partial: blake3::Hasher::new(),
            partial_same: true,
            first: None,
            pos: 0,
            reused: 0,
        }
    }

    /// Bytes taken so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Blocks whose old CV was taken instead of hashing them.
    pub fn reused(&self) -> u64 {
        self.reused
    }

    /// Takes the next `data.len()` bytes of the input, which are exactly
    /// the chunks of `out` from index `from` on.
    pub fn absorb(&mut self, data: &[u8], out: &Batch, from: usize) {
        let same = self.same_ranges(out, from);
        let end = self.pos + data.len() as u64;
        let base = self.pos;
        let mut todo: Vec<(usize, u64)> = Vec::new(); // (index in cvs, block)
        let mut r = 0; // the first range that may overlap the piece
        while self.pos < end {
            let k = self.pos / BLOCK;
            let (bstart, bend) = (k * BLOCK, (k + 1) * BLOCK);
            let piece_end = bend.min(end);
            while r < same.len() && same[r].1 <= self.pos {
                r += 1;
            }
            let piece_same = r < same.len() && same[r].0 <= self.pos && same[r].1 >= piece_end;
            if k > 0 && self.pos == bstart && piece_end == bend {
                self.settle_first();
                match self.reusable(k, piece_same) {
                    Some(cv) => {
                        self.cvs.push(cv);
                        self.reused += 1;
                    }
                    None => {
                        todo.push((self.cvs.len(), k));
                        self.cvs.push([0; 32]);
                    }
                }
            } else {
                self.take_piece(
                    k,
                    &data[(self.pos - base) as usize..(piece_end - base) as usize],
                    piece_same,
                );
            }
            self.pos = piece_end;
        }
        self.hash_blocks(&todo, data, base);
    }

    /// Ranges of `out[from..]` (absolute, merged) whose chunks the previous
    /// version had at the same offsets.
    fn same_ranges(&self, out: &Batch, from: usize) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let Some(old) = self.old.as_ref() else {
            return ranges;
        };
        for i in from..out.len() {
            let (s, n) = (out.offsets[i], u64::from(out.lengths[i]));
            if !old.has(s, n, out.digest(i)) {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.1 == s => last.1 = s + n,
                _ => ranges.push((s, s + n)),
            }
        }
        ranges
    }

    /// A piece of block `k` that is not a whole block in one buffer: hashed
    /// into the block's own hasher (the block may still turn out unchanged).
    fn take_piece(&mut self, k: u64, piece: &[u8], same: bool) {
        if self.pos == k * BLOCK {
            self.settle_first();
            self.partial = block_hasher(k);
            self.partial_same = true;
        }
        self.partial.update(piece);
        self.partial_same &= same;
        if self.pos + piece.len() as u64 == (k + 1) * BLOCK {
            let h = std::mem::replace(&mut self.partial, blake3::Hasher::new());
            if k == 0 {
                // Block 0 is always hashed: it may be the whole input, whose
                // digest is a root, not a CV.
                self.first = Some(h);
            } else if let Some(cv) = self.reusable(k, self.partial_same) {
                self.cvs.push(cv);
                self.reused += 1;
            } else {
                self.cvs.push(h.finalize_non_root());
            }
        }
    }

    /// The previous version's CV of block `k`, if its bytes are the same.
    fn reusable(&self, k: u64, same: bool) -> Option<Cv> {
        if !same {
            return None;
        }
        self.old.as_ref().and_then(|o| o.full_block(k)).copied()
    }

    /// More input follows block 0: it is a subtree, not the root.
    fn settle_first(&mut self) {
        if let Some(h) = self.first.take() {
            debug_assert!(self.cvs.is_empty());
            self.cvs.push(h.finalize_non_root());
        }
    }

    fn hash_blocks(&mut self, todo: &[(usize, u64)], data: &[u8], base: u64) {
        let hash = |&(i, k): &(usize, u64)| {
            let lo = (k * BLOCK - base) as usize;
            let mut h = block_hasher(k);
            h.update(&data[lo..lo + BLOCK as usize]);
            (i, h.finalize_non_root())
        };
        let done: Vec<(usize, Cv)> = if self.threads > 1 && todo.len() > 1 {
            pool::get(self.threads).install(|| todo.par_iter().map(hash).collect())
        } else {
            todo.iter().map(hash).collect()
        };
        for (i, cv) in done {
            self.cvs[i] = cv;
        }
    }

    /// The digest and the CV of every block (none for an input of at most
    /// one block, whose digest is its one block's root hash).
    pub fn finish(mut self) -> ([u8; 32], Vec<Cv>) {
        if self.pos <= BLOCK {
            let h = self.first.take().unwrap_or(self.partial);
            return (*h.finalize().as_bytes(), Vec::new());
        }
        self.settle_first();
        if !self.pos.is_multiple_of(BLOCK) {
            self.cvs.push(self.partial.finalize_non_root());
        }
        (root(&self.cvs, self.pos), self.cvs)
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
