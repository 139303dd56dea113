//! `patches`: `PatchSet::between` round trips, the patches a draft records as a recipe changes
//! a document (against the change itself), and arbitrary patches through
//! `Cache::patch_query_data`.

use arbitrary::{Result, Unstructured};
use livecache::core::CacheKey;
use livecache::core::{
    Cache, CacheConfig, CacheData, EndpointConfig, Keep, PatchError, PatchSet, Phase,
};
use livecache::core::{Recording, TraceKind, UpdateSource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::json;
use crate::patch_recording::{Change, Doc, check_update};

/// How many patches one input sends through each cache.
const MAX_PATCHES: usize = 8;

/// A typed entry, so that patches can also produce JSON that is not a value of the data type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Typed {
    list: Vec<u8>,
    name: String,
    flag: Option<bool>,
}

/// Paths that exist in `Typed` documents, paths that never exist, and malformed ones.
const PATHS: &[&str] = &[
    "",
    "/",
    "/list",
    "/list/0",
    "/list/1",
    "/list/-",
    "/list/01",
    "/list/99",
    "/list/-1",
    "/list/18446744073709551616",
    "/name",
    "/name/0",
    "/flag",
    "/extra",
    "/a",
    "/0",
    "/-",
    "/~0",
    "/~1",
    "/a~1b",
    "/~2",
    "a",
];

const OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test"];

/// A path: a pointer into the current document (possibly extended by one token), a vocabulary
/// path, or an arbitrary string.
fn path(u: &mut Unstructured<'_>, doc: &Value) -> Result<String> {
    let p = match u.choose_index(4)? {
        0 | 1 => {
            let all = json::pointers(doc, 32);
            let base = u.choose(&all)?.clone();
            match u.choose_index(4)? {
                0 => format!("{base}/-"),
                1 => format!("{base}/0"),
                2 => format!("{base}/{}", json::string(u)?),
                _ => base,
            }
        }
        2 => (*u.choose(PATHS)?).to_owned(),
        _ => u.arbitrary::<String>()?.chars().take(12).collect(),
    };
    Ok(p)
}

/// A value to add, replace or test: from the document, a fitting small value, or arbitrary.
fn operand(u: &mut Unstructured<'_>, doc: &Value) -> Result<Value> {
    let v = match u.choose_index(4)? {
        0 => json!(u.arbitrary::<u8>()?),
        1 => {
            // A node of the document itself (a `test` that passes, a `replace` that changes
            // nothing, …).
            let all = json::pointers(doc, 32);
            let at = u.choose(&all)?;
            doc.pointer(at).cloned().unwrap_or(Value::Null)
        }
        2 => json!([u.arbitrary::<u8>()?, 300, -1]),
        _ => json::value(u, 3)?,
    };
    Ok(v)
}

/// An RFC 6902 patch of up to four operations over the document, often invalid. Operations
/// that cannot even be expressed (a malformed pointer) are left out.
fn patch(u: &mut Unstructured<'_>, doc: &Value) -> Result<json_patch::Patch> {
    let n = u.int_in_range(0..=4)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let op = *u.choose(OPS)?;
        let mut item = json!({ "op": op, "path": path(u, doc)? });
        if matches!(op, "add" | "replace" | "test") {
            item["value"] = operand(u, doc)?;
        }
        if matches!(op, "move" | "copy") {
            item["from"] = Value::String(path(u, doc)?);
        }
        if let Ok(parsed) = serde_json::from_value::<json_patch::PatchOperation>(item) {
            ops.push(parsed);
        }
    }
    Ok(json_patch::Patch(ops))
}

/// What `patch_query_data` must do, stated directly from `docs/semantics.md`: apply the patch to
/// the data's JSON; a failing operation is `Apply`; JSON that is not a `D` is `Schema`;
/// otherwise the new data.
fn expected<D: CacheData>(old: &D, patch: &json_patch::Patch) -> Outcome<D> {
    let Ok(mut doc) = old.to_json() else {
        return Outcome::Schema;
    };
    // A scratch copy: no rollback needed (json_patch::patch's rollback can panic).
    if json_patch::patch_unsafe(&mut doc, patch).is_err() {
        return Outcome::Apply;
    }
    match old.same_type_from_json(doc) {
        Ok(new) => Outcome::Data(new),
        Err(_) => Outcome::Schema,
    }
}

enum Outcome<D> {
    Apply,
    Schema,
    Data(D),
}

/// Send arbitrary patches through `patch_query_data` on an entry holding `initial`, checking
/// each result against [`expected`], the data, the phase and the trace.
fn through_cache<D>(u: &mut Unstructured<'_>, initial: D) -> Result<()>
where
    D: CacheData + std::fmt::Debug + Serialize,
{
    let mut cache: Cache<D> = Cache::new(CacheConfig {
        keep: Keep::Never,
        recording: Recording::EventsWithPatches,
    });
    let ep = cache
        .add_endpoint(
            "p",
            EndpointConfig {
                keep: None,
                has_lifecycle: true,
                ..EndpointConfig::default()
            },
        )
        .expect("endpoint names are distinct");
    let key = CacheKey::verbatim("p(1)");
    let absent = CacheKey::verbatim("p(2)");
    cache
        .upsert(0, ep, &key, initial)
        .expect("the key is this endpoint's");
    for now in 1..=MAX_PATCHES as u64 {
        if u.is_empty() {
            break;
        }
        let (before, phase) = match cache.entry(&key) {
            Some(view) => (view.data.cloned(), view.phase),
            None => panic!("the entry vanished"),
        };
        let Some(before) = before else {
            panic!("an upserted entry has data")
        };
        let doc = before.to_json().unwrap_or(Value::Null);
        let p = patch(u, &doc)?;
        let events = cache.trace().len();
        let outcome = expected(&before, &p);
        assert_eq!(
            cache.patch_query_data(now, &absent, &p),
            Err(PatchError::NoEntry)
        );
        let result = cache.patch_query_data(now, &key, &p);
        while cache.poll_effect().is_some() {}
        let view = cache.entry(&key).expect("patching never removes the entry");
        let after = view.data.cloned().expect("patching never drops the data");
        let new_phase = view.phase;
        let new_events = &cache.trace()[events..];
        let unchanged = |what: &str| {
            assert_eq!(after, before, "{what}: the data changed\npatch: {p:?}");
            assert_eq!(new_phase, phase, "{what}: the phase changed");
            assert!(
                new_events.is_empty(),
                "{what}: events recorded: {new_events:?}"
            );
        };
        match (result, outcome) {
            (Err(PatchError::Apply(_)), Outcome::Apply) => unchanged("apply error"),
            (Err(PatchError::Schema(_)), Outcome::Schema) => unchanged("schema error"),
            (Ok(()), Outcome::Data(new)) if new == before => unchanged("equal data"),
            (Ok(()), Outcome::Data(new)) => {
                assert_eq!(after, new, "patched data\npatch: {p:?}");
                assert_eq!(new_phase, Phase::Streaming, "a changed entry streams");
                let [event] = new_events else {
                    panic!("one event per applied patch, got {new_events:?}")
                };
                let TraceKind::Updated {
                    source: UpdateSource::PatchQueryData,
                    patches: Some(set),
                    ..
                } = &event.kind
                else {
                    panic!("expected updated(patch_query_data) with patches, got {event}")
                };
                // The recorded patches describe the change of the data itself (its JSON before
                // and after), not of the patched JSON the data was read from.
                let old_json = before.to_json().expect("serialises");
                let new_json = after.to_json().expect("serialises");
                round_trip(&old_json, &new_json, set);
            }
            (result, outcome) => panic!(
                "patch_query_data returned {result:?}, expected {}\npatch: {p:?}\ndata: {before:?}",
                match outcome {
                    Outcome::Apply => "an apply error".to_owned(),
                    Outcome::Schema => "a schema error".to_owned(),
                    Outcome::Data(d) => format!("Ok with {d:?}"),
                }
            ),
        }
    }
    Ok(())
}

/// `set.patches` turns `a` into `b`, `set.inverse_patches` turns `b` back into `a`.
fn round_trip(a: &Value, b: &Value, set: &PatchSet) {
    let mut forward = a.clone();
    if let Err(e) = json_patch::patch_unsafe(&mut forward, &set.patches) {
        panic!("forward patches do not apply: {e}\na: {a}\nb: {b}\nset: {set:?}");
    }
    assert_eq!(&forward, b, "forward patches\na: {a}\nset: {set:?}");
    let mut back = b.clone();
    if let Err(e) = json_patch::patch_unsafe(&mut back, &set.inverse_patches) {
        panic!("inverse patches do not apply: {e}\na: {a}\nb: {b}\nset: {set:?}");
    }
    assert_eq!(&back, a, "inverse patches\nb: {b}\nset: {set:?}");
    if a == b {
        assert!(set.is_empty(), "equal values, patches {set:?}");
    } else {
        assert!(!set.patches.0.is_empty(), "different values, no patch");
        assert!(
            !set.inverse_patches.0.is_empty(),
            "different values, no inverse"
        );
    }
}

/// The fuzz body: arbitrary JSON values `a` and `b` (`b` often an edit of `a`) must round-trip
/// through `PatchSet::between`; then arbitrary patches go through `patch_query_data` on an
/// entry holding JSON (`serde_json::Value`) and on one holding a typed struct.
///
/// # Panics
///
/// On a failed round trip, a panic inside the cache, or a `patch_query_data` that disagrees
/// with the semantics or changes anything on error.
pub fn patches(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let a = json::value(u, 0)?;
    let b = if u.ratio(3, 4)? {
        let mut b = a.clone();
        for _ in 0..u.int_in_range(1..=3)? {
            json::mutate(u, &mut b, 0)?;
        }
        b
    } else {
        json::value(u, 0)?
    };
    round_trip(&a, &b, &PatchSet::between(&a, &b));
    through_cache(u, a)?;
    let typed = Typed {
        list: u.arbitrary::<Vec<u8>>()?.into_iter().take(4).collect(),
        name: json::string(u)?,
        flag: u.arbitrary()?,
    };
    through_cache(u, typed)?;
    recorded(u)
}

/// Patches recorded by the draft's operations as a recipe runs, on a document of the shapes
/// users update, checked against the change itself
/// ([`crate::patch_recording::check_update`]).
fn recorded(u: &mut Unstructured<'_>) -> Result<()> {
    let doc: Doc = u.arbitrary()?;
    let count = u.int_in_range(0..=8usize)?;
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        // No recipe panics here: libFuzzer's panic hook aborts on any panic, caught or not (the
        // property test covers them).
        match u.arbitrary::<Change>()? {
            Change::Panic => {}
            change => changes.push(change),
        }
    }
    if let Err(violation) = check_update(&doc, &changes) {
        panic!("recorded patches: {violation}\ndoc: {doc:?}\nchanges: {changes:?}");
    }
    Ok(())
}
