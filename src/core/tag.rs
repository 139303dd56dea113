//! Tags (R38): what an entry provides and an invalidation names, as RTK's `{ type, id }`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tag an entry provides, or one an invalidation names (R38, RTK's `{ type, id }`). An
/// invalidation by a tag without an id reaches every entry providing a tag of that kind; one with
/// an id reaches the entries providing exactly that tag.
///
/// ```
/// use livecache::core::Tag;
/// let post = Tag::id("Post", 7);
/// assert!(Tag::kind("Post").reaches(&post));   // every Post
/// assert!(post.reaches(&Tag::id("Post", 7)));
/// assert!(!post.reaches(&Tag::id("Post", 8)));
/// assert!(!post.reaches(&Tag::kind("Post")));   // RTK: the list tag is invalidated by kind only
/// assert_eq!(post.to_string(), "Post:7");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// The kind (RTK's `type`).
    pub kind: String,
    /// The id, if the tag names one thing of its kind.
    pub id: Option<String>,
}

impl Tag {
    /// A tag of a whole kind.
    pub fn kind(kind: impl Into<String>) -> Tag {
        Tag {
            kind: kind.into(),
            id: None,
        }
    }

    /// A tag of one thing of a kind.
    pub fn id(kind: impl Into<String>, id: impl fmt::Display) -> Tag {
        Tag {
            kind: kind.into(),
            id: Some(id.to_string()),
        }
    }

    /// Whether invalidating `self` reaches an entry that provides `provided`.
    pub fn reaches(&self, provided: &Tag) -> bool {
        self.kind == provided.kind && (self.id.is_none() || self.id == provided.id)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}:{id}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_reads_as_its_kind_and_id() {
        assert_eq!(Tag::id("Post", 7).to_string(), "Post:7");
        assert_eq!(Tag::kind("Post").to_string(), "Post");
    }

    #[test]
    fn a_kind_reaches_its_whole_kind_and_an_id_only_itself() {
        let (post, other, user) = (Tag::id("Post", 7), Tag::id("Post", 8), Tag::id("User", 7));
        assert!(Tag::kind("Post").reaches(&post));
        assert!(Tag::kind("Post").reaches(&Tag::kind("Post")));
        assert!(!Tag::kind("User").reaches(&post));
        assert!(post.reaches(&post));
        assert!(!post.reaches(&other));
        assert!(!post.reaches(&user));
        assert!(!post.reaches(&Tag::kind("Post")));
    }
}
