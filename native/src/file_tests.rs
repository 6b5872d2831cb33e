//! Files, mapped or read, against the one-shot buffer call.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::params::Params;
use crate::testutil::{cutter, small, Rng};

/// A file removed when dropped (no tempfile crate needed).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0).or_else(|_| std::fs::remove_dir(&self.0));
    }
}

fn temp_path() -> Temp {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Temp(std::env::temp_dir().join(format!("replicator-native-{}-{n}", std::process::id())))
}

fn temp_file(data: &[u8]) -> Temp {
    let t = temp_path();
    std::fs::write(&t.0, data).unwrap();
    t
}

fn one_shot(p: Params, threads: usize, data: &[u8]) -> (Batch, Option<[u8; 32]>) {
    Stream::new(cutter(p), threads, true).whole_buffer(data)
}

#[test]
fn file_equals_buffer_in_both_modes_and_windows() {
    let mut rng = Rng::new(21);
    let page = 4096;
    let window = 4 * page;
    for p in [
        small(),
        Params {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
            ..small()
        },
    ] {
        for len in [
            0,
            1,
            63,
            1024,
            window - 1,
            window,
            window + 1,
            5 * window + 777,
        ] {
            let mut data = rng.bytes(len);
            if len > 2 * window {
                data[window - 10..2 * window + 10].fill(0);
            }
            let f = temp_file(&data);
            let want = one_shot(p, 1, &data);
            for mmap in [true, false] {
                for threads in [1, 2] {
                    let got =
                        chunk_windows(&f.0, Stream::new(cutter(p), threads, true), mmap, window)
                            .unwrap();
                    assert!(got == want, "{p:?} len {len} mmap {mmap} threads {threads}");
                }
            }
        }
    }
}

#[test]
fn file_with_default_window_and_parallel_path() {
    let mut rng = Rng::new(22);
    let data = rng.bytes(WINDOW + 9 * 1024 * 1024 + 3);
    let f = temp_file(&data);
    let p = Params::default();
    let want = one_shot(p, 1, &data);
    for mmap in [true, false] {
        let got = chunk_file(&f.0, Stream::new(cutter(p), 3, true), mmap).unwrap();
        assert!(got == want, "mmap {mmap}");
    }
}

fn err_kind(path: &Path, mmap: bool) -> io::ErrorKind {
    chunk_file(path, Stream::new(cutter(small()), 1, true), mmap)
        .unwrap_err()
        .kind()
}

#[test]
fn missing_directory_and_fifo_are_refused() {
    let missing = temp_path();
    let dir = temp_path();
    std::fs::create_dir(&dir.0).unwrap();
    let fifo = temp_path();
    let c_path = std::ffi::CString::new(fifo.0.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for mmap in [true, false] {
        assert_eq!(err_kind(&missing.0, mmap), io::ErrorKind::NotFound);
        assert_eq!(err_kind(&dir.0, mmap), io::ErrorKind::IsADirectory);
        // Without O_NONBLOCK this open would wait forever for a writer.
        assert_eq!(err_kind(&fifo.0, mmap), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn a_file_that_changes_while_chunked_is_reported() {
    let f = temp_file(b"version one");
    let (file, before) = open_regular(&f.0).unwrap();
    assert!(check_unchanged(&f.0, &file, &before).is_ok());
    // Same size, rewritten in place: only the mtime tells.
    let later = before.modified().unwrap() + std::time::Duration::from_secs(2);
    let w = OpenOptions::new().write(true).open(&f.0).unwrap();
    std::io::Write::write_all(&mut &w, b"version two").unwrap();
    w.set_modified(later).unwrap();
    let err = check_unchanged(&f.0, &file, &before).unwrap_err();
    assert!(
        err.to_string().contains("changed while it was read"),
        "{err}"
    );
    // Grown, mtime put back: the size tells.
    std::io::Write::write_all(&mut &w, b"!").unwrap();
    w.set_modified(before.modified().unwrap()).unwrap();
    assert!(check_unchanged(&f.0, &file, &before).is_err());
}
