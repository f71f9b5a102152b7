//! The verbs layer on a real queue pair: what no host test can show.

use super::{env, T};
use rdmaft::session::next_event;
use rdmaft::verbs::{
    Access, CmEventKind, CmId, CompletionQueue, ConnParams, EventChannel, MemoryRegion,
    ProtectionDomain, QpCaps, QueuePair, WorkCompletion,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The next event on `ch`, which must be `want`.
fn expect(ch: &Arc<EventChannel>, want: CmEventKind) -> rdmaft::verbs::CmEvent {
    let e = next_event(ch, Instant::now() + T, T, want.name()).unwrap();
    assert_eq!(e.kind, want, "{e:?}");
    e
}

/// A chain longer than the send queue has room for: `post_list` posts the requests that
/// fit, fails on the first that does not, and says how many it posted; exactly those
/// complete. The sender's link counts on that number: it waits at its close for every
/// request the device took (`VerbsSendLink::flush`), and a wrong count would free the slots
/// under requests still in flight, or wait for completions that never come.
#[test]
fn a_chain_longer_than_the_send_queue_posts_what_fits_and_says_how_many() {
    let env = env();
    let listen_ch = EventChannel::new().unwrap();
    let listen_id = CmId::new(&listen_ch).unwrap();
    listen_id.bind(SocketAddr::new(env.addr, 0)).unwrap();
    listen_id.listen(1).unwrap();
    let to = SocketAddr::new(env.addr, listen_id.local_port());

    // The active side: a small send queue, and a completion queue with room for all.
    let ch = EventChannel::new().unwrap();
    let id = CmId::new(&ch).unwrap();
    id.resolve_addr(None, to, T).unwrap();
    expect(&ch, CmEventKind::AddrResolved);
    id.resolve_route(T).unwrap();
    expect(&ch, CmEventKind::RouteResolved);
    let ctx = id.context().unwrap();
    let pd = ProtectionDomain::new(&ctx).unwrap();
    let cq = CompletionQueue::new(&ctx, 1024, None).unwrap();
    let caps = QpCaps {
        max_send_wr: 8,
        ..QpCaps::default()
    };
    let qp = QueuePair::create(&id, &pd, &cq, &cq, caps).unwrap();
    let room = qp.caps().max_send_wr as usize;
    // Providers may hold more than they report (rxe asked for 8 reports 8 and takes 15):
    // a chain far longer than that.
    let chain_len = 4 * room + 64;
    id.connect(&ConnParams::default()).unwrap();

    // The passive side: a receive for every write of the chain, then accept.
    let request = expect(&listen_ch, CmEventKind::ConnectRequest);
    let peer_id = request.new_id.expect("the request's id");
    let peer_ctx = peer_id.context().unwrap();
    let peer_pd = ProtectionDomain::new(&peer_ctx).unwrap();
    let peer_cq = CompletionQueue::new(&peer_ctx, 1024, None).unwrap();
    let peer_caps = QpCaps {
        max_recv_wr: chain_len as u32,
        ..QpCaps::default()
    };
    let peer_qp = QueuePair::create(&peer_id, &peer_pd, &peer_cq, &peer_cq, peer_caps).unwrap();
    for n in 0..chain_len as u64 {
        peer_qp.post_recv_bufferless(n).unwrap();
    }
    let target =
        MemoryRegion::new(&peer_pd, 4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
    peer_id.accept(&ConnParams::default()).unwrap();
    expect(&ch, CmEventKind::Established);
    expect(&listen_ch, CmEventKind::Established);

    // Every request signaled, each with its own id and immediate.
    let source = MemoryRegion::new(&pd, 4096, Access::LOCAL_WRITE).unwrap();
    let remote = target.remote();
    let chain: Vec<_> = (0..chain_len as u64)
        .map(|n| {
            qp.write_with_imm_wr(n, &source, 0..64, &remote, 64 * (n % 64), n as u32)
                .unwrap()
                .signaled(true)
        })
        .collect();
    let (posted, err) = qp
        .post_list(&chain)
        .expect_err("a chain longer than the send queue was taken whole");
    assert!(
        (1..chain_len).contains(&posted),
        "{posted} of {chain_len} posted with {room} places ({err})"
    );

    // Exactly the posted requests complete, in order, and the peer gets exactly their
    // immediates; nothing else comes.
    let sent = completions(&cq, posted);
    let ids: Vec<u64> = sent.iter().map(|c| c.wr_id).collect();
    assert_eq!(ids, (0..posted as u64).collect::<Vec<_>>(), "{sent:?}");
    assert!(sent.iter().all(|c| c.status.is_success()), "{sent:?}");
    let got = completions(&peer_cq, posted);
    let imms: Vec<Option<u32>> = got.iter().map(|c| c.imm).collect();
    assert_eq!(imms, (0..posted as u32).map(Some).collect::<Vec<_>>());
    let mut more = [WorkCompletion::default(); 4];
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        cq.poll(&mut more).unwrap(),
        0,
        "more completions than posts"
    );
    assert_eq!(
        peer_cq.poll(&mut more).unwrap(),
        0,
        "more writes than posts"
    );

    id.disconnect().unwrap();
    drop((qp, peer_qp, source, target));
}

/// `n` completions from `cq` (fails after 10 s, which a few writes on Soft-RoCE never need,
/// with what came).
fn completions(cq: &CompletionQueue, n: usize) -> Vec<WorkCompletion> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [WorkCompletion::default(); 16];
    while got.len() < n {
        let k = cq.poll(&mut buf).unwrap();
        got.extend_from_slice(&buf[..k]);
        assert!(
            Instant::now() < deadline,
            "{} of {n} completions: {got:?}",
            got.len()
        );
        if k == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}
