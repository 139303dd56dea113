//! The mixed-state entry: how the store holds entries of different typed states.

use super::{Entry, Loaded, Loading, Removed, Streaming};
use crate::core::status::{Phase, Status};

/// An entry in one of its live typed states: how the map holds entries of mixed states. Only
/// the typed transitions move between variants.
#[derive(Debug)]
pub(crate) enum AnyEntry<D, E> {
    Loading(Entry<Loading, E>),
    Loaded(Entry<Loaded<D>, E>),
    Streaming(Entry<Streaming<D>, E>),
}

/// Cloning a whole cache (for exhaustive exploration, say) makes a separate universe.
impl<D: Clone, E: Clone> Clone for AnyEntry<D, E> {
    fn clone(&self) -> Self {
        match self {
            AnyEntry::Loading(e) => AnyEntry::Loading(e.duplicate()),
            AnyEntry::Loaded(e) => AnyEntry::Loaded(e.duplicate()),
            AnyEntry::Streaming(e) => AnyEntry::Streaming(e.duplicate()),
        }
    }
}

macro_rules! each_state {
    ($any:expr, $e:ident => $body:expr) => {
        match $any {
            AnyEntry::Loading($e) => $body,
            AnyEntry::Loaded($e) => $body,
            AnyEntry::Streaming($e) => $body,
        }
    };
}

impl<D: PartialEq, E> AnyEntry<D, E> {
    #[inline]
    pub(crate) fn lifetime(&self) -> u64 {
        each_state!(self, e => e.lifetime())
    }
    #[inline]
    pub(crate) fn in_flight(&self) -> Option<u64> {
        each_state!(self, e => e.in_flight())
    }
    #[inline]
    pub(crate) fn fulfilled_at(&self) -> Option<u64> {
        each_state!(self, e => e.fulfilled_at())
    }
    #[inline]
    pub(crate) fn status(&self) -> Status {
        each_state!(self, e => e.status())
    }
    #[inline]
    pub(crate) fn error(&self) -> Option<&E> {
        each_state!(self, e => e.error())
    }
    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        match self {
            AnyEntry::Loading(_) => Phase::Loading,
            AnyEntry::Loaded(_) => Phase::Loaded,
            AnyEntry::Streaming(_) => Phase::Streaming,
        }
    }
    #[inline]
    pub(crate) fn data(&self) -> Option<&D> {
        match self {
            AnyEntry::Loading(_) => None,
            AnyEntry::Loaded(e) => Some(e.data()),
            AnyEntry::Streaming(e) => Some(e.data()),
        }
    }
    #[inline]
    pub(crate) fn settle(&mut self) {
        each_state!(self, e => e.settle())
    }
    #[inline]
    pub(crate) fn reject(&mut self, error: E) {
        each_state!(self, e => e.reject(error))
    }
    #[inline]
    pub(crate) fn begin_request(&mut self, request: u64) {
        each_state!(self, e => e.begin_request(request))
    }
    #[inline]
    pub(crate) fn remove(self) -> Entry<Removed, E> {
        each_state!(self, e => e.remove())
    }
    /// New data from a request or an upsert, `changed` saying whether it differs from the data
    /// held (compared by the caller; ignored when there is none). Returns (data changed, first
    /// data of the lifetime).
    #[inline]
    pub(crate) fn receive(self, data: D, now: u64, changed: bool) -> (AnyEntry<D, E>, bool, bool) {
        match self {
            AnyEntry::Loading(e) => (AnyEntry::Loaded(e.load(data, now)), true, true),
            AnyEntry::Loaded(mut e) => {
                e.store(data, now, changed);
                (AnyEntry::Loaded(e), changed, false)
            }
            AnyEntry::Streaming(mut e) => {
                e.store(data, now, changed);
                (AnyEntry::Streaming(e), changed, false)
            }
        }
    }
}
