//! Rayon thread pools, one per size, built once and kept.
//!
//! Building a pool per call would cost more than hashing a few MiB. Sizes
//! are capped at the machine's CPU count: more workers than CPUs only add
//! switching to compute-bound work, and the cap bounds how many pools (and
//! threads) can ever be kept, whatever `threads` callers pass. Callers still
//! split work by the requested count, so results never depend on the cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

/// The most workers a pool gets: the CPUs this process may use.
pub fn max_workers() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The pool with `threads` workers, capped at [`max_workers`].
pub fn get(threads: usize) -> Arc<ThreadPool> {
    let workers = threads.clamp(1, max_workers());
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = pools.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(workers)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("replicator-chunk-{i}"))
                    .build()
                    .expect("building a rayon thread pool"),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_capped_and_shared() {
        let cap = max_workers();
        assert_eq!(get(cap + 1000).current_num_threads(), cap);
        assert!(Arc::ptr_eq(&get(cap + 1), &get(cap + 7)));
        assert_eq!(get(1).current_num_threads(), 1);
    }
}
