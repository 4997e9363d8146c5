//! Hugging Face Hub client: repository ids, API listing, the shared cache layout,
//! resumable verified downloads and image-shard extraction.
//!
//! The hf-hub crate gives the cache folder naming; it has no resume across processes,
//! no sha256 checks, no tree pagination, no retries on 429/5xx with `RateLimit`, no
//! stall detection and no `--local-dir` metadata, so those live here.

pub mod api;
pub(crate) mod checksum;
pub(crate) mod download;
pub mod extract;
pub(crate) mod extract_all;
pub mod http;
pub(crate) mod layout;
pub(crate) mod model_ref;
pub mod repo;
pub(crate) mod select;
pub(crate) mod settings;
pub(crate) mod transfer;

/// Runs `f` on every item on up to `workers` threads (at most one per item), handing
/// items out in order, so the first ones start first (downloads go largest first);
/// the results come back in item order.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().expect("no panics").push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("no panics");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
