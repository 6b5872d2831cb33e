//! The Python-facing classes and functions of `replicator._native`.

use std::path::PathBuf;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyBufferError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::batch::Batch;
use crate::cutter::Cutter;
use crate::file;
use crate::params::Params;
use crate::stream::Stream;

create_exception!(
    replicator._native,
    FileChangedError,
    PyOSError,
    "The file changed (size or mtime) while chunk_file read it; the chunks \
     describe no version of it. Treat the version as superseded and retry."
);

/// Below this size the GIL is kept: releasing it costs more than hashing
/// (the threshold hashlib and blake3-py use).
const GIL_MINSIZE: usize = 2048;

#[pyclass(
    name = "ChunkerParams",
    module = "replicator._native",
    frozen,
    eq,
    from_py_object
)]
#[derive(Clone, PartialEq)]
pub struct PyParams(pub Params);

#[pymethods]
impl PyParams {
    #[new]
    #[pyo3(signature = (min_size=16384, avg_size=65536, max_size=262144, normalization=1, seed=0))]
    fn new(
        min_size: usize,
        avg_size: usize,
        max_size: usize,
        normalization: u32,
        seed: u64,
    ) -> PyResult<Self> {
        let p = Params {
            min_size,
            avg_size,
            max_size,
            normalization,
            seed,
        };
        p.validate().map_err(PyValueError::new_err)?;
        Ok(PyParams(p))
    }

    #[getter]
    fn min_size(&self) -> usize {
        self.0.min_size
    }
    #[getter]
    fn avg_size(&self) -> usize {
        self.0.avg_size
    }
    #[getter]
    fn max_size(&self) -> usize {
        self.0.max_size
    }
    #[getter]
    fn normalization(&self) -> u32 {
        self.0.normalization
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.0.seed
    }

    fn __repr__(&self) -> String {
        let p = &self.0;
        format!(
            "ChunkerParams(min_size={}, avg_size={}, max_size={}, normalization={}, seed={})",
            p.min_size, p.avg_size, p.max_size, p.normalization, p.seed
        )
    }
}

/// Chunks as three packed little-endian arrays, plus the whole-input digest.
#[pyclass(name = "ChunkList", module = "replicator._native", frozen)]
pub struct PyChunkList {
    pub(crate) batch: Batch,
    pub(crate) digest: Option<[u8; 32]>,
}

#[pymethods]
impl PyChunkList {
    fn __len__(&self) -> usize {
        self.batch.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyTuple>> {
        let n = self.batch.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "chunk index out of range",
            ));
        }
        let i = i as usize;
        let digest = PyBytes::new(py, self.batch.digest(i));
        (self.batch.offsets[i], self.batch.lengths[i], digest).into_pyobject(py)
    }

    /// Absolute offsets, packed `<u8` (uint64).
    #[getter]
    fn offsets<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let raw: Vec<u8> = self
            .batch
            .offsets
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        PyBytes::new(py, &raw)
    }

    /// Lengths, packed `<u4` (uint32).
    #[getter]
    fn lengths<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let raw: Vec<u8> = self
            .batch
            .lengths
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .collect();
        PyBytes::new(py, &raw)
    }

    /// Digests, 32 bytes each, concatenated.
    #[getter]
    fn digests<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.batch.digests)
    }

    /// BLAKE3 of the whole input; `None` for a streaming batch before
    /// finish, or when the whole digest was not asked for.
    #[getter]
    fn digest<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.digest.map(|d| PyBytes::new(py, &d))
    }

    /// Sum of the chunk lengths.
    #[getter]
    fn total_length(&self) -> u64 {
        self.batch.total_length()
    }

    fn __repr__(&self) -> String {
        format!(
            "<ChunkList chunks={} bytes={}>",
            self.batch.len(),
            self.batch.total_length()
        )
    }
}

pub(crate) fn checked_threads(threads: usize) -> PyResult<usize> {
    if threads == 0 {
        return Err(PyValueError::new_err("threads must be at least 1, got 0"));
    }
    Ok(threads)
}

pub(crate) fn params_or_default(params: Option<PyParams>) -> Params {
    params.map(|p| p.0).unwrap_or_default()
}

/// Runs `f` over the bytes of a contiguous buffer, without the GIL when large.
pub(crate) fn with_buffer<T: Send>(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> T + Send,
) -> PyResult<T> {
    let buf = PyUntypedBuffer::get(data)?;
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err("buffer must be contiguous"));
    }
    let len = buf.len_bytes();
    // SAFETY: the buffer stays acquired (and so valid) until `buf` drops at
    // the end of this function; a bytearray mutated concurrently by another
    // thread gives garbage digests, never unsafety beyond that (as hashlib).
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, len) }
    };
    if len >= GIL_MINSIZE {
        Ok(py.detach(|| f(bytes)))
    } else {
        Ok(f(bytes))
    }
}

/// Chunk and hash a whole buffer in one pass.
#[pyfunction]
#[pyo3(signature = (data, params=None, threads=1, whole_digest=true))]
pub fn chunk_buffer(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    params: Option<PyParams>,
    threads: usize,
    whole_digest: bool,
) -> PyResult<PyChunkList> {
    let threads = checked_threads(threads)?;
    let stream = Stream::new(
        Cutter::new(params_or_default(params)),
        threads,
        whole_digest,
    );
    let (batch, digest) = with_buffer(py, data, |b| stream.whole_buffer(b))?;
    Ok(PyChunkList { batch, digest })
}

/// `chunk_buffer` of each of several whole buffers (a batch of small
/// files), the GIL released once for all of them instead of once per
/// buffer: every release is a hand-off to the waiting threads and back.
#[pyfunction]
#[pyo3(signature = (datas, params=None, whole_digest=true))]
pub fn chunk_buffers(
    py: Python<'_>,
    datas: Vec<Bound<'_, PyAny>>,
    params: Option<PyParams>,
    whole_digest: bool,
) -> PyResult<Vec<PyChunkList>> {
    let params = params_or_default(params);
    let bufs = datas
        .iter()
        .map(|d| {
            let buf = PyUntypedBuffer::get(d)?;
            if buf.is_c_contiguous() {
                Ok(buf)
            } else {
                Err(PyBufferError::new_err("buffer must be contiguous"))
            }
        })
        .collect::<PyResult<Vec<_>>>()?;
    // SAFETY: as in `with_buffer`: every buffer stays acquired until `bufs`
    // drops at the end of this function.
    let slices: Vec<&[u8]> = bufs
        .iter()
        .map(|b| match b.len_bytes() {
            0 => &[][..],
            n => unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, n) },
        })
        .collect();
    let run = |slices: &[&[u8]]| -> Vec<(Batch, Option<[u8; 32]>)> {
        slices
            .iter()
            .map(|s| Stream::new(Cutter::new(params), 1, whole_digest).whole_buffer(s))
            .collect()
    };
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let out = if total >= GIL_MINSIZE {
        py.detach(|| run(&slices))
    } else {
        run(&slices)
    };
    Ok(out
        .into_iter()
        .map(|(batch, digest)| PyChunkList { batch, digest })
        .collect())
}

/// Chunk and hash a file, memory-mapped window by window (or read).
#[pyfunction]
#[pyo3(signature = (path, params=None, threads=1, mmap=true, whole_digest=true))]
pub fn chunk_file(
    py: Python<'_>,
    path: PathBuf,
    params: Option<PyParams>,
    threads: usize,
    mmap: bool,
    whole_digest: bool,
) -> PyResult<PyChunkList> {
    let threads = checked_threads(threads)?;
    let stream = Stream::new(
        Cutter::new(params_or_default(params)),
        threads,
        whole_digest,
    );
    let (batch, digest) = py
        .detach(|| file::chunk_file(&path, stream, mmap))
        .map_err(|e| {
            if file::is_changed(&e) {
                FileChangedError::new_err(e.to_string())
            } else {
                e.into()
            }
        })?;
    Ok(PyChunkList { batch, digest })
}

/// BLAKE3 of a buffer (the digest used everywhere in the store).
#[pyfunction]
#[pyo3(signature = (data, threads=1))]
pub fn blake3_digest<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    threads: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let threads = checked_threads(threads)?;
    let digest = with_buffer(py, data, |b| {
        if threads > 1 {
            let mut h = blake3::Hasher::new();
            crate::pool::get(threads).install(|| h.update_rayon(b));
            *h.finalize().as_bytes()
        } else {
            *blake3::hash(b).as_bytes()
        }
    })?;
    Ok(PyBytes::new(py, &digest))
}

/// FastCDC alone (no hashing): chunk lengths, packed `<u4`. For benchmarks.
#[pyfunction]
#[pyo3(signature = (data, params=None))]
pub fn cut_only<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    params: Option<PyParams>,
) -> PyResult<Bound<'py, PyBytes>> {
    let cutter = Cutter::new(params_or_default(params));
    let raw = with_buffer(py, data, |b| {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let len = cutter.cut(&b[pos..]);
            out.extend_from_slice(&(len as u32).to_le_bytes());
            pos += len;
        }
        out
    })?;
    Ok(PyBytes::new(py, &raw))
}
