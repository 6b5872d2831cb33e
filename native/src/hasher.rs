//! Incremental BLAKE3: the whole-object digest of bytes that arrive in
//! pieces (restore, verify), hashed once, without the chunker on top.
//!
//! [`Incremental`] is the Rust core (tested here); [`PyHasher`] is the
//! Python class `replicator._native.Blake3Hasher`, shaped like hashlib's
//! objects (`update`, `digest`, `hexdigest`, `copy`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::api::{checked_threads, with_buffer};

/// Below this size a piece is hashed on the calling thread even when more
/// threads were asked for: BLAKE3's own rayon split only pays off on large
/// inputs (the blake3 crate's docs suggest 128 KiB as the crossover).
const RAYON_MINSIZE: usize = 128 * 1024;

/// BLAKE3 over a sequence of pieces; equal to hashing their concatenation.
#[derive(Clone)]
pub struct Incremental {
    inner: blake3::Hasher,
    threads: usize,
    count: u64,
}

impl Incremental {
    pub fn new(threads: usize) -> Self {
        Incremental {
            inner: blake3::Hasher::new(),
            threads: threads.max(1),
            count: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.threads > 1 && data.len() >= RAYON_MINSIZE {
            let inner = &mut self.inner;
            crate::pool::get(self.threads).install(|| {
                inner.update_rayon(data);
            });
        } else {
            self.inner.update(data);
        }
        self.count += data.len() as u64;
    }

    /// The digest of everything fed so far; feeding may go on afterwards.
    pub fn digest(&self) -> [u8; 32] {
        *self.inner.finalize().as_bytes()
    }

    /// Bytes fed so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// hashlib-style incremental BLAKE3 for Python.
#[pyclass(name = "Blake3Hasher", module = "replicator._native")]
pub struct PyHasher {
    state: Incremental,
}

#[pymethods]
impl PyHasher {
    #[new]
    #[pyo3(signature = (data=None, threads=1))]
    fn new(py: Python<'_>, data: Option<&Bound<'_, PyAny>>, threads: usize) -> PyResult<Self> {
        let mut hasher = PyHasher {
            state: Incremental::new(checked_threads(threads)?),
        };
        if let Some(data) = data {
            hasher.update(py, data)?;
        }
        Ok(hasher)
    }

    /// Feed the next piece (any C-contiguous buffer). The GIL is released
    /// for pieces of 2 KiB and more; a concurrent `update` on the same
    /// object from another thread then fails with RuntimeError (the object
    /// is borrowed), never interleaves.
    #[pyo3(signature = (data, /))]
    fn update(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let state = &mut self.state;
        with_buffer(py, data, |b| state.update(b))
    }

    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.state.digest())
    }

    fn hexdigest(&self) -> String {
        self.state
            .digest()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn copy(&self) -> PyHasher {
        PyHasher {
            state: self.state.clone(),
        }
    }

    /// Bytes fed so far.
    #[getter]
    fn count(&self) -> u64 {
        self.state.count()
    }

    #[getter]
    fn digest_size(&self) -> usize {
        32
    }

    #[getter]
    fn name(&self) -> &'static str {
        "blake3"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn official_vectors_of_small_inputs() {
        // From BLAKE3's test_vectors.json (input: 0, 1, ..., 250 repeating).
        let cases = [
            (
                0usize,
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            ),
            (
                1,
                "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
            ),
        ];
        for (n, want) in cases {
            let mut h = Incremental::new(1);
            h.update(&pattern(n));
            let got: String = h.digest().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, want, "input_len {n}");
        }
    }

    #[test]
    fn pieces_equal_one_shot_for_any_split_and_threads() {
        let data = pattern(3 * RAYON_MINSIZE + 4097);
        let want = *blake3::hash(&data).as_bytes();
        let mut rng = Rng::new(7);
        for threads in [1, 2, 4] {
            for max_piece in [1usize, 1000, 70_000, RAYON_MINSIZE * 2] {
                let mut h = Incremental::new(threads);
                let mut rest: &[u8] = &data;
                while !rest.is_empty() {
                    let n = (rng.below(max_piece) + 1).min(rest.len());
                    h.update(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(h.digest(), want, "threads {threads} max_piece {max_piece}");
                assert_eq!(h.count(), data.len() as u64);
            }
        }
    }

    #[test]
    fn digest_does_not_end_the_stream() {
        let mut h = Incremental::new(1);
        h.update(b"ab");
        let mid = h.digest();
        assert_eq!(mid, *blake3::hash(b"ab").as_bytes());
        let copy = h.clone();
        h.update(b"c");
        assert_eq!(h.digest(), *blake3::hash(b"abc").as_bytes());
        assert_eq!(copy.digest(), mid);
    }
}
