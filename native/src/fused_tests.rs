//! Serial and parallel fused cut + hash against the `fastcdc` reference.

use super::*;
use crate::params::Params;
use crate::testutil::{adversarial, cutter, param_sets, reference, small, Rng};

fn run_serial(p: Params, data: &[u8], lim: Limits) -> (Batch, usize, [u8; 32]) {
    let mut out = Batch::default();
    let mut w = blake3::Hasher::new();
    let used = serial(&cutter(p), None, data, 7, lim, Some(&mut w), &mut out);
    (out, used, *w.finalize().as_bytes())
}

fn run_segmented(
    p: Params,
    data: &[u8],
    lim: Limits,
    threads: usize,
    segments: usize,
) -> (Batch, usize, [u8; 32]) {
    let mut out = Batch::default();
    let mut w = blake3::Hasher::new();
    let used = segmented(
        &cutter(p),
        None,
        data,
        7,
        lim,
        (threads, segments),
        Some(&mut w),
        &mut out,
    )
    .0;
    (out, used, *w.finalize().as_bytes())
}

fn shifted(mut b: Batch, by: u64) -> Batch {
    b.offsets.iter_mut().for_each(|o| *o += by);
    b
}

#[test]
fn serial_matches_fastcdc_iterator() {
    let mut rng = Rng::new(1);
    for p in param_sets() {
        for len in [0, 1, 63, 64, 65, 1024, 1025, 300_000] {
            let data = rng.bytes(len);
            let (out, used, whole) = run_serial(p, &data, Limits::all(true));
            assert_eq!(out, shifted(reference(p, &data), 7), "{p:?} len {len}");
            assert_eq!(used, len);
            assert_eq!(whole, *blake3::hash(&data).as_bytes());
        }
    }
}

#[test]
fn fastcdc_reference_values_all_zeros() {
    // The fastcdc crate's own expectation (test_cut_all_zeros): zeros never
    // match a mask, so every chunk is max_size, and a tail is its remainder.
    let data = vec![0u8; 10240 + 65];
    let (out, _, _) = run_serial(small(), &data, Limits::all(true));
    let mut want = vec![1024u32; 10];
    want.push(65);
    assert_eq!(out.lengths, want);
    let (out, _, _) = run_serial(small(), &[0u8; 50], Limits::all(true));
    assert_eq!(out.lengths, vec![50]);
}

#[test]
fn not_final_stops_before_missing_lookahead() {
    let mut rng = Rng::new(2);
    let data = rng.bytes(50_000);
    let (out, used, _) = run_serial(small(), &data, Limits::all(false));
    let full = reference(small(), &data);
    assert!(data.len() - used < 1024, "left {} bytes", data.len() - used);
    assert_eq!(
        out.len(),
        full.offsets
            .iter()
            .filter(|&&o| (o as usize) < used)
            .count()
    );
    assert_eq!(out.lengths[..], full.lengths[..out.len()]);
}

fn check_parallel(name: &str, p: Params, data: &[u8], lim: Limits) {
    let want = run_serial(p, data, lim);
    for segments in [2, 3, 4, 5, 7, 8, 13, 32] {
        for threads in [1, 2, 3, 4] {
            let got = run_segmented(p, data, lim, threads, segments);
            assert!(
                got == want,
                "{name}: {p:?} {lim:?} segments {segments} threads {threads}"
            );
        }
    }
}

#[test]
fn parallel_equals_serial_on_random_data() {
    let mut rng = Rng::new(3);
    for p in param_sets() {
        let len = 64 * p.max_size + rng.below(p.max_size);
        let data = rng.bytes(len);
        check_parallel("random", p, &data, Limits::all(true));
    }
}

#[test]
fn parallel_equals_serial_on_adversarial_data() {
    let mut rng = Rng::new(4);
    for p in [
        small(),
        Params {
            normalization: 3,
            ..small()
        },
        param_sets()[3],
    ] {
        let len = 200 * p.max_size + 333;
        for (name, data) in adversarial(&mut rng, len, p.max_size) {
            check_parallel(&name, p, &data, Limits::all(true));
        }
    }
}

#[test]
fn parallel_equals_serial_under_limits() {
    let mut rng = Rng::new(5);
    let p = small();
    let data = rng.bytes(100_000);
    let mut zeros = data.clone();
    zeros[10_000..90_000].fill(0);
    for limit in [0, 1, 500, 30_000, 50_001, 99_000, 100_000] {
        for is_final in [false, true] {
            let lim = Limits {
                is_final,
                start_limit: limit,
            };
            check_parallel("random", p, &data, lim);
            check_parallel("zeros", p, &zeros, lim);
        }
    }
}

#[test]
fn parallel_without_whole_digest() {
    let mut rng = Rng::new(6);
    let data = rng.bytes(40_000);
    let c = cutter(small());
    let (mut a, mut b) = (Batch::default(), Batch::default());
    let used_a = segmented(&c, None, &data, 0, Limits::all(true), (2, 6), None, &mut a).0;
    let used_b = serial(&c, None, &data, 0, Limits::all(true), None, &mut b);
    assert_eq!((a, used_a), (b, used_b));
}

#[test]
fn real_parallel_path_equals_serial() {
    // Big enough for MIN_SEGMENT to allow 2, 3 and 4 segments.
    let mut rng = Rng::new(7);
    let p = Params::default();
    let mut data = rng.bytes(4 * MIN_SEGMENT + 12_345);
    data[MIN_SEGMENT - 1000..MIN_SEGMENT + 3 * p.max_size + 17].fill(0);
    let want = run_serial(p, &data, Limits::all(true));
    assert_eq!(want.0, shifted(reference(p, &data), 7));
    for threads in [2, 3, 4] {
        let mut out = Batch::default();
        let mut w = blake3::Hasher::new();
        let used = parallel(
            &cutter(p),
            None,
            &data,
            7,
            Limits::all(true),
            threads,
            Some(&mut w),
            &mut out,
        );
        assert!(
            (out, used, *w.finalize().as_bytes()) == want,
            "threads {threads}"
        );
    }
}

#[test]
fn bounds_are_aligned_and_increasing() {
    for (len, segments, max) in [
        (10_000, 3, 1024),
        (1 << 20, 7, 1024),
        (3000, 8, 1024),
        (100, 4, 1024),
    ] {
        let b = bounds(len, segments, max);
        assert_eq!(b[0], 0);
        assert!(b.len() <= segments);
        assert!(b.windows(2).all(|w| w[0] < w[1] && w[1] < len));
        assert!(b.iter().all(|x| x % max == 0));
    }
}

fn recut(p: Params, data: &[u8], segments: usize) -> (usize, usize) {
    let mut out = Batch::default();
    let c = cutter(p);
    let (_, recut) = segmented(
        &c,
        None,
        data,
        0,
        Limits::all(true),
        (2, segments),
        None,
        &mut out,
    );
    (recut, out.len())
}

#[test]
fn merge_adopts_segment_chains() {
    // Random data resyncs within a few chunks of each segment start: the
    // merge must not quietly degrade to serial cutting.
    let data = Rng::new(8).bytes(1 << 20);
    let (again, total) = recut(small(), &data, 8);
    assert!(
        total > 2000 && again < 7 * 16,
        "{again} of {total} chunks cut again"
    );
    // All zeros: segment starts are max_size-aligned, so chains agree at once.
    assert_eq!(recut(small(), &vec![0u8; 1 << 20], 8).0, 0);
}

#[test]
fn read_windows_are_cut_on_every_thread() {
    // A streaming feed of an 8 MiB read window cuts a little under 8 MiB
    // (the carried tail is cut apart first): with 4 MiB segments that was
    // one segment, and every window after an object's first ran on one
    // thread. The default max_size is 256 KiB; the tail at most that long.
    let window = 8 * 1024 * 1024;
    let max_size = Params::default().max_size;
    assert_eq!(segments(window - max_size - 1000, 2), 2);
    assert_eq!(segments(window - max_size - 1000, 4), 4);
    assert_eq!(segments(MIN_SEGMENT - 1, 2), 0);
}
