//! Signals that `berth run` catches so it can pass them to the container instead of
//! dying and leaving the container behind, and parsing of signal names.

use std::str::FromStr;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::{Error, Result};

/// Highest signal number Linux delivers (SIGRTMAX on x86_64 and aarch64).
const MAX_SIGNAL: u32 = 64;

/// Handlers for SIGINT, SIGTERM and SIGHUP. While this value lives, those signals no
/// longer end `berth`; they are queued here until [`CaughtSignals::recv`] takes them.
pub struct CaughtSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl CaughtSignals {
    pub fn install() -> Result<CaughtSignals> {
        Ok(CaughtSignals {
            interrupt: install_handler(SignalKind::interrupt(), "SIGINT")?,
            terminate: install_handler(SignalKind::terminate(), "SIGTERM")?,
            hangup: install_handler(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for the next caught signal and returns it.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.hangup.recv() => Signal::SIGHUP,
        }
    }

    /// Returns a signal that arrived since the last call, without waiting.
    pub async fn take_pending(&mut self) -> Option<Signal> {
        tokio::select! {
            biased;
            signal = self.recv() => Some(signal),
            () = std::future::ready(()) => None,
        }
    }
}

fn install_handler(kind: SignalKind, name: &'static str) -> Result<tokio::signal::unix::Signal> {
    signal(kind).map_err(|source| Error::SignalHandler {
        signal: name,
        source,
    })
}

/// Parses a signal given as a number (`9`), a name (`KILL`) or a name with the SIG
/// prefix (`SIGKILL`), case-insensitively. Numbers up to 64 are accepted so that
/// real-time signals can be sent by number.
pub fn parse_signal(value: &str) -> Result<u32> {
    let invalid = || Error::InvalidSignal {
        value: value.to_string(),
    };

    if let Ok(number) = value.parse::<u32>() {
        return if (1..=MAX_SIGNAL).contains(&number) {
            Ok(number)
        } else {
            Err(invalid())
        };
    }

    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let signal = Signal::from_str(&name).map_err(|_| invalid())?;
    Ok(signal as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_by_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("64").unwrap(), 64);
    }

    #[test]
    fn signal_by_name_with_and_without_prefix() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL as u32);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM as u32);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP as u32);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1 as u32);
    }

    #[test]
    fn signal_out_of_range_rejected() {
        assert!(matches!(
            parse_signal("0"),
            Err(Error::InvalidSignal { .. })
        ));
        assert!(matches!(
            parse_signal("65"),
            Err(Error::InvalidSignal { .. })
        ));
        assert!(matches!(
            parse_signal("-1"),
            Err(Error::InvalidSignal { .. })
        ));
    }

    #[test]
    fn signal_unknown_name_rejected() {
        let error = parse_signal("SIGFOO").unwrap_err();

        assert!(error.to_string().contains("\"SIGFOO\""), "{error}");
        assert!(parse_signal("").is_err());
    }

    #[tokio::test]
    async fn pending_signal_taken_once() {
        let mut signals = CaughtSignals::install().unwrap();
        assert_eq!(signals.take_pending().await, None);

        // The handler installed above catches it, so the test process keeps running.
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();

        let received = tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv())
            .await
            .expect("SIGHUP should arrive");
        assert_eq!(received, Signal::SIGHUP);
        assert_eq!(signals.take_pending().await, None);
    }
}
