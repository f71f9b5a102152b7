//! Transfers through the in-process loopback link (no RDMA): the real engine, file layer,
//! protocol and transfer groups, for tests and the CPU benchmarks.

use crate::api::recv::ReceiverOptions;
use crate::api::send::SendOptions;
use crate::engine::recv::ConnectionReport;
use crate::engine::send::{Progress, SendReport};
use crate::fs::dest::Destination;
use crate::groups::Groups;
use crate::handoff::Stop;
use crate::permits::Permits;
use crate::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Sends `paths` to `dest` through in-process loopback connections (no RDMA), one per lane:
/// the engine, the file layer, the protocol and the transfer group exactly as over a NIC.
/// For tests and the CPU benchmark. Returns the send's report and the lanes' receiver
/// reports as one.
#[doc(hidden)]
pub fn loopback_transfer(
    paths: Vec<PathBuf>,
    dest: &Path,
    send: SendOptions,
    recv: &ReceiverOptions,
) -> Result<(SendReport, ConnectionReport), Error> {
    loopback_send(paths, send, &LoopbackReceiver::new(dest, recv)?)
}

/// A receiver's state without a listener, for loopback transfers: several sends into one
/// (one after the other, or at once, as shards) share its split files and groups.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct LoopbackReceiver {
    options: ReceiverOptions,
    dest: PathBuf,
    destination: Arc<Destination>,
    open_files: Arc<Permits>,
    groups: Groups,
}

impl LoopbackReceiver {
    /// A receiver into `dest` with `options` (their address is not used).
    pub fn new(dest: &Path, options: &ReceiverOptions) -> Result<LoopbackReceiver, Error> {
        let destination = Arc::new(
            Destination::open(dest, options.dest_options())
                .map_err(|e| Error::file("receive directory", dest, e))?,
        );
        Ok(LoopbackReceiver {
            options: options.clone(),
            dest: dest.to_owned(),
            destination,
            open_files: Permits::new(options.open_files(crate::fd_limit::raise())),
            groups: Groups::new(options.resume),
        })
    }
}

/// Sends `paths` into `receiver` through in-process loopback connections, as
/// [`loopback_transfer`].
#[doc(hidden)]
pub fn loopback_send(
    paths: Vec<PathBuf>,
    send: SendOptions,
    receiver: &LoopbackReceiver,
) -> Result<(SendReport, ConnectionReport), Error> {
    let started = Instant::now();
    send.check(&paths)?;
    let LoopbackReceiver {
        options: recv,
        dest,
        destination,
        open_files,
        groups,
    } = receiver;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(Stop::new());
    let mut params = send.params();
    let mut pairs = Vec::new();
    let first = crate::engine::loopback::pair(
        &params,
        &recv.params(),
        send.key.as_ref(),
        recv.key.as_ref(),
        Some(groups),
    )?;
    let neg = first.sender_neg;
    let (lanes, work) = send.plan(paths, &neg, &progress);
    params.group = neg.group;
    pairs.push(first);
    for _ in 1..lanes {
        pairs.push(crate::engine::loopback::pair(
            &params,
            &recv.params(),
            send.key.as_ref(),
            recv.key.as_ref(),
            Some(groups),
        )?);
    }
    let (reports, received) = std::thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for (n, pair) in pairs.into_iter().enumerate() {
            let rsetup = crate::engine::recv::RecvSetup {
                dest: Arc::clone(destination),
                dest_root: dest.clone(),
                idle_timeout: recv.idle_timeout,
                on_file: recv.on_file.clone(),
                stop: Arc::new(Stop::new()),
                handshake: None,
                open_files: Arc::clone(open_files),
                group: pair.group,
                direct: recv.direct,
                written: Arc::default(),
            };
            let (receiver_link, receiver_neg) = (pair.receiver, pair.receiver_neg);
            // Named like the programs' threads, so a profile tells the two sides apart.
            let receiving = std::thread::Builder::new()
                .name(format!("rdmaft-lo-recv{n}"))
                .spawn_scoped(scope, move || {
                    crate::engine::recv::serve(receiver_link, receiver_neg, rsetup)
                })
                .map_err(|e| Error::Thread {
                    what: "loopback receiver",
                    source: e,
                });
            let setup = send.lane_setup(n, &work, &progress, &stop);
            let (link, neg, slots) = (pair.sender, pair.sender_neg, pair.slots);
            let sending = std::thread::Builder::new()
                .name(format!("rdmaft-lo-send{n}"))
                .spawn_scoped(scope, move || {
                    crate::engine::send::run(link, neg, slots.split(), setup, started)
                })
                .map_err(|e| Error::Thread {
                    what: "loopback sender",
                    source: e,
                });
            receivers.push(receiving);
            senders.push(sending);
        }
        let reports: Vec<_> = senders
            .into_iter()
            .map(|t| t?.join().map_err(|_| Error::ThreadPanicked("send lane")))
            .collect();
        let received: Vec<_> = receivers
            .into_iter()
            .map(|t| t?.join().map_err(|_| Error::ThreadPanicked("receiver")))
            .collect();
        (reports, received)
    });
    let reports = reports.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut received = received
        .into_iter()
        .collect::<Result<Vec<_>, Error>>()?
        .into_iter();
    let mut receiver_report = received.next().unwrap_or_default();
    for lane in received {
        receiver_report.add_lane(lane);
    }
    let mut report = work.report(reports);
    report.elapsed = started.elapsed();
    Ok((report, receiver_report))
}
