//! Replays the fuzz corpus through the fuzz bodies (`livecache_check::fuzz`), one test per
//! target: every file of `fuzz/corpus/<target>/` (the committed seeds) and of
//! `fuzz/regressions/<target>/` (minimised crashes, once fixed). So a stable `cargo test` runs
//! what the fuzzer found interesting, without cargo-fuzz or nightly.
//!
//! A failing file is named in the output; reproduce it alone with
//! `cargo fuzz run <target> fuzz/regressions/<target>/<file>` (see docs/testing.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Every file of `fuzz/<folder>/<target>/`, sorted (none when the folder does not exist).
fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run `body` on every corpus and regression file of `target`; fail naming every file that
/// panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ holds the seed corpus; it is empty or missing"
    );
    let files: Vec<PathBuf> = corpus
        .into_iter()
        .chain(inputs("regressions", target))
        .collect();
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            eprintln!("fuzz input failed: {}", file.display());
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {target} failed:\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn lifecycle_ops() {
    replay("lifecycle_ops", livecache_check::fuzz::lifecycle_ops);
}

#[test]
fn ws_frames() {
    replay("ws_frames", livecache_check::fuzz::ws_frames);
}

#[test]
fn patches() {
    replay("patches", livecache_check::fuzz::patches);
}

#[test]
fn cache_keys() {
    replay("cache_keys", livecache_check::fuzz::cache_keys);
}

#[test]
fn connection_events() {
    replay(
        "connection_events",
        livecache_check::fuzz::connection_events,
    );
}
