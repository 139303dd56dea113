//! Retries (R36): an endpoint with a [`RetryPolicy`](crate::core::RetryPolicy) runs a failed
//! request again after a backoff, up to its count; meanwhile the request stays in flight and the
//! status `Pending`. Retry timers are core deadlines, in the same table as removal and polls.

use std::fmt;

use super::deadlines::{Armed, Timer};
use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;
use crate::core::trace::{TraceKind, bounded_display};

/// A failed request's retries so far, and the armed retry.
#[derive(Clone, Debug, Default)]
pub(super) struct Retrying {
    attempts: u32,
    pub(super) armed: Option<Armed>,
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// A request failed, and whether the failure is worth retrying (the runtime asks the
    /// endpoint's predicate on the error; [`Cache::reject`] says yes). Ignored (and traced)
    /// unless it is the key's request in flight (R10). On an endpoint with a retry policy
    /// (R36), a retryable failure with retries left is traced `request_retrying` and the request
    /// is run again after the policy's delay (effect `StartRequest` with the same id, traced
    /// `request_retried`); its status stays `Pending` and it stays in flight. Otherwise the
    /// request is rejected (R9).
    ///
    /// ```
    /// # use livecache::core::RequestId;
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Refetch, RetryPolicy, Status};
    /// let retry = Some(RetryPolicy { max_retries: 1, base_ms: 100, max_ms: 100, jitter_percent: 0, seed: 0 });
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig { retry, ..Default::default() })?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.reject_retryable(10, &key, RequestId(1), "503".to_string(), true);
    /// assert_eq!(cache.entry(&key).map(|e| e.status), Some(Status::Pending)); // retrying
    /// assert_eq!(cache.poll_timeout(), Some(110));
    /// cache.handle_timeout(110);                                              // run again
    /// cache.reject_retryable(120, &key, RequestId(1), "503".to_string(), true);
    /// assert_eq!(cache.entry(&key).map(|e| e.status), Some(Status::Rejected)); // no retry left
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reject_retryable(
        &mut self,
        now: u64,
        key: &CacheKey,
        request: RequestId,
        error: E,
        retryable: bool,
    ) {
        let request = request.0;
        self.advance(now);
        if !self.is_current(key, request) {
            self.record(self.now, key, TraceKind::ResultIgnored { request });
            return;
        }
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let policy = config_of(&self.endpoints, slot.endpoint).retry;
        let attempts = slot.retrying.as_ref().map_or(0, |r| r.attempts);
        let Some(policy) = policy.filter(|p| retryable && attempts < p.max_retries) else {
            self.reject_current(key, request, error);
            return;
        };
        let attempt = attempts + 1;
        let delay_ms = policy.delay_ms(attempt, request);
        let retrying = slot.retrying.get_or_insert_with(Box::default);
        retrying.attempts = attempt;
        let at = self.now.saturating_add(delay_ms);
        self.deadlines
            .arm(Timer::Retry, key, &mut retrying.armed, at);
        let error = if self.config.recording == Recording::Off {
            String::new()
        } else {
            bounded_display(&error)
        };
        self.record(
            self.now,
            key,
            TraceKind::RequestRetrying {
                request,
                attempt,
                delay_ms,
                error,
            },
        );
    }

    /// The request of `key` settled or a new one started: its retries end (the armed retry is
    /// disarmed).
    pub(super) fn end_retrying(&mut self, key: &CacheKey) {
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(mut retrying) = slot.retrying.take() {
            self.deadlines
                .disarm(Timer::Retry, key, &mut retrying.armed);
        }
    }

    /// The retry deadline `armed` of `key` fell due: run its request again, stamped at the
    /// deadline.
    pub(super) fn retry_due(&mut self, key: &CacheKey, armed: Armed) {
        let (request, attempt) = match self.entries.get_mut(key) {
            Some(slot) => {
                let Some(retrying) = slot.retrying.as_mut() else {
                    return;
                };
                if retrying.armed != Some(armed) {
                    return;
                }
                retrying.armed = None;
                let Some(request) = slot.entry.in_flight() else {
                    return;
                };
                (request, retrying.attempts)
            }
            None => return,
        };
        self.now = self.now.max(armed.at);
        self.record(
            self.now,
            key,
            TraceKind::RequestRetried { request, attempt },
        );
        self.effects.push_back(Effect::StartRequest {
            key: key.clone(),
            request: RequestId(request),
        });
    }
}
