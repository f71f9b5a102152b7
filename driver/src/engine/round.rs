//! The one run loop both roles' engines (and every lane) use: rounds of poll, feed, drain.
//!
//! A round: the role's own start (a raised stop aborts the session; the sender offers
//! files, the receiver checks its handshake deadline) and a drain; then every completion one
//! poll returned and every result the I/O thread handed back, fed to the machine corked
//! (each followed by a drain for its events); then the role's end of round (the sender
//! offers the files the results made room for), uncork and drain, so that with `BATCH`
//! what the round produced leaves together; then time, a link that went down, the jobs
//! staged for the I/O thread (one hand-over, one wake-up; or run by the engine itself when
//! they are small and the thread idle, see `io_thread`; the sender's verbs link first posts
//! the round's writes as one chain), and a wait only when the round brought nothing and no
//! result is ready.

use crate::Error;
use rdmaft_protocol::{CtrlBuf, CTRL_MSG_MAX};

/// One role's steps of a round (see the module docs for their order).
pub(crate) trait Round {
    /// What one poll of the link returns.
    type Completion;
    /// The role's start of a round.
    fn start_round(&mut self) -> Result<(), Error>;
    /// Hands out everything the machine has to say now.
    fn drain(&mut self) -> Result<(), Error>;
    /// The session is over.
    fn is_ended(&self) -> bool;
    /// Takes the link's completions.
    fn poll(&mut self, into: &mut Vec<Self::Completion>) -> Result<(), Error>;
    /// Corks or uncorks the machine (`set_corked`).
    fn set_corked(&mut self, corked: bool);
    /// Feeds one completion.
    fn completion(&mut self, c: Self::Completion) -> Result<(), Error>;
    /// Feeds one result of the I/O thread; `false` when none was waiting.
    fn io_result(&mut self) -> Result<bool, Error>;
    /// The role's end of a round, still corked.
    fn end_round(&mut self) -> Result<(), Error>;
    /// Lets the machine see the time (idle timeout, keepalives).
    fn tick(&mut self);
    /// The error that ends the loop when the link went down under a live session.
    fn link_lost(&mut self) -> Option<Error>;
    /// Hands the round's staged jobs to the I/O thread (or runs small ones itself);
    /// `true` when results are ready without waiting.
    fn hand_over(&mut self) -> Result<bool, Error>;
    /// Sleeps until the link or the I/O thread wakes it, or the machine's next deadline.
    fn wait(&mut self) -> Result<(), Error>;
}

/// Runs rounds until the session ends (`Ok`) or the engine fails.
pub(crate) fn run<R: Round>(r: &mut R) -> Result<(), Error> {
    let mut completions = Vec::new();
    loop {
        r.start_round()?;
        r.drain()?;
        if r.is_ended() {
            return Ok(());
        }
        completions.clear();
        r.poll(&mut completions)?;
        let mut busy = !completions.is_empty();
        r.set_corked(true);
        for c in completions.drain(..) {
            r.completion(c)?;
            r.drain()?;
        }
        while r.io_result()? {
            busy = true;
            r.drain()?;
        }
        r.end_round()?;
        r.set_corked(false);
        r.drain()?;
        r.tick();
        if let Some(e) = r.link_lost() {
            return Err(e);
        }
        let ready = r.hand_over()?;
        if !busy && !ready {
            r.wait()?;
        }
    }
}

/// The buffer control messages are encoded into (and, at the receiver, copied out of the
/// ring into), kept from one drain to the next: zeroing 4 KiB per drain (one per
/// completion) showed in the small-files profile. A nested drain gets a fresh one.
#[derive(Default)]
pub(crate) struct CtrlScratch(Option<Box<CtrlBuf>>);

impl CtrlScratch {
    /// The buffer, to be given back with [`CtrlScratch::put`].
    pub(crate) fn take(&mut self) -> Box<CtrlBuf> {
        self.0.take().unwrap_or_else(|| Box::new([0; CTRL_MSG_MAX]))
    }

    pub(crate) fn put(&mut self, buf: Box<CtrlBuf>) {
        self.0 = Some(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one scripted round brings.
    #[derive(Clone, Copy, Default)]
    struct Brings {
        completions: usize,
        results: usize,
        ready: bool,
    }

    /// A role that plays `script` round by round and logs every step; the session ends
    /// when the script does.
    struct Scripted {
        script: Vec<Brings>,
        round: usize,
        results_left: usize,
        /// The round in which the link goes down.
        lost_in: Option<usize>,
        log: Vec<String>,
    }

    impl Scripted {
        fn new(script: Vec<Brings>) -> Self {
            Scripted {
                script,
                round: 0,
                results_left: 0,
                lost_in: None,
                log: Vec::new(),
            }
        }

        fn now(&self) -> Brings {
            self.script[self.round - 1]
        }
    }

    impl Round for Scripted {
        type Completion = usize;
        fn start_round(&mut self) -> Result<(), Error> {
            self.round += 1;
            if self.round <= self.script.len() {
                self.results_left = self.now().results;
            }
            self.log.push(format!("start {}", self.round));
            Ok(())
        }
        fn drain(&mut self) -> Result<(), Error> {
            Ok(())
        }
        fn is_ended(&self) -> bool {
            self.round > self.script.len()
        }
        fn poll(&mut self, into: &mut Vec<usize>) -> Result<(), Error> {
            into.extend(0..self.now().completions);
            Ok(())
        }
        fn set_corked(&mut self, corked: bool) {
            self.log.push(format!("corked {corked}"));
        }
        fn completion(&mut self, c: usize) -> Result<(), Error> {
            self.log.push(format!("completion {c}"));
            Ok(())
        }
        fn io_result(&mut self) -> Result<bool, Error> {
            if self.results_left == 0 {
                return Ok(false);
            }
            self.results_left -= 1;
            self.log.push("result".into());
            Ok(true)
        }
        fn end_round(&mut self) -> Result<(), Error> {
            self.log.push("end".into());
            Ok(())
        }
        fn tick(&mut self) {}
        fn link_lost(&mut self) -> Option<Error> {
            (self.lost_in == Some(self.round)).then_some(Error::ThreadPanicked("link"))
        }
        fn hand_over(&mut self) -> Result<bool, Error> {
            Ok(self.now().ready)
        }
        fn wait(&mut self) -> Result<(), Error> {
            self.log.push("wait".into());
            Ok(())
        }
    }

    /// A round feeds its completions and results corked, and waits only when it brought
    /// nothing and no result is ready.
    #[test]
    fn a_round_waits_only_when_it_brought_nothing() {
        let idle = Brings::default();
        let script = vec![
            idle,
            Brings {
                completions: 2,
                ..idle
            },
            Brings { results: 1, ..idle },
            Brings {
                ready: true,
                ..idle
            },
            idle,
        ];
        let mut r = Scripted::new(script);
        run(&mut r).unwrap();
        let log = r.log.join(", ");
        assert_eq!(
            log,
            "start 1, corked true, end, corked false, wait, \
             start 2, corked true, completion 0, completion 1, end, corked false, \
             start 3, corked true, result, end, corked false, \
             start 4, corked true, end, corked false, \
             start 5, corked true, end, corked false, wait, \
             start 6"
        );
    }

    /// A link that goes down under a live session ends the loop with its error.
    #[test]
    fn a_lost_link_ends_the_loop() {
        let mut r = Scripted::new(vec![Brings::default(); 5]);
        r.lost_in = Some(2);
        let e = run(&mut r).unwrap_err();
        assert!(matches!(e, Error::ThreadPanicked("link")), "{e}");
        let log = r.log.join(", ");
        assert!(
            log.ends_with("wait, start 2, corked true, end, corked false"),
            "no wait after the loss: {log}"
        );
    }

    /// The control buffer given back is the one the next drain takes (as it was left, not
    /// zeroed again).
    #[test]
    fn the_control_buffer_is_kept_between_drains() {
        let mut s = CtrlScratch::default();
        let mut buf = s.take();
        buf[7] = 0xa5;
        s.put(buf);
        assert_eq!(s.take()[7], 0xa5);
    }
}
