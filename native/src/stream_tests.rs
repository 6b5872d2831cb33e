//! Streaming chunker against the one-shot call, for many splittings.

use super::*;
use crate::batch::Batch;
use crate::params::Params;
use crate::testutil::{cutter, param_sets, small, Rng};

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
