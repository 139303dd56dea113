//! Every recorded trace event, also as a `tracing` event (R41): a subscriber of the trace, not a
//! second place where events are decided. Target `livecache`, the cache key as the field `key`,
//! the event's name as `event`, its fields as `detail`; failures (a rejected request, a failed
//! or panicking handler, a stream that failed or whose apply panicked, a skipped stream item, a
//! full queue, a panic of the data type's own code, a failed stream status) at `WARN`, updates at
//! `TRACE`, everything else at `DEBUG`. Only what the trace records is emitted: with
//! `Recording::Off`, nothing.

use crate::core::key::CacheKey;
use crate::core::stream_status::StreamStatus;
use crate::core::trace::{HandlerOutcome, TraceKind, UpdateSource};

/// Whether `kind` reports a failure.
pub(crate) fn is_failure(kind: &TraceKind) -> bool {
    match kind {
        TraceKind::RequestRejected { .. }
        | TraceKind::RequestRetrying { .. }
        | TraceKind::DataPanicked { .. }
        | TraceKind::QueueOverflowed { .. }
        | TraceKind::StreamSkipped { .. } => true,
        TraceKind::LifecycleEnded { outcome, .. } => !matches!(outcome, HandlerOutcome::Finished),
        TraceKind::StreamEnded { reason, .. } => {
            reason.starts_with("stream failed") || reason.starts_with("apply panicked")
        }
        TraceKind::StreamStatusChanged { status, .. } => {
            matches!(status, StreamStatus::Failed { .. })
        }
        _ => false,
    }
}

/// The event's name, as the trace serialises it (`request_rejected`, …).
fn name(kind: &TraceKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::Object(fields)) => match fields.get("event") {
            Some(serde_json::Value::String(name)) => name.clone(),
            _ => String::from("event"),
        },
        _ => String::from("event"),
    }
}

/// Emit `kind`, recorded for `key` at `at_ms`.
#[inline]
pub(crate) fn emit(at_ms: u64, key: &CacheKey, kind: &TraceKind) {
    if let TraceKind::Updated { source, .. } = kind {
        emit_update(at_ms, key, *source);
    } else if is_failure(kind) {
        if tracing::enabled!(target: "livecache", tracing::Level::WARN) {
            let event = name(kind);
            tracing::warn!(target: "livecache", key = %key, at_ms, event = %event, detail = ?kind, "{event}");
        }
    } else if tracing::enabled!(target: "livecache", tracing::Level::DEBUG) {
        let event = name(kind);
        tracing::debug!(target: "livecache", key = %key, at_ms, event = %event, detail = ?kind, "{event}");
    }
}

/// Emit an update of `key` (the streaming hot path records it without building a kind).
#[inline]
pub(crate) fn emit_update(at_ms: u64, key: &CacheKey, source: UpdateSource) {
    tracing::trace!(target: "livecache", key = %key, at_ms, event = "updated", source = ?source, "updated");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::trace::Queue;

    #[test]
    fn failures_are_told_apart_from_the_rest_and_named_as_serialised() {
        let text = || String::from("boom");
        let ended = |reason: &str| TraceKind::StreamEnded {
            lifetime: 1,
            reason: reason.into(),
            applied: 0,
            skipped: 0,
        };
        let handler = |outcome| TraceKind::LifecycleEnded {
            lifetime: 1,
            generation: 0,
            outcome,
        };
        let status = |status| TraceKind::StreamStatusChanged {
            lifetime: 1,
            status,
        };
        let failures = [
            TraceKind::RequestRejected {
                request: 1,
                error: text(),
            },
            TraceKind::RequestRetrying {
                request: 1,
                attempt: 1,
                delay_ms: 10,
                error: text(),
            },
            TraceKind::DataPanicked { message: text() },
            TraceKind::QueueOverflowed {
                lifetime: 1,
                queue: Queue::Held,
            },
            TraceKind::StreamSkipped {
                lifetime: 1,
                reason: text(),
            },
            handler(HandlerOutcome::Failed { error: text() }),
            handler(HandlerOutcome::Panicked { message: text() }),
            ended("stream failed: reset"),
            ended("apply panicked: boom"),
            status(StreamStatus::Failed { error: text() }),
        ];
        for kind in &failures {
            assert!(is_failure(kind), "{kind:?} is a failure");
        }
        let others = [
            handler(HandlerOutcome::Finished),
            ended("entry removed"),
            status(StreamStatus::Live),
            TraceKind::Upserted { data_changed: true },
        ];
        for kind in &others {
            assert!(!is_failure(kind), "{kind:?} is no failure");
        }
        assert_eq!(name(&failures[0]), "request_rejected");
        assert_eq!(name(&others[0]), "lifecycle_ended");
    }
}
