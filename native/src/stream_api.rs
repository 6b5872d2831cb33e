//! `replicator._native.StreamChunker`: the streaming chunker for Python
//! (input in pieces, chunks out as they complete, the whole digest and its
//! 1 MiB block chaining values at the end).

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::api::{checked_threads, params_or_default, with_buffer, PyChunkList, PyParams};
use crate::cutter::Cutter;
use crate::hints::Hints;
use crate::stream::Stream;
use crate::tree::Old;

/// Chunker for input that arrives in pieces.
#[pyclass(name = "StreamChunker", module = "replicator._native")]
pub struct PyStreamChunker {
    stream: Stream,
}

#[pymethods]
impl PyStreamChunker {
    /// `previous`: the previous version's chunks, `(lengths, digests)` in
    /// order (digests: 32 bytes each), cut with the same parameters (a
    /// manifest's chunk list). Unchanged runs are then hashed, not cut;
    /// the results are the same as without. `previous_tree`: that
    /// version's `(subtrees, digest)` (its chunker's `subtrees` after
    /// finish): taken only if they make its digest, they spare hashing the
    /// unchanged 1 MiB blocks a second time for the whole digest.
    #[new]
    #[pyo3(signature = (params=None, threads=1, whole_digest=true, previous=None, previous_tree=None))]
    fn new(
        params: Option<PyParams>,
        threads: usize,
        whole_digest: bool,
        previous: Option<(Vec<u64>, Bound<'_, PyBytes>)>,
        previous_tree: Option<(Bound<'_, PyBytes>, Bound<'_, PyBytes>)>,
    ) -> PyResult<Self> {
        let threads = checked_threads(threads)?;
        let p = params_or_default(params);
        let mut stream = Stream::new(Cutter::new(p), threads, whole_digest);
        let mut old = None;
        if let Some((lengths, digests)) = previous {
            let digests = digests.as_bytes();
            if digests.len() != 32 * lengths.len() {
                return Err(PyValueError::new_err(
                    "previous: 32 bytes of digest per chunk length",
                ));
            }
            stream = stream.with_hints(Hints::new(&lengths, digests, &p));
            old = previous_tree
                .and_then(|(cvs, d)| Old::new(&lengths, digests, cvs.as_bytes(), d.as_bytes()));
        }
        Ok(PyStreamChunker {
            stream: stream.with_tree(old),
        })
    }

    /// The whole input's 1 MiB block chaining values, 32 bytes each, once
    /// finished (empty for an input of at most 1 MiB or without a digest).
    #[getter]
    fn subtrees<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.stream.subtrees().concat())
    }

    /// Blocks whose previous chaining value was taken instead of hashing.
    #[getter]
    fn reused_blocks(&self) -> u64 {
        self.stream.reused_blocks()
    }

    /// Bytes fed so far.
    #[getter]
    fn position(&self) -> u64 {
        self.stream.position()
    }

    /// Feed the next piece; returns the chunks it completed.
    fn feed(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<PyChunkList> {
        if self.stream.is_finished() {
            return Err(PyRuntimeError::new_err("feed() after finish()"));
        }
        let stream = &mut self.stream;
        let batch = with_buffer(py, data, |b| stream.feed(b))?;
        Ok(PyChunkList {
            batch,
            digest: None,
        })
    }

    /// End of input: the last chunks, and `digest` set to the whole BLAKE3
    /// (unless the chunker was made with `whole_digest=False`).
    fn finish(&mut self) -> PyResult<PyChunkList> {
        if self.stream.is_finished() {
            return Err(PyRuntimeError::new_err("finish() called twice"));
        }
        let (batch, digest) = self.stream.finish();
        Ok(PyChunkList { batch, digest })
    }
}
