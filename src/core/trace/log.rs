//! The core's bounded event log: compact records in two generations.

use super::*;
use crate::core::key::CacheKey;

/// The largest limit: 2^30 events (a generation's indices fit in 30 bits).
const MAX_LIMIT: usize = 1 << 30;

/// The smallest byte budget: two texts of the largest size, one per generation.
const MIN_BYTE_BUDGET: usize = 2 * TRACE_TEXT_CAP;

/// Where the core keeps its trace: two generations of at most `limit` events each; when the
/// current one is full, the old one is dropped and the current one becomes old, so the log holds
/// between `limit` and twice `limit` events. An event is a 16-byte record with nothing to drop:
/// its key is an index into its generation's key table (a key is cloned into the table when it
/// differs from the last one added, or — for an entry's updates — once per generation, the entry
/// remembering its index in a [`TraceKeyRef`]), and its kind is stored in the record when it is
/// an update without patches, otherwise set aside in the generation: whole, in 24 bytes with
/// nothing to drop, when it holds no text or patches ([`Aside`]: with [`Recording::Events`],
/// every event of a lifecycle that loads and ends without an error but a stream's end and a
/// skipped frame, which carry text), in the generation's table of kinds when it does.
/// Recording an update so copies its key (one reference count) at most once per generation;
/// recording allocates nothing once the generation's storage has grown, and dropping a
/// generation only visits its keys and its kinds with text or patches.
/// [`TraceLog::events`] builds the public [`TraceEvent`]s.
///
/// The texts the kinds kept hold (errors, reasons, outcome messages, each at most
/// [`TRACE_TEXT_CAP`] bytes) are counted per generation against a byte budget: a generation
/// whose texts would pass half of it is made old early, so the texts held never pass the budget,
/// whatever the event limit (fewer events than the limit are then held).
#[derive(Clone, Debug)]
pub(crate) struct TraceLog {
    limit: usize,
    /// The most bytes of text held, over both generations.
    byte_budget: usize,
    old: Generation,
    current: Generation,
    /// The bytes of text held by the kinds kept in `old` and in `current`.
    old_text: usize,
    current_text: usize,
    /// The current generation's number, counted from 1.
    generation: u64,
}

/// Where a key sits in a [`TraceLog`]'s current generation, remembered by whoever records for
/// that key often (an entry): its updates then add the key to the generation's table once, not
/// whenever another key was recorded in between.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TraceKeyRef {
    /// The generation it was valid in; 0: none.
    generation: u64,
    index: u32,
}

#[derive(Clone, Debug, Default)]
struct Generation {
    /// The keys named by this generation's events, by index (a key may appear more than once).
    keys: Vec<CacheKey>,
    events: Vec<Recorded>,
    /// The kinds not stored in their [`Recorded`], by index.
    aside: Vec<Aside>,
    /// The kinds with text or patches, by index, in the order of their events.
    kinds: Vec<TraceKind>,
}

/// One event: 16 bytes, nothing to drop.
#[derive(Clone, Copy, Debug)]
struct Recorded {
    at_ms: u64,
    key: u32,
    kind: Packed,
}

/// An event's kind in 32 bits: an update without patches — most events of a streaming entry —
/// is stored whole (its source in the low two bits, 1 to 3); any other kind is set aside in the
/// generation's `aside`, at the index in the upper 30 bits (low bits 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed(u32);

impl Packed {
    fn updated(source: UpdateSource) -> Self {
        Packed(match source {
            UpdateSource::Lifecycle => 1,
            UpdateSource::UpdateQueryData => 2,
            UpdateSource::PatchQueryData => 3,
        })
    }

    /// `index` < 2^30: kinds are only set aside in the current generation, which no lower limit
    /// drains, so when one is there are no more of them than events, fewer than the limit, at
    /// most [`MAX_LIMIT`].
    fn other(index: u32) -> Self {
        Packed(index << 2)
    }

    /// The kind as set aside: an update's is in the record, any other's in `aside`.
    fn aside(self, aside: &[Aside]) -> Option<Aside> {
        match self.unpack() {
            Ok(source) => Some(Aside::Updated { source }),
            Err(index) => aside.get(index).copied(),
        }
    }

    /// The update's source, or the index of the kind kept aside.
    fn unpack(self) -> Result<UpdateSource, usize> {
        match self.0 & 3 {
            0 => Err((self.0 >> 2) as usize),
            1 => Ok(UpdateSource::Lifecycle),
            2 => Ok(UpdateSource::UpdateQueryData),
            _ => Ok(UpdateSource::PatchQueryData),
        }
    }
}

/// Declares [`Aside`] and its two conversions from one list: the kinds set aside whole, with the
/// same fields as their [`TraceKind`] variant (all `Copy`). The kinds stored differently are
/// written out once below the list: `DataLoaded` (its `Option` split in two), a finished
/// `LifecycleEnded`, an `Updated` without patches, and `Kept` (any kind with text or patches).
macro_rules! set_aside_whole {
    ($($variant:ident { $($field:ident: $ty:ty),* }),* $(,)?) => {
        /// A kind set aside from its record ([`Packed`]): whole when it holds no text or patches
        /// (the same fields as its [`TraceKind`], with nothing to drop), otherwise the index of
        /// the kind in its generation's `kinds`. An update without patches is one too, on its way
        /// into its record.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Aside {
            $($variant { $($field: $ty),* },)*
            /// `request` is meaningful when `by_request` (an `Option<u64>` would take 8 more
            /// bytes).
            DataLoaded { lifetime: u64, request: u64, by_request: bool },
            /// `LifecycleEnded` with [`HandlerOutcome::Finished`].
            LifecycleFinished { lifetime: u64, generation: u32 },
            /// `Updated` without patches: never kept in `aside`, its record holds it ([`Packed`]).
            Updated { source: UpdateSource },
            /// Any other kind: its index in the generation's `kinds` (< 2^30, like the events).
            Kept(u32),
        }

        impl Aside {
            /// `kind` set aside whole, or given back when it holds text or patches. Inlined, so
            /// that where the kind is known this is no work at all.
            #[inline(always)]
            fn of(kind: TraceKind) -> Result<Aside, TraceKind> {
                // Only kinds with nothing to drop are set aside, so none is dropped here: this
                // saves a call of the kind's drop glue per event, where the compiler keeps it even
                // though the kind is known. (Were a kind with text set aside by mistake, its text
                // would leak; a test checks that none is.)
                let kind = std::mem::ManuallyDrop::new(kind);
                Ok(match *kind {
                    $(TraceKind::$variant { $($field),* } => Aside::$variant { $($field),* },)*
                    TraceKind::DataLoaded { lifetime, request } => Aside::DataLoaded {
                        lifetime,
                        request: request.unwrap_or(0),
                        by_request: request.is_some(),
                    },
                    TraceKind::LifecycleEnded {
                        lifetime,
                        generation,
                        outcome: HandlerOutcome::Finished,
                    } => Aside::LifecycleFinished { lifetime, generation },
                    TraceKind::Updated {
                        source,
                        patches: None,
                        count: 1,
                    } => Aside::Updated { source },
                    _ => return Err(std::mem::ManuallyDrop::into_inner(kind)),
                })
            }

            /// The kind set aside whole, or the index of the one kept in `kinds`.
            fn kind(self) -> Result<TraceKind, usize> {
                Ok(match self {
                    $(Aside::$variant { $($field),* } => TraceKind::$variant { $($field),* },)*
                    Aside::DataLoaded {
                        lifetime,
                        request,
                        by_request,
                    } => TraceKind::DataLoaded {
                        lifetime,
                        request: by_request.then_some(request),
                    },
                    Aside::LifecycleFinished { lifetime, generation } => TraceKind::LifecycleEnded {
                        lifetime,
                        generation,
                        outcome: HandlerOutcome::Finished,
                    },
                    Aside::Updated { source } => TraceKind::Updated {
                        source,
                        patches: None,
                        count: 1,
                    },
                    Aside::Kept(index) => return Err(index as usize),
                })
            }
        }
    };
}

set_aside_whole! {
    EntryAdded { lifetime: u64, cause: AddCause },
    Subscribed { subscription: u64, subscribers: usize },
    Unsubscribed { subscription: u64, subscribers: usize },
    LifecycleStarted { lifetime: u64 },
    LifecycleRestarted { lifetime: u64, generation: u32, loaded: bool },
    RequestStarted { request: u64, reason: RequestReason },
    RequestJoined { request: u64 },
    RequestFulfilled { request: u64, data_changed: bool },
    ResultIgnored { request: u64 },
    Upserted { data_changed: bool },
    RemovalScheduled { deadline_ms: u64 },
    RemovalCancelled {},
    RequestAborted { request: u64 },
    EntryRemoved { lifetime: u64, cause: RemoveCause, loaded: bool },
    StreamAttached { lifetime: u64, buffered: usize },
    QueueOverflowed { lifetime: u64, queue: Queue },
}

impl Generation {
    /// Add `key` to the key table, returning its index.
    fn add_key(&mut self, key: &CacheKey) -> u32 {
        // Fewer keys than events, and fewer events than the limit, at most MAX_LIMIT: it fits.
        let index = self.keys.len() as u32;
        self.keys.push(key.clone());
        index
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.events.clear();
        self.aside.clear();
        self.kinds.clear();
    }

    /// Append an event whose kind is `aside` (an update without patches is stored in the record).
    fn push(&mut self, at_ms: u64, key: u32, aside: Aside) {
        let kind = match aside {
            Aside::Updated { source } => Packed::updated(source),
            other => {
                let index = self.aside.len() as u32;
                self.aside.push(other);
                Packed::other(index)
            }
        };
        self.events.push(Recorded { at_ms, key, kind });
    }

    /// [`Generation::events`], moving the kinds with text or patches out instead of cloning
    /// them: those are in the order of the events that name them (some first ones may belong
    /// to events a lower limit dropped, and are skipped).
    fn into_events(self) -> impl Iterator<Item = TraceEvent> {
        let Generation {
            keys,
            events,
            aside,
            kinds,
        } = self;
        let mut kinds = kinds.into_iter().enumerate();
        events.into_iter().filter_map(move |r| {
            let kind = match r.kind.aside(&aside)?.kind() {
                Ok(kind) => kind,
                // Kinds are appended in event order and only the first ones can have lost their
                // events (to a lower limit), so the search finds `index` ahead.
                Err(index) => loop {
                    let (i, kind) = kinds.next()?;
                    if i == index {
                        break kind;
                    }
                },
            };
            Some(TraceEvent {
                at_ms: r.at_ms,
                key: keys.get(r.key as usize)?.clone(),
                kind,
            })
        })
    }

    fn events(&self) -> impl Iterator<Item = TraceEvent> + '_ {
        self.events.iter().filter_map(|r| {
            let kind = match r.kind.aside(&self.aside)?.kind() {
                Ok(kind) => kind,
                Err(index) => self.kinds.get(index)?.clone(),
            };
            Some(TraceEvent {
                at_ms: r.at_ms,
                key: self.keys.get(r.key as usize)?.clone(),
                kind,
            })
        })
    }
}

impl TraceLog {
    /// An empty log keeping at least the last `limit` events (at least 1) and at most twice that.
    pub(crate) fn new(limit: usize, byte_budget: usize) -> Self {
        TraceLog {
            limit: limit.clamp(1, MAX_LIMIT),
            byte_budget: byte_budget.max(MIN_BYTE_BUDGET),
            old: Generation::default(),
            current: Generation::default(),
            old_text: 0,
            current_text: 0,
            generation: 1,
        }
    }

    /// Hold at most `bytes` of text (at least twice [`TRACE_TEXT_CAP`]) from now on: a lower
    /// budget drops the old generation at once if the texts held pass it, and the current one
    /// too if its texts alone do.
    pub(crate) fn set_byte_budget(&mut self, bytes: usize) {
        self.byte_budget = bytes.max(MIN_BYTE_BUDGET);
        if self.text_bytes() > self.byte_budget {
            self.old.clear();
            self.old_text = 0;
        }
        if self.current_text > self.byte_budget / 2 {
            self.rotate();
            self.old.clear();
            self.old_text = 0;
        }
    }

    /// The bytes of text the kinds held keep (those of events a lower limit drained count until
    /// their generation is dropped).
    pub(crate) fn text_bytes(&self) -> usize {
        self.old_text + self.current_text
    }

    /// Keep at least the last `limit` events (at least 1, at most 2^30) and at most twice that
    /// from now on: a lower limit drops the oldest events beyond it at once.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, MAX_LIMIT);
        self.make_room();
        // Each generation holds at most `limit` events again: the current one does now, the old
        // one keeps its newest `limit` (its key and kind tables stay until it is dropped).
        let excess = self.old.events.len().saturating_sub(self.limit);
        self.old.events.drain(..excess);
    }

    /// Append an event. When the current generation is full it becomes the old one and the old
    /// one is dropped (its storage is reused).
    ///
    /// Inlined: where the kind is known, the kind set aside is built in place.
    #[inline(always)]
    pub(crate) fn record(&mut self, at_ms: u64, key: &CacheKey, kind: TraceKind) {
        #[cfg(feature = "tracing")]
        super::emit::emit(at_ms, key, &kind);
        match Aside::of(kind) {
            Ok(aside) => self.record_aside(at_ms, key, aside),
            Err(kept) => self.record_kept(at_ms, key, kept),
        }
    }

    fn record_aside(&mut self, at_ms: u64, key: &CacheKey, aside: Aside) {
        self.make_room();
        let generation = &mut self.current;
        // Events for one key tend to come in runs (a subscription: added, subscribed, lifecycle
        // started, request started): the last key added is reused when it is the same.
        let key = match generation.keys.last() {
            Some(last) if last == key => generation.keys.len() as u32 - 1,
            _ => generation.add_key(key),
        };
        generation.push(at_ms, key, aside);
    }

    /// A kind with text or patches goes to the current generation's `kinds`.
    fn record_kept(&mut self, at_ms: u64, key: &CacheKey, kind: TraceKind) {
        self.make_room();
        let bytes = kind.text_len();
        if self.current_text + bytes > self.byte_budget / 2 && !self.current.events.is_empty() {
            // The current generation's texts would pass half the budget: it becomes old early.
            self.rotate();
        }
        self.current_text += bytes;
        // No more kinds kept than events in the current generation: the index fits (see
        // `Packed::other`).
        let index = self.current.kinds.len() as u32;
        self.current.kinds.push(kind);
        self.record_aside(at_ms, key, Aside::Kept(index));
    }

    /// Record `TraceKind::Updated { source, patches: None }` for a key whose place in the log
    /// `known` remembers (and is updated): the streaming hot path, inlined into it.
    #[inline]
    pub(crate) fn record_update_for(
        &mut self,
        at_ms: u64,
        key: &CacheKey,
        known: &mut TraceKeyRef,
        source: UpdateSource,
    ) {
        #[cfg(feature = "tracing")]
        super::emit::emit_update(at_ms, key, source);
        self.make_room();
        if known.generation != self.generation {
            *known = TraceKeyRef {
                generation: self.generation,
                index: self.current.add_key(key),
            };
        }
        // What `Generation::push` does for an update, written out: going through it costs this
        // path about 27 instructions (it is not inlined here).
        self.current.events.push(Recorded {
            at_ms,
            key: known.index,
            kind: Packed::updated(source),
        });
    }

    /// Fold an update of `key` into the newest event when that is an update of the same key,
    /// source and time without patches (R34: a batch's consecutive updates of one entry are one
    /// event, its `count` the number of them). Whether it did; if not, record the update.
    pub(crate) fn fold_update(&mut self, at_ms: u64, key: &CacheKey, source: UpdateSource) -> bool {
        let folded = self.fold_update_into_newest(at_ms, key, source);
        #[cfg(feature = "tracing")]
        if folded {
            // One more update of the batch's event: emitted as the update it is.
            super::emit::emit_update(at_ms, key, source);
        }
        folded
    }

    fn fold_update_into_newest(
        &mut self,
        at_ms: u64,
        key: &CacheKey,
        source: UpdateSource,
    ) -> bool {
        let generation = if self.current.events.is_empty() {
            &mut self.old
        } else {
            &mut self.current
        };
        let Some(last) = generation.events.last().copied() else {
            return false;
        };
        if last.at_ms != at_ms || generation.keys.get(last.key as usize) != Some(key) {
            return false;
        }
        match last.kind.unpack() {
            Ok(recorded) if recorded == source => {
                // A whole update in its record: it becomes a kept kind with a count of 2, the
                // newest kind of the generation (the kinds stay in the order of their events).
                let index = generation.kinds.len() as u32;
                generation.kinds.push(TraceKind::Updated {
                    source,
                    patches: None,
                    count: 2,
                });
                let aside = generation.aside.len() as u32;
                generation.aside.push(Aside::Kept(index));
                if let Some(event) = generation.events.last_mut() {
                    event.kind = Packed::other(aside);
                }
                true
            }
            Ok(_) => false,
            Err(aside) => {
                let Some(&Aside::Kept(index)) = generation.aside.get(aside) else {
                    return false;
                };
                match generation.kinds.get_mut(index as usize) {
                    Some(TraceKind::Updated {
                        source: kept,
                        patches: None,
                        count,
                    }) if *kept == source => {
                        *count = count.saturating_add(1);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    #[inline]
    fn make_room(&mut self) {
        if self.current.events.len() >= self.limit {
            self.rotate();
        }
    }

    /// The current generation becomes the old one; the old one is dropped (its storage reused).
    /// Once per `limit` events: kept out of the recording paths.
    #[cold]
    #[inline(never)]
    fn rotate(&mut self) {
        std::mem::swap(&mut self.old, &mut self.current);
        self.current.clear();
        self.old_text = std::mem::take(&mut self.current_text);
        self.generation += 1;
    }

    /// How many events the log holds.
    pub(crate) fn len(&self) -> usize {
        self.old.events.len() + self.current.events.len()
    }

    /// The events, oldest first.
    pub(crate) fn events(&self) -> Vec<TraceEvent> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(self.old.events());
        all.extend(self.current.events());
        all
    }

    /// The events, oldest first, leaving the log empty and its storage released.
    pub(crate) fn take(&mut self) -> Vec<TraceEvent> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(std::mem::take(&mut self.old).into_events());
        all.extend(std::mem::take(&mut self.current).into_events());
        (self.old_text, self.current_text) = (0, 0);
        self.generation += 1;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn updated(source: UpdateSource) -> TraceKind {
        TraceKind::Updated {
            source,
            patches: None,
            count: 1,
        }
    }

    /// Kinds stored whole in a record, set aside whole and kept with their text or patches,
    /// mixed.
    fn kind(n: u64) -> TraceKind {
        match n % 5 {
            0 => TraceKind::RequestStarted {
                request: n,
                reason: RequestReason::Load,
            },
            1 => updated(UpdateSource::UpdateQueryData),
            2 => TraceKind::DataLoaded {
                lifetime: n,
                request: n.is_multiple_of(2).then_some(n + 1),
            },
            3 => TraceKind::RequestRejected {
                request: n,
                error: format!("error {n}"),
            },
            _ => TraceKind::Updated {
                source: UpdateSource::PatchQueryData,
                patches: Some(PatchSet::default()),
                count: 1,
            },
        }
    }

    /// One of each kind (and of each variant inside a kind that changes where it is kept).
    fn every_kind() -> Vec<TraceKind> {
        let outcomes = [
            HandlerOutcome::Finished,
            HandlerOutcome::Failed { error: "e".into() },
            HandlerOutcome::Panicked {
                message: "p".into(),
            },
        ];
        let mut kinds = vec![
            TraceKind::EntryAdded {
                lifetime: u64::MAX,
                cause: AddCause::Upsert,
            },
            TraceKind::Subscribed {
                subscription: 3,
                subscribers: usize::MAX,
            },
            TraceKind::Unsubscribed {
                subscription: u64::MAX,
                subscribers: 0,
            },
            TraceKind::LifecycleStarted { lifetime: 5 },
            TraceKind::LifecycleRestarted {
                lifetime: 5,
                generation: 1,
                loaded: true,
            },
            TraceKind::RequestStarted {
                request: 6,
                reason: RequestReason::Resync,
            },
            TraceKind::RequestJoined { request: 7 },
            TraceKind::RequestFulfilled {
                request: 8,
                data_changed: true,
            },
            TraceKind::RequestRejected {
                request: 9,
                error: "refused".into(),
            },
            TraceKind::ResultIgnored { request: 10 },
            TraceKind::DataLoaded {
                lifetime: 11,
                request: Some(0),
            },
            TraceKind::DataLoaded {
                lifetime: 11,
                request: None,
            },
            TraceKind::Upserted {
                data_changed: false,
            },
            updated(UpdateSource::Lifecycle),
            TraceKind::Updated {
                source: UpdateSource::UpdateQueryData,
                patches: Some(PatchSet::default()),
                count: 1,
            },
            TraceKind::RemovalScheduled {
                deadline_ms: 60_000,
            },
            TraceKind::RemovalCancelled,
            TraceKind::RequestAborted { request: 12 },
            TraceKind::EntryRemoved {
                lifetime: 13,
                cause: RemoveCause::Reset,
                loaded: true,
            },
            TraceKind::StreamAttached {
                lifetime: 14,
                buffered: 15,
            },
            TraceKind::StreamSkipped {
                lifetime: 16,
                reason: "bad frame".into(),
            },
            TraceKind::StreamEnded {
                lifetime: 17,
                reason: "closed".into(),
                applied: 18,
                skipped: 19,
            },
        ];
        kinds.push(TraceKind::DataPanicked {
            message: "the data's PartialEq panicked".into(),
        });
        kinds.extend([
            TraceKind::StreamStale {
                lifetime: 21,
                version: Version::new(22),
            },
            TraceKind::StreamHeld {
                lifetime: 23,
                version: Version::pair(24, 25),
            },
            TraceKind::ResyncStarted {
                lifetime: 26,
                policy: Resync::Refetch,
                from: None,
            },
            TraceKind::ResyncStarted {
                lifetime: 27,
                policy: Resync::Resume,
                from: Some(Version::new(28)),
            },
            TraceKind::WatermarkSet {
                lifetime: 29,
                watermark: Version::new(30),
                reapplied: 31,
            },
            TraceKind::QueueOverflowed {
                lifetime: 32,
                queue: Queue::Rebase,
            },
            TraceKind::SnapshotStale {
                lifetime: 35,
                watermark: Version::new(36),
            },
            TraceKind::StreamStatusChanged {
                lifetime: 33,
                status: StreamStatus::Reconnecting {
                    attempt: 2,
                    since_ms: 34,
                    last_error: "refused".into(),
                },
            },
        ]);
        kinds.extend(
            outcomes
                .into_iter()
                .map(|outcome| TraceKind::LifecycleEnded {
                    lifetime: 20,
                    generation: 0,
                    outcome,
                })
                .chain([TraceKind::LifecycleEnded {
                    lifetime: 21,
                    generation: 2,
                    outcome: HandlerOutcome::Finished,
                }]),
        );
        kinds
    }

    proptest! {
        /// R23's bounded trace: whatever mix of plain and remembered-key recordings and limit
        /// changes, the log holds exactly the most recent events, each with the key it was
        /// recorded for, at least `limit` of them (once that many were recorded since the limit
        /// last dropped some) and at most twice that.
        #[test]
        fn log_holds_the_most_recent_events_with_their_keys(
            first_limit in 1usize..8,
            ops in proptest::collection::vec(
                (0usize..4, any::<bool>(), proptest::option::weighted(0.1, 1usize..8)),
                0..80,
            ),
        ) {
            let keys: Vec<CacheKey> = (0..4).map(|k| CacheKey::verbatim(format!("k({k})"))).collect();
            let mut known = [TraceKeyRef::default(); 4];
            let mut limit = first_limit;
            let mut log = TraceLog::new(limit, usize::MAX);
            let mut all = Vec::new();
            // How many of the newest events the log must hold.
            let mut owed = 0usize;
            for (n, &(k, remembered, new_limit)) in ops.iter().enumerate() {
                if let Some(new_limit) = new_limit {
                    let before = log.len();
                    limit = new_limit;
                    log.set_limit(limit);
                    let held = log.events();
                    prop_assert!(held.len() <= 2 * limit, "{} events, limit {}", held.len(), limit);
                    prop_assert!(held.len() >= before.min(limit));
                    prop_assert_eq!(&held[..], &all[all.len() - held.len()..]);
                    owed = held.len().min(limit);
                }
                let at = n as u64;
                if remembered {
                    log.record_update_for(at, &keys[k], &mut known[k], UpdateSource::Lifecycle);
                } else {
                    log.record(at, &keys[k], kind(at));
                }
                let recorded = if remembered { updated(UpdateSource::Lifecycle) } else { kind(at) };
                all.push(TraceEvent { at_ms: at, key: keys[k].clone(), kind: recorded });
                owed = (owed + 1).min(limit);
                let held = log.events();
                prop_assert_eq!(held.len(), log.len());
                prop_assert!(held.len() <= 2 * limit, "{} events, limit {}", held.len(), limit);
                prop_assert!(held.len() >= owed, "{} events, {} owed", held.len(), owed);
                prop_assert_eq!(&held[..], &all[all.len() - held.len()..]);
            }
            let held = log.len();
            let taken = log.take();
            prop_assert_eq!(taken.len(), held);
            prop_assert_eq!(&taken[..], &all[all.len() - taken.len()..]);
            prop_assert!(log.events().is_empty());
            // A remembered place from before `take` is not trusted afterwards.
            log.record_update_for(1_000, &keys[0], &mut known[0], UpdateSource::UpdateQueryData);
            prop_assert_eq!(&log.events()[0].key, &keys[0]);
        }
    }

    #[test]
    fn every_kind_comes_back_as_it_was_recorded_read_or_taken() {
        let key = CacheKey::verbatim("a(1)");
        let mut log = TraceLog::new(1_000, usize::MAX);
        let kinds = every_kind();
        for (n, kind) in kinds.iter().enumerate() {
            log.record(n as u64, &key, kind.clone());
        }
        let read: Vec<TraceKind> = log.events().into_iter().map(|e| e.kind).collect();
        assert_eq!(read, kinds);
        let taken: Vec<TraceKind> = log.take().into_iter().map(|e| e.kind).collect();
        assert_eq!(taken, kinds);
    }

    #[test]
    fn a_lower_limit_then_take_keeps_the_kinds_of_the_events_left() {
        let key = CacheKey::verbatim("a(1)");
        let mut log = TraceLog::new(10, usize::MAX);
        let all: Vec<TraceKind> = (0..25).map(kind).collect();
        for (n, kind) in all.iter().enumerate() {
            log.record(n as u64, &key, kind.clone());
        }
        // The old generation holds events 10..20, with kinds kept aside (text, patches) for
        // 13, 14, 18 and 19; the lower limit drains 10..14, the kept kind of 13 among them.
        log.set_limit(6);
        let read = log.events();
        let times: Vec<u64> = read.iter().map(|e| e.at_ms).collect();
        assert_eq!(times, (14..25).collect::<Vec<_>>());
        let kinds: Vec<TraceKind> = read.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, all[14..]);
        assert_eq!(log.take(), read);
    }

    #[test]
    fn only_kinds_with_text_or_patches_are_kept_with_a_drop() {
        for kind in every_kind() {
            let holds_heap = matches!(
                &kind,
                TraceKind::RequestRejected { .. }
                    | TraceKind::StreamSkipped { .. }
                    | TraceKind::StreamEnded { .. }
                    | TraceKind::DataPanicked { .. }
                    | TraceKind::StreamStatusChanged { .. }
                    | TraceKind::Updated {
                        patches: Some(_),
                        ..
                    }
                    | TraceKind::LifecycleEnded {
                        outcome: HandlerOutcome::Failed { .. } | HandlerOutcome::Panicked { .. },
                        ..
                    }
            );
            // Kinds with a version are kept too: set aside, they would make every record's
            // `Aside` larger than 24 bytes.
            let with_version = matches!(
                &kind,
                TraceKind::StreamStale { .. }
                    | TraceKind::StreamHeld { .. }
                    | TraceKind::ResyncStarted { .. }
                    | TraceKind::WatermarkSet { .. }
                    | TraceKind::SnapshotStale { .. }
            );
            let holds_heap = holds_heap || with_version;
            match Aside::of(kind.clone()) {
                Ok(aside) => {
                    assert!(!holds_heap, "{kind} set aside whole");
                    assert_eq!(aside.kind(), Ok(kind));
                }
                Err(back) => {
                    assert!(holds_heap, "{kind} kept");
                    assert_eq!(back, kind);
                }
            }
        }
        assert!(std::mem::size_of::<Aside>() <= 24);
        assert!(!std::mem::needs_drop::<Aside>());
    }

    #[test]
    fn a_record_is_sixteen_bytes_and_kinds_round_trip() {
        assert_eq!(std::mem::size_of::<Recorded>(), 16);
        for source in [
            UpdateSource::Lifecycle,
            UpdateSource::UpdateQueryData,
            UpdateSource::PatchQueryData,
        ] {
            assert_eq!(Packed::updated(source).unpack(), Ok(source));
        }
        let last = (MAX_LIMIT - 1) as u32;
        for index in [0, 1, 2, 3, 4, last] {
            assert_eq!(Packed::other(index).unpack(), Err(index as usize));
        }
    }

    #[test]
    fn a_lower_limit_drops_the_oldest_events_at_once() {
        let key = CacheKey::verbatim("a(1)");
        for (before, after) in [(50, 3), (50, 1), (7, 5), (3, 40)] {
            let mut log = TraceLog::new(before, usize::MAX);
            for n in 0..100 {
                log.record(n, &key, kind(n));
            }
            let held_before = log.len();
            log.set_limit(after);
            let held: Vec<u64> = log.events().iter().map(|e| e.at_ms).collect();
            // The newest events, the new limit's worth if there were as many, at most twice it.
            assert!(
                held.len() <= 2 * after,
                "{before} -> {after}: {}",
                held.len()
            );
            assert!(held.len() >= after.min(held_before), "{before} -> {after}");
            assert_eq!(held, ((100 - held.len() as u64)..100).collect::<Vec<_>>());
            // And the bounds hold as events keep coming.
            let mut owed = held.len();
            for n in 100..200 {
                log.record(n, &key, kind(n));
                owed = (owed + 1).min(after);
                let len = log.len();
                assert!(len <= 2 * after, "{before} -> {after}: {len} at {n}");
                assert!(
                    len >= owed,
                    "{before} -> {after}: {len} at {n}, {owed} owed"
                );
            }
            assert_eq!(log.events().last().map(|e| e.at_ms), Some(199));
        }
    }

    /// A kept text that brings the current generation's texts exactly to half the budget
    /// stays in it; one byte more makes it old early. Events of one key in a run share one
    /// entry of the generation's key table.
    #[test]
    fn a_generation_turns_old_only_past_half_the_budget_and_keys_in_a_run_are_shared() {
        let key = CacheKey::verbatim("a(1)");
        let cap = TRACE_TEXT_CAP;
        let skipped = |n: usize| TraceKind::StreamSkipped {
            lifetime: 1,
            reason: "x".repeat(n),
        };
        let mut log = TraceLog::new(1_000, 2 * cap);
        log.record(0, &key, skipped(cap - 1));
        log.record(1, &key, skipped(1));
        assert_eq!(
            (log.old.events.len(), log.current.events.len()),
            (0, 2),
            "at half"
        );
        log.record(2, &key, skipped(1));
        assert_eq!(
            (log.old.events.len(), log.current.events.len()),
            (2, 1),
            "past half"
        );
        log.record(3, &key, skipped(0));
        log.record(4, &key, skipped(0));
        assert_eq!(log.current.keys.len(), 1, "one key for the run");
        let other = CacheKey::verbatim("a(2)");
        log.record(5, &other, skipped(0));
        assert_eq!(log.current.keys.len(), 2);
    }

    /// Lowering the byte budget drops the old generation exactly when the texts held pass the
    /// new budget, and the current one too exactly when its texts alone pass half of it; a
    /// budget the texts meet exactly, or one that is higher, drops nothing.
    #[test]
    fn lowering_the_byte_budget_drops_exactly_what_passes_it() {
        let key = CacheKey::verbatim("a(1)");
        let cap = TRACE_TEXT_CAP;
        let skipped = |n: usize| TraceKind::StreamSkipped {
            lifetime: 1,
            reason: "x".repeat(n),
        };
        // Old: two texts of `cap`; current: one of `cap / 2` (a budget of 8 caps, limit 2).
        let filled = || {
            let mut log = TraceLog::new(2, 8 * cap);
            for (at, n) in [(0, cap), (1, cap), (2, cap / 2)] {
                log.record(at, &key, skipped(n));
            }
            assert_eq!((log.old_text, log.current_text), (2 * cap, cap / 2));
            log
        };
        // Met exactly: nothing dropped.
        let mut log = filled();
        log.set_byte_budget(2 * cap + cap / 2);
        assert_eq!(log.len(), 3, "a budget the texts meet exactly");
        // Higher: nothing dropped.
        let mut log = filled();
        log.set_byte_budget(4 * cap);
        assert_eq!(log.len(), 3, "a higher budget");
        // Passed: the old generation goes, the current stays (its texts are not past half).
        let mut log = filled();
        log.set_byte_budget(2 * cap);
        assert_eq!(
            (log.len(), log.text_bytes()),
            (1, cap / 2),
            "the old generation dropped"
        );
        assert_eq!(log.events().last().map(|e| e.at_ms), Some(2));
        // The current generation's texts exactly at half: kept.
        let mut log = TraceLog::new(2, 8 * cap);
        log.record(0, &key, skipped(cap));
        log.set_byte_budget(2 * cap);
        assert_eq!(log.len(), 1, "texts at half the budget");
        // Past half: the current generation goes too.
        let mut log = TraceLog::new(2, 8 * cap);
        log.record(0, &key, skipped(cap));
        log.record(1, &key, skipped(1));
        log.set_byte_budget(2 * cap);
        assert_eq!(
            (log.len(), log.text_bytes()),
            (0, 0),
            "texts past half the budget"
        );
    }

    /// A byte budget below the smallest is raised to it: two texts of the largest size, one
    /// per generation, are held together.
    #[test]
    fn the_smallest_byte_budget_holds_a_largest_text_in_each_generation() {
        let key = CacheKey::verbatim("a(1)");
        for asked in [0, 1, TRACE_TEXT_CAP] {
            let mut log = TraceLog::new(1_000, asked);
            for n in 0..2 {
                let reason = "x".repeat(TRACE_TEXT_CAP);
                log.record(
                    n,
                    &key,
                    TraceKind::StreamSkipped {
                        lifetime: 1,
                        reason,
                    },
                );
            }
            assert_eq!(log.len(), 2, "budget asked: {asked}");
            assert_eq!(
                log.text_bytes(),
                2 * TRACE_TEXT_CAP,
                "budget asked: {asked}"
            );
            log.set_byte_budget(asked);
            assert_eq!(log.len(), 2, "lowered to {asked}");
        }
    }

    /// Item 1 of the hardening issue: the texts held stay within the byte budget whatever the
    /// event limit, the newest events are the ones kept, and the count is exact.
    #[test]
    fn hardening_01_texts_held_stay_within_the_byte_budget() {
        let key = CacheKey::verbatim("a(1)");
        let budget = 8 * TRACE_TEXT_CAP;
        let mut log = TraceLog::new(1_000, budget);
        for n in 0..500u64 {
            let text = "x".repeat((n as usize * 37) % (TRACE_TEXT_CAP + 1));
            log.record(
                n,
                &key,
                TraceKind::StreamSkipped {
                    lifetime: 1,
                    reason: text,
                },
            );
            log.record(
                n,
                &key,
                TraceKind::RequestStarted {
                    request: n,
                    reason: RequestReason::Load,
                },
            );
            let held = log.events();
            let texts: usize = held.iter().map(|e| e.kind.text_len()).sum();
            assert!(
                log.text_bytes() <= budget,
                "{} bytes at {n}",
                log.text_bytes()
            );
            assert_eq!(texts, log.text_bytes(), "at {n}");
            assert_eq!(held.last().map(|e| e.at_ms), Some(n));
            // At least half the budget's worth of texts, or all of them, is kept.
            assert!(held.len() >= 2 * (n as usize + 1) || texts >= budget / 2 - TRACE_TEXT_CAP);
        }
        // A lower budget drops the oldest at once; a higher one keeps what is held.
        log.set_byte_budget(2 * TRACE_TEXT_CAP);
        assert!(log.text_bytes() <= 2 * TRACE_TEXT_CAP);
        log.set_byte_budget(usize::MAX);
        let held = log.len();
        log.record(
            500,
            &key,
            TraceKind::RequestStarted {
                request: 500,
                reason: RequestReason::Mount,
            },
        );
        assert_eq!(log.len(), held + 1);
        let _ = log.take();
        assert_eq!(log.text_bytes(), 0);
    }

    #[test]
    fn a_remembered_place_is_refreshed_in_a_new_generation() {
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("b(1)"));
        let mut log = TraceLog::new(2, usize::MAX);
        let mut known_a = TraceKeyRef::default();
        log.record_update_for(0, &a, &mut known_a, UpdateSource::Lifecycle);
        log.record(1, &b, kind(1));
        // The current generation is full: the next event starts a new one, in which `b` is the
        // first key; `a`'s remembered index 0 would name `b` if it were trusted.
        log.record(2, &b, kind(2));
        log.record_update_for(3, &a, &mut known_a, UpdateSource::Lifecycle);
        let keys: Vec<String> = log.events().iter().map(|e| e.key.to_string()).collect();
        assert_eq!(keys, ["a(1)", "b(1)", "b(1)", "a(1)"]);
    }
}
