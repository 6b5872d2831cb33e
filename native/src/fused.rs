//! Fused cut + hash over one buffer, serially or on several threads.
//!
//! "Fused" means each chunk is hashed right after it is cut, while its bytes
//! are still in cache, and the whole-object hasher is fed the same bytes in
//! the same pass. The parallel path cuts segments of the buffer on separate
//! threads, each starting as if a chunk began at its segment's first byte;
//! a serial merge then walks the true cut chain from offset 0 and adopts a
//! segment's precomputed cuts (and digests) as soon as the true chain lands
//! on one of that segment's chunk starts. Because a cut depends only on the
//! bytes from its chunk start, the two chains agree from that point on, so
//! the result is identical to the serial call. Inputs that never resync
//! (long runs of zeros whose max-size chunks are out of phase) degrade to
//! serial cutting, never to a different answer.

use rayon::prelude::*;

use crate::batch::Batch;
use crate::cutter::Cutter;
use crate::hints::{cut_and_hash, Hints};
use crate::pool;

/// Below this many bytes per segment, threads cost more than they save
/// (a segment of 1 MiB is ~1 ms of work; handing it to a pool thread costs
/// microseconds). It was 4 MiB, and a streaming feed of an 8 MiB read window
/// is a little under 8 MiB once the carried tail is cut apart, so every
/// window after an object's first was cut on one thread: an object read
/// alone (the last large file of an update) used one core of two.
pub(crate) const MIN_SEGMENT: usize = 1024 * 1024;

/// Where cutting stops in a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The buffer ends the input: cut to its last byte.
    pub is_final: bool,
    /// Stop before the first chunk that would start at or after this index.
    pub start_limit: usize,
}

impl Limits {
    pub fn all(is_final: bool) -> Self {
        Limits {
            is_final,
            start_limit: usize::MAX,
        }
    }
}

/// Whether a chunk may be cut at `pos`; `false` means stop there.
#[inline]
fn may_cut(c: &Cutter, len: usize, pos: usize, lim: Limits) -> bool {
    if pos >= len || pos >= lim.start_limit {
        return false;
    }
    // Not at the end of input: the cut needs max_size bytes of lookahead.
    lim.is_final || len - pos >= c.max_size()
}

/// Serial fused cut + hash; returns how many bytes were consumed.
/// `hints`: the previous version's chunks (results are the same without).
pub fn serial(
    c: &Cutter,
    hints: Option<&Hints>,
    data: &[u8],
    base: u64,
    lim: Limits,
    whole: Option<&mut blake3::Hasher>,
    out: &mut Batch,
) -> usize {
    let mut pos = 0;
    let mut whole = whole;
    while may_cut(c, data.len(), pos, lim) {
        let (len, digest) = cut_and_hash(c, hints, data, base, pos);
        out.push(base + pos as u64, len, &digest);
        if let Some(w) = whole.as_deref_mut() {
            w.update(&data[pos..pos + len]);
        }
        pos += len;
    }
    pos
}

/// The chain of chunk starts one segment computes, with their digests.
struct Chain {
    starts: Vec<usize>,
    digests: Vec<[u8; 32]>,
    /// Where the chain stopped: the end of its last chunk.
    end: usize,
}

fn chain(
    c: &Cutter,
    hints: Option<&Hints>,
    (data, base): (&[u8], u64),
    from: usize,
    until: usize,
    lim: Limits,
) -> Chain {
    // With hints, start at the segment's first old chunk start: in an
    // unchanged run the true chain passes there, and the chain is hashed,
    // not cut, from it on.
    let from = hints
        .and_then(|h| h.start_in(base + from as u64, base + until as u64))
        .map_or(from, |s| (s - base) as usize);
    let mut ch = Chain {
        starts: Vec::new(),
        digests: Vec::new(),
        end: from,
    };
    let mut pos = from;
    while pos < until && may_cut(c, data.len(), pos, lim) {
        let (len, digest) = cut_and_hash(c, hints, data, base, pos);
        ch.starts.push(pos);
        ch.digests.push(digest);
        pos += len;
    }
    ch.end = pos;
    ch
}

/// Multi-threaded fused cut + hash, identical in result to [`serial`].
#[allow(clippy::too_many_arguments)]
pub fn parallel(
    c: &Cutter,
    hints: Option<&Hints>,
    data: &[u8],
    base: u64,
    lim: Limits,
    threads: usize,
    whole: Option<&mut blake3::Hasher>,
    out: &mut Batch,
) -> usize {
    segmented(
        c,
        hints,
        data,
        base,
        lim,
        (threads, segments(data.len(), threads)),
        whole,
        out,
    )
    .0
}

/// How many segments [`parallel`] cuts `len` bytes in.
pub(crate) fn segments(len: usize, threads: usize) -> usize {
    threads.min(len / MIN_SEGMENT)
}

/// Bytes the cut chain consumes at least under `lim` (chunks are at most
/// `max_size` long, and a chain stops only at `start_limit`, at the end of
/// a final buffer, or less than `max_size` before the end of another): the
/// whole-object hash can take them before the chain is known.
fn surely_consumed(c: &Cutter, len: usize, lim: Limits) -> usize {
    let end = if lim.is_final {
        len
    } else {
        len.saturating_sub(c.max_size())
    };
    end.min(lim.start_limit)
}

/// Segment starts: `segments` roughly equal parts, each start a multiple of
/// `max_size` from 0. Data whose chunks are all max-size (zeros, a constant
/// fill) then cuts at the same offsets in every segment as in the true
/// chain, so such buffers resync at once instead of falling back to serial.
fn bounds(len: usize, segments: usize, max_size: usize) -> Vec<usize> {
    let step = (len / segments / max_size).max(1) * max_size;
    (0..segments)
        .map(|i| i * step)
        .take_while(|&b| b < len)
        .collect()
}

/// [`parallel`] with an explicit segment count (tests use small segments).
/// Returns the bytes consumed and how many chunks the merge had to cut
/// again serially (0 when every segment's chain resynced at once).
#[allow(clippy::too_many_arguments)]
pub(crate) fn segmented(
    c: &Cutter,
    hints: Option<&Hints>,
    data: &[u8],
    base: u64,
    lim: Limits,
    (threads, segments): (usize, usize),
    whole: Option<&mut blake3::Hasher>,
    out: &mut Batch,
) -> (usize, usize) {
    if segments <= 1 {
        return (serial(c, hints, data, base, lim, whole, out), 0);
    }
    let bounds = bounds(data.len(), segments, c.max_size());
    let pool = pool::get(threads);
    // The whole-object hash is a BLAKE3 tree: rayon hashes its subtrees on
    // the same threads as the segments' chains, at the same time (it was a
    // second parallel pass after them), over the bytes surely consumed;
    // the few after them are added once the merge knows where it stopped.
    let sure = surely_consumed(c, data.len(), lim);
    let mut whole = whole;
    let chains: Vec<Chain> = pool.install(|| {
        let chains = || {
            bounds
                .par_iter()
                .enumerate()
                .map(|(i, &b)| {
                    let until = bounds.get(i + 1).copied().unwrap_or(data.len());
                    chain(c, hints, (data, base), b, until, lim)
                })
                .collect()
        };
        match whole.as_deref_mut() {
            Some(w) => rayon::join(chains, || w.update_rayon(&data[..sure])).0,
            None => chains(),
        }
    });
    let (consumed, recut) = merge(c, hints, data, base, lim, &bounds, &chains, out);
    debug_assert!(sure <= consumed, "{sure} > {consumed}");
    if let Some(w) = whole {
        w.update(&data[sure..consumed]);
    }
    (consumed, recut)
}

/// Walks the true cut chain from 0, adopting precomputed chains once in
/// sync; returns the bytes consumed and the number of chunks cut again.
#[allow(clippy::too_many_arguments)]
fn merge(
    c: &Cutter,
    hints: Option<&Hints>,
    data: &[u8],
    base: u64,
    lim: Limits,
    bounds: &[usize],
    chains: &[Chain],
    out: &mut Batch,
) -> (usize, usize) {
    let (mut pos, mut k, mut recut) = (0, 0, 0);
    loop {
        while k + 1 < bounds.len() && bounds[k + 1] <= pos {
            k += 1;
        }
        let ch = &chains[k];
        if let Ok(j) = ch.starts.binary_search(&pos) {
            for i in j..ch.starts.len() {
                let end = ch.starts.get(i + 1).copied().unwrap_or(ch.end);
                out.push(
                    base + ch.starts[i] as u64,
                    end - ch.starts[i],
                    &ch.digests[i],
                );
            }
            // A chain stops either at its segment's end (the next segment
            // takes over) or where a limit forbids the next cut; a limit
            // depends only on the position, so the true chain stops there too.
            let segment_end = bounds.get(k + 1).copied().unwrap_or(data.len());
            if ch.end < segment_end || k + 1 == bounds.len() {
                return (ch.end, recut);
            }
            pos = ch.end;
            continue;
        }
        // Out of sync: cut serially until the chain lands on a known start.
        if !may_cut(c, data.len(), pos, lim) {
            return (pos, recut);
        }
        let (len, digest) = cut_and_hash(c, hints, data, base, pos);
        out.push(base + pos as u64, len, &digest);
        pos += len;
        recut += 1;
    }
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
