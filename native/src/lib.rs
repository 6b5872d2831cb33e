//! `replicator._native`: content-defined chunking (FastCDC 2020) fused with
//! BLAKE3 hashing. This file only lists the exports; the work lives in the
//! modules below. The module does chunk + hash (and the plain incremental
//! BLAKE3 of whole objects) and nothing else.

mod api;
pub mod batch;
pub mod cutter;
pub mod file;
pub mod fused;
pub mod hasher;
pub mod hints;
pub mod params;
mod pool;
pub mod small_files;
pub mod stream;
mod stream_api;
#[cfg(test)]
mod testutil;
pub mod tree;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<api::PyParams>()?;
    m.add_class::<api::PyChunkList>()?;
    m.add_class::<stream_api::PyStreamChunker>()?;
    m.add_class::<hasher::PyHasher>()?;
    m.add_function(wrap_pyfunction!(api::chunk_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(api::chunk_buffers, m)?)?;
    m.add_function(wrap_pyfunction!(small_files::read_files, m)?)?;
    m.add_function(wrap_pyfunction!(api::chunk_file, m)?)?;
    m.add_function(wrap_pyfunction!(api::blake3_digest, m)?)?;
    m.add_function(wrap_pyfunction!(api::cut_only, m)?)?;
    m.add(
        "FileChangedError",
        m.py().get_type::<api::FileChangedError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
