//! Invariants checked on a trace alone (no access to the state that produced it).
//!
//! Each event is attributed to the *current lifetime of its key*: the one opened by the last
//! `entry_added` for that key and not yet closed by an `entry_removed`. The numbered checks are
//! the ones listed in [`check_invariants`].

use std::collections::{BTreeMap, BTreeSet};

use livecache::core::MAX_KEEP_MS;
use livecache::core::{RemoveCause, TraceEvent, TraceKind};

use crate::{Config, EndpointSpec};

/// What the checker knows about the live lifetime of one key.
#[derive(Debug)]
struct Live {
    /// The lifetime id.
    lifetime: u64,
    /// Whether `data_loaded` happened in this lifetime.
    loaded: bool,
    /// Subscribers, counted from `subscribed` / `unsubscribed`.
    subscribers: usize,
    /// The armed removal deadline: set by `removal_scheduled`, cleared by `removal_cancelled`.
    armed: Option<u64>,
}

/// What the checker knows about one key.
#[derive(Debug, Default)]
struct KeyState {
    /// The live lifetime, if any.
    live: Option<Live>,
    /// Every lifetime this key has had (live or ended).
    lifetimes: BTreeSet<u64>,
    /// The ended lifetimes of this key, each with the `loaded` flag of its `entry_removed`.
    removed: BTreeMap<u64, bool>,
}

/// The `stream_ended` reason of an attachment ended by its entry's removal (R21).
const ENDED_REMOVED: &str = "entry removed";
/// The same, for an entry removed before its first data (held messages dropped).
const ENDED_REMOVED_BEFORE_LOADED: &str = "entry removed before its data loaded";

/// The endpoint a key belongs to: the longest endpoint name `n` such that the key starts with
/// `n(`.
fn endpoint_of<'c>(config: &'c Config, key: &str) -> Option<&'c EndpointSpec> {
    config
        .endpoints
        .iter()
        .filter(|e| key.starts_with(&format!("{}(", e.name)))
        .max_by_key(|e| e.name.len())
}

/// Check the invariants of a model trace; the error names the first violation and its event
/// index.
///
/// 1. Per lifetime, `data_loaded` happens at most once and `entry_removed` at most once; when the
///    lifetime is removed, its `loaded` flag equals whether `data_loaded` happened before it
///    (R8, R13, R14, R17).
/// 2. No `updated` before the lifetime's `data_loaded` or after its `entry_removed` (R15, R17).
/// 3. An entry with subscribers is removed only with cause `removed` or `reset`, never `expired`
///    (R4, R5); `subscribed`/`unsubscribed` counts are consistent.
/// 4. An `expired` removal happens exactly at the deadline of the lifetime's last
///    `removal_scheduled`, which was not cancelled since; every deadline is the scheduling
///    time plus the endpoint's keep; an endpoint with keep `None` never schedules a removal; and
///    no armed deadline is passed by a later event without the entry being removed (R4, R5).
/// 5. An `expired` (or any) removal ends the key's current lifetime: a stale timer never removes
///    a re-created entry (R5, R7a).
/// 6. Every lifetime starts with `entry_added`, lifetime ids are never reused, and no event
///    occurs for a key without a live lifetime except `result_ignored` (R10) and
///    `lifecycle_ended` of a lifetime of that key (recorded "whether or not the entry is still
///    live").
/// 7. Trace times never decrease.
/// 8. A stream attaches (`stream_attached`) only to its key's live lifetime once it has data;
///    a `stream_ended` that gives the entry's removal as its reason comes after that lifetime's
///    `entry_removed`, and says "before its data loaded" exactly when the removal's `loaded` is
///    false (R21).
// One arm per kind, each stating its invariant as a plain `if`: clearer than match guards.
#[allow(clippy::collapsible_match)]
pub fn check_invariants(config: &Config, trace: &[TraceEvent]) -> Result<(), String> {
    let mut keys: BTreeMap<String, KeyState> = BTreeMap::new();
    let mut all_lifetimes: BTreeSet<u64> = BTreeSet::new();
    let mut last_time: u64 = 0;

    for (i, event) in trace.iter().enumerate() {
        let fail = |what: String| Err(format!("event {i} ({event}): {what}"));
        let t = event.at_ms;

        // (7) time never goes backwards.
        if t < last_time {
            return fail(format!("(7) time went back from {last_time}ms"));
        }
        last_time = t;

        // (4) no armed deadline may be passed without its entry being removed.
        for (key, state) in &keys {
            let Some(live) = &state.live else { continue };
            if let Some(deadline) = live.armed
                && deadline < t
            {
                return fail(format!(
                    "(4) deadline {deadline}ms of {key} lifetime {} passed without removal",
                    live.lifetime
                ));
            }
        }

        let state = keys.entry(event.key.as_str().to_owned()).or_default();

        // Events that may occur without a live lifetime.
        match &event.kind {
            TraceKind::EntryAdded { lifetime, .. } => {
                // (6) a lifetime starts with entry_added, only when the key has none live.
                if let Some(live) = &state.live {
                    return fail(format!(
                        "(6) entry_added while lifetime {} is still live",
                        live.lifetime
                    ));
                }
                if !all_lifetimes.insert(*lifetime) {
                    return fail(format!("(6) lifetime {lifetime} reused"));
                }
                state.lifetimes.insert(*lifetime);
                state.live = Some(Live {
                    lifetime: *lifetime,
                    loaded: false,
                    subscribers: 0,
                    armed: None,
                });
                continue;
            }
            TraceKind::ResultIgnored { .. } => continue,
            // Runtime events about a lifetime may come after its removal (a handler or a
            // stream attachment ends once the entry is gone).
            TraceKind::LifecycleEnded { lifetime, .. }
            | TraceKind::StreamSkipped { lifetime, .. }
            | TraceKind::StreamEnded { lifetime, .. } => {
                if !state.lifetimes.contains(lifetime) {
                    return fail(format!("(6) {} of unknown lifetime {lifetime}", event.kind));
                }
                if let TraceKind::StreamEnded { reason, .. } = &event.kind {
                    let removal = match reason.as_str() {
                        ENDED_REMOVED => Some(true),
                        ENDED_REMOVED_BEFORE_LOADED => Some(false),
                        _ => None,
                    };
                    if let Some(loaded) = removal {
                        match state.removed.get(lifetime) {
                            None => {
                                return fail(format!(
                                    "(8) stream_ended {reason:?} before lifetime {lifetime} was removed"
                                ));
                            }
                            Some(was) if *was != loaded => {
                                return fail(format!(
                                    "(8) stream_ended {reason:?} but lifetime {lifetime} was removed with loaded={was}"
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                }
                continue;
            }
            _ => {}
        }

        // Every other event needs a live lifetime of its key.
        let Some(live) = state.live.as_mut() else {
            let what = match &event.kind {
                TraceKind::Updated { .. } => "(2) updated with no live lifetime (after removal)",
                TraceKind::DataLoaded { .. } => "(1) data_loaded with no live lifetime",
                TraceKind::EntryRemoved { .. } => "(1) entry_removed with no live lifetime",
                _ => "(6) event for a key with no live lifetime",
            };
            return fail(what.to_string());
        };

        match &event.kind {
            TraceKind::Subscribed { subscribers, .. } => {
                live.subscribers += 1;
                if *subscribers != live.subscribers {
                    return fail(format!("(3) subscribers should be {}", live.subscribers));
                }
            }
            TraceKind::Unsubscribed { subscribers, .. } => {
                if live.subscribers == 0 {
                    return fail("(3) unsubscribed with no subscribers".to_string());
                }
                live.subscribers -= 1;
                if *subscribers != live.subscribers {
                    return fail(format!("(3) subscribers should be {}", live.subscribers));
                }
            }
            TraceKind::LifecycleStarted { lifetime } => {
                if *lifetime != live.lifetime {
                    return fail(format!(
                        "(6) lifecycle_started for lifetime {lifetime}, live is {}",
                        live.lifetime
                    ));
                }
            }
            TraceKind::DataLoaded { lifetime, .. } => {
                if *lifetime != live.lifetime {
                    return fail(format!(
                        "(1) data_loaded for lifetime {lifetime}, live is {}",
                        live.lifetime
                    ));
                }
                if live.loaded {
                    return fail(format!("(1) data_loaded twice in lifetime {lifetime}"));
                }
                live.loaded = true;
            }
            TraceKind::Updated { .. } => {
                if !live.loaded {
                    return fail(format!(
                        "(2) updated before data_loaded in lifetime {}",
                        live.lifetime
                    ));
                }
            }
            TraceKind::RemovalScheduled { deadline_ms: at_ms } => {
                let Some(endpoint) = endpoint_of(config, &event.key) else {
                    return fail("(4) key of no configured endpoint".to_string());
                };
                let Some(keep) = endpoint.keep_ms else {
                    return fail(format!(
                        "(4) removal_scheduled for endpoint {} whose keep is None",
                        endpoint.name
                    ));
                };
                let expected = t.saturating_add(keep.min(MAX_KEEP_MS));
                if *at_ms != expected {
                    return fail(format!(
                        "(4) removal_scheduled at {at_ms}ms, expected {t} + {keep} = {expected}"
                    ));
                }
                live.armed = Some(*at_ms);
            }
            TraceKind::RemovalCancelled => {
                if live.armed.take().is_none() {
                    return fail("(4) removal_cancelled with no removal scheduled".to_string());
                }
            }
            TraceKind::EntryRemoved {
                lifetime,
                cause,
                loaded,
            } => {
                // (5) the removal ends the key's current lifetime, never another one.
                if *lifetime != live.lifetime {
                    return fail(format!(
                        "(5) entry_removed for lifetime {lifetime}, live is {}",
                        live.lifetime
                    ));
                }
                // (1) data_loaded settles exactly once: resolved iff data arrived first.
                if *loaded != live.loaded {
                    return fail(format!(
                        "(1) entry_removed loaded={loaded} but data_loaded happened: {}",
                        live.loaded
                    ));
                }
                if *cause == RemoveCause::Expired {
                    // (3) never expire an entry that has subscribers.
                    if live.subscribers > 0 {
                        return fail(format!("(3) expired with {} subscribers", live.subscribers));
                    }
                    // (4) exactly at the last, uncancelled deadline.
                    match live.armed {
                        None => {
                            return fail(
                                "(4) expired without an uncancelled removal_scheduled".to_string(),
                            );
                        }
                        Some(deadline) if deadline != t => {
                            return fail(format!(
                                "(4) expired at {t}ms, deadline was {deadline}ms"
                            ));
                        }
                        Some(_) => {}
                    }
                }
                state.removed.insert(*lifetime, *loaded);
                state.live = None;
            }
            // Requests and upserts only need a live lifetime.
            TraceKind::RequestStarted { .. }
            | TraceKind::RequestJoined { .. }
            | TraceKind::RequestFulfilled { .. }
            | TraceKind::RequestRejected { .. }
            | TraceKind::RequestAborted { .. }
            | TraceKind::Upserted { .. }
            | TraceKind::EntryAdded { .. }
            | TraceKind::ResultIgnored { .. }
            | TraceKind::LifecycleEnded { .. }
            | TraceKind::StreamSkipped { .. }
            | TraceKind::StreamEnded { .. } => {}
            TraceKind::StreamAttached { lifetime, .. } => {
                if *lifetime != live.lifetime {
                    return fail(format!(
                        "(8) stream_attached for lifetime {lifetime}, live is {}",
                        live.lifetime
                    ));
                }
                if !live.loaded {
                    return fail("(2) stream_attached before data_loaded".to_string());
                }
            }
            // R30: a restart replaces the handler of the live lifetime; its new handler's
            // data-loaded resolves at once iff the lifetime's did.
            TraceKind::LifecycleRestarted {
                lifetime, loaded, ..
            } => {
                if *lifetime != live.lifetime {
                    return fail(format!(
                        "(6) lifecycle_restarted for lifetime {lifetime}, live is {}",
                        live.lifetime
                    ));
                }
                if *loaded != live.loaded {
                    return fail(format!(
                        "(1) lifecycle_restarted loaded={loaded} but data_loaded happened: {}",
                        live.loaded
                    ));
                }
            }
            // TraceKind is non-exhaustive: a kind added to the core after these invariants were
            // written states nothing here until it is added above.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyRef, Model, Op};
    use livecache::core::Refetch;
    use livecache::core::{AddCause, UpdateSource};

    fn ev(at_ms: u64, key: &str, kind: TraceKind) -> TraceEvent {
        TraceEvent {
            at_ms,
            key: key.into(),
            kind,
        }
    }

    fn config() -> Config {
        Config::standard(false)
    }

    /// a(1): subscribe, load, unsubscribe, expire at 60 000.
    fn good() -> Vec<TraceEvent> {
        vec![
            ev(
                0,
                "a(1)",
                TraceKind::EntryAdded {
                    lifetime: 1,
                    cause: AddCause::Subscribe,
                },
            ),
            ev(
                0,
                "a(1)",
                TraceKind::Subscribed {
                    subscription: 1,
                    subscribers: 1,
                },
            ),
            ev(0, "a(1)", TraceKind::LifecycleStarted { lifetime: 1 }),
            ev(
                0,
                "a(1)",
                TraceKind::RequestStarted {
                    request: 1,
                    reason: livecache::core::RequestReason::Load,
                },
            ),
            ev(
                5,
                "a(1)",
                TraceKind::RequestFulfilled {
                    request: 1,
                    data_changed: true,
                },
            ),
            ev(
                5,
                "a(1)",
                TraceKind::DataLoaded {
                    lifetime: 1,
                    request: Some(1),
                },
            ),
            ev(
                6,
                "a(1)",
                TraceKind::Updated {
                    source: UpdateSource::Lifecycle,
                    patches: None,
                    count: 1,
                },
            ),
            ev(
                7,
                "a(1)",
                TraceKind::Unsubscribed {
                    subscription: 1,
                    subscribers: 0,
                },
            ),
            ev(
                7,
                "a(1)",
                TraceKind::RemovalScheduled {
                    deadline_ms: 60_007,
                },
            ),
            ev(
                60_007,
                "a(1)",
                TraceKind::EntryRemoved {
                    lifetime: 1,
                    cause: RemoveCause::Expired,
                    loaded: true,
                },
            ),
            ev(60_008, "a(1)", TraceKind::ResultIgnored { request: 1 }),
        ]
    }

    fn rejects(trace: &[TraceEvent], needle: &str) {
        match check_invariants(&config(), trace) {
            Ok(()) => panic!("accepted a bad trace (expected {needle})"),
            Err(e) => assert!(
                e.contains(needle),
                "wrong violation: {e} (expected {needle})"
            ),
        }
    }

    #[test]
    fn accepts_a_good_trace() {
        assert_eq!(check_invariants(&config(), &good()), Ok(()));
    }

    #[test]
    fn accepts_a_model_trace() {
        let mut m = Model::new(config());
        let a = KeyRef {
            endpoint: 0,
            arg: 1,
        };
        let b = KeyRef {
            endpoint: 1,
            arg: 2,
        };
        m.apply(&Op::Prefetch {
            key: a,
            refetch: Refetch::IfMissing,
        });
        m.apply(&Op::Subscribe {
            key: b,
            refetch: Refetch::Always,
        });
        m.apply(&Op::Unsubscribe { subscription: 1 });
        m.apply(&Op::Advance { ms: 70_000 });
        m.apply(&Op::Upsert {
            key: a,
            data: vec![1],
        });
        m.apply(&Op::Fulfil {
            key: a,
            request: 1,
            data: vec![2],
        });
        m.apply(&Op::Remove { key: a });
        assert_eq!(check_invariants(m.config(), m.trace()), Ok(()));
    }

    #[test]
    fn rejects_time_going_back() {
        let mut t = good();
        t[4].at_ms = 0;
        t[3].at_ms = 1;
        rejects(&t, "(7)");
    }

    #[test]
    fn rejects_data_loaded_twice() {
        let mut t = good();
        t.insert(
            6,
            ev(
                5,
                "a(1)",
                TraceKind::DataLoaded {
                    lifetime: 1,
                    request: None,
                },
            ),
        );
        rejects(&t, "(1) data_loaded twice");
    }

    #[test]
    fn rejects_wrong_loaded_flag() {
        let mut t = good();
        t[9].kind = TraceKind::EntryRemoved {
            lifetime: 1,
            cause: RemoveCause::Expired,
            loaded: false,
        };
        rejects(&t, "(1) entry_removed loaded=false");
    }

    #[test]
    fn rejects_update_before_load_and_after_removal() {
        let mut t = good();
        t.swap(5, 6);
        t[5].at_ms = 5;
        rejects(&t, "(2) updated before data_loaded");
        let mut t = good();
        t.push(ev(
            60_008,
            "a(1)",
            TraceKind::Updated {
                source: UpdateSource::UpdateQueryData,
                patches: None,
                count: 1,
            },
        ));
        rejects(&t, "(2) updated with no live lifetime");
    }

    #[test]
    fn rejects_expiry_with_subscribers() {
        let mut t = good();
        t.insert(
            9,
            ev(
                8,
                "a(1)",
                TraceKind::Subscribed {
                    subscription: 2,
                    subscribers: 1,
                },
            ),
        );
        rejects(&t, "(3) expired with 1 subscribers");
    }

    #[test]
    fn rejects_expiry_after_cancel_or_off_deadline() {
        let mut t = good();
        t.insert(9, ev(8, "a(1)", TraceKind::RemovalCancelled));
        rejects(&t, "(4) expired without an uncancelled");
        let mut t = good();
        t[8].kind = TraceKind::RemovalScheduled {
            deadline_ms: 60_000,
        };
        rejects(&t, "(4) removal_scheduled at 60000ms");
        let mut t = good();
        t[9].at_ms = 60_006;
        rejects(&t, "(4) expired at 60006ms");
    }

    #[test]
    fn rejects_deadline_passed_without_removal() {
        let mut t = good();
        t[9].at_ms = 60_010;
        rejects(&t, "(4) deadline 60007ms");
    }

    #[test]
    fn rejects_schedule_for_keep_never() {
        let t = vec![
            ev(
                0,
                "c(1)",
                TraceKind::EntryAdded {
                    lifetime: 1,
                    cause: AddCause::Prefetch,
                },
            ),
            ev(0, "c(1)", TraceKind::RemovalScheduled { deadline_ms: 0 }),
        ];
        rejects(&t, "keep is None");
    }

    #[test]
    fn rejects_stale_expiry_of_recreated_entry() {
        let mut t = good();
        t.truncate(9);
        t.push(ev(
            10,
            "a(1)",
            TraceKind::EntryRemoved {
                lifetime: 1,
                cause: RemoveCause::Removed,
                loaded: true,
            },
        ));
        t.push(ev(
            10,
            "a(1)",
            TraceKind::EntryAdded {
                lifetime: 2,
                cause: AddCause::Prefetch,
            },
        ));
        t.push(ev(
            10,
            "a(1)",
            TraceKind::RemovalScheduled {
                deadline_ms: 60_010,
            },
        ));
        // The first lifetime's timer (60 007) fires on the re-created entry.
        t.push(ev(
            60_010,
            "a(1)",
            TraceKind::EntryRemoved {
                lifetime: 1,
                cause: RemoveCause::Expired,
                loaded: false,
            },
        ));
        rejects(&t, "(5) entry_removed for lifetime 1, live is 2");
    }

    fn stream_ended(at_ms: u64, reason: &str) -> TraceEvent {
        ev(
            at_ms,
            "a(1)",
            TraceKind::StreamEnded {
                lifetime: 1,
                reason: reason.to_string(),
                applied: 1,
                skipped: 0,
            },
        )
    }

    #[test]
    fn stream_attachments_end_with_their_removal_reason() {
        // The entry was removed with its data: "entry removed", after the removal, is fine.
        let mut t = good();
        t.insert(
            6,
            ev(
                5,
                "a(1)",
                TraceKind::StreamAttached {
                    lifetime: 1,
                    buffered: 0,
                },
            ),
        );
        t.push(stream_ended(60_008, "entry removed"));
        t.push(stream_ended(60_008, "stream ended"));
        assert_eq!(check_invariants(&config(), &t), Ok(()));
        // Not yet removed.
        let mut t = good();
        t.insert(7, stream_ended(6, "entry removed"));
        rejects(
            &t,
            "(8) stream_ended \"entry removed\" before lifetime 1 was removed",
        );
        // Removed with its data, but the attachment says it never had any.
        let mut t = good();
        t.push(stream_ended(60_008, "entry removed before its data loaded"));
        rejects(
            &t,
            "(8) stream_ended \"entry removed before its data loaded\" but lifetime 1 was removed with loaded=true",
        );
    }

    #[test]
    fn rejects_a_stream_attached_to_another_lifetime() {
        let mut t = good();
        t.insert(
            6,
            ev(
                5,
                "a(1)",
                TraceKind::StreamAttached {
                    lifetime: 2,
                    buffered: 0,
                },
            ),
        );
        rejects(&t, "(8) stream_attached for lifetime 2, live is 1");
        let mut t = good();
        t.insert(
            5,
            ev(
                5,
                "a(1)",
                TraceKind::StreamAttached {
                    lifetime: 1,
                    buffered: 3,
                },
            ),
        );
        rejects(&t, "(2) stream_attached before data_loaded");
    }

    #[test]
    fn rejects_events_without_a_lifetime() {
        let t = vec![ev(
            0,
            "a(1)",
            TraceKind::RequestStarted {
                request: 1,
                reason: livecache::core::RequestReason::Load,
            },
        )];
        rejects(&t, "(6) event for a key with no live lifetime");
        let mut t = good();
        t.push(ev(
            60_008,
            "a(1)",
            TraceKind::EntryAdded {
                lifetime: 1,
                cause: AddCause::Upsert,
            },
        ));
        rejects(&t, "(6) lifetime 1 reused");
    }
}
