//! A sender that writes whatever it is told (feature `internals`, for the hostile-peer
//! tests): it does the handshake like a real sender, then posts any immediate and any bytes
//! at any ring offset, and hands back the receiver's messages as bytes. Nothing checks what
//! it sends; that is the point.

use super::verbs_link::VerbsSendLink;
use super::{SendCompletion, SendLink};
use crate::session::SenderConn;
use crate::verbs::RemoteBuffer;
use crate::Error;
use rdmaft_protocol::wire::Imm;
use rdmaft_protocol::{ControlWrite, Negotiated, Params, RingInfo, CTRL_MSG_MAX};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A connected sender under the test's full control.
#[derive(Debug)]
pub struct RawSender {
    link: VerbsSendLink,
    neg: Negotiated,
    /// Posts so far: each stages its bytes in the next local control buffer, so no buffer
    /// is rewritten while an earlier write from it may still be in flight.
    posts: u32,
}

impl RawSender {
    /// Connects and does the handshake with `params` (as a real sender would).
    pub fn connect(addr: SocketAddr, params: Params, timeout: Duration) -> Result<Self, Error> {
        Self::connect_keyed(addr, params, None, timeout)
    }

    /// As [`connect`](Self::connect), with a pre-shared key in the handshake (the
    /// receiver's proof is checked). Its own proof is sent only if the test writes it.
    pub fn connect_keyed(
        addr: SocketAddr,
        params: Params,
        key: Option<&crate::Key>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let conn: SenderConn = crate::session::connect(addr, params, key, timeout)?;
        let neg = *conn.negotiated();
        Ok(RawSender {
            link: VerbsSendLink::new(conn)?,
            neg,
            posts: 0,
        })
    }

    /// What the two sides agreed.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// Ring offset of control slot `n` (after the data slots, 4096 bytes each).
    pub fn control_offset(&self, n: u32) -> u64 {
        let data = u64::from(self.neg.chunk_size) * u64::from(self.neg.window);
        let slot = u64::from(n % u32::from(self.neg.receiver_ctrl_depth));
        data + slot * CTRL_MSG_MAX as u64
    }

    /// Ring offset of data slot `seq % window`.
    pub fn chunk_offset(&self, seq: u64) -> u64 {
        (seq % u64::from(self.neg.window)) * u64::from(self.neg.chunk_size)
    }

    /// RDMA WRITE WITH IMMEDIATE of `bytes` (at most 4096) to `offset` in the ring, with `imm`.
    pub fn write(&mut self, imm: u32, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write_to(self.neg.ring, imm, offset, bytes)
    }

    /// As [`write`](Self::write), into `ring` (another connection's address and key, which
    /// a sender may have learnt): what the receiver's protection domains must refuse.
    pub fn write_to(
        &mut self,
        ring: RingInfo,
        imm: u32,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if bytes.len() > CTRL_MSG_MAX {
            return Err(Error::invalid("RawSender::write", "at most 4096 bytes"));
        }
        let slot = self.posts % u32::from(self.neg.receiver_ctrl_depth);
        self.posts = self.posts.wrapping_add(1);
        let c = ControlWrite {
            len: bytes.len(),
            slot,
            remote_addr: ring.addr + offset,
            rkey: ring.rkey,
            imm,
        };
        let own = self.link.aim_at(RemoteBuffer {
            addr: ring.addr,
            rkey: ring.rkey,
            len: ring.len,
        });
        let posted = self.link.post_control(&c, bytes);
        self.link.aim_at(own);
        // Each write leaves at once, as a hostile sender's would.
        posted.and_then(|()| self.link.flush())
    }

    /// Control message number `n` (its immediate and its slot), with any bytes.
    pub fn control(&mut self, n: u32, bytes: &[u8]) -> Result<(), Error> {
        self.write(Imm::control(n).encode(), self.control_offset(n), bytes)
    }

    /// Chunk `seq` (its immediate and its slot), with any bytes.
    pub fn chunk(&mut self, seq: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write(Imm::chunk(seq).encode(), self.chunk_offset(seq), bytes)
    }

    /// The receiver's messages that arrive within `timeout` (stops early once the
    /// connection is down); `Err` once a write failed or the connection broke.
    pub fn messages(&mut self, timeout: Duration) -> (Vec<Vec<u8>>, Result<(), Error>) {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut out = Vec::new();
        loop {
            out.clear();
            if let Err(e) = self.link.poll(&mut out) {
                return (got, Err(e));
            }
            for c in &out {
                if let SendCompletion::Message(bytes, len) = c {
                    got.push(bytes[..*len].to_vec());
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

    /// Whether the receiver has disconnected.
    pub fn is_down(&mut self) -> bool {
        self.link.is_down()
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        self.link.close();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.link.is_down() && Instant::now() < deadline {
            let _ = self.link.wait(Duration::from_millis(20));
        }
    }
}
