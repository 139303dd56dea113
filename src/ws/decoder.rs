//! Frame payloads into messages, with every check a received frame goes through.

use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny};

use super::stats::bump;
use super::*;

/// Turns frame payloads into messages: size limit, UTF-8, JSON, schema, validation, filter —
/// counting every outcome. [`WsStream`] uses one; it is public so that frames from another
/// transport (or a fuzzer) go through exactly the same checks.
///
/// ```
/// use livecache::ws::{Decoder, WsError};
/// let decoder = Decoder::<Vec<u8>>::new(16);
/// assert_eq!(decoder.decode(b"[1, 2]", false), Some(Ok(vec![1, 2])));
/// assert!(matches!(decoder.decode(b"[1,", false), Some(Err(WsError::NotJson(_)))));
/// assert!(matches!(decoder.decode(&[0xff], true), Some(Err(WsError::NotUtf8))));
/// assert_eq!(decoder.stats().snapshot().skipped(), 2);
/// ```
pub struct Decoder<M> {
    pub(super) validate: Option<Check<M>>,
    pub(super) filter: Option<Check<M>>,
    pub(super) max_message_bytes: usize,
    pub(super) stats: Arc<WsStats>,
}

impl<M: DeserializeOwned> Decoder<M> {
    /// A decoder with a size limit and no validation or filter.
    ///
    /// ```
    /// let decoder = livecache::ws::Decoder::<String>::new(1024);
    /// ```
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            validate: None,
            filter: None,
            max_message_bytes,
            stats: Arc::default(),
        }
    }

    /// Skip messages for which `valid` is false (counted as invalid).
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(8).with_validation(|n| *n < 10);
    /// assert!(d.decode(b"12", false).is_some_and(|r| r.is_err()));
    /// ```
    pub fn with_validation(mut self, valid: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Arc::new(valid));
        self
    }

    /// Drop messages for which `keep` is false (counted as filtered, not an error).
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(8).with_filter(|n| n % 2 == 0);
    /// assert_eq!(d.decode(b"3", false), None);
    /// ```
    pub fn with_filter(mut self, keep: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(keep));
        self
    }

    /// The decoder's counters.
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(8);
    /// d.decode(b"1", false);
    /// assert_eq!(d.stats().snapshot().messages, 1);
    /// ```
    pub fn stats(&self) -> Arc<WsStats> {
        Arc::clone(&self.stats)
    }

    /// Decode one data frame's payload. `binary`: the payload is not known to be UTF-8, so it
    /// is checked (a [`WsStream`] passes `true` for every frame: text frames reach it as
    /// binary, so that one that is not UTF-8 is skipped rather than failing the connection).
    /// `None`: the message was filtered out. Never panics.
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(2);
    /// assert!(matches!(d.decode(b"100", false), Some(Err(livecache::ws::WsError::TooLarge { .. }))));
    /// ```
    pub fn decode(&self, payload: &[u8], binary: bool) -> Option<Result<M, WsError>> {
        let stats = &self.stats;
        if payload.len() > self.max_message_bytes {
            bump(&stats.too_large);
            return Some(Err(WsError::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            }));
        }
        if binary && std::str::from_utf8(payload).is_err() {
            bump(&stats.not_utf8);
            return Some(Err(WsError::NotUtf8));
        }
        let message: M = match serde_json::from_slice(payload) {
            Ok(message) => message,
            // serde stops at the first error, a type error before a syntax error or the other
            // way round, so its category does not tell the two apart; on this (rare) path, a
            // second parse that only checks the syntax does.
            Err(e) => match serde_json::from_slice::<IgnoredAny>(payload) {
                Ok(_) => {
                    bump(&stats.schema);
                    return Some(Err(WsError::Schema(e.to_string())));
                }
                Err(syntax) => {
                    bump(&stats.not_json);
                    return Some(Err(WsError::NotJson(syntax.to_string())));
                }
            },
        };
        if self.validate.as_ref().is_some_and(|valid| !valid(&message)) {
            bump(&stats.invalid);
            return Some(Err(WsError::Invalid));
        }
        if self.filter.as_ref().is_some_and(|keep| !keep(&message)) {
            bump(&stats.filtered);
            return None;
        }
        bump(&stats.messages);
        Some(Ok(message))
    }
}
