//! RFC 6902 patches: the change an update made, and its inverse (SPEC R15, R18, R19).
//!
//! Patches are produced with the `json-patch` crate: the forward patch is the diff from the old
//! value to the new one, the inverse the diff from the new to the old. Applying the inverse to the
//! new value restores the old one.
//!
//! ```
//! use livecache::core::PatchSet;
//! use serde_json::json;
//!
//! let set = PatchSet::between(&json!({"contents": "TODO"}), &json!({"contents": "I love cheese!"}));
//! assert_eq!(
//!     serde_json::to_value(&set.patches).unwrap(),
//!     json!([{"op": "replace", "path": "/contents", "value": "I love cheese!"}])
//! );
//! let mut doc = json!({"contents": "I love cheese!"});
//! json_patch::patch(&mut doc, &set.inverse_patches).unwrap();
//! assert_eq!(doc, json!({"contents": "TODO"}));
//! ```

use serde::{Deserialize, Serialize};

pub use json_patch::Patch;

/// The change made by one update, as RFC 6902 patches (JSON Pointer paths), and its inverse.
///
/// ```
/// use livecache::core::PatchSet;
/// let unchanged = PatchSet::between(&serde_json::json!([1, 2]), &serde_json::json!([1, 2]));
/// assert!(unchanged.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSet {
    /// Applied to the old value, gives the new value.
    pub patches: Patch,
    /// Applied to the new value, gives the old value back.
    pub inverse_patches: Patch,
}

impl PatchSet {
    /// The patches that turn `before` into `after`, and back.
    ///
    /// ```
    /// use livecache::core::PatchSet;
    /// use serde_json::json;
    /// let set = PatchSet::between(&json!([1]), &json!([1, 2]));
    /// assert_eq!(set.patches.0.len(), 1);
    /// assert_eq!(set.inverse_patches.0.len(), 1);
    /// ```
    pub fn between(before: &serde_json::Value, after: &serde_json::Value) -> PatchSet {
        PatchSet {
            patches: json_patch::diff(before, after),
            inverse_patches: json_patch::diff(after, before),
        }
    }

    /// Whether the update changed nothing (both patch lists are empty).
    ///
    /// ```
    /// assert!(livecache::core::PatchSet::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.patches.0.is_empty() && self.inverse_patches.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_set_is_empty_only_without_patches_either_way() {
        assert!(PatchSet::default().is_empty());
        let one: Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/-","value":1}]"#).unwrap_or_default();
        let forward = PatchSet {
            patches: one.clone(),
            ..PatchSet::default()
        };
        let inverse = PatchSet {
            inverse_patches: one,
            ..PatchSet::default()
        };
        assert!(!forward.is_empty());
        assert!(!inverse.is_empty());
    }
}
