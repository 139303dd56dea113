//! Where a recording draft's value is in the entry's data (R15, R18): the root, or one step
//! below the value of the draft it was taken from. The steps are a chain of borrowed links, so
//! taking a part of the data — an element, a field, a map's value — costs no allocation; the
//! JSON Pointer is written only when a change is recorded.

use json_patch::jsonptr::{PointerBuf, Token};

/// One step down: an element's index, a field's name, a map key's token.
#[derive(Debug)]
pub(crate) enum PathToken {
    /// The same value (a layer's typed view of it).
    Here,
    /// An element of a list.
    Index(usize),
    /// A field of a struct, by its name in the JSON.
    Name(&'static str),
    /// A map's key, as a JSON Pointer token.
    Key(Token<'static>),
}

impl PathToken {
    /// Append this step to `pointer` as a token (the slow way: each token its own text).
    fn push_onto(&self, pointer: &mut PointerBuf) {
        match self {
            PathToken::Here => {}
            PathToken::Index(index) => pointer.push_back(Token::from(*index)),
            PathToken::Name(name) => pointer.push_back(Token::new(*name)),
            PathToken::Key(token) => pointer.push_back(token.clone()),
        }
    }

    /// Append this step, encoded, to the text of a JSON Pointer.
    fn write_onto(&self, pointer: &mut String) {
        match self {
            PathToken::Here => {}
            PathToken::Index(index) => {
                // The digits on the stack: an index token needs no text of its own.
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                let mut n = *index;
                loop {
                    at -= 1;
                    digits[at] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                pointer.push('/');
                pointer.push_str(std::str::from_utf8(&digits[at..]).unwrap_or("0"));
            }
            PathToken::Name(name) => {
                pointer.push('/');
                // Borrowed unless the name has a `/` or `~` to escape.
                pointer.push_str(Token::new(*name).encoded());
            }
            PathToken::Key(token) => {
                pointer.push('/');
                pointer.push_str(token.encoded());
            }
        }
    }
}

/// A place in the entry's data: a step below a parent place, or the root.
#[derive(Debug)]
pub(crate) struct DraftPath<'a> {
    parent: Option<&'a DraftPath<'a>>,
    token: PathToken,
}

impl DraftPath<'static> {
    /// The entry's data itself.
    pub(crate) fn root() -> Self {
        DraftPath {
            parent: None,
            token: PathToken::Here,
        }
    }
}

impl<'a> DraftPath<'a> {
    /// The place `token` below this one.
    pub(crate) fn below(&'a self, token: PathToken) -> DraftPath<'a> {
        DraftPath {
            parent: Some(self),
            token,
        }
    }

    /// This place's JSON Pointer.
    pub(crate) fn pointer(&self) -> PointerBuf {
        self.pointer_with(&PathToken::Here)
    }

    /// The JSON Pointer of the place `token` below this one: its text written once, in one
    /// allocation for the usual depths.
    pub(crate) fn pointer_with(&self, token: &PathToken) -> PointerBuf {
        let mut text = String::with_capacity(32);
        self.each_token(&mut |step| step.write_onto(&mut text));
        token.write_onto(&mut text);
        // Every token was written encoded, so the text parses (the check costs one pass); if it
        // did not, the pointer is built token by token instead.
        PointerBuf::parse(text).unwrap_or_else(|_| {
            let mut pointer = PointerBuf::new();
            self.each_token(&mut |step| step.push_onto(&mut pointer));
            token.push_onto(&mut pointer);
            pointer
        })
    }

    /// Each step from the root down to this place, in order.
    fn each_token(&self, visit: &mut impl FnMut(&PathToken)) {
        if let Some(parent) = self.parent {
            parent.each_token(visit);
        }
        visit(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_writes_its_steps_from_the_root_escaped() {
        let root = DraftPath::root();
        let list = root.below(PathToken::Name("list"));
        let item = list.below(PathToken::Index(1_203));
        let same = item.below(PathToken::Here);
        let key = same.below(PathToken::Key(Token::new("a/b~c")));
        assert_eq!(root.pointer().as_str(), "");
        assert_eq!(key.pointer().as_str(), "/list/1203/a~1b~0c");
        assert_eq!(list.pointer_with(&PathToken::Index(0)).as_str(), "/list/0");
        assert_eq!(
            root.pointer_with(&PathToken::Index(usize::MAX)).as_str(),
            format!("/{}", usize::MAX)
        );
    }

    #[test]
    fn the_text_written_at_once_is_the_pointer_built_token_by_token() {
        let root = DraftPath::root();
        let names = ["a", "a/b", "~", "", "x~1y", "日本"];
        for name in names {
            let field = root.below(PathToken::Name(name));
            let key = field.below(PathToken::Key(Token::new(name.to_owned())));
            for last in [
                PathToken::Here,
                PathToken::Index(0),
                PathToken::Index(987_654),
            ] {
                let mut slowly = PointerBuf::new();
                key.each_token(&mut |step| step.push_onto(&mut slowly));
                last.push_onto(&mut slowly);
                assert_eq!(key.pointer_with(&last), slowly, "{name:?} then {last:?}");
            }
        }
    }
}
