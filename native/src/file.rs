//! Chunk + hash a file through memory-mapped windows (or `read(2)`).
//!
//! The file is mapped one window at a time and each window is unmapped
//! before the next is mapped, so resident memory grows by about one window,
//! not by the file's size (mapped file pages count in RSS).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use memmap2::MmapOptions;

use crate::batch::Batch;
use crate::stream::Stream;

/// Window size: 32 MiB keeps the resident growth of chunking a file of any
/// size well under 64 MiB, and still gives up to 8 threads a 4 MiB segment
/// each (`fused::MIN_SEGMENT`). A multiple of every page size in use.
pub const WINDOW: usize = 32 * 1024 * 1024;

fn open_read(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    // Opening a FIFO for reading blocks until a writer appears; O_NONBLOCK
    // makes it return at once so the type check below can refuse it. It has
    // no effect on reads of regular files, the only kind accepted.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    opts.open(path)
}

fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let file = open_read(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("{} is a directory", path.display()),
        ));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok((file, meta))
}

/// Fails if the file's size or modification time moved since `before`.
///
/// The chunks describe the bytes as they were read; a writer that appended
/// or rewrote the file meanwhile (same size included, through mtime) would
/// make them describe no version of it, so the caller must retry instead.
fn check_unchanged(path: &Path, file: &File, before: &Metadata) -> io::Result<()> {
    let after = file.metadata()?;
    if after.len() != before.len() || after.modified().ok() != before.modified().ok() {
        return Err(changed(path, io::Error::other("size or mtime moved")));
    }
    Ok(())
}

/// All chunks of the file and its whole BLAKE3.
///
/// With `mmap` false the file is read with `read(2)` into one reused window
/// buffer instead: one more copy, but a file truncated by another process
/// mid-read gives an `UnexpectedEof` error instead of a SIGBUS. Either mode
/// fails ("changed while it was read") when the file's size or mtime moved
/// while it was chunked.
pub fn chunk_file(
    path: &Path,
    stream: Stream,
    mmap: bool,
) -> io::Result<(Batch, Option<[u8; 32]>)> {
    chunk_windows(path, stream, mmap, WINDOW)
}

/// [`chunk_file`] with an explicit window (tests use small ones); `window`
/// must be a multiple of the page size.
pub(crate) fn chunk_windows(
    path: &Path,
    stream: Stream,
    mmap: bool,
    window: usize,
) -> io::Result<(Batch, Option<[u8; 32]>)> {
    if mmap {
        chunk_mapped(path, stream, window)
    } else {
        chunk_read(path, stream, window)
    }
}

fn chunk_read(
    path: &Path,
    mut stream: Stream,
    window: usize,
) -> io::Result<(Batch, Option<[u8; 32]>)> {
    let (mut file, meta) = open_regular(path)?;
    let size = meta.len();
    let mut out = Batch::default();
    let mut buf = vec![0u8; (window as u64).min(size) as usize];
    let mut offset: u64 = 0;
    while offset < size {
        let len = (size - offset).min(window as u64) as usize;
        file.read_exact(&mut buf[..len])
            .map_err(|e| changed(path, e))?;
        out.append(stream.feed(&buf[..len]));
        offset += len as u64;
    }
    check_unchanged(path, &file, &meta)?;
    let (tail, digest) = stream.finish();
    out.append(tail);
    Ok((out, digest))
}

/// The file changed while it was chunked (grew, shrank, was rewritten):
/// the caller should treat the version as superseded and read it again.
#[derive(Debug)]
pub struct Changed(pub String);

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Changed {}

fn changed(path: &Path, e: io::Error) -> io::Error {
    let msg = format!("{} changed while it was read: {e}", path.display());
    io::Error::new(e.kind(), Changed(msg))
}

/// Whether `e` says the file changed while it was chunked.
pub fn is_changed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Changed>())
}

fn chunk_mapped(
    path: &Path,
    mut stream: Stream,
    window: usize,
) -> io::Result<(Batch, Option<[u8; 32]>)> {
    let (file, meta) = open_regular(path)?;
    let size = meta.len();
    let mut out = Batch::default();
    let mut offset: u64 = 0;
    while offset < size {
        let len = (size - offset).min(window as u64) as usize;
        // SAFETY: the map is read-only and private to this call. A writer
        // that truncates the file while it is mapped would make a read fault
        // (SIGBUS); callers that read files other processes may rewrite in
        // place must copy them first or read them through `read`.
        let map = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(len)
                .populate()
                .map(&file)?
        };
        out.append(stream.feed(&map));
        // `map` drops here: the window is unmapped before the next is mapped.
        offset += len as u64;
    }
    check_unchanged(path, &file, &meta)?;
    let (tail, digest) = stream.finish();
    out.append(tail);
    Ok((out, digest))
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
