//! Patches recorded at the cost of the change (SPEC R15, R18), checked against the change itself:
//! a document of the shapes users update (a `Vec` of structs, a `BTreeMap`, a `HashMap` with
//! number keys, nested `Vec`s, string fields), changes made through the draft's operations and,
//! for comparison, through the standard collections on a plain copy. Used by the property test
//! (`tests/checks/patch_recording.rs`) and the `patches` fuzz body.

use std::collections::{BTreeMap, HashMap};

use arbitrary::Arbitrary;
use livecache::core::{Cache, CacheKey, Draft, EndpointConfig, PatchSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The document the changes are made to.
#[derive(Arbitrary, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// A string field.
    pub title: String,
    /// A list of structs.
    pub items: Vec<Item>,
    /// A map with string keys.
    pub index: BTreeMap<String, u32>,
    /// A map with number keys (written as strings in JSON), of lists.
    pub tags: HashMap<u8, Vec<u8>>,
}

/// An element of [`Doc::items`].
#[derive(Arbitrary, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// A number field.
    pub id: u32,
    /// A string field.
    pub text: String,
    /// A nested list.
    pub marks: Vec<u8>,
}

/// One change. Indices are taken modulo the list's length (a change to an empty list's element
/// does nothing). The last four take plain mutable access (the whole-value fallback, at the
/// level named) or panic.
#[derive(Arbitrary, Clone, Debug, PartialEq)]
pub enum Change {
    /// `items.push`.
    Push(Item),
    /// `items.pop`.
    Pop,
    /// `items.insert`.
    Insert(u8, Item),
    /// `items.remove`.
    Remove(u8),
    /// `items.truncate`.
    Truncate(u8),
    /// `items.clear`.
    Clear,
    /// `title` set.
    SetTitle(String),
    /// An item's `text` set.
    ItemText(u8, String),
    /// A push to an item's `marks`.
    ItemMark(u8, u8),
    /// An item replaced.
    SetItem(u8, Item),
    /// `index.insert`.
    IndexInsert(String, u32),
    /// `index.remove`.
    IndexRemove(String),
    /// `tags.insert`.
    TagInsert(u8, Vec<u8>),
    /// `tags.remove`.
    TagRemove(u8),
    /// A push to a tag's list.
    TagPush(u8, u8),
    /// Plain access to `items`: keep the items whose id is not a multiple of `n + 1`.
    RetainItems(u8),
    /// Plain access to the whole document: a character appended to the title.
    RawTitle(char),
    /// Plain access to one item: its marks reversed.
    ReverseMarks(u8),
    /// The recipe panics here.
    Panic,
}

impl Change {
    /// Whether the change goes through the draft's recording operations only.
    pub fn precise(&self) -> bool {
        !matches!(
            self,
            Change::RetainItems(_) | Change::RawTitle(_) | Change::ReverseMarks(_) | Change::Panic
        )
    }

    /// The change on a plain document, with the standard collections.
    pub fn apply_plain(&self, doc: &mut Doc) {
        let len = doc.items.len();
        match self.clone() {
            Change::Push(item) => doc.items.push(item),
            Change::Pop => {
                doc.items.pop();
            }
            Change::Insert(i, item) => doc.items.insert(usize::from(i) % (len + 1), item),
            Change::Remove(i) if len > 0 => {
                doc.items.remove(usize::from(i) % len);
            }
            Change::Truncate(n) => doc.items.truncate(usize::from(n)),
            Change::Clear => doc.items.clear(),
            Change::SetTitle(t) => doc.title = t,
            Change::ItemText(i, t) if len > 0 => doc.items[usize::from(i) % len].text = t,
            Change::ItemMark(i, m) if len > 0 => doc.items[usize::from(i) % len].marks.push(m),
            Change::SetItem(i, item) if len > 0 => doc.items[usize::from(i) % len] = item,
            Change::IndexInsert(k, v) => {
                doc.index.insert(k, v);
            }
            Change::IndexRemove(k) => {
                doc.index.remove(&k);
            }
            Change::TagInsert(k, v) => {
                doc.tags.insert(k, v);
            }
            Change::TagRemove(k) => {
                doc.tags.remove(&k);
            }
            Change::TagPush(k, m) => {
                if let Some(list) = doc.tags.get_mut(&k) {
                    list.push(m);
                }
            }
            Change::RetainItems(n) => doc.items.retain(|it| it.id % (u32::from(n) + 1) != 0),
            Change::RawTitle(c) => doc.title.push(c),
            Change::ReverseMarks(i) if len > 0 => doc.items[usize::from(i) % len].marks.reverse(),
            Change::Remove(_)
            | Change::ItemText(..)
            | Change::ItemMark(..)
            | Change::SetItem(..)
            | Change::ReverseMarks(_)
            | Change::Panic => {}
        }
    }

    /// The change through a draft's operations.
    ///
    /// # Panics
    ///
    /// For [`Change::Panic`], on purpose.
    pub fn apply_draft(&self, d: &mut Draft<'_, Doc>) {
        let len = d.items.len();
        match self.clone() {
            Change::Push(item) => livecache::field!(d, items).push(item),
            Change::Pop => {
                livecache::field!(d, items).pop();
            }
            Change::Insert(i, item) => {
                livecache::field!(d, items).insert(usize::from(i) % (len + 1), item);
            }
            Change::Remove(i) if len > 0 => {
                livecache::field!(d, items).remove(usize::from(i) % len);
            }
            Change::Truncate(n) => livecache::field!(d, items).truncate(usize::from(n)),
            Change::Clear => livecache::field!(d, items).clear(),
            Change::SetTitle(t) => livecache::field!(d, title).set(t),
            Change::ItemText(i, t) if len > 0 => {
                if let Some(mut item) = livecache::field!(d, items).item_mut(usize::from(i) % len) {
                    livecache::field!(item, text).set(t);
                }
            }
            Change::ItemMark(i, m) if len > 0 => {
                if let Some(mut item) = livecache::field!(d, items).item_mut(usize::from(i) % len) {
                    livecache::field!(item, marks).push(m);
                }
            }
            Change::SetItem(i, new) if len > 0 => {
                if let Some(mut item) = livecache::field!(d, items).item_mut(usize::from(i) % len) {
                    item.set(new);
                }
            }
            Change::IndexInsert(k, v) => {
                livecache::field!(d, index).insert(k, v);
            }
            Change::IndexRemove(k) => {
                livecache::field!(d, index).remove(&k);
            }
            Change::TagInsert(k, v) => {
                livecache::field!(d, tags).insert(k, v);
            }
            Change::TagRemove(k) => {
                livecache::field!(d, tags).remove(&k);
            }
            Change::TagPush(k, m) => {
                if let Some(mut list) = livecache::field!(d, tags).value_mut(&k) {
                    list.push(m);
                }
            }
            Change::RetainItems(n) => {
                livecache::field!(d, items).retain(|it| it.id % (u32::from(n) + 1) != 0)
            }
            Change::RawTitle(c) => d.title.push(c),
            Change::ReverseMarks(i) if len > 0 => {
                if let Some(mut item) = livecache::field!(d, items).item_mut(usize::from(i) % len) {
                    item.marks.reverse();
                }
            }
            Change::Panic => panic!("a recipe panics on purpose"),
            Change::Remove(_)
            | Change::ItemText(..)
            | Change::ItemMark(..)
            | Change::SetItem(..)
            | Change::ReverseMarks(_) => {}
        }
    }
}

fn json(doc: &Doc) -> Value {
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

/// Run `changes` as one `update_query_data` on a cache entry holding `old`, and check:
///
/// - the entry holds what the changes make of a plain copy;
/// - the patches turn `old`'s JSON into the new data's, and the inverse patches turn it back;
/// - [`Cache::undo`] (the typed steps, as nothing changed since) restores `old` in the cache;
/// - a single precise change records no more operations than the whole-value diff;
/// - a recipe that panics changes nothing, and the panic reaches the caller.
///
/// # Errors
///
/// A description of the first property that does not hold.
pub fn check_update(old: &Doc, changes: &[Change]) -> Result<(), String> {
    let mut cache: Cache<Doc> = Cache::new(Default::default());
    let endpoint = cache
        .add_endpoint("doc", EndpointConfig::default())
        .map_err(|e| e.to_string())?;
    let key = CacheKey::verbatim("doc(1)");
    cache
        .upsert(0, endpoint, &key, old.clone())
        .map_err(|e| e.to_string())?;
    let panics = changes.contains(&Change::Panic);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.update_query_data_undoable(1, &key, |d| {
            for change in changes {
                change.apply_draft(d);
            }
        })
    }));
    let held = cache.entry(&key).and_then(|e| e.data).cloned();
    if panics {
        if outcome.is_ok() {
            return Err("the recipe's panic did not reach the caller".into());
        }
        if held.as_ref() != Some(old) {
            return Err(format!("a panicking recipe left {held:?}, not {old:?}"));
        }
        return Ok(());
    }
    let undo = outcome
        .map_err(|_| "the recipe panicked".to_string())?
        .map_err(|e| format!("the update was refused: {e}"))?;
    let set: PatchSet = undo.patches().clone();
    let mut expected = old.clone();
    for change in changes {
        change.apply_plain(&mut expected);
    }
    if held.as_ref() != Some(&expected) {
        return Err(format!(
            "the entry holds {held:?}, the changes make {expected:?}"
        ));
    }
    let (before, after) = (json(old), json(&expected));
    let mut forward = before.clone();
    json_patch::patch(&mut forward, &set.patches).map_err(|e| format!("patches: {e}"))?;
    if forward != after {
        return Err(format!(
            "the patches {:?} make {forward}, not {after}",
            set.patches
        ));
    }
    let mut back = after.clone();
    json_patch::patch(&mut back, &set.inverse_patches).map_err(|e| format!("inverse: {e}"))?;
    if back != before {
        return Err(format!(
            "the inverse {:?} makes {back}, not {before}",
            set.inverse_patches
        ));
    }
    if let [change] = changes
        && change.precise()
    {
        let diffed = json_patch::diff(&before, &after).0.len();
        if set.patches.0.len() > diffed {
            return Err(format!(
                "{change:?} recorded {} operations, the whole-value diff {diffed}",
                set.patches.0.len()
            ));
        }
    }
    // The typed undo (nothing changed since the update) puts the old data back.
    cache
        .undo(2, &key, undo)
        .map_err(|e| format!("undo: {e}"))?;
    let undone = cache.entry(&key).and_then(|e| e.data);
    if undone != Some(old) {
        return Err(format!("undo left {undone:?}, not {old:?}"));
    }
    Ok(())
}
