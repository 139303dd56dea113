//! How a shared connection reconnects and keeps itself honest (R31, R32).

use serde::{Deserialize, Serialize};

/// The timing of a shared connection: backoff between attempts, the heartbeat and its
/// deadline, when a connection counts as stable, how long it lingers once unused, and the seed
/// of the backoff's jitter. All times in milliseconds.
///
/// ```
/// use livecache::core::ConnectionConfig;
/// let config = ConnectionConfig { seed: 7, ..ConnectionConfig::default() };
/// assert_eq!(config.backoff_cap_ms, 20_000);
/// assert!(config.validate().is_ok());
/// let silent = ConnectionConfig { idle_timeout_ms: 5_000, heartbeat_ms: Some(10_000), ..config };
/// assert!(silent.validate().is_err());        // the deadline must outlast the ping interval
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionConfig {
    /// The first retry's bound: retry `n` (0, 1, …) waits a delay drawn uniformly from
    /// `[0, min(cap, base · 2^n)]` (full jitter).
    pub backoff_base_ms: u64,
    /// The most a retry waits.
    pub backoff_cap_ms: u64,
    /// The most retries in a row: when the last one fails, the connection gives up and every
    /// attached entry is `Failed`. `None` (the default): it never gives up while an entry
    /// needs it.
    pub max_attempts: Option<u32>,
    /// An attempt that has not connected after this long is abandoned (and counts as failed).
    pub connect_timeout_ms: u64,
    /// A ping goes out this often while the connection is open; `None`: no pings (the idle
    /// deadline still holds).
    pub heartbeat_ms: Option<u64>,
    /// An open connection that has received nothing — no message, no pong — for this long is
    /// taken for dead and reconnected: this is what catches a half-open connection, which never
    /// errors.
    pub idle_timeout_ms: u64,
    /// The retry count resets only once the connection has stayed open this long and every
    /// attached entry has resynced: a server that accepts and then fails cannot escape the
    /// backoff.
    pub stable_after_ms: u64,
    /// How long the connection stays open once no entry needs it (an entry attaching meanwhile
    /// reuses it).
    pub linger_ms: u64,
    /// The seed of the jitter: the same seed draws the same delays.
    pub seed: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            backoff_base_ms: 500,
            backoff_cap_ms: 20_000,
            max_attempts: None,
            connect_timeout_ms: 10_000,
            heartbeat_ms: Some(10_000),
            idle_timeout_ms: 30_000,
            stable_after_ms: 10_000,
            linger_ms: 1_000,
            seed: 0,
        }
    }
}

/// Why a [`ConnectionConfig`] cannot be used.
///
/// ```
/// use livecache::core::{ConnectionConfig, ConnectionConfigError};
/// let config = ConnectionConfig { backoff_base_ms: 0, ..ConnectionConfig::default() };
/// assert_eq!(config.validate(), Err(ConnectionConfigError::ZeroBackoff));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionConfigError {
    /// `backoff_base_ms` is 0: every retry would come at once.
    #[error("backoff_base_ms must be at least 1")]
    ZeroBackoff,
    /// `backoff_cap_ms` is below `backoff_base_ms`.
    #[error("backoff_cap_ms must be at least backoff_base_ms")]
    CapBelowBase,
    /// `connect_timeout_ms` is 0: every attempt would be abandoned at once.
    #[error("connect_timeout_ms must be at least 1")]
    ZeroConnectTimeout,
    /// `idle_timeout_ms` is 0, or not longer than the heartbeat: a healthy connection would be
    /// taken for dead between two pings.
    #[error("idle_timeout_ms must be longer than heartbeat_ms (and at least 1)")]
    IdleTimeoutTooShort,
    /// `heartbeat_ms` is `Some(0)`: pings without end.
    #[error("heartbeat_ms must be at least 1 (or None)")]
    ZeroHeartbeat,
}

impl ConnectionConfig {
    /// Check the configuration: every time that must be positive is, the cap is not below the
    /// base, and the idle deadline outlasts the ping interval.
    ///
    /// ```
    /// assert!(livecache::core::ConnectionConfig::default().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConnectionConfigError> {
        if self.backoff_base_ms == 0 {
            return Err(ConnectionConfigError::ZeroBackoff);
        }
        if self.backoff_cap_ms < self.backoff_base_ms {
            return Err(ConnectionConfigError::CapBelowBase);
        }
        if self.connect_timeout_ms == 0 {
            return Err(ConnectionConfigError::ZeroConnectTimeout);
        }
        if self.heartbeat_ms == Some(0) {
            return Err(ConnectionConfigError::ZeroHeartbeat);
        }
        if self.idle_timeout_ms == 0 || self.idle_timeout_ms <= self.heartbeat_ms.unwrap_or(0) {
            return Err(ConnectionConfigError::IdleTimeoutTooShort);
        }
        Ok(())
    }

    /// The bound of retry `n`'s delay (0 for the first retry): `min(cap, base · 2^n)`.
    ///
    /// ```
    /// let config = livecache::core::ConnectionConfig::default();
    /// assert_eq!((config.backoff_bound(0), config.backoff_bound(1)), (500, 1_000));
    /// assert_eq!(config.backoff_bound(40), 20_000);
    /// ```
    pub fn backoff_bound(&self, n: u32) -> u64 {
        let factor = 1u64.checked_shl(n).unwrap_or(u64::MAX);
        self.backoff_base_ms
            .saturating_mul(factor)
            .min(self.backoff_cap_ms)
    }
}
