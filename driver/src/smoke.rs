//! A loopback smoke check of the RDMA stack: device, PD, CQ, MR, RDMA CM connection, SEND/RECV
//! and RDMA WRITE WITH IMM, each verified byte for byte.
//!
//! It answers "does RDMA work on this host, with this device and address?" before anything
//! bigger is tried, and it exercises every wrapper in [`crate::verbs`]. One process plays both
//! peers: a listener thread and a connector (the calling thread), each with its own event
//! channel, PD, CQ and QP, connected over the device's own IP address (on Soft-RoCE both use
//! the rxe device's address; `lo` does not work with rdma_cm).
//!
//! ```no_run
//! let report = rdmaft::smoke::run(Some("rxe0"), "10.77.0.1".parse().unwrap(), 0)?;
//! assert_eq!(report.recv_bytes, report.send_bytes);
//! # Ok::<(), rdmaft::Error>(())
//! ```

use crate::verbs::{
    Access, CmEvent, CmEventKind, CmId, CompletionChannel, CompletionQueue, ConnParams, DeviceList,
    EventChannel, MemoryRegion, ProtectionDomain, QpCaps, QueuePair, RemoteBuffer, WcOpcode,
    WorkCompletion,
};
use crate::Error;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable naming the RDMA device to use when none is given.
pub const DEVICE_ENV: &str = "RDMAFT_DEVICE";

/// How long each step may wait (an event, a completion) before the check fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes the connector SENDs (odd on purpose: no alignment luck).
const SEND_LEN: usize = 1001;
/// Bytes the connector RDMA-WRITEs (several MTUs, not a multiple of one).
const WRITE_LEN: usize = 64 * 1024 + 123;
/// The immediate value sent with the write.
const IMM: u32 = 0x5eed_c0de;
/// Where receives land in the listener's receive buffer: SENDs in the first half, the
/// zero-byte receive consumed by the WRITE WITH IMM in the second.
const RECV_HALF: usize = 2048;
/// The listener refuses writes larger than this (peer input is bounded).
const MAX_WRITE_LEN: usize = 16 << 20;
/// The listener's answer after both checks pass.
const REPLY: &[u8] = b"rdmaft smoke: listener verified SEND and WRITE_WITH_IMM";

const WR_SEND: u64 = 1;
const WR_WRITE: u64 = 2;
const WR_REPLY_RECV: u64 = 3;
const WR_RECV_SEND: u64 = 10;
const WR_RECV_IMM: u64 = 11;
const WR_REPLY_SEND: u64 = 12;

/// Magic at the start of the smoke check's private data (not the rdmaft protocol's).
const MAGIC: [u8; 4] = *b"RFSM";

/// What to check, and how.
#[derive(Clone, Debug)]
pub struct SmokeOptions {
    /// Device name; `None` uses `RDMAFT_DEVICE` or else the first device.
    pub device: Option<String>,
    /// An IP address of the device (both peers use it).
    pub addr: IpAddr,
    /// Listening port; 0 picks a free one.
    pub port: u16,
    /// Per-step deadline.
    pub timeout: Duration,
}

impl SmokeOptions {
    /// Options with the default timeout.
    pub fn new(device: Option<&str>, addr: IpAddr, port: u16) -> Self {
        SmokeOptions {
            device: device.map(str::to_owned),
            addr,
            port,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the smoke check did; every count was verified byte for byte by the receiving side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmokeReport {
    /// The device that was opened.
    pub device: String,
    /// Every device on the host.
    pub available: Vec<String>,
    /// The device rdma_cm bound the listener's connection to.
    pub listener_device: String,
    /// The device rdma_cm bound the connector to.
    pub connector_device: String,
    /// The address both peers used.
    pub addr: IpAddr,
    /// The port the listener listened on.
    pub port: u16,
    /// Bytes the connector SENT.
    pub send_bytes: usize,
    /// Bytes the listener RECEIVED and verified.
    pub recv_bytes: usize,
    /// Bytes the connector RDMA-WROTE.
    pub write_bytes: usize,
    /// Bytes the listener found written and verified.
    pub write_verified_bytes: usize,
    /// The immediate value the listener received with the write.
    pub imm: u32,
    /// Bytes of the listener's reply the connector received and verified.
    pub reply_bytes: usize,
    /// Wall time of the whole check.
    pub elapsed: Duration,
    /// The steps, in order, as reported to the progress callback.
    pub steps: Vec<String>,
}

/// Runs the check quietly (the steps are in the report).
///
/// `device`: `None` uses `RDMAFT_DEVICE` or the first device; `addr` must be an IP address
/// of that device; `port` 0 picks a free port.
pub fn run(device: Option<&str>, addr: IpAddr, port: u16) -> Result<SmokeReport, Error> {
    run_with(&SmokeOptions::new(device, addr, port), &|_| {})
}

/// Runs the check, calling `progress` with each step as it happens (from both threads).
pub fn run_with(
    opts: &SmokeOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<SmokeReport, Error> {
    let started = Instant::now();
    let steps = Mutex::new(Vec::new());
    let log = |line: &str| {
        steps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line.to_owned());
        progress(line);
    };

    let device = opts
        .device
        .clone()
        .or_else(|| std::env::var(DEVICE_ENV).ok().filter(|d| !d.is_empty()));
    let (device, available) = check_device(device.as_deref(), &log)?;
    let (listener, connector) = loopback(opts, &log)?;

    for (side, got) in [
        ("listener", &listener.device),
        ("connector", &connector.device),
    ] {
        if *got != device {
            return Err(Error::Check(format!(
                "the {side} was bound to device {got}, not {device}: is {} an address of \
                 {device}?",
                opts.addr
            )));
        }
    }
    log("teardown ok");
    let steps = steps
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(SmokeReport {
        device,
        available,
        listener_device: listener.device,
        connector_device: connector.device,
        addr: opts.addr,
        port: listener.port,
        send_bytes: connector.send_bytes,
        recv_bytes: listener.recv_bytes,
        write_bytes: connector.write_bytes,
        write_verified_bytes: listener.write_verified_bytes,
        imm: listener.imm,
        reply_bytes: connector.reply_bytes,
        elapsed: started.elapsed(),
        steps,
    })
}

/// Step 1: find and open the device, allocate a PD and a CQ, register a buffer.
fn check_device(
    wanted: Option<&str>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(String, Vec<String>), Error> {
    let list = DeviceList::new()?;
    let available = list.names();
    let dev = list.find(wanted)?;
    let name = dev.name();
    log(&format!(
        "device {name} found (devices: {})",
        available.join(", ")
    ));
    let ctx = dev.open()?;
    drop(list); // an open context outlives the list
    log(&format!("device {} opened", ctx.device_name()));
    let pd = ProtectionDomain::new(&ctx)?;
    let chan = CompletionChannel::new(&ctx)?;
    let cq = CompletionQueue::new(&ctx, 16, Some(&chan))?;
    let mr = MemoryRegion::new(&pd, 4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
    log(&format!(
        "pd, cq, mr ok (cq capacity {}, {}-byte mr lkey {:#x} rkey {:#x})",
        cq.capacity(),
        mr.len(),
        mr.lkey(),
        mr.rkey()
    ));
    // Children before parents, as the Arcs would do anyway; spelled out for the reader.
    drop(mr);
    drop(cq);
    drop(chan);
    drop(pd);
    drop(ctx);
    Ok((name, available))
}

/// Which side failed first (so the other side's "stopped" error is not reported as the cause).
const NOBODY: u8 = 0;
const LISTENER: u8 = 1;
const CONNECTOR: u8 = 2;

struct ListenerOutcome {
    device: String,
    port: u16,
    recv_bytes: usize,
    write_verified_bytes: usize,
    imm: u32,
}

struct ConnectorOutcome {
    device: String,
    send_bytes: usize,
    write_bytes: usize,
    reply_bytes: usize,
}

/// Step 2: the loopback connection, listener on a thread, connector on this one.
fn loopback(
    opts: &SmokeOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(ListenerOutcome, ConnectorOutcome), Error> {
    let failed = AtomicU8::new(NOBODY);
    let (ready_tx, ready_rx) = mpsc::channel::<u16>();
    thread::scope(|s| {
        let listener = thread::Builder::new()
            .name("rdmaft-smoke-listener".into())
            .spawn_scoped(s, || {
                let r = listen_side(opts, ready_tx, &failed, log);
                if r.is_err() {
                    let _ = failed.compare_exchange(
                        NOBODY,
                        LISTENER,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                r
            })
            .map_err(|e| Error::Verb {
                verb: "thread spawn",
                source: e,
            })?;

        let connector = match ready_rx.recv_timeout(opts.timeout) {
            Ok(port) => connect_side(opts, port, &failed, log),
            // The listener dropped the sender: it failed before listening; its error says why.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::Check("the listener stopped before listening".into()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::timeout(
                "the listener to start listening",
                opts.timeout,
            )),
        };
        if connector.is_err() {
            let _ = failed.compare_exchange(NOBODY, CONNECTOR, Ordering::AcqRel, Ordering::Acquire);
        }
        let listener = listener
            .join()
            .unwrap_or(Err(Error::ThreadPanicked("smoke listener")));
        match (listener, connector) {
            (Ok(l), Ok(c)) => Ok((l, c)),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(le), Err(ce)) => Err(if failed.load(Ordering::Acquire) == CONNECTOR {
                ce
            } else {
                le
            }),
        }
    })
}

fn listen_side(
    opts: &SmokeOptions,
    ready: mpsc::Sender<u16>,
    failed: &AtomicU8,
    log: &(dyn Fn(&str) + Sync),
) -> Result<ListenerOutcome, Error> {
    let t = opts.timeout;
    let ch = EventChannel::new()?;
    let listen_id = CmId::new(&ch)?;
    listen_id.bind(SocketAddr::new(opts.addr, opts.port))?;
    listen_id.listen(4)?;
    let port = listen_id.local_port();
    log(&format!(
        "listener: listening on {} port {port} (device {})",
        opts.addr,
        listen_id.device_name().as_deref().unwrap_or("none")
    ));
    // The connector may be gone already (it timed out); then the waits below stop early.
    let _ = ready.send(port);

    let req = expect_event(&ch, CmEventKind::ConnectRequest, t, failed)?;
    let id = req
        .new_id
        .ok_or_else(|| Error::Check("CONNECT_REQUEST without a new CM id".into()))?;
    let (send_len, write_len) = decode_request(&req.private_data)?;
    if send_len > RECV_HALF || write_len == 0 || write_len > MAX_WRITE_LEN {
        let _ = id.reject(b"RFSM bad sizes");
        return Err(Error::Check(format!(
            "connect request asks for a {send_len}-byte SEND and a {write_len}-byte WRITE \
             (limits {RECV_HALF} and {MAX_WRITE_LEN})"
        )));
    }
    let ctx = id.context()?;
    let device = ctx.device_name();
    log(&format!(
        "listener: connect request on {device} (SEND {send_len} bytes, WRITE {write_len} bytes)"
    ));
    let pd = ProtectionDomain::new(&ctx)?;
    let chan = CompletionChannel::new(&ctx)?;
    let cq = CompletionQueue::new(&ctx, 16, Some(&chan))?;
    // Memory before the QP: locals drop in reverse order, so on any early return the QP is
    // destroyed before the regions it may use are deregistered.
    let recv_mr = MemoryRegion::new(&pd, 2 * RECV_HALF, Access::LOCAL_WRITE)?;
    let write_mr = MemoryRegion::new(&pd, write_len, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
    let mut reply_mr = MemoryRegion::new(&pd, REPLY.len(), Access::empty())?;
    reply_mr.copy_in(0, REPLY)?;
    let qp = QueuePair::create(&id, &pd, &cq, &cq, QpCaps::default())?;
    // Both receives before accepting: with rnr_retry_count 0 a late one is an error.
    qp.post_recv(WR_RECV_SEND, &recv_mr, 0..RECV_HALF)?;
    qp.post_recv(WR_RECV_IMM, &recv_mr, RECV_HALF..2 * RECV_HALF)?;
    id.accept(&ConnParams {
        private_data: &encode_reply(&write_mr.remote()),
        ..ConnParams::default()
    })?;
    expect_event(&ch, CmEventKind::Established, t, failed)?;
    log("listener: connection established");

    let mut pending = Vec::new();
    let wc = wait_wr(&cq, &mut pending, WR_RECV_SEND, "the SEND", t, failed)?;
    if wc.opcode != WcOpcode::Recv || wc.byte_len as usize != send_len {
        return Err(Error::Check(format!(
            "expected a {send_len}-byte RECV, got {:?} of {} bytes",
            wc.opcode, wc.byte_len
        )));
    }
    let mut got = vec![0u8; send_len];
    recv_mr.copy_out(0, &mut got)?;
    compare("SEND payload", &got, &pattern(b'S', send_len))?;
    let recv_bytes = send_len;
    log(&format!("listener: RECV verified ({recv_bytes} bytes)"));

    let wc = wait_wr(
        &cq,
        &mut pending,
        WR_RECV_IMM,
        "the WRITE WITH IMM",
        t,
        failed,
    )?;
    if wc.opcode != WcOpcode::RecvRdmaWithImm {
        return Err(Error::Check(format!(
            "expected RECV_RDMA_WITH_IMM, got {:?}",
            wc.opcode
        )));
    }
    let imm = wc
        .imm
        .ok_or_else(|| Error::Check("WRITE WITH IMM completion carries no immediate".into()))?;
    if imm != IMM {
        return Err(Error::Check(format!(
            "immediate {imm:#x}, expected {IMM:#x}"
        )));
    }
    let mut got = vec![0u8; write_len];
    write_mr.copy_out(0, &mut got)?;
    compare("RDMA WRITE payload", &got, &pattern(b'W', write_len))?;
    log(&format!(
        "listener: WRITE WITH IMM verified ({write_len} bytes, imm {imm:#x})"
    ));

    qp.post_send(WR_REPLY_SEND, &reply_mr, 0..REPLY.len(), true)?;
    wait_wr(
        &cq,
        &mut pending,
        WR_REPLY_SEND,
        "the reply SEND",
        t,
        failed,
    )?;
    expect_event(&ch, CmEventKind::Disconnected, t, failed)?;
    log("listener: disconnected");
    // QP first, then memory, CQ, channel, PD; the ids and event channel last.
    drop(qp);
    drop((recv_mr, write_mr, reply_mr));
    drop((cq, chan, pd, ctx));
    drop((id, listen_id, ch));
    Ok(ListenerOutcome {
        device,
        port,
        recv_bytes,
        write_verified_bytes: write_len,
        imm,
    })
}

fn connect_side(
    opts: &SmokeOptions,
    port: u16,
    failed: &AtomicU8,
    log: &(dyn Fn(&str) + Sync),
) -> Result<ConnectorOutcome, Error> {
    let t = opts.timeout;
    let dst = SocketAddr::new(opts.addr, port);
    let ch = EventChannel::new()?;
    let id = CmId::new(&ch)?;
    id.resolve_addr(None, dst, Duration::from_secs(2).min(t))?;
    expect_event(&ch, CmEventKind::AddrResolved, t, failed)?;
    id.resolve_route(Duration::from_secs(2).min(t))?;
    expect_event(&ch, CmEventKind::RouteResolved, t, failed)?;
    let ctx = id.context()?;
    let device = ctx.device_name();
    log(&format!("connector: {dst} resolved to device {device}"));

    let pd = ProtectionDomain::new(&ctx)?;
    let chan = CompletionChannel::new(&ctx)?;
    let cq = CompletionQueue::new(&ctx, 16, Some(&chan))?;
    // Memory before the QP, so that the QP drops first on any early return.
    let mut send_mr = MemoryRegion::new(&pd, SEND_LEN, Access::empty())?;
    send_mr.copy_in(0, &pattern(b'S', SEND_LEN))?;
    let mut write_mr = MemoryRegion::new(&pd, WRITE_LEN, Access::empty())?;
    write_mr.copy_in(0, &pattern(b'W', WRITE_LEN))?;
    let reply_mr = MemoryRegion::new(&pd, 256, Access::LOCAL_WRITE)?;
    let qp = QueuePair::create(&id, &pd, &cq, &cq, QpCaps::default())?;
    qp.post_recv(WR_REPLY_RECV, &reply_mr, 0..reply_mr.len())?;

    id.connect(&ConnParams {
        private_data: &encode_request(SEND_LEN, WRITE_LEN),
        ..ConnParams::default()
    })?;
    let est = expect_event(&ch, CmEventKind::Established, t, failed)?;
    let remote = decode_reply(&est.private_data)?;
    log(&format!(
        "connected (qp {}, peer buffer {} bytes rkey {:#x})",
        qp.qp_num(),
        remote.len,
        remote.rkey
    ));

    let mut pending = Vec::new();
    qp.post_send(WR_SEND, &send_mr, 0..SEND_LEN, true)?;
    wait_wr(&cq, &mut pending, WR_SEND, "the SEND completion", t, failed)?;

    qp.post_write_with_imm(WR_WRITE, &write_mr, 0..WRITE_LEN, &remote, 0, IMM, true)?;
    wait_wr(
        &cq,
        &mut pending,
        WR_WRITE,
        "the WRITE WITH IMM completion",
        t,
        failed,
    )?;

    let wc = wait_wr(
        &cq,
        &mut pending,
        WR_REPLY_RECV,
        "the listener's reply",
        t,
        failed,
    )?;
    let n = wc.byte_len as usize;
    let mut got = vec![0u8; n.min(reply_mr.len())];
    reply_mr.copy_out(0, &mut got)?;
    compare("reply", &got, REPLY)?;
    // The reply is only sent once the listener has verified both transfers.
    log(&format!(
        "SEND/RECV ok ({SEND_LEN} bytes, verified by the listener)"
    ));
    log(&format!(
        "RDMA WRITE WITH IMM ok ({WRITE_LEN} bytes, imm {IMM:#x}, verified by the listener)"
    ));
    log(&format!("reply ok ({n} bytes)"));

    id.disconnect()?;
    expect_event(&ch, CmEventKind::Disconnected, t, failed)?;
    log("disconnected");
    drop(qp);
    drop((send_mr, write_mr, reply_mr));
    drop((cq, chan, pd, ctx));
    drop((id, ch));
    Ok(ConnectorOutcome {
        device,
        send_bytes: SEND_LEN,
        write_bytes: WRITE_LEN,
        reply_bytes: n,
    })
}

/// How often a wait checks whether the other side gave up.
const SLICE: Duration = Duration::from_millis(100);

/// Waits for the CM event `want`, failing on any other event (time-wait exits excepted), on
/// the deadline, or as soon as the other side failed.
fn expect_event(
    ch: &Arc<EventChannel>,
    want: CmEventKind,
    timeout: Duration,
    failed: &AtomicU8,
) -> Result<CmEvent, Error> {
    let deadline = crate::deadline::deadline(timeout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::timeout(
                format!("RDMA CM event {}", want.name()),
                timeout,
            ));
        }
        if failed.load(Ordering::Acquire) != NOBODY {
            return Err(Error::Check(format!(
                "stopped waiting for {}: the other side failed",
                want.name()
            )));
        }
        match ch.get_event(left.min(SLICE))? {
            Some(e) if e.kind == want => return Ok(e),
            Some(e) if e.kind == CmEventKind::TimewaitExit => {}
            Some(e) => return Err(e.unexpected(want.name())),
            None => {}
        }
    }
}

/// Waits for the completion of work request `wr_id`, keeping others in `pending`; any
/// failed completion is an error at once.
fn wait_wr(
    cq: &CompletionQueue,
    pending: &mut Vec<WorkCompletion>,
    wr_id: u64,
    what: &str,
    timeout: Duration,
    failed: &AtomicU8,
) -> Result<WorkCompletion, Error> {
    let deadline = crate::deadline::deadline(timeout);
    let mut batch = [WorkCompletion::default(); 8];
    loop {
        if let Some(i) = pending.iter().position(|w| w.wr_id == wr_id) {
            return Ok(pending.swap_remove(i));
        }
        let mut n = cq.poll(&mut batch)?;
        if n == 0 {
            // Arm, then poll again: a completion that raced the arming does not signal.
            cq.req_notify(false)?;
            n = cq.poll(&mut batch)?;
        }
        if n > 0 {
            for wc in &batch[..n] {
                pending.push(wc.ok()?);
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::timeout(
                format!("{what} (work request {wr_id})"),
                timeout,
            ));
        }
        if failed.load(Ordering::Acquire) != NOBODY {
            return Err(Error::Check(format!(
                "stopped waiting for {what}: the other side failed"
            )));
        }
        cq.wait_event(left.min(SLICE))?;
    }
}

/// The deterministic test bytes: a tag, then a counter pattern that catches shifts.
fn pattern(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag ^ (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8))
        .collect()
}

/// Byte-for-byte comparison with the first difference in the error.
fn compare(what: &str, got: &[u8], want: &[u8]) -> Result<(), Error> {
    if got.len() != want.len() {
        return Err(Error::Check(format!(
            "{what}: {} bytes, expected {}",
            got.len(),
            want.len()
        )));
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(Error::Check(format!(
            "{what}: byte {i} is {:#04x}, expected {:#04x}",
            got[i], want[i]
        ))),
    }
}

/// The connect request's private data: magic, SEND length, WRITE length (big-endian).
fn encode_request(send_len: usize, write_len: usize) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&(send_len as u32).to_be_bytes());
    v.extend_from_slice(&(write_len as u32).to_be_bytes());
    v
}

fn decode_request(data: &[u8]) -> Result<(usize, usize), Error> {
    match data {
        [m0, m1, m2, m3, s0, s1, s2, s3, w0, w1, w2, w3, ..] if [*m0, *m1, *m2, *m3] == MAGIC => {
            Ok((
                u32::from_be_bytes([*s0, *s1, *s2, *s3]) as usize,
                u32::from_be_bytes([*w0, *w1, *w2, *w3]) as usize,
            ))
        }
        _ => Err(Error::Check(format!(
            "connect request private data is not a smoke request ({} bytes)",
            data.len()
        ))),
    }
}

/// The accept's private data: magic, then the write target's address, rkey and length.
fn encode_reply(target: &RemoteBuffer) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&target.addr.to_be_bytes());
    v.extend_from_slice(&target.rkey.to_be_bytes());
    v.extend_from_slice(&(target.len as u32).to_be_bytes());
    v
}

fn decode_reply(data: &[u8]) -> Result<RemoteBuffer, Error> {
    let bad = || {
        Error::Check(format!(
            "accept private data is not a smoke reply ({} bytes)",
            data.len()
        ))
    };
    if data.len() < 20 || data[..4] != MAGIC {
        return Err(bad());
    }
    let addr = u64::from_be_bytes(data[4..12].try_into().map_err(|_| bad())?);
    let rkey = u32::from_be_bytes(data[12..16].try_into().map_err(|_| bad())?);
    let len = u32::from_be_bytes(data[16..20].try_into().map_err(|_| bad())?);
    if addr.checked_add(u64::from(len)).is_none() {
        return Err(Error::Check(format!(
            "accept private data names a {len}-byte buffer at {addr:#x}, past the end of the \
             address space"
        )));
    }
    Ok(RemoteBuffer {
        addr,
        rkey,
        len: u64::from(len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_even_when_zero_padded() {
        let mut data = encode_request(SEND_LEN, WRITE_LEN);
        data.resize(56, 0); // IB CM pads REQ private data to 56 bytes
        assert_eq!(decode_request(&data).unwrap(), (SEND_LEN, WRITE_LEN));
        assert!(decode_request(b"RFSM\0\0").is_err());
        assert!(decode_request(&[0; 56]).is_err());
    }

    #[test]
    fn reply_round_trips() {
        let target = RemoteBuffer {
            addr: 0x7f00_dead_b000,
            rkey: 0x1234,
            len: WRITE_LEN as u64,
        };
        let mut data = encode_reply(&target);
        data.resize(196, 0);
        assert_eq!(decode_reply(&data).unwrap(), target);
        assert!(decode_reply(&data[..19]).is_err());
        let wrapping = encode_reply(&RemoteBuffer {
            addr: u64::MAX - 10,
            rkey: 1,
            len: 100,
        });
        assert!(decode_reply(&wrapping).is_err());
    }

    #[test]
    fn compare_reports_the_first_difference() {
        let want = pattern(b'W', 300);
        assert!(compare("x", &want, &want).is_ok());
        let mut got = want.clone();
        got[257] ^= 1;
        let err = compare("x", &got, &want).unwrap_err().to_string();
        assert!(err.contains("byte 257"), "{err}");
        assert!(compare("x", &want[..299], &want).is_err());
    }

    #[test]
    fn pattern_detects_shifts() {
        let p = pattern(b'S', 4096);
        assert_ne!(&p[..4095], &p[1..]);
        assert_ne!(&p[..3840], &p[256..]);
    }
}
