//! How a session ends, shared by both roles: the error message still owed to the peer and the
//! last event, each handed out once.

use crate::codes::ErrorCode;
use crate::error::{violation_text, Error, ErrorText, Failure, Violation};

/// The end of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Goodbyes exchanged.
    Closed,
    /// Ended badly.
    Failed(Failure),
}

/// An error message still to be sent: code, detail, text.
pub(crate) type OwedError = (ErrorCode, u16, ErrorText);

/// Terminal state of a state machine; `None` outcome while the session is live.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    outcome: Option<Outcome>,
    reported: bool,
    owed_error: Option<OwedError>,
}

impl Ending {
    pub(crate) fn is_ended(&self) -> bool {
        self.outcome.is_some()
    }

    /// `Err(Error::Closed)` once ended: inputs after the end are refused.
    pub(crate) fn live(&self) -> Result<(), Error> {
        match self.outcome {
            Some(_) => Err(Error::Closed),
            None => Ok(()),
        }
    }

    /// The clean end.
    pub(crate) fn close(&mut self) {
        self.outcome.get_or_insert(Outcome::Closed);
    }

    /// Fails the session; `notify_peer` is the error message to send, if any.
    fn fail(&mut self, failure: Failure, notify_peer: Option<OwedError>) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome::Failed(failure));
            self.owed_error = notify_peer;
        }
    }

    /// The peer broke the protocol: tell it why, and return the error for the caller.
    // spec: [violation.error]
    pub(crate) fn violation(&mut self, v: Violation) -> Error {
        self.fail(
            Failure::Violation(v),
            Some((v.error_code(), v.code(), violation_text(&v))),
        );
        Error::Violation(v)
    }

    /// The local application gave up with `code`.
    pub(crate) fn abort(&mut self, code: ErrorCode) {
        let text = ErrorText::new(code.description().unwrap_or("aborted"));
        self.fail(Failure::Aborted(code), Some((code, 0, text)));
    }

    /// Nothing arrived from the peer within the idle timeout.
    pub(crate) fn time_out(&mut self) {
        self.fail(
            Failure::TimedOut,
            Some((ErrorCode::TIMEOUT, 0, ErrorText::new("idle timeout"))),
        );
    }

    /// The peer sent an error message: nothing is owed back.
    pub(crate) fn peer_aborted(&mut self, code: ErrorCode, detail: u16, text: &str) {
        self.fail(
            Failure::PeerAborted(code, detail, ErrorText::new(text)),
            None,
        );
    }

    /// The error message still to send, if any (left in place).
    pub(crate) fn owed_error(&self) -> Option<&OwedError> {
        self.owed_error.as_ref()
    }

    /// The error message was sent.
    pub(crate) fn error_sent(&mut self) {
        self.owed_error = None;
    }

    /// The outcome for the final event, once.
    pub(crate) fn take_outcome(&mut self) -> Option<Outcome> {
        if self.reported || self.outcome.is_none() {
            return None;
        }
        self.reported = self.outcome.is_some();
        self.outcome
    }
}
