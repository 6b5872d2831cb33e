//! Streaming chunker: input arrives in pieces, chunks leave as they complete.
//!
//! Only the unfinished tail (less than `max_size` bytes) and, when a piece
//! arrives, at most `max_size` bytes of it are copied into `pending`; every
//! other chunk is cut and hashed straight from the caller's buffer. Cut
//! points and digests equal the one-shot call's for any way of splitting the
//! input, since a cut needs only `max_size` bytes of lookahead.

use crate::batch::Batch;
use crate::cutter::Cutter;
use crate::fused::{self, Limits};
use crate::hints::Hints;
use crate::tree::{Cv, Old, Tree};

pub struct Stream {
    cutter: Cutter,
    threads: usize,
    /// Bytes received but not yet part of a completed chunk.
    pending: Vec<u8>,
    /// Absolute offset of `pending[0]`.
    pending_base: u64,
    /// Whole-input hasher; `None` when the caller asked for chunks only.
    whole: Option<blake3::Hasher>,
    finished: bool,
    /// The previous version's chunks: unchanged runs are hashed, not cut.
    hints: Option<Hints>,
    /// The whole-input hash as 1 MiB subtrees (`with_tree`), instead of
    /// `whole`: their CVs are kept, and an update reuses unchanged ones.
    tree: Option<Tree>,
    /// The block CVs, once finished in tree mode.
    cvs: Vec<Cv>,
    reused: u64,
}

impl Stream {
    pub fn new(cutter: Cutter, threads: usize, whole: bool) -> Self {
        Stream {
            cutter,
            threads,
            pending: Vec::new(),
            pending_base: 0,
            whole: whole.then(blake3::Hasher::new),
            finished: false,
            hints: None,
            tree: None,
            cvs: Vec::new(),
            reused: 0,
        }
    }

    /// Hash the whole input block by block ([`Tree`]), taking the previous
    /// version's block CVs where its bytes are unchanged (`old`).
    pub fn with_tree(mut self, old: Option<Old>) -> Self {
        if self.whole.take().is_some() {
            self.tree = Some(Tree::new(old, self.threads));
        }
        self
    }

    /// The CV of every 1 MiB block, once finished in tree mode (none for an
    /// input of at most one block).
    pub fn subtrees(&self) -> &[Cv] {
        &self.cvs
    }

    /// Blocks whose previous CV was taken instead of hashing them again.
    pub fn reused_blocks(&self) -> u64 {
        self.tree.as_ref().map_or(self.reused, Tree::reused)
    }

    /// Cut with the previous version's chunks as hints (same results).
    pub fn with_hints(mut self, hints: Hints) -> Self {
        self.hints = (!hints.is_empty()).then_some(hints);
        self
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pending_base + self.pending.len() as u64
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn run(&mut self, data: &[u8], base: u64, lim: Limits, out: &mut Batch) -> usize {
        let (c, w, h) = (&self.cutter, self.whole.as_mut(), self.hints.as_ref());
        let from = out.len();
        let used = if self.threads > 1 {
            fused::parallel(c, h, data, base, lim, self.threads, w, out)
        } else {
            fused::serial(c, h, data, base, lim, w, out)
        };
        if let Some(t) = self.tree.as_mut() {
            debug_assert_eq!(t.position(), base);
            t.absorb(&data[..used], out, from);
        }
        used
    }

    /// Chunks completed by this piece, in order.
    pub fn feed(&mut self, data: &[u8]) -> Batch {
        let mut out = Batch::default();
        let mut rest = data;
        if !self.pending.is_empty() {
            let old = self.pending.len();
            let take = data.len().min(self.cutter.max_size());
            self.pending.extend_from_slice(&data[..take]);
            let pending = std::mem::take(&mut self.pending);
            let lim = if take == data.len() {
                Limits::all(false)
            } else {
                // Chunks starting in the old tail have their lookahead; from
                // `old` on, cut the caller's buffer in place.
                Limits {
                    is_final: false,
                    start_limit: old,
                }
            };
            let used = self.run(&pending, self.pending_base, lim, &mut out);
            if take == data.len() {
                self.pending = pending;
                self.pending.drain(..used);
                self.pending_base += used as u64;
                return out;
            }
            rest = &data[used - old..];
            self.pending_base += used as u64;
            self.pending = pending;
            self.pending.clear();
        }
        let used = self.run(rest, self.pending_base, Limits::all(false), &mut out);
        self.pending.extend_from_slice(&rest[used..]);
        self.pending_base += used as u64;
        out
    }

    /// The last chunks and the whole-input BLAKE3.
    pub fn finish(&mut self) -> (Batch, Option<[u8; 32]>) {
        let mut out = Batch::default();
        let pending = std::mem::take(&mut self.pending);
        let used = self.run(&pending, self.pending_base, Limits::all(true), &mut out);
        self.pending_base += used as u64;
        self.finished = true;
        (out, self.digest())
    }

    fn digest(&mut self) -> Option<[u8; 32]> {
        if let Some(t) = self.tree.take() {
            self.reused = t.reused();
            let (digest, cvs) = t.finish();
            self.cvs = cvs;
            return Some(digest);
        }
        self.whole.as_ref().map(|w| *w.finalize().as_bytes())
    }

    /// One-shot: the whole input is `data`, nothing is copied.
    pub fn whole_buffer(mut self, data: &[u8]) -> (Batch, Option<[u8; 32]>) {
        let mut out = Batch::default();
        self.run(data, 0, Limits::all(true), &mut out);
        (out, self.digest())
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
