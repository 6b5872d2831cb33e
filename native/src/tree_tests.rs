//! The block tree's digest against `blake3::hash`, for lengths around the
//! block and tree boundaries and many ways of splitting the input, and the
//! reuse of a previous version's CVs only where the bytes are the same.

use super::*;
use crate::testutil::Rng;

const CHUNK: usize = 64 * 1024;

/// Fixed-size chunks of `data[from..to]` (absolute offsets), as a chunker
/// would report them: the tree needs only their offsets and digests.
fn chunks(data: &[u8], from: usize, to: usize) -> Batch {
    let mut out = Batch::default();
    let mut s = from;
    while s < to {
        let n = CHUNK.min(to - s);
        out.push(s as u64, n, blake3::hash(&data[s..s + n]).as_bytes());
        s += n;
    }
    out
}

/// Feeds `data` in pieces that end on chunk boundaries (as the stream
/// does), `piece` chunks at a time; returns the digest, CVs and reuses.
fn run(data: &[u8], old: Option<Old>, piece: usize, threads: usize) -> ([u8; 32], Vec<Cv>, u64) {
    let mut t = Tree::new(old, threads);
    let mut s = 0;
    while s < data.len() {
        let e = (s + piece * CHUNK).min(data.len());
        t.absorb(&data[s..e], &chunks(data, s, e), 0);
        s = e;
    }
    let reused = t.reused();
    let (d, cvs) = t.finish();
    (d, cvs, reused)
}

fn old_of(data: &[u8], cvs: &[Cv]) -> Option<Old> {
    let all = chunks(data, 0, data.len());
    let lengths: Vec<u64> = all.lengths.iter().map(|&l| u64::from(l)).collect();
    Old::new(
        &lengths,
        &all.digests,
        cvs.concat().as_slice(),
        blake3::hash(data).as_bytes(),
    )
}

#[test]
fn digest_is_blake3_for_lengths_around_blocks_and_subtrees() {
    let b = BLOCK as usize;
    let data = Rng::new(1).bytes(9 * b + 3);
    let lens = [
        0,
        1,
        1023,
        1024,
        1025,
        b - 1,
        b,
        b + 1,
        2 * b,
        2 * b + 7,
        3 * b,
        4 * b - 1,
        4 * b + 1,
        5 * b + 999,
        8 * b,
        9 * b + 3,
    ];
    for len in lens {
        for piece in [1, 3, 16, 1000] {
            for threads in [1, 2] {
                let (d, cvs, _) = run(&data[..len], None, piece, threads);
                assert_eq!(
                    d,
                    *blake3::hash(&data[..len]).as_bytes(),
                    "len {len} piece {piece}"
                );
                let blocks = if len as u64 <= BLOCK {
                    0
                } else {
                    (len as u64).div_ceil(BLOCK)
                };
                assert_eq!(cvs.len() as u64, blocks, "len {len}");
            }
        }
    }
}

#[test]
fn pieces_that_split_blocks_anywhere() {
    // Pieces of arbitrary lengths (a stream's windows end where chunks end).
    let data = Rng::new(2).bytes(5 * BLOCK as usize + 12345);
    let mut rng = Rng::new(3);
    for _ in 0..20 {
        let mut t = Tree::new(None, 2);
        let mut s = 0;
        while s < data.len() {
            let e = (s + rng.below(3 * BLOCK as usize)).min(data.len());
            t.absorb(&data[s..e], &Batch::default(), 0);
            s = e;
        }
        assert_eq!(t.finish().0, *blake3::hash(&data).as_bytes());
    }
}

#[test]
fn unchanged_blocks_take_the_old_cv_and_changed_ones_are_hashed() {
    let b = BLOCK as usize;
    let v1 = Rng::new(4).bytes(6 * b + 777);
    let (d1, cvs1, _) = run(&v1, None, 16, 2);
    assert_eq!(d1, *blake3::hash(&v1).as_bytes());
    let mut v2 = v1.clone();
    v2[3 * b + 10] ^= 1; // block 3 changes
    v2.extend_from_slice(&Rng::new(5).bytes(b)); // grows: the old tail block is not whole
    for piece in [1, 5, 16, 200] {
        let (d2, cvs2, reused) = run(&v2, old_of(&v1, &cvs1), piece, 2);
        assert_eq!(d2, *blake3::hash(&v2).as_bytes(), "piece {piece}");
        // Blocks 1, 2, 4, 5 (block 0 is always hashed, 3 changed, 6 was partial).
        assert_eq!(reused, 4, "piece {piece}");
        // And the new CVs serve the next update.
        let (_, _, again) = run(&v2, old_of(&v2, &cvs2), piece, 1);
        assert_eq!(again, 6, "piece {piece}");
    }
}

#[test]
fn cvs_that_do_not_make_the_old_digest_are_refused() {
    let v1 = Rng::new(6).bytes(3 * BLOCK as usize);
    let (_, mut cvs, _) = run(&v1, None, 16, 1);
    assert!(old_of(&v1, &cvs).is_some());
    cvs[1][0] ^= 1;
    assert!(old_of(&v1, &cvs).is_none());
    cvs.pop();
    assert!(old_of(&v1, &cvs).is_none());
}

#[test]
fn a_chunk_at_another_offset_is_not_proof() {
    // Bytes shifted by an insertion hash to the same chunk digests at other
    // offsets: no old CV may be used for them (a CV depends on the offset).
    let b = BLOCK as usize;
    let v1 = Rng::new(7).bytes(4 * b);
    let (_, cvs1, _) = run(&v1, None, 16, 1);
    let mut v2 = vec![0u8; CHUNK];
    v2.extend_from_slice(&v1);
    let (d2, _, reused) = run(&v2, old_of(&v1, &cvs1), 16, 2);
    assert_eq!(d2, *blake3::hash(&v2).as_bytes());
    assert_eq!(reused, 0);
}
