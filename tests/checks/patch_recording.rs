//! Patches at the cost of the change (SPEC R15, R18): the draft's operations record RFC 6902
//! patches as they change the data; levels a recipe takes plain mutable access to are diffed as
//! a whole. The property test checks random documents and changes against the change itself
//! (`livecache_check::patch_recording::check_update`); the rule tests pin the patches of the
//! shapes users update, through the core and through the runtime.

use arbitrary::Unstructured;
use livecache::core::{Cache, CacheKey, EndpointConfig, PatchSet, Recording};
use livecache_check::patch_recording::{Change, Doc, Item, check_update};
use proptest::prelude::*;
use serde_json::json;

/// A document and up to eight changes from fuzz-style bytes (the same builder the `patches` fuzz
/// body uses), so the property test and the fuzzer draw from one vocabulary.
fn document_and_changes(bytes: &[u8]) -> (Doc, Vec<Change>) {
    let mut u = Unstructured::new(bytes);
    let doc: Doc = u.arbitrary().unwrap_or_default();
    let count = u.int_in_range(0..=8usize).unwrap_or(0);
    let changes = (0..count)
        .map_while(|_| u.arbitrary::<Change>().ok())
        .collect();
    (doc, changes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// R15, R18: for a random document and random changes made through the draft (its recording
    /// operations, plain mutable access at any level, a panic), the entry holds what the same
    /// changes make of a plain copy; the patches turn the old JSON into the new and the inverse
    /// patches turn it back (also through `patch_query_data`); a single recorded change has no
    /// more operations than the whole-value diff; a panicking recipe changes nothing.
    #[test]
    fn r15_r18_recorded_patches_are_the_change_and_its_exact_inverse(
        bytes in proptest::collection::vec(any::<u8>(), 0..1536)
    ) {
        let (doc, changes) = document_and_changes(&bytes);
        if let Err(violation) = check_update(&doc, &changes) {
            return Err(TestCaseError::fail(format!("{violation}\ndoc: {doc:?}\nchanges: {changes:?}")));
        }
    }
}

fn item(id: u32) -> Item {
    Item {
        id,
        text: format!("message {id}"),
        marks: vec![],
    }
}

/// A cache holding `doc` under `doc(1)`, recording `recording`.
fn cache_with(doc: Doc, recording: Recording) -> (Cache<Doc>, CacheKey) {
    let mut cache: Cache<Doc> = Cache::new(livecache::core::CacheConfig {
        recording,
        ..Default::default()
    });
    let key = CacheKey::verbatim("doc(1)");
    let ep = cache
        .add_endpoint("doc", EndpointConfig::default())
        .expect("a new endpoint");
    cache.upsert(0, ep, &key, doc).expect("upserted");
    (cache, key)
}

fn ops(set: &PatchSet) -> (serde_json::Value, serde_json::Value) {
    (
        serde_json::to_value(&set.patches).expect("patches are JSON"),
        serde_json::to_value(&set.inverse_patches).expect("patches are JSON"),
    )
}

#[test]
fn r15_a_push_and_a_field_of_one_element_record_only_what_changed_in_a_large_entry() {
    let doc = Doc {
        items: (0..10_000).map(item).collect(),
        ..Doc::default()
    };
    let (mut cache, key) = cache_with(doc, Recording::Events);
    let pushed = cache
        .update_query_data(1, &key, |d| livecache::field!(d, items).push(item(10_000)))
        .expect("updated");
    assert_eq!(
        ops(&pushed),
        (
            json!([{"op": "add", "path": "/items/10000", "value": {"id": 10000, "text": "message 10000", "marks": []}}]),
            json!([{"op": "remove", "path": "/items/10000"}])
        )
    );
    let edited = cache
        .update_query_data(2, &key, |d| {
            if let Some(mut it) = livecache::field!(d, items).item_mut(5_000) {
                livecache::field!(it, text).set("edited".into());
            }
        })
        .expect("updated");
    assert_eq!(
        ops(&edited),
        (
            json!([{"op": "replace", "path": "/items/5000/text", "value": "edited"}]),
            json!([{"op": "replace", "path": "/items/5000/text", "value": "message 5000"}])
        )
    );
    // Removing from the front is one operation, where the whole-value diff shifts every element.
    let removed = cache
        .update_query_data(3, &key, |d| {
            livecache::field!(d, items).remove(0);
        })
        .expect("updated");
    assert_eq!(
        ops(&removed).0,
        json!([{"op": "remove", "path": "/items/0"}])
    );
}

#[test]
fn r15_map_keys_become_pointer_tokens_escaped_and_numbers_as_text() {
    let (mut cache, key) = cache_with(Doc::default(), Recording::Events);
    let set = cache
        .update_query_data(1, &key, |d| {
            livecache::field!(d, index).insert("a/b~c".into(), 1);
            livecache::field!(d, tags).insert(7, vec![1]);
            if let Some(mut list) = livecache::field!(d, tags).value_mut(&7) {
                list.push(2);
            }
        })
        .expect("updated");
    assert_eq!(
        ops(&set).0,
        json!([
            {"op": "add", "path": "/index/a~1b~0c", "value": 1},
            {"op": "add", "path": "/tags/7", "value": [1]},
            {"op": "add", "path": "/tags/7/1", "value": 2},
        ])
    );
}

#[test]
fn r15_plain_access_is_diffed_at_its_level_after_the_recorded_changes() {
    let doc = Doc {
        items: vec![item(1), item(2), item(3)],
        ..Doc::default()
    };
    let (mut cache, key) = cache_with(doc, Recording::Events);
    let set = cache
        .update_query_data(1, &key, |d| {
            livecache::field!(d, title).set("t".into());
            // `retain` has no recording form: `items` is diffed as a whole, under its path.
            livecache::field!(d, items).retain(|it| it.id != 2);
        })
        .expect("updated");
    let (forward, inverse) = ops(&set);
    assert_eq!(
        forward[0],
        json!({"op": "replace", "path": "/title", "value": "t"})
    );
    assert!(
        forward
            .as_array()
            .is_some_and(|ops| ops[1..].iter().all(|op| op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/items/")))),
        "{forward}"
    );
    // The inverse undoes the diff first, then the title.
    assert_eq!(
        inverse.as_array().and_then(|ops| ops.last()).cloned(),
        Some(json!({"op": "replace", "path": "/title", "value": ""}))
    );
}

#[test]
fn r15_the_trace_records_the_same_patches_when_it_records_patches() {
    let (mut cache, key) = cache_with(Doc::default(), Recording::EventsWithPatches);
    let lifetime = cache.entry(&key).expect("an entry").lifetime;
    let set = cache
        .update_cached(2, lifetime, livecache::core::Patches::NotWanted, |d| {
            livecache::field!(d, items).push(item(1));
        })
        .expect("updated");
    assert!(set.is_none());
    let traced = cache
        .trace()
        .iter()
        .find_map(|e| match &e.kind {
            livecache::core::TraceKind::Updated {
                patches: Some(p), ..
            } => Some(p.clone()),
            _ => None,
        })
        .expect("an update with patches");
    assert_eq!(
        ops(&traced).0,
        json!([{"op": "add", "path": "/items/0", "value": {"id": 1, "text": "message 1", "marks": []}}])
    );
}

#[tokio::test(start_paused = true)]
async fn r18_runtime_optimistic_update_records_the_change_and_undo_restores() {
    let api = livecache::Api::builder().build();
    let docs = api
        .query::<u32, Doc>("doc")
        .query_fn(|_: u32| async { Ok(Doc::default()) })
        .build()
        .expect("a new endpoint");
    let old = Doc {
        items: (0..100).map(item).collect(),
        ..Doc::default()
    };
    docs.upsert_query_data(1, old.clone()).expect("upserted");
    let optimistic = docs
        .update_query_data(&1, |d| {
            if let Some(mut it) = livecache::field!(d, items).item_mut(42) {
                livecache::field!(it, marks).push(9);
            }
            livecache::field!(d, index).insert("seen".into(), 42);
        })
        .expect("updated");
    assert_eq!(
        serde_json::to_value(&optimistic.patches.patches).expect("JSON"),
        json!([
            {"op": "add", "path": "/items/42/marks/0", "value": 9},
            {"op": "add", "path": "/index/seen", "value": 42},
        ])
    );
    optimistic.undo().expect("undone");
    let state = docs.state(&1).expect("a key");
    assert_eq!(state.data(), Some(&old));
}

#[test]
fn r18_undo_is_typed_while_the_entry_is_unchanged_and_patches_after_a_later_change() {
    let doc = Doc {
        items: (0..10).map(item).collect(),
        ..Doc::default()
    };
    let (mut cache, key) = cache_with(doc.clone(), Recording::Events);
    // Unchanged since: the typed steps undo it.
    let undo = cache
        .update_query_data_undoable(1, &key, |d| {
            livecache::field!(d, items).remove(3);
            livecache::field!(d, title).set("x".into());
        })
        .expect("updated");
    cache.undo(2, &key, undo).expect("undone");
    assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&doc));
    // Changed since (an append at the end): the inverse patches apply to the data as it is now,
    // and keep the later change, as RTK's undo does.
    let undo = cache
        .update_query_data_undoable(3, &key, |d| livecache::field!(d, title).set("y".into()))
        .expect("updated");
    cache
        .update_query_data(4, &key, |d| livecache::field!(d, items).push(item(10)))
        .expect("updated");
    cache.undo(5, &key, undo).expect("undone");
    let held = cache
        .entry(&key)
        .and_then(|e| e.data)
        .cloned()
        .expect("data");
    assert_eq!((held.title.as_str(), held.items.len()), ("", 11));
}

#[tokio::test(start_paused = true)]
async fn r18_a_numeric_entry_updates_by_compound_assignment_recorded_as_one_replace() {
    let api = livecache::Api::builder().build();
    let counter = api
        .query::<(), u64>("counter")
        .query_fn(|()| async { Ok(0) })
        .build()
        .expect("a new endpoint");
    counter.upsert_query_data((), 41).expect("upserted");
    let change = counter
        .update_query_data(&(), |n| *n += 1)
        .expect("updated");
    assert_eq!(
        ops(&change.patches),
        (
            json!([{"op": "replace", "path": "", "value": 42}]),
            json!([{"op": "replace", "path": "", "value": 41}])
        )
    );
    assert_eq!(counter.state(&()).expect("a key").data(), Some(&42));
    change.undo().expect("undone");
    assert_eq!(counter.state(&()).expect("a key").data(), Some(&41));
}

/// Data whose whole JSON form does not exist (a map keyed by pairs: JSON keys are strings).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Board {
    cells: Vec<u32>,
    by_pair: std::collections::BTreeMap<(u8, u8), u8>,
}

/// R18: while the entry is as the update left it, the undo puts the change back on the typed
/// data, step by step, without the data's JSON: it works even for data that has none, where
/// applying the inverse patches (which needs the whole data as JSON) fails.
#[test]
fn r18_an_undo_on_the_entry_as_left_needs_no_json_of_the_data() {
    let mut cache: Cache<Board> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint("board", EndpointConfig::default())
        .expect("a new endpoint");
    let key = CacheKey::verbatim("board(1)");
    let board = Board {
        cells: vec![1, 2, 3],
        by_pair: [((0, 1), 7)].into_iter().collect(),
    };
    assert!(serde_json::to_value(&board).is_err(), "no JSON form");
    cache.upsert(0, ep, &key, board.clone()).expect("upserted");
    let undo = cache
        .update_query_data_undoable(1, &key, |b| {
            let mut cells = livecache::field!(b, cells);
            if let Some(mut cell) = cells.item_mut(1) {
                cell.set(20);
            }
        })
        .expect("updated");
    assert_eq!(
        serde_json::to_value(undo.patches()).expect("JSON"),
        json!({
            "patches": [{"op": "replace", "path": "/cells/1", "value": 20}],
            "inverse_patches": [{"op": "replace", "path": "/cells/1", "value": 2}],
        })
    );
    assert_eq!(
        cache
            .entry(&key)
            .and_then(|e| e.data)
            .map(|b| b.cells.clone()),
        Some(vec![1, 20, 3])
    );
    cache.undo(2, &key, undo).expect("undone on the typed data");
    assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&board));
    // The same inverse applied as patches needs the data's JSON, which it has not.
    let inverse: livecache::core::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/cells/1", "value": 2}]))
            .expect("a patch");
    assert!(cache.patch_query_data(3, &key, &inverse).is_err());
}

/// R18: once something else changed the entry, an undo applies the inverse patches to the data
/// as it is now (RTK's behaviour), not the typed steps, which would undo the other change: here
/// the optimistic push is removed by its index, where a typed undo (a pop) would take the newer
/// message instead.
#[test]
fn r18_an_undo_after_another_change_applies_the_inverse_patches() {
    let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint("list", EndpointConfig::default())
        .expect("a new endpoint");
    let key = CacheKey::verbatim("list(1)");
    cache.upsert(0, ep, &key, vec![1, 2, 3]).expect("upserted");
    let lifetime = cache.entry(&key).map(|e| e.lifetime).expect("live");
    let undo = cache
        .update_query_data_undoable(1, &key, |l| l.push(10))
        .expect("updated");
    cache
        .update_cached(2, lifetime, livecache::core::Patches::NotWanted, |l| {
            l.push(11)
        })
        .expect("updated");
    cache.undo(3, &key, undo).expect("undone");
    assert_eq!(
        cache.entry(&key).and_then(|e| e.data),
        Some(&vec![1, 2, 3, 11])
    );
}

/// R18, R23: an undo is traced as a `patch_query_data` update, with its patches (the update's
/// inverse) only when the cache records patches.
#[test]
fn r18_r23_an_undo_is_traced_with_its_patches_only_when_recording_them() {
    for recording in [Recording::Events, Recording::EventsWithPatches] {
        let mut cache: Cache<Vec<u32>> = Cache::new(livecache::core::CacheConfig {
            recording,
            ..Default::default()
        });
        let ep = cache
            .add_endpoint("list", EndpointConfig::default())
            .expect("a new endpoint");
        let key = CacheKey::verbatim("list(1)");
        cache.upsert(0, ep, &key, vec![1]).expect("upserted");
        let undo = cache
            .update_query_data_undoable(1, &key, |l| l.push(2))
            .expect("updated");
        cache.undo(2, &key, undo).expect("undone");
        let last = cache.trace().last().map(|e| e.kind.clone());
        let Some(livecache::core::TraceKind::Updated {
            source, patches, ..
        }) = last
        else {
            panic!("the undo is traced as an update: {last:?}");
        };
        assert_eq!(source, livecache::core::UpdateSource::PatchQueryData);
        let expected = (recording == Recording::EventsWithPatches).then(|| {
            json!({
                "patches": [{"op": "remove", "path": "/1"}],
                "inverse_patches": [{"op": "add", "path": "/1", "value": 2}],
            })
        });
        assert_eq!(
            patches.map(|p| serde_json::to_value(p).expect("JSON")),
            expected
        );
    }
}
