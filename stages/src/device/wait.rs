//! Waiting for a device to appear, by polling with back-off up to a deadline.
//!
//! Polling is used instead of the kernel's uevent socket because the stages also run
//! against a fake sysfs in tests, where no uevent is ever sent. The back-off keeps the
//! cost of a long wait to a few dozen checks.

use std::time::{Duration, Instant};

use crate::error::StageError;

/// How long the devices and storages stages wait for a device by default.
pub const DEFAULT_DEVICE_TIMEOUT: Duration = Duration::from_secs(3);

const FIRST_DELAY: Duration = Duration::from_millis(2);
const MAX_DELAY: Duration = Duration::from_millis(100);

/// Calls `probe` until it returns `Some`, sleeping between calls with a doubling delay.
/// Fails with [`StageError::Timeout`] naming `what` when `timeout` passes first; an error
/// from `probe` ends the wait at once.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, StageError>,
) -> Result<T, StageError> {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;

    loop {
        if let Some(found) = probe()? {
            return Ok(found);
        }

        let now = Instant::now();
        if now >= deadline {
            return Err(StageError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn returns_once_probe_finds() {
        let mut calls = 0;

        let found = until("device x", Duration::from_secs(1), || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        });

        assert_eq!(found.unwrap(), 3);
    }

    #[test]
    fn timeout_names_device() {
        let started = Instant::now();
        let mut calls = 0;

        let error = until::<()>("block device 02/01", Duration::from_millis(50), || {
            calls += 1;
            Ok(None)
        })
        .expect_err("never appears");

        assert_eq!(error.code(), ErrorCode::DeadlineExceeded);
        assert!(error.to_string().contains("block device 02/01"), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Back-off keeps the number of checks small.
        assert!(calls < 20, "{calls} checks in 50 ms");
    }

    #[test]
    fn probe_error_ends_wait() {
        let error = until::<()>("device", Duration::from_secs(10), || {
            Err(StageError::invalid("device", "d", "broken"))
        })
        .expect_err("probe fails");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }
}
