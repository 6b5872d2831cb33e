//! Whole small files read in one call, the GIL released once for a batch
//! (`origins/fs.py` `read_many`): in Python each file cost four releases
//! (open, read, fstat, close), each a hand-off to a waiting thread and a
//! wait to get the GIL back.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// What a listed version is expected to be: its path, size, ctime (ns),
/// mtime (ns) and inode when known, and its racy window (ns).
pub type Wanted = (Vec<u8>, u64, i64, Option<i64>, Option<u64>, i64);

/// The bytes of `w`'s file when they are provably that version's: read
/// whole, then its size, ctime, mtime and inode unchanged (ctime moves on
/// every write), and its ctime older than the racy window; else None.
pub fn read_whole(w: &Wanted) -> Option<Vec<u8>> {
    let (path, size, ctime, mtime, inode, racy) = w;
    let mut opts = OpenOptions::new();
    opts.read(true).custom_flags(libc::O_NOFOLLOW); // (std adds O_CLOEXEC)
    let mut file: File = opts.open(OsStr::from_bytes(path)).ok()?;
    let want = usize::try_from(*size).ok()?;
    let mut data = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read(&mut data[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    let st = file.metadata().ok()?;
    drop(file);
    let st_ctime = st.ctime().checked_mul(1_000_000_000)? + st.ctime_nsec();
    let st_mtime = st.mtime().checked_mul(1_000_000_000)? + st.mtime_nsec();
    let same = got == want
        && st.size() == *size
        && st_ctime == *ctime
        && mtime.is_none_or(|m| m == st_mtime)
        && inode.is_none_or(|i| i == st.ino());
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos(),
    )
    .ok()?;
    (same && now.saturating_sub(*ctime) >= *racy).then_some(data)
}

/// A wanted file as Python hands it over (the path as bytes: a non-UTF-8
/// file name is exact in its `os.fsencode` form).
type PyWanted<'py> = (Bound<'py, PyBytes>, u64, i64, Option<i64>, Option<u64>, i64);

/// `read_whole` of each wanted file, in order (None: read it the slow way).
#[pyfunction]
pub fn read_files<'py>(
    py: Python<'py>,
    wanted: Vec<PyWanted<'py>>,
) -> Vec<Option<Bound<'py, PyBytes>>> {
    let wanted: Vec<Wanted> = wanted
        .into_iter()
        .map(|(p, s, c, m, i, r)| (p.as_bytes().to_vec(), s, c, m, i, r))
        .collect();
    let read: Vec<Option<Vec<u8>>> = py.detach(|| wanted.iter().map(read_whole).collect());
    read.into_iter()
        .map(|d| d.map(|d| PyBytes::new(py, &d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wanted(path: &std::path::Path, racy: i64) -> Wanted {
        let st = std::fs::metadata(path).unwrap();
        let ctime = st.ctime() * 1_000_000_000 + st.ctime_nsec();
        let mtime = st.mtime() * 1_000_000_000 + st.mtime_nsec();
        let p = path.as_os_str().as_bytes().to_vec();
        (p, st.size(), ctime, Some(mtime), Some(st.ino()), racy)
    }

    #[test]
    fn reads_a_file_only_as_the_version_listed() {
        let dir = std::env::temp_dir().join(format!("rn-small-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap().write_all(b"hello").unwrap();
        let w = wanted(&path, 0);
        assert_eq!(read_whole(&w).as_deref(), Some(&b"hello"[..]));
        // Too recent to vouch for (a write in the same tick would not show).
        assert_eq!(
            read_whole(&(w.0.clone(), w.1, w.2, w.3, w.4, i64::MAX)),
            None
        );
        // Another size, ctime or inode than listed: not that version.
        assert_eq!(read_whole(&(w.0.clone(), 4, w.2, w.3, w.4, 0)), None);
        assert_eq!(read_whole(&(w.0.clone(), w.1, w.2 - 1, w.3, w.4, 0)), None);
        assert_eq!(read_whole(&(w.0.clone(), w.1, w.2, w.3, Some(1), 0)), None);
        assert_eq!(
            read_whole(&(w.0.clone(), w.1, w.2, None, None, 0)).as_deref(),
            Some(&b"hello"[..])
        );
        // A symlink is not followed; a missing file is None.
        std::os::unix::fs::symlink(&path, dir.join("l")).unwrap();
        let mut l = w.clone();
        l.0 = dir.join("l").as_os_str().as_bytes().to_vec();
        assert_eq!(read_whole(&l), None);
        l.0 = dir.join("missing").as_os_str().as_bytes().to_vec();
        assert_eq!(read_whole(&l), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
