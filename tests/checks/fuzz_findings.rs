//! Bugs the fuzzers found, each pinned by a test named after it (the minimised inputs are also
//! replayed from `fuzz/regressions/` by `tests/checks/fuzz_corpus.rs`).

use livecache::core::CacheKey;
use livecache::core::{Cache, CacheConfig, EndpointConfig, PatchError};
use livecache::core::{Recording, TraceKind};
use livecache::ws::{Decoder, WsError};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Msg {
    id: u64,
    text: String,
}

/// `ws_frames`: serde reports a type error before a syntax error (`6\x1f` is not JSON, yet serde
/// said "invalid type: integer"), and a syntax-category error for valid JSON of the wrong shape
/// (`[10,0,null,null]` for a two-field struct: "trailing characters"). The decoder now checks the
/// syntax on its own when a frame does not decode.
#[test]
fn r22_decoder_tells_not_json_from_wrong_schema_whatever_serde_reports_first() {
    let decoder = Decoder::<Msg>::new(1024);
    assert!(matches!(
        decoder.decode(b"6\x1f", false),
        Some(Err(WsError::NotJson(_)))
    ));
    assert!(matches!(
        decoder.decode(b"[10,0,null,null]", false),
        Some(Err(WsError::Schema(_)))
    ));
    assert!(matches!(
        decoder.decode(b"{\"id\":1}", false),
        Some(Err(WsError::Schema(_)))
    ));
    assert!(matches!(
        decoder.decode(b"{\"id\":1,", false),
        Some(Err(WsError::NotJson(_)))
    ));
    let counts = decoder.stats().snapshot();
    assert_eq!((counts.not_json, counts.schema), (2, 2));
}

fn cache_with<D: livecache::core::CacheData>(data: D) -> (Cache<D>, CacheKey) {
    let mut cache = Cache::new(CacheConfig {
        recording: Recording::EventsWithPatches,
        ..Default::default()
    });
    let endpoint = cache
        .add_endpoint("a", EndpointConfig::default())
        .expect("endpoint names are distinct");
    let key = CacheKey::verbatim("a(1)");
    cache
        .upsert(0, endpoint, &key, data)
        .expect("the key is this endpoint's");
    (cache, key)
}

fn patch(value: serde_json::Value) -> json_patch::Patch {
    serde_json::from_value(value).expect("a valid patch document")
}

/// `patches`: a patch that fails after earlier operations applied, when json-patch's rollback of
/// those operations is itself invalid, panicked inside json-patch 5.0 ("unable to undo applied
/// patches"). The core now patches a scratch copy without json-patch's rollback.
#[test]
fn r19_failing_patch_whose_rollback_is_invalid_is_an_error_not_a_panic() {
    let (mut cache, key) = cache_with(vec![None::<u8>]);
    let move_to_root = patch(json!([
        {"op": "move", "from": "/0", "path": ""},
        {"op": "add", "path": "/-", "value": 0}
    ]));
    assert!(matches!(
        cache.patch_query_data(1, &key, &move_to_root),
        Err(PatchError::Apply(_))
    ));
    assert_eq!(
        cache.entry(&key).and_then(|e| e.data.cloned()),
        Some(vec![None])
    );

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        flag: Option<bool>,
        list: Vec<u8>,
        name: String,
    }
    let doc = Doc {
        flag: None,
        list: vec![],
        name: "a~b".into(),
    };
    let (mut cache, key) = cache_with(doc.clone());
    let dash_member = patch(json!([
        {"op": "add", "path": "/-", "value": 1},
        {"op": "move", "from": "/-", "path": "/name/-"}
    ]));
    assert!(cache.patch_query_data(1, &key, &dash_member).is_err());
    assert_eq!(cache.entry(&key).and_then(|e| e.data.cloned()), Some(doc));
}

/// `patches`: the `updated` event of `patch_query_data` recorded the diff to the patched JSON,
/// not to the data's JSON; when the data type normalises the patched JSON (a removed optional
/// field is `null` again) the recorded patches did not describe the change. They now do, so the
/// recorded inverse restores the data.
#[test]
fn r23_patch_query_data_records_the_change_of_the_data_itself() {
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        flag: Option<bool>,
        n: u8,
    }
    let (mut cache, key) = cache_with(Doc {
        flag: Some(true),
        n: 1,
    });
    cache
        .patch_query_data(1, &key, &patch(json!([{"op": "remove", "path": "/flag"}])))
        .expect("removing an optional field applies");
    let data = cache.entry(&key).and_then(|e| e.data.cloned());
    assert_eq!(data, Some(Doc { flag: None, n: 1 }));
    let recorded = cache.trace().iter().rev().find_map(|e| match &e.kind {
        TraceKind::Updated { patches, .. } => patches.clone(),
        _ => None,
    });
    let recorded = recorded.expect("the update records its patches");
    assert_eq!(
        serde_json::to_value(&recorded.patches).ok(),
        Some(json!([{"op": "replace", "path": "/flag", "value": null}]))
    );
    let mut now = json!({"flag": null, "n": 1});
    json_patch::patch(&mut now, &recorded.inverse_patches)
        .expect("the inverse applies to the data");
    assert_eq!(now, json!({"flag": true, "n": 1}));
}
