//! An in-process connection: both links of one transfer in one process, for tests without
//! RDMA and for the CPU benchmark (the copy a NIC's DMA would do is one `memcpy` here).
//!
//! It keeps the receive accounting of a real RC queue pair: the receiver has
//! `window + ctrl_depth + 2` receives, the sender `ctrl_depth`, each used by an arriving
//! write or message and given back when its completion is polled; arriving with none posted
//! is an RNR and breaks the connection, as it would with `rnr_retry_count = 0`.

use super::{RecvCompletion, RecvLink, Ring, SendCompletion, SendLink};
use crate::handoff::{Wake, Waker};
use crate::key::Key;
use crate::session::ACK_RECEIVES;
use crate::sync::{lock, AtomicBool, Condvar, Mutex, Ordering};
use crate::verbs::{Slot, SlotArea};
use crate::Error;
use rdmaft_protocol::wire::{ACCEPT_LEN, HELLO_LEN};
use rdmaft_protocol::{
    check_reply, negotiate, ChunkWrite, ControlWrite, Mac, Negotiated, Params, RingInfo,
    RECEIVER_MSG_MAX,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Where the fake ring pretends to live.
const RING_ADDR: u64 = 0x1000_0000;

/// A waker a thread can sleep on with a timeout, level-triggered like the eventfd of the
/// verbs link: a wake that comes while nobody sleeps stays pending until the next sleep
/// takes it.
///
/// Pending, not counted: an engine drains its mailboxes and only then sleeps, so a wake
/// that lands between the drain and the sleep must still end the sleep. (A counter read
/// at the start of the sleep missed exactly that wake, and the engine slept out its idle
/// wait with work queued: the 0.5 s stalls of the loopback link. `loom_tests` below model
/// it.) Written against the `sync` shim so loom can check it.
///
/// A wake signals the condvar only when the thread sleeps (a notify is a system call even
/// with nobody waiting, and a busy link wakes its peer for every message).
#[derive(Debug)]
pub(crate) struct LoopWake {
    state: Mutex<WakeState>,
    cv: Condvar,
    /// `state.pending` as last written under the lock, read without it by the spin that
    /// comes before a sleep.
    posted: AtomicBool,
    /// The spin's record, kept by the sleeping thread (see [`LoopWake::spin`]).
    #[cfg(not(rdmaft_loom))]
    spins: std::sync::atomic::AtomicU32,
}

#[derive(Debug)]
struct WakeState {
    pending: bool,
    sleeping: bool,
}

impl LoopWake {
    fn new() -> Self {
        LoopWake {
            state: Mutex::new(WakeState {
                pending: false,
                sleeping: false,
            }),
            cv: Condvar::new(),
            posted: AtomicBool::new(false),
            #[cfg(not(rdmaft_loom))]
            spins: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Sleeps until a wake is pending (taking it) or `timeout` passes.
    fn sleep(&self, timeout: Duration) {
        #[cfg(not(rdmaft_loom))]
        self.spin(timeout);
        let deadline = std::time::Instant::now() + timeout;
        let mut state = lock(&self.state);
        while !state.pending {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            state.sleeping = true;
            state = match self.cv.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.sleeping = false;
        }
        state.pending = false;
        self.posted.store(false, Ordering::Relaxed);
    }

    /// Waits up to [`SPIN`] (within `timeout`) for a wake without sleeping: a peer that
    /// answers within microseconds then finds this thread awake and posts no futex wake,
    /// and this thread is not switched out and back in. Only shortens the sleep after it,
    /// which still decides under the lock.
    ///
    /// Adaptive: after [`SPIN_MISSES`] spins in a row that ran out, the peer is slow (a bulk
    /// transfer's engines wait for their I/O threads' megabyte writes, and a spin would take
    /// those threads' CPU where lanes share few cores); then only every [`SPIN_PROBE`]-th
    /// sleep spins, to find out whether that changed.
    #[cfg(not(rdmaft_loom))]
    fn spin(&self, timeout: Duration) {
        // Below SPIN_MISSES: spins in vain in a row; from it on, sleeps without a spin.
        let record = self.spins.load(Ordering::Relaxed);
        if record >= SPIN_MISSES {
            let next = if record >= SPIN_MISSES + SPIN_PROBE {
                SPIN_MISSES - 1
            } else {
                record + 1
            };
            self.spins.store(next, Ordering::Relaxed);
            return;
        }
        let until = std::time::Instant::now() + SPIN.min(timeout);
        while !self.posted.load(Ordering::Relaxed) {
            if std::time::Instant::now() >= until {
                self.spins.store(record + 1, Ordering::Relaxed);
                return;
            }
            std::hint::spin_loop();
        }
        self.spins.store(0, Ordering::Relaxed);
    }
}

/// How long a sleep first spins: longer than the peer takes to answer a round of small
/// files (the small-files bench, 20,000 × 4 KiB, went from 0.216–0.224 to 0.195–0.209 s,
/// medians of 10 runs, three alternated pairs of builds).
#[cfg(not(rdmaft_loom))]
const SPIN: Duration = Duration::from_micros(50);

/// Spins in vain in a row after which sleeps stop spinning.
#[cfg(not(rdmaft_loom))]
const SPIN_MISSES: u32 = 2;

/// Sleeps without a spin between two that try one.
#[cfg(not(rdmaft_loom))]
const SPIN_PROBE: u32 = 32;

impl Wake for LoopWake {
    fn wake(&self) {
        let mut state = lock(&self.state);
        let sleeping = state.sleeping && !state.pending;
        state.pending = true;
        self.posted.store(true, Ordering::Relaxed);
        drop(state);
        if sleeping {
            self.cv.notify_all();
        }
    }
}

/// The ring: plain memory behind a lock (the "DMA" copies in, the writer copies out).
#[derive(Debug)]
struct LoopRing(Mutex<Vec<u8>>);

impl Ring for LoopRing {
    fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), Error> {
        let ring = lock(&self.0);
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = at
            .checked_add(dst.len())
            .and_then(|end| ring.get(at..end))
            .ok_or_else(|| Error::invalid("Ring::copy_out", "outside the ring"))?;
        dst.copy_from_slice(src);
        Ok(())
    }
}

/// A message for the sender: its bytes and length.
type Message = ([u8; RECEIVER_MSG_MAX], usize);

/// The state both links share.
#[derive(Debug)]
struct Wire {
    ring: Arc<LoopRing>,
    /// Writes for the receiver, and its receives still posted.
    to_receiver: Mutex<(VecDeque<(u32, u32)>, u32)>,
    /// Messages for the sender, and its receives still posted.
    to_sender: Mutex<(VecDeque<Message>, u32)>,
    /// Set when either side closed or broke the connection (with why).
    down: Mutex<Option<String>>,
    sender_wake: Arc<LoopWake>,
    receiver_wake: Arc<LoopWake>,
}

impl Wire {
    fn break_with(&self, why: &str) {
        lock(&self.down).get_or_insert_with(|| why.to_owned());
        self.sender_wake.wake();
        self.receiver_wake.wake();
    }

    fn broken(&self) -> Option<String> {
        lock(&self.down).clone()
    }
}

/// Both ends of an in-process connection, negotiated through the real handshake encoders.
pub(crate) struct Pair {
    pub(crate) sender: LoopSendLink,
    pub(crate) sender_neg: Negotiated,
    pub(crate) slots: SlotArea,
    pub(crate) receiver: LoopRecvLink,
    pub(crate) receiver_neg: Negotiated,
    /// The receiver's place in its transfer group (when `groups` was given and `LANES`
    /// agreed).
    pub(crate) group: Option<Arc<crate::groups::Group>>,
}

/// Connects a loopback pair: `sender` proposes, `receiver` decides (with transfer groups
/// from `groups`, as a receiver with lanes does).
pub(crate) fn pair(
    sender: &Params,
    receiver: &Params,
    sender_key: Option<&Key>,
    receiver_key: Option<&Key>,
    groups: Option<&crate::groups::Groups>,
) -> Result<Pair, Error> {
    let mut sp = *sender;
    let mut rp = *receiver;
    rp.features
        .set(rdmaft_protocol::Features::LANES, groups.is_some());
    if sender_key.is_some() {
        sp.features |= rdmaft_protocol::Features::AUTH_PSK;
    }
    if receiver_key.is_some() {
        rp.features |= rdmaft_protocol::Features::AUTH_PSK;
    }
    let mut hello = [0u8; HELLO_LEN];
    sp.hello(crate::key::nonce()?)
        .encode(&mut hello)
        .map_err(|_| Error::invalid("loopback", "hello"))?;
    let agreed = negotiate(&hello, &rp).map_err(|reason| Error::HandshakeRejected {
        reason,
        max_version: rdmaft_protocol::VERSION,
    })?;
    let ring = RingInfo {
        addr: RING_ADDR,
        len: agreed.ring_len(),
        rkey: 1,
    };
    let group = match groups {
        Some(g) if agreed.features.contains(rdmaft_protocol::Features::LANES) => Some(
            g.enter(agreed.join)
                .map_err(|reason| Error::HandshakeRejected {
                    reason,
                    max_version: rdmaft_protocol::VERSION,
                })?,
        ),
        _ => None,
    };
    let rmac = receiver_key.map(|k| k as &dyn Mac);
    let (receiver_neg, reply) = agreed
        .accept(
            ring,
            crate::key::nonce()?,
            rmac,
            group.as_ref().map_or(0, |g| g.id()),
        )
        .map_err(|e| Error::invalid("loopback", e.to_string()))?;
    let mut accept = [0u8; ACCEPT_LEN];
    reply
        .encode(&mut accept)
        .map_err(|_| Error::invalid("loopback", "accept"))?;
    let smac = sender_key.map(|k| k as &dyn Mac);
    let sender_neg = check_reply(&accept, &sp, &hello, smac).map_err(Error::Handshake)?;
    let ring_len = usize::try_from(agreed.ring_len())
        .map_err(|_| Error::invalid("loopback", "ring too large"))?;
    let wire = Arc::new(Wire {
        ring: Arc::new(LoopRing(Mutex::new(vec![0; ring_len]))),
        to_receiver: Mutex::new((
            VecDeque::new(),
            receiver_neg.window + u32::from(receiver_neg.receiver_ctrl_depth) + ACK_RECEIVES,
        )),
        to_sender: Mutex::new((VecDeque::new(), u32::from(sender_neg.sender_ctrl_depth))),
        down: Mutex::new(None),
        sender_wake: Arc::new(LoopWake::new()),
        receiver_wake: Arc::new(LoopWake::new()),
    });
    let slots = SlotArea::plain(sender_neg.chunk_size as usize, sender_neg.window)?;
    Ok(Pair {
        sender: LoopSendLink {
            wire: Arc::clone(&wire),
            local: VecDeque::new(),
            closing: false,
        },
        sender_neg,
        slots,
        receiver: LoopRecvLink {
            wire,
            closing: false,
        },
        receiver_neg,
        group,
    })
}

/// The sender's end.
#[derive(Debug)]
pub(crate) struct LoopSendLink {
    wire: Arc<Wire>,
    /// Completions of our own writes (they complete at once).
    local: VecDeque<SendCompletion>,
    closing: bool,
}

impl LoopSendLink {
    /// Delivers a write into the receiver's queue, copying `bytes` to `offset` in the ring.
    fn deliver(&mut self, imm: u32, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        if let Some(why) = self.wire.broken() {
            return Err(Error::ConnectionLost {
                peer: "loopback receiver".into(),
                detail: why,
            });
        }
        {
            let mut ring = lock(&self.wire.ring.0);
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            let dst = at
                .checked_add(bytes.len())
                .and_then(|end| ring.get_mut(at..end))
                .ok_or_else(|| Error::invalid("loopback write", "outside the ring"))?;
            dst.copy_from_slice(bytes);
        }
        let mut q = lock(&self.wire.to_receiver);
        if q.1 == 0 {
            drop(q);
            self.wire
                .break_with("RNR: the receiver had no receive posted");
            return Err(Error::ConnectionLost {
                peer: "loopback receiver".into(),
                detail: "RNR: the receiver had no receive posted".into(),
            });
        }
        q.1 -= 1;
        q.0.push_back((imm, bytes.len() as u32));
        drop(q);
        self.wire.receiver_wake.wake();
        Ok(())
    }
}

impl SendLink for LoopSendLink {
    fn post_control(&mut self, c: &ControlWrite, bytes: &[u8]) -> Result<(), Error> {
        self.deliver(c.imm, c.remote_addr - RING_ADDR, bytes)?;
        self.local.push_back(SendCompletion::Sent);
        Ok(())
    }

    fn post_ack(&mut self, imm: u32) -> Result<(), Error> {
        self.deliver(imm, 0, &[])?;
        self.local.push_back(SendCompletion::Sent);
        Ok(())
    }

    fn post_chunk(&mut self, w: &ChunkWrite, slot: &Slot) -> Result<(), Error> {
        let bytes = slot
            .bytes()
            .get(..w.len as usize)
            .ok_or_else(|| Error::invalid("loopback chunk", "longer than the slot's data"))?;
        self.deliver(w.imm, w.remote_addr - RING_ADDR, bytes)?;
        self.local.push_back(SendCompletion::ChunkDone(w.seq));
        Ok(())
    }

    fn send_room(&self) -> usize {
        usize::MAX
    }

    fn is_idle(&self) -> bool {
        true
    }

    fn poll(&mut self, out: &mut Vec<SendCompletion>) -> Result<(), Error> {
        out.extend(self.local.drain(..));
        let mut q = lock(&self.wire.to_sender);
        while let Some((bytes, len)) = q.0.pop_front() {
            q.1 += 1; // reposted
            out.push(SendCompletion::Message(bytes, len));
        }
        drop(q);
        if out.is_empty() && !self.closing {
            if let Some(why) = self.wire.broken() {
                return Err(Error::ConnectionLost {
                    peer: "loopback receiver".into(),
                    detail: why,
                });
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        if !self.local.is_empty() || !lock(&self.wire.to_sender).0.is_empty() {
            return Ok(());
        }
        self.wire.sender_wake.sleep(timeout);
        Ok(())
    }

    fn waker(&self) -> Waker {
        self.wire.sender_wake.clone()
    }

    fn close(&mut self) {
        self.closing = true;
        self.wire.break_with("the sender disconnected");
    }

    fn is_down(&mut self) -> bool {
        self.wire.broken().is_some()
    }

    fn peer(&self) -> String {
        "loopback receiver".into()
    }
}

/// The receiver's end.
#[derive(Debug)]
pub(crate) struct LoopRecvLink {
    wire: Arc<Wire>,
    closing: bool,
}

impl RecvLink for LoopRecvLink {
    fn post_message(&mut self, _n: u64, bytes: &[u8]) -> Result<(), Error> {
        if let Some(why) = self.wire.broken() {
            return Err(Error::ConnectionLost {
                peer: "loopback sender".into(),
                detail: why,
            });
        }
        let mut msg = [0u8; RECEIVER_MSG_MAX];
        let len = bytes.len().min(RECEIVER_MSG_MAX);
        msg[..len].copy_from_slice(&bytes[..len]);
        let mut q = lock(&self.wire.to_sender);
        if q.1 == 0 {
            drop(q);
            self.wire
                .break_with("RNR: the sender had no receive posted");
            return Err(Error::ConnectionLost {
                peer: "loopback sender".into(),
                detail: "RNR: the sender had no receive posted".into(),
            });
        }
        q.1 -= 1;
        q.0.push_back((msg, len));
        drop(q);
        self.wire.sender_wake.wake();
        Ok(())
    }

    fn send_room(&self) -> usize {
        usize::MAX
    }

    fn is_idle(&self) -> bool {
        true
    }

    fn poll(&mut self, out: &mut Vec<RecvCompletion>) -> Result<(), Error> {
        let mut q = lock(&self.wire.to_receiver);
        while let Some((imm, len)) = q.0.pop_front() {
            q.1 += 1; // reposted before it is handed in
            out.push(RecvCompletion::Write { imm, len });
        }
        drop(q);
        if out.is_empty() && !self.closing {
            if let Some(why) = self.wire.broken() {
                return Err(Error::ConnectionLost {
                    peer: "loopback sender".into(),
                    detail: why,
                });
            }
        }
        Ok(())
    }

    fn ring(&self) -> Arc<dyn Ring> {
        self.wire.ring.clone()
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        if !lock(&self.wire.to_receiver).0.is_empty() {
            return Ok(());
        }
        self.wire.receiver_wake.sleep(timeout);
        Ok(())
    }

    fn waker(&self) -> Waker {
        self.wire.receiver_wake.clone()
    }

    fn close(&mut self) {
        self.closing = true;
        self.wire.break_with("the receiver disconnected");
    }

    fn is_down(&mut self) -> bool {
        self.wire.broken().is_some()
    }

    fn peer(&self) -> String {
        "loopback sender".into()
    }
}

/// A loopback pair of 4 KiB chunks and a window of 2, for the tests and the models.
#[cfg(test)]
fn loop_pair() -> Pair {
    let params = Params::new(rdmaft_protocol::Features::empty(), 4096, 2);
    pair(&params, &params, None, None, None).expect("a loopback pair")
}

/// Model checks of the loopback link's waits with the engines' consumer loop (`make loom`).
///
/// Loom does not model timeouts (a wait with a timeout waits for a wake), so an engine that
/// sleeps while work is queued for it never wakes: the model fails with a deadlock. That is
/// the lost wake-up of the counting waker this link had (a wake landing between the
/// engine's drain and its sleep was taken as already seen).
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::handoff::Mailbox;
    use crate::sync::thread;

    /// Long enough never to pass in a model run: the sleep must end by a wake.
    const FOREVER: Duration = Duration::from_secs(3600);

    /// What the engine's round needs of a link: its completions, and its wait.
    trait Link {
        /// Takes completions; whether there were any.
        fn poll_any(&mut self) -> bool;
        fn sleep(&mut self);
    }

    impl Link for LoopSendLink {
        fn poll_any(&mut self) -> bool {
            let mut c = Vec::new();
            self.poll(&mut c).unwrap();
            !c.is_empty()
        }
        fn sleep(&mut self) {
            self.wait(FOREVER).unwrap();
        }
    }

    impl Link for LoopRecvLink {
        fn poll_any(&mut self) -> bool {
            let mut c = Vec::new();
            self.poll(&mut c).unwrap();
            !c.is_empty()
        }
        fn sleep(&mut self) {
            self.wait(FOREVER).unwrap();
        }
    }

    /// The I/O thread pushes two results (the second finds the mailbox non-empty and wakes
    /// nobody) while the engine runs its rounds as `engine::send::run` and
    /// `engine::recv::serve` do: take the link's completions, drain the mailbox, and sleep
    /// in the link's wait only when the round found nothing. It must take both.
    fn engine_takes_every_result(link: &mut dyn Link, done: Arc<Mailbox<u32>>) {
        let io = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                done.push(1).unwrap();
                done.push(2).unwrap();
            })
        };
        let mut taken = 0;
        while taken < 2 {
            let had_completions = link.poll_any();
            let mut had_results = false;
            while done.try_pop().is_some() {
                taken += 1;
                had_results = true;
            }
            if !had_completions && !had_results {
                link.sleep();
            }
        }
        io.join().unwrap();
    }

    /// The sender's engine and its reader.
    #[test]
    fn the_sender_engine_wakes_for_every_read_result() {
        loom::model(|| {
            let mut link = loop_pair().sender;
            let done = Arc::new(Mailbox::new(Some(link.waker())));
            engine_takes_every_result(&mut link, done);
        });
    }

    /// The receiver's engine and its writer.
    #[test]
    fn the_receiver_engine_wakes_for_every_write_result() {
        loom::model(|| {
            let mut link = loop_pair().receiver;
            let done = Arc::new(Mailbox::new(Some(link.waker())));
            engine_takes_every_result(&mut link, done);
        });
    }
}

/// The link keeps a queue pair's receive accounting: what arrives beyond the receives posted
/// breaks it (an RNR), each completion polled posts its receive again, and either end's
/// close is the other's disconnect.
#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;

    /// Sleeps spin until two spins in a row ran out; from then on one sleep in
    /// `SPIN_MISSES + SPIN_PROBE` tries a spin again; a wake a spin finds starts over.
    #[test]
    fn spins_stop_after_two_in_vain_and_probe_now_and_then() {
        let w = LoopWake::new();
        // Whether a sleep spun: only a sleep that starts below SPIN_MISSES does.
        let spun = |w: &LoopWake| {
            let before = w.spins.load(Ordering::Relaxed);
            w.sleep(Duration::from_micros(1));
            before < SPIN_MISSES
        };
        let period = (SPIN_MISSES + SPIN_PROBE) as usize;
        let spins: Vec<usize> = (0..=2 * period + 1).filter(|_| spun(&w)).collect();
        assert_eq!(spins, [0, 1, period + 1, 2 * period + 1]);
        // That last probe ran out; the next one finds a wake waiting: spinning pays again.
        while w.spins.load(Ordering::Relaxed) >= SPIN_MISSES {
            spun(&w);
        }
        w.wake();
        assert!(spun(&w));
        assert_eq!(w.spins.load(Ordering::Relaxed), 0);
        assert!(spun(&w) && spun(&w) && !spun(&w));
    }

    /// A wait with nothing to do lasts its timeout, on either side (no busy loop); one
    /// with a completion waiting returns (else this test would not end).
    #[test]
    fn a_wait_lasts_its_timeout_unless_something_waits() {
        let mut p = loop_pair();
        let timeout = Duration::from_millis(20);
        let started = std::time::Instant::now();
        p.receiver.wait(timeout).unwrap();
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        p.sender.wait(timeout).unwrap();
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        p.sender.post_ack(0).unwrap();
        p.receiver.wait(Duration::from_secs(3600)).unwrap();
        p.receiver.post_message(0, b"m").unwrap();
        p.sender.wait(Duration::from_secs(3600)).unwrap();
    }

    #[test]
    fn writes_beyond_the_receives_posted_are_an_rnr() {
        let mut p = loop_pair();
        let posted =
            p.receiver_neg.window + u32::from(p.receiver_neg.receiver_ctrl_depth) + ACK_RECEIVES;
        for _ in 0..posted {
            p.sender.post_ack(0).unwrap();
        }
        // Polled: every receive is posted again, and as many writes fit once more.
        let mut c = Vec::new();
        p.receiver.poll(&mut c).unwrap();
        assert_eq!(c.len(), posted as usize);
        for _ in 0..posted {
            p.sender.post_ack(0).unwrap();
        }
        let err = p.sender.post_ack(0).unwrap_err();
        assert!(err.to_string().contains("RNR"), "{err}");
        assert!(p.receiver.is_down() && p.sender.is_down());
        assert_eq!(p.sender.peer(), "loopback receiver");
        assert_eq!(p.receiver.peer(), "loopback sender");
    }

    #[test]
    fn messages_beyond_the_senders_receives_are_an_rnr() {
        let mut p = loop_pair();
        let posted = u32::from(p.sender_neg.sender_ctrl_depth);
        for n in 0..posted {
            p.receiver.post_message(u64::from(n), b"m").unwrap();
        }
        let mut c = Vec::new();
        p.sender.poll(&mut c).unwrap();
        assert_eq!(c.len(), posted as usize);
        for n in 0..posted {
            p.receiver.post_message(u64::from(n), b"m").unwrap();
        }
        let err = p.receiver.post_message(0, b"m").unwrap_err();
        assert!(err.to_string().contains("RNR"), "{err}");
        assert!(p.sender.is_down());
    }

    #[test]
    fn a_close_is_the_other_ends_disconnect() {
        let mut p = loop_pair();
        assert!(!p.sender.is_down() && !p.receiver.is_down());
        p.receiver.close();
        assert!(p.sender.is_down());
        let mut c = Vec::new();
        assert!(
            p.sender.poll(&mut c).is_err(),
            "a poll with nothing left says so"
        );
        let err = p.sender.post_ack(0).unwrap_err();
        assert!(err.to_string().contains("receiver disconnected"), "{err}");
        let mut p = loop_pair();
        p.sender.close();
        assert!(p.receiver.is_down());
        let mut c = Vec::new();
        assert!(
            p.receiver.poll(&mut c).is_err(),
            "a poll with nothing left says so"
        );
    }
}
