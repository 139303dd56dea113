//! The typestate entry: one type per lifecycle state, consuming transitions, and sealed
//! capability traits that gate what each state can do (SPEC §2).
//!
//! ```text
//!   Added ──start_request──▶ Loading ──load──▶ Loaded ──update (changed)──▶ Streaming
//!     └──────────load (upsert)─────────────────▲
//!   Added | Loading | Loaded | Streaming ──remove──▶ Removed      (no way out of Removed)
//! ```
//!
//! Illegal transitions do not compile: there is no `update` on an entry without data, no
//! `load` (resolving data-loaded) on an entry that already has data, and nothing at all on
//! [`Removed`]. The compile-fail tests in `compile-fail/tests/ui` prove it.
//!
//! ```
//! use livecache::core::{Added, Entry, Updated};
//!
//! let added: Entry<Added> = Entry::new(1);
//! let loading = added.start_request(7);
//! assert_eq!(loading.in_flight(), Some(7));
//! let mut loaded = loading.load(vec![1u8], 0);         // data_loaded resolves, exactly once
//! assert_eq!(loaded.data(), &vec![1]);
//! let streaming = match loaded.update(|d| d.push(2)) {  // the first applied update
//!     Updated::Changed(streaming) => streaming,
//!     Updated::Unchanged(_) => unreachable!(),
//! };
//! assert_eq!(streaming.data(), &vec![1, 2]);
//! let removed = streaming.remove();
//! assert!(removed.loaded());
//! ```

use crate::core::status::{Phase, Status};

mod sealed {
    /// Only this module's state types are states.
    pub trait Sealed {}

    /// The pending data-loaded promise of a lifetime: not `Clone`, unnameable outside this
    /// module, consumed by `Entry::load`.
    #[derive(Debug)]
    pub struct DataLoadedPromise(pub(super) ());

    /// The states that hold the promise give it up when their first data arrives.
    pub trait Awaiting {
        fn into_promise(self) -> DataLoadedPromise;
    }

    /// States the crate can duplicate when it duplicates a whole cache (a separate universe, so
    /// no promise is resolved twice in one).
    pub trait Duplicate {
        fn duplicate(&self) -> Self;
    }
}

use sealed::DataLoadedPromise;

/// A lifecycle state (type state). Sealed: only the five states of this module implement it.
///
/// ```
/// use livecache::core::{Phase, Loading, State};
/// assert_eq!(<Loading as State>::PHASE, Some(Phase::Loading));
/// ```
pub trait State: sealed::Sealed {
    /// The phase an observer sees for this state.
    const PHASE: Option<Phase>;
}

/// A state an entry can be removed from: every state but [`Removed`].
///
/// ```
/// use livecache::core::{Entry, Live};
/// fn drop_it<S: Live>(entry: Entry<S>) { let _removed = entry.remove(); }
/// drop_it(Entry::<_>::new(1));
/// ```
pub trait Live: State {}

/// A state still waiting for its first data: [`Added`] and [`Loading`]. Only these hold the
/// data-loaded promise, and [`Entry::load`] consumes it, so data-loaded resolves once.
///
/// ```
/// use livecache::core::{AwaitingData, Entry};
/// fn first_data<S: AwaitingData>(entry: Entry<S>) { let _loaded = entry.load(1u8, 0); }
/// first_data(Entry::<_>::new(1));
/// ```
pub trait AwaitingData: Live + sealed::Awaiting {}

/// A state past [`Added`]: a request has been started at least once, so another one can be.
///
/// ```
/// use livecache::core::{Entry, Started};
/// fn retry<S: Started>(entry: &mut Entry<S>, request: u64) { entry.begin_request(request); }
/// retry(&mut Entry::<_>::new(1).start_request(1), 2);
/// ```
pub trait Started: Live {}

/// A state that holds data: [`Loaded`] and [`Streaming`]. Only these can be read or updated.
///
/// ```
/// use livecache::core::{Entry, HasData};
/// fn read<S: HasData<Data = u8>>(entry: &Entry<S>) -> u8 { *entry.data() }
/// assert_eq!(read(&Entry::<_>::new(1).load(7u8, 0)), 7);
/// ```
pub trait HasData: Started {
    /// The data type.
    type Data;
    /// The data.
    fn data(&self) -> &Self::Data;
    /// The data, mutably.
    fn data_mut(&mut self) -> &mut Self::Data;
}

/// Just created; no request yet (type state).
///
/// ```
/// let entry: livecache::core::Entry<livecache::core::Added> = livecache::core::Entry::new(1);
/// ```
#[derive(Debug)]
pub struct Added {
    promise: DataLoadedPromise,
}

/// Waiting for its first data; a request may be in flight or may have been rejected (type state).
///
/// ```
/// let entry = livecache::core::Entry::<_>::new(1).start_request(1);
/// assert_eq!(entry.in_flight(), Some(1));
/// ```
#[derive(Debug)]
pub struct Loading {
    promise: DataLoadedPromise,
}

/// Holds data; not updated since it loaded (type state).
///
/// ```
/// let entry = livecache::core::Entry::<_>::new(1).load("data", 0);
/// assert_eq!(*entry.data(), "data");
/// ```
#[derive(Debug)]
pub struct Loaded<D> {
    data: D,
}

/// Holds data and has been updated at least once (type state).
///
/// ```
/// let entry = livecache::core::Entry::<_>::new(1).load(1, 0).overwrite(2);
/// assert_eq!(*entry.data(), 2);
/// ```
#[derive(Debug)]
pub struct Streaming<D> {
    data: D,
}

/// Left the cache (type state). There is no transition out of it.
///
/// ```
/// let removed = livecache::core::Entry::<_>::new(1).remove();
/// assert!(!removed.loaded());
/// ```
#[derive(Debug)]
pub struct Removed {
    loaded: bool,
}

impl sealed::Sealed for Added {}
impl sealed::Sealed for Loading {}
impl<D> sealed::Sealed for Loaded<D> {}
impl<D> sealed::Sealed for Streaming<D> {}
impl sealed::Sealed for Removed {}

impl State for Added {
    const PHASE: Option<Phase> = Some(Phase::Added);
}
impl State for Loading {
    const PHASE: Option<Phase> = Some(Phase::Loading);
}
impl<D> State for Loaded<D> {
    const PHASE: Option<Phase> = Some(Phase::Loaded);
}
impl<D> State for Streaming<D> {
    const PHASE: Option<Phase> = Some(Phase::Streaming);
}
impl State for Removed {
    const PHASE: Option<Phase> = None;
}

impl Live for Added {}
impl Live for Loading {}
impl<D> Live for Loaded<D> {}
impl<D> Live for Streaming<D> {}

impl AwaitingData for Added {}
impl AwaitingData for Loading {}

impl sealed::Awaiting for Added {
    fn into_promise(self) -> DataLoadedPromise {
        self.promise
    }
}
impl sealed::Awaiting for Loading {
    fn into_promise(self) -> DataLoadedPromise {
        self.promise
    }
}

impl Started for Loading {}
impl<D> Started for Loaded<D> {}
impl<D> Started for Streaming<D> {}

impl<D> HasData for Loaded<D> {
    type Data = D;
    fn data(&self) -> &D {
        &self.data
    }
    fn data_mut(&mut self) -> &mut D {
        &mut self.data
    }
}
impl<D> HasData for Streaming<D> {
    type Data = D;
    fn data(&self) -> &D {
        &self.data
    }
    fn data_mut(&mut self) -> &mut D {
        &mut self.data
    }
}

impl Clone for Added {
    fn clone(&self) -> Self {
        Added {
            promise: DataLoadedPromise(()),
        }
    }
}
impl Clone for Loading {
    fn clone(&self) -> Self {
        Loading {
            promise: DataLoadedPromise(()),
        }
    }
}

/// One cache entry in type state `S`, with an error type `E`.
///
/// Fields common to every state (lifetime, status, error, request in flight) live here; the
/// data lives inside the states that have it.
///
/// An entry is deliberately not `Clone`: a copy of an entry still waiting for data would hold a
/// second data-loaded promise, and a copy of a removed entry's live twin could outlive it.
///
/// ```
/// use livecache::core::Entry;
/// let entry = Entry::<_, String>::new(1).start_request(1);
/// assert_eq!(entry.lifetime(), 1);
/// ```
#[derive(Debug)]
pub struct Entry<S: State, E = String> {
    lifetime: u64,
    status: Status,
    error: Option<E>,
    fulfilled_at: Option<u64>,
    in_flight: Option<u64>,
    state: S,
}

/// The result of updating a [`Loaded`] entry: it moves to [`Streaming`] only when the recipe
/// took mutable access.
///
/// ```
/// use livecache::core::{Entry, Updated};
/// let loaded = Entry::<_>::new(1).load(vec![1], 0);
/// assert!(matches!(loaded.update(|d| d.push(2)), Updated::Changed(_)));
/// ```
#[derive(Debug)]
pub enum Updated<D, E> {
    /// The recipe only read; still loaded.
    Unchanged(Entry<Loaded<D>, E>),
    /// The update was applied: the entry is streaming.
    Changed(Entry<Streaming<D>, E>),
}

// ===== impl Entry: every state =====

impl<S: State, E> Entry<S, E> {
    /// The lifetime this entry belongs to.
    ///
    /// ```
    /// assert_eq!(livecache::core::Entry::<_>::new(4).lifetime(), 4);
    /// ```
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    /// The phase an observer sees (`None` once removed).
    ///
    /// ```
    /// use livecache::core::{Phase, Entry};
    /// assert_eq!(Entry::<_>::new(1).start_request(1).phase(), Some(Phase::Loading));
    /// ```
    pub fn phase(&self) -> Option<Phase> {
        S::PHASE
    }

    fn with_state<T: State>(self, state: T) -> Entry<T, E> {
        Entry {
            lifetime: self.lifetime,
            status: self.status,
            error: self.error,
            fulfilled_at: self.fulfilled_at,
            in_flight: self.in_flight,
            state,
        }
    }
}

// ===== impl Entry: duplication inside the crate =====

impl sealed::Duplicate for Loading {
    fn duplicate(&self) -> Self {
        Loading {
            promise: DataLoadedPromise(()),
        }
    }
}
impl<D: Clone> sealed::Duplicate for Loaded<D> {
    fn duplicate(&self) -> Self {
        Loaded {
            data: self.data.clone(),
        }
    }
}
impl<D: Clone> sealed::Duplicate for Streaming<D> {
    fn duplicate(&self) -> Self {
        Streaming {
            data: self.data.clone(),
        }
    }
}

impl<S: State + sealed::Duplicate, E: Clone> Entry<S, E> {
    pub(crate) fn duplicate(&self) -> Self {
        Entry {
            lifetime: self.lifetime,
            status: self.status,
            error: self.error.clone(),
            fulfilled_at: self.fulfilled_at,
            in_flight: self.in_flight,
            state: self.state.duplicate(),
        }
    }
}

// ===== impl Entry: live states =====

impl<S: Live, E> Entry<S, E> {
    /// The query status.
    ///
    /// ```
    /// use livecache::core::{Status, Entry};
    /// assert_eq!(Entry::<_>::new(1).start_request(1).status(), Status::Pending);
    /// ```
    pub fn status(&self) -> Status {
        self.status
    }

    /// The last rejection's error, until a fulfil or upsert clears it.
    ///
    /// ```
    /// let mut e = livecache::core::Entry::<_, String>::new(1).start_request(1);
    /// e.reject("boom".to_string());
    /// assert_eq!(e.error().map(String::as_str), Some("boom"));
    /// ```
    pub fn error(&self) -> Option<&E> {
        self.error.as_ref()
    }

    /// The request in flight, if any.
    ///
    /// ```
    /// assert_eq!(livecache::core::Entry::<_>::new(1).start_request(9).in_flight(), Some(9));
    /// ```
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// When the data was last fulfilled or upserted.
    ///
    /// ```
    /// let e = livecache::core::Entry::<_>::new(1).load(0u8, 42);
    /// assert_eq!(e.fulfilled_at(), Some(42));
    /// ```
    pub fn fulfilled_at(&self) -> Option<u64> {
        self.fulfilled_at
    }

    /// The current request was rejected: status `Rejected`, error stored, data kept, phase
    /// unchanged (SPEC R9).
    ///
    /// ```
    /// use livecache::core::{Status, Entry};
    /// let mut e = Entry::<_, String>::new(1).start_request(1);
    /// e.reject("boom".into());
    /// assert_eq!((e.status(), e.in_flight()), (Status::Rejected, None));
    /// ```
    pub fn reject(&mut self, error: E) {
        self.in_flight = None;
        self.status = Status::Rejected;
        self.error = Some(error);
    }

    /// Leave the cache. Consumes the entry: nothing can be done with it afterwards.
    ///
    /// ```
    /// let removed = livecache::core::Entry::<_>::new(1).start_request(1).remove();
    /// assert!(!removed.loaded());
    /// ```
    pub fn remove(self) -> Entry<Removed, E> {
        let loaded = S::PHASE.is_some_and(Phase::has_data);
        self.with_state(Removed { loaded })
    }
}

// ===== impl Entry<Added> =====

impl<E> Entry<Added, E> {
    /// A new entry for lifetime `lifetime`, with its data-loaded promise pending.
    ///
    /// ```
    /// use livecache::core::{Phase, Entry};
    /// assert_eq!(Entry::<_>::new(1).phase(), Some(Phase::Added));
    /// ```
    pub fn new(lifetime: u64) -> Self {
        Entry {
            lifetime,
            status: Status::Pending,
            error: None,
            fulfilled_at: None,
            in_flight: None,
            state: Added {
                promise: DataLoadedPromise(()),
            },
        }
    }

    /// Start the entry's first request (SPEC R1).
    ///
    /// ```
    /// assert_eq!(livecache::core::Entry::<_>::new(1).start_request(3).in_flight(), Some(3));
    /// ```
    pub fn start_request(self, request: u64) -> Entry<Loading, E> {
        let promise = sealed::Awaiting::into_promise(self.state);
        let mut entry = Entry {
            lifetime: self.lifetime,
            status: self.status,
            error: self.error,
            fulfilled_at: self.fulfilled_at,
            in_flight: self.in_flight,
            state: Loading { promise },
        };
        entry.begin_request(request);
        entry
    }
}

// ===== impl Entry: requests on states past Added =====

impl<S: Started, E> Entry<S, E> {
    /// Start another request (a refetch, or a retry after a rejection): status `Pending`, data
    /// kept (SPEC R2, R11).
    ///
    /// ```
    /// let mut e = livecache::core::Entry::<_, String>::new(1).start_request(1);
    /// e.reject("x".into());
    /// e.begin_request(2);
    /// assert_eq!(e.in_flight(), Some(2));
    /// ```
    pub fn begin_request(&mut self, request: u64) {
        self.in_flight = Some(request);
        self.status = Status::Pending;
    }
}

// ===== impl Entry: the first data =====

impl<S: AwaitingData, E> Entry<S, E> {
    /// The first data of this lifetime arrived (a fulfilled request or an upsert): consumes the
    /// data-loaded promise, so it resolves exactly once (SPEC R8, R13, R20). Status `Fulfilled`,
    /// error cleared. The caller decides whether the request in flight ended
    /// ([`Entry::settle`]) — an upsert leaves it running.
    ///
    /// ```
    /// use livecache::core::{Phase, Status, Entry};
    /// let e = Entry::<_>::new(1).start_request(1).load("hi", 5);
    /// assert_eq!((e.phase(), e.status(), *e.data()), (Some(Phase::Loaded), Status::Fulfilled, "hi"));
    /// ```
    pub fn load<D>(self, data: D, now: u64) -> Entry<Loaded<D>, E> {
        let DataLoadedPromise(()) = self.state.into_promise();
        Entry {
            lifetime: self.lifetime,
            status: Status::Fulfilled,
            error: None,
            fulfilled_at: Some(now),
            in_flight: self.in_flight,
            state: Loaded { data },
        }
    }
}

impl<S: Live, E> Entry<S, E> {
    /// The request in flight settled: forget it.
    ///
    /// ```
    /// let mut e = livecache::core::Entry::<_>::new(1).start_request(1);
    /// e.settle();
    /// assert_eq!(e.in_flight(), None);
    /// ```
    pub fn settle(&mut self) {
        self.in_flight = None;
    }
}

// ===== impl Entry: states with data =====

impl<S: HasData, E> Entry<S, E>
where
    S::Data: PartialEq,
{
    /// The data.
    ///
    /// ```
    /// assert_eq!(*livecache::core::Entry::<_>::new(1).load(7, 0).data(), 7);
    /// ```
    pub fn data(&self) -> &S::Data {
        self.state.data()
    }

    /// New data from a request or an upsert: stored only if it differs (`PartialEq`); status
    /// `Fulfilled`, error cleared. Returns whether the data changed (SPEC R8, R20).
    ///
    /// ```
    /// let mut e = livecache::core::Entry::<_>::new(1).load(7, 0);
    /// assert!(!e.replace(7, 1));
    /// assert!(e.replace(8, 2));
    /// assert_eq!((*e.data(), e.fulfilled_at()), (8, Some(2)));
    /// ```
    pub fn replace(&mut self, data: S::Data, now: u64) -> bool {
        let changed = *self.state.data() != data;
        self.store(data, now, changed);
        changed
    }

    /// [`Entry::replace`] with the comparison already made by the caller (which contains a
    /// panic of the data type's `PartialEq`): the data is stored if `changed`.
    pub(crate) fn store(&mut self, data: S::Data, now: u64, changed: bool) {
        self.status = Status::Fulfilled;
        self.error = None;
        self.fulfilled_at = Some(now);
        if changed {
            *self.state.data_mut() = data;
        }
    }
}

impl<D, E> Entry<Loaded<D>, E> {
    /// Apply an update recipe. If the recipe takes mutable access the entry moves to
    /// [`Streaming`] (SPEC §2, R15).
    ///
    /// ```
    /// use livecache::core::{Entry, Updated};
    /// let loaded = Entry::<_>::new(1).load(vec![1], 0);
    /// assert!(matches!(loaded.update(|d| { let _ = d.len(); }), Updated::Unchanged(_)));
    /// ```
    pub fn update(mut self, recipe: impl FnOnce(&mut Draft<'_, D>)) -> Updated<D, E> {
        let touched = {
            let mut draft = Draft::new(&mut self.state.data);
            recipe(&mut draft);
            draft.touched()
        };
        if touched {
            Updated::Changed(self.start_streaming())
        } else {
            Updated::Unchanged(self)
        }
    }

    /// A message stream was attached: the entry is Streaming from now on (R21).
    ///
    /// ```
    /// use livecache::core::{Phase, Entry};
    /// let s = Entry::<_>::new(1).load(1, 0).start_streaming();
    /// assert_eq!(s.phase(), Some(Phase::Streaming));
    /// ```
    pub fn start_streaming(self) -> Entry<Streaming<D>, E> {
        let Loaded { data } = self.state;
        Entry {
            lifetime: self.lifetime,
            status: self.status,
            error: self.error,
            fulfilled_at: self.fulfilled_at,
            in_flight: self.in_flight,
            state: Streaming { data },
        }
    }

    /// Replace the data wholesale as an update (a patch or an undo), moving to [`Streaming`].
    ///
    /// ```
    /// let s = livecache::core::Entry::<_>::new(1).load(1, 0).overwrite(2);
    /// assert_eq!(*s.data(), 2);
    /// ```
    pub fn overwrite(self, data: D) -> Entry<Streaming<D>, E> {
        self.with_state(Streaming { data })
    }
}

impl<D, E> Entry<Streaming<D>, E> {
    /// Apply an update recipe; returns whether it took mutable access.
    ///
    /// ```
    /// let mut s = livecache::core::Entry::<_>::new(1).load(1, 0).overwrite(2);
    /// assert!(s.update(|d| **d += 1));
    /// assert_eq!(*s.data(), 3);
    /// ```
    pub fn update(&mut self, recipe: impl FnOnce(&mut Draft<'_, D>)) -> bool {
        let mut draft = Draft::new(&mut self.state.data);
        recipe(&mut draft);
        draft.touched()
    }

    /// Replace the data wholesale as an update (a patch or an undo).
    ///
    /// ```
    /// let mut s = livecache::core::Entry::<_>::new(1).load(1, 0).overwrite(2);
    /// s.overwrite(3);
    /// assert_eq!(*s.data(), 3);
    /// ```
    pub fn overwrite(&mut self, data: D) {
        self.state.data = data;
    }
}

// ===== impl Entry<Removed> =====

impl<E> Entry<Removed, E> {
    /// Whether data had loaded in the lifetime that ended (if not, data-loaded yields
    /// "removed before loaded", SPEC R13).
    ///
    /// ```
    /// assert!(livecache::core::Entry::<_>::new(1).load(0, 0).remove().loaded());
    /// ```
    pub fn loaded(&self) -> bool {
        self.state.loaded
    }
}
pub(crate) mod any;
mod draft;
pub(crate) mod draft_ops;
pub(crate) mod draft_path;

pub use draft::Draft;
#[cfg(feature = "runtime")]
pub(crate) use draft::Recorder;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_reports_its_phase_and_removed_none() {
        let added: Entry<Added> = Entry::new(1);
        assert_eq!(added.phase(), Some(Phase::Added));
        let loading = added.start_request(1);
        assert_eq!(loading.phase(), Some(Phase::Loading));
        let loaded = loading.load(vec![1u8], 0);
        assert_eq!(loaded.phase(), Some(Phase::Loaded));
        let streaming = loaded.start_streaming();
        assert_eq!(streaming.phase(), Some(Phase::Streaming));
        assert_eq!(streaming.remove().phase(), None);
    }

    #[test]
    fn replace_reports_whether_the_data_changed_and_stores_only_a_change() {
        let mut entry = Entry::<Added>::new(1).load(vec![1u8], 0);
        assert!(!entry.replace(vec![1], 5));
        assert_eq!(entry.fulfilled_at(), Some(5));
        assert!(entry.replace(vec![2], 6));
        assert_eq!(*entry.data(), vec![2]);
    }
}
