//! W8, optimistic updates: an update with patches and its undo, against the same update without
//! patches (R15, R18), on one entry of N messages (10,000 by default) through the runtime.
//!
//! `cargo bench --bench optimistic [-- --entries=N --updates=U --runs=R --core-only]` prints JSON lines in
//! the peers' format, one per variant, each the median of R runs of U updates:
//!
//! - `plain`: `update_cached_data` of a lifecycle handle (no patches): one message's text set;
//! - `patched`: `Endpoint::update_query_data` of the same change (patches and the typed undo
//!   recorded), then `PatchCollection::undo`, as an optimistic update that fails does;
//! - `patched_json_undo`: the same, but the undo applies the inverse patches (something changed
//!   the entry in between), to show what the typed undo saves.
//!
//! The change sets one message's text through the element's draft: `--change=field` (the
//! default) as `field!(m, text).set(t)`, recorded from the two strings; `--change=item` as
//! `m.text = t`, plain access that diffs the element (not the list) as a whole.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use livecache::core::Draft;
use livecache::{Api, EntryHandle, WithData};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Message {
    id: u64,
    user: String,
    text: String,
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .find_map(|a| {
            a.strip_prefix(&format!("--{name}="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(default)
}

/// How the recipe sets the text: `field` through the field's draft (`field!(m, text).set(t)`,
/// recorded as one `replace` from the two strings), `item` by plain access to the element
/// (`m.text = t`, the element diffed as a whole).
static FIELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn set_text(list: &mut Draft<'_, Vec<Message>>, index: usize, text: &str) {
    if let Some(mut message) = list.item_mut(index) {
        if FIELD.load(std::sync::atomic::Ordering::Relaxed) {
            livecache::field!(message, text).set(text.to_owned());
        } else {
            message.text.clear();
            message.text.push_str(text);
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn report(variant: &str, entries: usize, updates: usize, seconds: Vec<f64>) {
    let change = if FIELD.load(std::sync::atomic::Ordering::Relaxed) {
        "field"
    } else {
        "item"
    };
    let s = median(seconds.clone());
    println!(
        "{}",
        json!({
            "peer": "livecache", "workload": "optimistic", "variant": variant,
            "entries": 1, "array_size": entries, "updates_per_entry": updates,
            "seconds": s, "updates_per_sec": updates as f64 / s,
            "ns_per_update": s * 1e9 / updates as f64, "seconds_each": seconds,
            "change": change, "path": "runtime", "mode": "release", "lib_version": "livecache@0.1.0",
        })
    );
}

type Handle = EntryHandle<WithData, Vec<Message>>;

/// The same two variants on the sans-IO core, without the runtime's per-call costs (the key
/// from the argument, the lock, the clock): `core_plain` is `update_cached` without patches,
/// `core_patched` `update_query_data_undoable` then `undo`.
fn core_variants(entries: usize, updates: usize, runs: usize) {
    use livecache::core::{Cache, CacheKey, EndpointConfig, Patches};
    let mut cache: Cache<Vec<Message>> = Cache::new(Default::default());
    let Ok(ep) = cache.add_endpoint("messages", EndpointConfig::default()) else {
        return;
    };
    let key = CacheKey::verbatim("messages(1)");
    let data = (0..entries as u64)
        .map(|id| Message {
            id,
            user: format!("user{}", id % 97),
            text: format!("message number {id}"),
        })
        .collect();
    if cache.upsert(0, ep, &key, data).is_err() {
        return;
    }
    let Some(lifetime) = cache.entry(&key).map(|e| e.lifetime) else {
        return;
    };
    let (mut plain, mut patched) = (Vec::new(), Vec::new());
    let mut now = 1;
    for _ in 0..runs {
        let start = Instant::now();
        for u in 0..updates {
            now += 1;
            let _ = cache.update_cached(now, lifetime, Patches::NotWanted, |l| {
                set_text(l, (u * 7919) % entries, ["plain a", "plain b"][u % 2])
            });
            while cache.poll_effect().is_some() {}
        }
        plain.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for u in 0..updates {
            now += 1;
            if let Ok(undo) = cache.update_query_data_undoable(now, &key, |l| {
                set_text(l, (u * 7919) % entries, "optimistic")
            }) {
                let _ = cache.undo(now, &key, undo);
            }
            while cache.poll_effect().is_some() {}
        }
        patched.push(start.elapsed().as_secs_f64());
        let _ = cache.take_trace();
    }
    report("core_plain", entries, updates, plain);
    report("core_patched", entries, updates, patched);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (entries, updates, runs) = (
        arg("entries", 10_000),
        arg("updates", 2_000),
        arg("runs", 5),
    );
    let item = std::env::args().any(|a| a == "--change=item");
    FIELD.store(!item, std::sync::atomic::Ordering::Relaxed);
    // `--no-json-undo` leaves out the slow variant (for profiling the others).
    let skip_json = std::env::args().any(|a| a == "--no-json-undo");
    // `--core-only` measures the core's two variants alone (for profiling them).
    if std::env::args().any(|a| a == "--core-only") {
        core_variants(entries, updates, runs);
        return;
    }
    let data: Vec<Message> = (0..entries as u64)
        .map(|id| Message {
            id,
            user: format!("user{}", id % 97),
            text: format!("message number {id}"),
        })
        .collect();
    let api = Api::builder().build();
    let handle: Arc<Mutex<Option<Handle>>> = Arc::default();
    let keep = Arc::clone(&handle);
    let list = api
        .query::<u32, Vec<Message>>("messages")
        .query_fn(move |_: u32| {
            let data = data.clone();
            async move { Ok(data) }
        })
        .on_cache_entry_added(move |_, entry| {
            let keep = Arc::clone(&keep);
            async move {
                if let Ok((loaded, _)) = entry.data_loaded().await {
                    if let Ok(mut slot) = keep.lock() {
                        *slot = Some(loaded.clone());
                    }
                    loaded.removed().await;
                }
                Ok(())
            }
        })
        .build()
        .expect("a new endpoint");
    let sub = list.subscribe(1).expect("a key");
    sub.loaded().await.expect("loaded");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let Some(handle) = handle.lock().ok().and_then(|h| h.clone()) else {
        eprintln!("the lifecycle handler did not start");
        std::process::exit(1);
    };
    // Each variant writes texts the list does not hold at that moment, so every update is a
    // real change (an update to an equal text records nothing and its undo is free).
    let texts = ["plain a", "plain b"];
    // The change is made and undone (not a no-op on a missing element).
    let change = list
        .update_query_data(&1, |l| set_text(l, 5, "check"))
        .expect("updated");
    assert_eq!(change.patches.patches.0.len(), 1, "{:?}", change.patches);
    change.undo().expect("undone");
    let mut plain = Vec::new();
    let mut patched = Vec::new();
    let mut json_undo = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        for u in 0..updates {
            handle
                .update_cached_data(|l| set_text(l, (u * 7919) % entries, texts[u % 2]))
                .expect("updated");
        }
        plain.push(start.elapsed().as_secs_f64());

        let start = Instant::now();
        for u in 0..updates {
            let change = list
                .update_query_data(&1, |l| set_text(l, (u * 7919) % entries, "optimistic"))
                .expect("updated");
            change.undo().expect("undone");
        }
        patched.push(start.elapsed().as_secs_f64());

        if skip_json {
            continue;
        }
        let start = Instant::now();
        for u in 0..updates.min(200) {
            let change = list
                .update_query_data(&1, |l| {
                    set_text(l, 1 + (u * 7919) % (entries - 1), "optimistic")
                })
                .expect("updated");
            // Something else changes the entry first: the undo falls back to the patches.
            handle
                .update_cached_data(|l| set_text(l, 0, ["other a", "other b"][u % 2]))
                .expect("updated");
            change.undo().expect("undone");
        }
        json_undo.push(start.elapsed().as_secs_f64() * updates as f64 / updates.min(200) as f64);
    }
    core_variants(entries, updates, runs);
    report("plain", entries, updates, plain);
    report("patched", entries, updates, patched);
    if !skip_json {
        report("patched_json_undo", entries, updates, json_undo);
    }
}
