//! Rayon thread pools, one per requested size, built once and kept.
//!
//! Building a pool per call would cost more than hashing a few MiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

/// The pool with exactly `threads` workers.
pub fn get(threads: usize) -> Arc<ThreadPool> {
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = pools.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(threads)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("replicator-chunk-{i}"))
                    .build()
                    .expect("building a rayon thread pool"),
            )
        })
        .clone()
}
