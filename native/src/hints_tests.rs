//! Cutting with the previous version's chunks as hints gives exactly the
//! chunks (offsets, lengths, digests) and whole digest of cutting without.

use super::*;
use crate::batch::Batch;
use crate::fused::{segmented, serial, Limits};
use crate::params::Params;
use crate::stream::Stream;
use crate::testutil::{adversarial, cutter, param_sets, reference, small, Rng};

fn hints_of(old: &Batch, p: Params) -> Hints {
    let lengths: Vec<u64> = old.lengths.iter().map(|&l| u64::from(l)).collect();
    Hints::new(&lengths, &old.digests, &p)
}

/// A new version of `old`: a run replaced, bytes inserted, bytes appended
/// (the AI update's three kinds of change), each small against `old`.
fn edited(rng: &mut Rng, old: &[u8]) -> Vec<u8> {
    let mut v = old.to_vec();
    let n = old.len() / 16;
    let at = rng.below(old.len() - n);
    v[at..at + n].copy_from_slice(&rng.bytes(n));
    let ins = rng.below(v.len());
    v.splice(ins..ins, rng.bytes(n / 2 + 1));
    v.extend(rng.bytes(n / 3 + 1));
    v
}

fn stream(p: Params, hints: Option<Hints>, data: &[u8], piece: usize, threads: usize) -> Batch {
    let mut s = Stream::new(cutter(p), threads, true);
    if let Some(h) = hints {
        s = s.with_hints(h);
    }
    let mut out = Batch::default();
    for part in data.chunks(piece) {
        out.append(s.feed(part));
    }
    let (last, digest) = s.finish();
    out.append(last);
    assert_eq!(digest, Some(*blake3::hash(data).as_bytes()));
    out
}

#[test]
fn hinted_cuts_equal_plain_cuts() {
    let mut rng = Rng::new(41);
    for p in param_sets() {
        let old = rng.bytes(40 * p.max_size + 333);
        let new = edited(&mut rng, &old);
        let want = reference(p, &new);
        let h = hints_of(&reference(p, &old), p);
        assert!(h.len() > 10, "{p:?}");
        let c = cutter(p);
        let mut out = Batch::default();
        serial(&c, Some(&h), &new, 0, Limits::all(true), None, &mut out);
        assert_eq!(out, want, "serial {p:?}");
        for segments in [2, 3, 7] {
            let mut out = Batch::default();
            let lim = Limits::all(true);
            segmented(&c, Some(&h), &new, 0, lim, (2, segments), None, &mut out);
            assert_eq!(out, want, "segments {segments} {p:?}");
        }
        for piece in [p.max_size / 2 + 1, 3 * p.max_size + 5, new.len()] {
            let got = stream(p, Some(h.clone()), &new, piece, 2);
            assert_eq!(got, want, "stream piece {piece} {p:?}");
        }
    }
}

#[test]
fn wrong_or_adversarial_hints_change_nothing() {
    let p = small();
    let mut rng = Rng::new(5);
    for (name, old) in adversarial(&mut rng, 64 * p.max_size, p.max_size) {
        let new = edited(&mut rng, &old);
        let want = reference(p, &new);
        // Hints of the right data, of unrelated data, and with bad digests.
        let mut bad = reference(p, &old);
        bad.digests.iter_mut().step_by(7).for_each(|b| *b ^= 1);
        for old_chunks in [reference(p, &old), reference(p, &rng.bytes(old.len())), bad] {
            let h = hints_of(&old_chunks, p);
            for piece in [p.max_size + 1, 5 * p.max_size] {
                let got = stream(p, Some(h.clone()), &new, piece, 2);
                assert_eq!(got, want, "{name} piece {piece}");
            }
        }
    }
}

#[test]
fn chunks_near_the_old_end_are_not_hints() {
    // The old version's last chunks were cut short by its end: appending
    // to it moves those cuts, so they must not be taken as they were.
    let p = small();
    let old = Rng::new(9).bytes(20 * p.max_size);
    let chunks = reference(p, &old);
    let h = hints_of(&chunks, p);
    let size = old.len() as u64;
    assert!(h.starts.iter().all(|&s| s + p.max_size as u64 <= size));
    assert!(h.len() < chunks.len());
    let mut new = old.clone();
    new.extend(Rng::new(10).bytes(3 * p.max_size));
    assert_eq!(
        stream(p, Some(h), &new, 4 * p.max_size, 1),
        reference(p, &new)
    );
}

#[test]
fn lengths_no_cut_can_have_are_not_hints() {
    // A chunk list that is no FastCDC chain (a damaged or foreign one) whose
    // first "chunk" does hash to the new bytes: shorter than min_size, it
    // cannot be a cut with full lookahead, so it is not taken.
    let p = small();
    let new = Rng::new(12).bytes(20 * p.max_size);
    let short = p.min_size / 2;
    let lengths = [short as u64, (new.len() - short) as u64];
    let mut digests = blake3::hash(&new[..short]).as_bytes().to_vec();
    digests.extend_from_slice(blake3::hash(&new[short..]).as_bytes());
    let h = Hints::new(&lengths, &digests, &p);
    assert!(h.is_empty());
    assert_eq!(
        stream(p, Some(h), &new, 3 * p.max_size, 1),
        reference(p, &new)
    );
}
