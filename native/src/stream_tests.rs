//! Streaming chunker against the one-shot call, for many splittings.

use super::*;
use crate::batch::Batch;
use crate::params::Params;
use crate::testutil::{cutter, param_sets, small, Rng};
use crate::tree::{Cv, Old};

fn one_shot(p: Params, data: &[u8]) -> (Batch, Option<[u8; 32]>) {
    Stream::new(cutter(p), 1, true).whole_buffer(data)
}

fn streamed(p: Params, threads: usize, pieces: &[&[u8]]) -> (Batch, Option<[u8; 32]>) {
    let mut s = Stream::new(cutter(p), threads, true);
    let mut out = Batch::default();
    let mut fed = 0u64;
    for piece in pieces {
        let got = s.feed(piece);
        // Everything emitted so far is contiguous from 0.
        assert_eq!(
            got.offsets.first().copied().unwrap_or(out.total_length()),
            out.total_length()
        );
        out.append(got);
        fed += piece.len() as u64;
        assert_eq!(s.position(), fed);
        assert!(fed - out.total_length() < p.max_size as u64);
    }
    let (tail, digest) = s.finish();
    out.append(tail);
    assert!(s.is_finished());
    (out, digest)
}

/// Splits `data` at random points; `tiny` makes most pieces 0..=3 bytes.
fn split<'a>(rng: &mut Rng, data: &'a [u8], max_piece: usize) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.below(max_piece + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        pieces.push(a);
        rest = b;
    }
    pieces
}

#[test]
fn stream_equals_one_shot_for_random_splits() {
    let mut rng = Rng::new(11);
    for p in param_sets() {
        let len = 20 * p.max_size + rng.below(p.max_size);
        let data = rng.bytes(len);
        let want = one_shot(p, &data);
        for max_piece in [
            1,
            3,
            p.min_size,
            p.max_size - 1,
            p.max_size,
            p.max_size + 1,
            3 * p.max_size,
        ] {
            for _ in 0..3 {
                let pieces = split(&mut rng, &data, max_piece);
                assert!(
                    streamed(p, 1, &pieces) == want,
                    "{p:?} pieces up to {max_piece}"
                );
            }
        }
    }
}

#[test]
fn stream_one_byte_pieces() {
    let mut rng = Rng::new(12);
    let p = small();
    let data = rng.bytes(10_000);
    let pieces: Vec<&[u8]> = data.chunks(1).collect();
    assert!(streamed(p, 1, &pieces) == one_shot(p, &data));
    let zeros = vec![0u8; 5000];
    let pieces: Vec<&[u8]> = zeros.chunks(1).collect();
    assert!(streamed(p, 2, &pieces) == one_shot(p, &zeros));
}

#[test]
fn stream_edge_pieces() {
    let mut rng = Rng::new(13);
    let p = small();
    let data = rng.bytes(4 * 1024 + 10);
    let empty: &[u8] = &[];
    let cases: Vec<Vec<&[u8]>> = vec![
        vec![],
        vec![empty, empty],
        vec![&data[..1024], &data[1024..2048], &data[2048..]],
        vec![&data[..1023], &data[1023..2047], empty, &data[2047..]],
        vec![&data[..1], &data[1..3000], &data[3000..]],
        vec![&data[..100], &data[100..]],
    ];
    for pieces in cases {
        let joined: Vec<u8> = pieces.concat();
        assert!(
            streamed(p, 1, &pieces) == one_shot(p, &joined),
            "{} pieces",
            pieces.len()
        );
    }
}

#[test]
fn stream_with_threads_uses_parallel_path() {
    // Pieces large enough that fused::parallel really splits them.
    let mut rng = Rng::new(14);
    let p = Params::default();
    let mut data = rng.bytes(21 * 1024 * 1024 + 5);
    data[9_000_000..14_000_003].fill(0);
    let want = one_shot(p, &data);
    for threads in [2, 3] {
        for cut in [1, 8 * 1024 * 1024 + 1, 12 * 1024 * 1024] {
            let pieces = [&data[..cut], &data[cut..]];
            assert!(
                streamed(p, threads, &pieces) == want,
                "threads {threads} cut {cut}"
            );
        }
    }
}

#[test]
fn stream_without_whole_digest() {
    let mut s = Stream::new(cutter(small()), 1, false);
    let data = Rng::new(15).bytes(5000);
    let mut out = s.feed(&data);
    let (tail, digest) = s.finish();
    out.append(tail);
    assert_eq!(digest, None);
    assert_eq!(
        out,
        Stream::new(cutter(small()), 1, false).whole_buffer(&data).0
    );
}

/// Tree mode: the stream's digest block by block (`tree.rs`), with the
/// previous version's block CVs and chunks as `old`.
fn tree_streamed(
    p: Params,
    old: Option<Old>,
    hints: Option<Hints>,
    pieces: &[&[u8]],
) -> (Batch, Option<[u8; 32]>, Vec<Cv>, u64) {
    let mut s = Stream::new(cutter(p), 2, true).with_tree(old);
    if let Some(h) = hints {
        s = s.with_hints(h);
    }
    let mut out = Batch::default();
    for piece in pieces {
        out.append(s.feed(piece));
    }
    let (tail, digest) = s.finish();
    out.append(tail);
    (out, digest, s.subtrees().to_vec(), s.reused_blocks())
}

#[test]
fn tree_mode_gives_the_same_chunks_and_digest_and_reuses_unchanged_blocks() {
    let mut rng = Rng::new(16);
    let p = Params::default();
    let v1 = rng.bytes(12 * 1024 * 1024 + 333);
    let want = one_shot(p, &v1);
    let pieces = split(&mut rng, &v1, 5 * 1024 * 1024);
    let (out, digest, cvs, reused) = tree_streamed(p, None, None, &pieces);
    assert!((out.clone(), digest) == want);
    assert_eq!((cvs.len(), reused), (13, 0));
    // v2: 100 bytes changed in the middle, the rest the same.
    let mut v2 = v1.clone();
    v2[6_000_000..6_000_100].copy_from_slice(&rng.bytes(100));
    let lengths: Vec<u64> = out.lengths.iter().map(|&l| u64::from(l)).collect();
    let old = || Old::new(&lengths, &out.digests, &cvs.concat(), &digest.unwrap());
    assert!(old().is_some());
    let want2 = one_shot(p, &v2);
    for max_piece in [64 * 1024, 3 * 1024 * 1024, 16 * 1024 * 1024] {
        let pieces = split(&mut rng, &v2, max_piece);
        let hints = Hints::new(&lengths, &out.digests, &p);
        let (out2, digest2, _, reused) = tree_streamed(p, old(), Some(hints), &pieces);
        assert!((out2, digest2) == want2, "pieces up to {max_piece}");
        // Block 0, the changed block(s) and the tail are hashed; the rest not.
        assert!(
            (8..=10).contains(&reused),
            "{reused} reused, pieces up to {max_piece}"
        );
    }
}

#[test]
fn tree_mode_equals_one_shot_for_random_splits() {
    // Inputs of a few blocks cut with every parameter set, fed in pieces
    // from 1 byte to several blocks: same chunks, same digest.
    let mut rng = Rng::new(17);
    for p in param_sets() {
        let len = 2 * 1024 * 1024 + rng.below(3 * 1024 * 1024);
        let data = rng.bytes(len);
        let want = one_shot(p, &data);
        for max_piece in [7, p.max_size + 1, 1024 * 1024 + 3, 4 * 1024 * 1024] {
            let pieces = split(&mut rng, &data, max_piece);
            let (out, digest, cvs, _) = tree_streamed(p, None, None, &pieces);
            assert!((out, digest) == want, "{p:?} pieces up to {max_piece}");
            assert_eq!(cvs.len(), len.div_ceil(1024 * 1024));
        }
    }
}
