//! A receiver that answers whatever it is told (feature `internals`, for the hostile-receiver
//! tests): it listens and takes a sender's connection request like a real receiver, then
//! lets the test refuse it with any bytes, or accept it with any accept bytes (over a ring of
//! any size), and afterwards SEND any bytes, stay silent or disconnect. The sender's writes
//! come back as bytes. Nothing checks what it says; that is the point.
//!
//! It is built from the real pieces ([`Listener`], [`Request`], the verbs link), so what the
//! sender meets on the wire is a real receiver's connection with only the answers changed.

use super::verbs_link::VerbsRecvLink;
use super::{RecvCompletion, RecvLink, Ring};
use crate::session::{Listener, Request};
use crate::Error;
use rdmaft_protocol::wire::{AcceptRepr, HandshakeReply, Imm, NONCE_LEN, PROOF_LEN};
use rdmaft_protocol::{Agreed, Negotiated, Params, RingInfo, CTRL_MSG_MAX, RECEIVER_MSG_MAX};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A listening id whose requests the test answers by hand.
#[derive(Debug)]
pub struct RawListener {
    listener: Listener,
}

impl RawListener {
    /// Listens on `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        Ok(RawListener {
            listener: Listener::bind(addr)?,
        })
    }

    /// The address listened on, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The next connection request within `timeout` (`Ok(None)` if none came).
    pub fn next_request(&self, timeout: Duration) -> Result<Option<RawRequest>, Error> {
        Ok(self
            .listener
            .next_request(timeout)?
            .map(|request| RawRequest { request }))
    }
}

/// A connection request, to be answered by the test.
#[derive(Debug)]
pub struct RawRequest {
    request: Request,
}

/// What a hand-made accept is made of: the agreement and ring a correct receiver would
/// announce, and registered memory of the same connection that the sender may not write.
#[derive(Clone, Copy, Debug)]
pub struct AcceptMaterial {
    /// What a correct receiver with the test's parameters agrees to.
    pub agreed: Agreed,
    /// The ring as registered (its length is what the test asked for).
    pub ring: RingInfo,
    /// The connection's send buffers: registered in its protection domain, not for remote
    /// access (their rkey is "an rkey for the wrong memory").
    pub private: RingInfo,
}

impl AcceptMaterial {
    /// The accept a correct receiver sends (no key): edit its fields to make a bogus one.
    pub fn correct(&self) -> AcceptRepr {
        let a = &self.agreed;
        AcceptRepr {
            group: 0,
            features: a.features,
            flags: a.flags,
            chunk_size: a.chunk_size,
            window: a.window,
            ctrl_depth: a.receiver_ctrl_depth,
            max_open_files: a.max_open_files,
            keepalive_ms: a.keepalive_ms,
            ring: RingInfo {
                len: a.ring_len(),
                ..self.ring
            },
            nonce: [0; NONCE_LEN],
            proof: [0; PROOF_LEN],
        }
    }

    /// The private data bytes of `accept`.
    pub fn encode(accept: AcceptRepr) -> Vec<u8> {
        let mut b = vec![0u8; rdmaft_protocol::wire::ACCEPT_LEN];
        let n = HandshakeReply::Accept(accept)
            .encode(&mut b)
            .unwrap_or_default();
        b.truncate(n);
        b
    }
}

impl RawRequest {
    /// The sender's hello as it arrived.
    pub fn hello(&self) -> &[u8] {
        self.request.hello()
    }

    /// Refuses with `private_data` (any bytes) in the CM reject.
    pub fn reject(self, private_data: &[u8]) -> Result<(), Error> {
        self.request.reject_raw(private_data)
    }

    /// Negotiates against `local` as a real receiver would, registers a ring of `ring_len`
    /// bytes (`None`: the agreed length), answers with the bytes `reply` makes from the
    /// [`AcceptMaterial`], and waits up to `timeout` for the connection to be established.
    pub fn accept(
        self,
        local: &Params,
        ring_len: Option<u64>,
        reply: impl FnOnce(&AcceptMaterial) -> Vec<u8>,
        timeout: Duration,
    ) -> Result<RawReceiver, Error> {
        let (conn, agreed) = self.request.accept_raw(
            local,
            ring_len,
            |agreed, ring, private| {
                reply(&AcceptMaterial {
                    agreed: *agreed,
                    ring,
                    private,
                })
            },
            timeout,
        )?;
        let neg = *conn.negotiated();
        let link = VerbsRecvLink::new(conn)?;
        let ring = link.ring();
        Ok(RawReceiver {
            link,
            ring,
            neg,
            agreed,
            sent: 0,
            controls: 0,
        })
    }
}

/// One write from the sender, as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawWrite {
    /// The immediate, decoded.
    pub imm: Imm,
    /// Bytes written.
    pub len: u32,
    /// The bytes, copied from where the immediate says they went (a control slot or a data
    /// slot); empty for a pure ack or when that place is outside the ring.
    pub bytes: Vec<u8>,
}

/// An accepted connection under the test's full control.
pub struct RawReceiver {
    link: VerbsRecvLink,
    ring: Arc<dyn Ring>,
    neg: Negotiated,
    agreed: Agreed,
    /// SENDs posted so far (message `n` is staged in send buffer `n mod depth`).
    sent: u64,
    /// Control writes seen so far.
    controls: u32,
}

impl std::fmt::Debug for RawReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReceiver")
            .field("link", &self.link)
            .field("neg", &self.neg)
            .field("sent", &self.sent)
            .field("controls", &self.controls)
            .finish_non_exhaustive()
    }
}

impl RawReceiver {
    /// What a correct receiver would have agreed (whatever the accept said).
    pub fn agreed(&self) -> &Agreed {
        &self.agreed
    }

    /// Control messages of the sender seen so far: the `ack` a receiver that processed them
    /// all reports.
    pub fn controls_seen(&self) -> u32 {
        self.controls
    }

    /// SENDs `bytes` (at most 256, the sender's receive buffer), waiting up to a second for
    /// room in the send queue.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() > RECEIVER_MSG_MAX {
            return Err(Error::invalid("RawReceiver::send", "at most 256 bytes"));
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut done = Vec::new();
        while self.link.send_room() == 0 && Instant::now() < deadline {
            self.link.wait(Duration::from_millis(10))?;
            done.clear();
            self.link.poll(&mut done)?;
        }
        self.link.post_message(self.sent, bytes)?;
        self.sent += 1;
        Ok(())
    }

    /// The sender's writes that arrive within `timeout` (stops early once the connection is
    /// down); `Err` once the connection failed.
    pub fn writes(&mut self, timeout: Duration) -> (Vec<RawWrite>, Result<(), Error>) {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut done = Vec::new();
        loop {
            done.clear();
            if let Err(e) = self.link.poll(&mut done) {
                return (got, Err(e));
            }
            for c in &done {
                if let RecvCompletion::Write { imm, len } = *c {
                    got.push(self.write(imm, len));
                }
            }
            let now = Instant::now();
            if now >= deadline || self.link.is_down() {
                return (got, Ok(()));
            }
            if let Err(e) = self
                .link
                .wait((deadline - now).min(Duration::from_millis(50)))
            {
                return (got, Err(e));
            }
        }
    }

    fn write(&mut self, raw: u32, len: u32) -> RawWrite {
        let imm = Imm::decode(raw);
        let neg = &self.neg;
        let at = match imm {
            Imm::Chunk(seq) => Some(u64::from(seq % neg.window) * u64::from(neg.chunk_size)),
            Imm::Control(n) => {
                self.controls = self.controls.wrapping_add(1);
                let slot = n % u32::from(neg.receiver_ctrl_depth);
                Some(neg.ctrl_slot_offset(slot))
            }
            Imm::Ack(_) => None,
        };
        // A chunk's bytes sit in its data slot (`seq` is the immediate's, mod 2^31: fine for
        // the short sessions of the tests), a control message's in its control slot.
        let most = CTRL_MSG_MAX.max(neg.chunk_size as usize);
        let mut bytes = vec![0u8; (len as usize).min(most)];
        let copied = at.is_some_and(|at| self.ring.copy_out(at, &mut bytes).is_ok());
        if !copied {
            bytes.clear();
        }
        RawWrite { imm, len, bytes }
    }

    /// Disconnects now (`rdma_disconnect`), whatever the sender is doing.
    pub fn disconnect(&mut self) {
        self.link.close();
    }

    /// Whether the connection is down (the sender disconnected, or our disconnect completed).
    pub fn is_down(&mut self) -> bool {
        self.link.is_down()
    }

    /// Waits up to `timeout` for the connection to go down; whether it did.
    pub fn wait_down(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.link.is_down() && Instant::now() < deadline {
            let mut done = Vec::new();
            let _ = self.link.poll(&mut done);
            let _ = self.link.wait(Duration::from_millis(20));
        }
        self.link.is_down()
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        self.link.close();
        self.wait_down(Duration::from_secs(2));
    }
}
