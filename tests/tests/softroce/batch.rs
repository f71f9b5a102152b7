//! Batches (`BATCH`) on a real device: with them, a small file's header and end share
//! writes with other files' messages and the receiver's answers, results and credits share
//! SENDs, so a tree of small files crosses the link in far fewer packets. Soft-RoCE counts
//! the packets it sends and receives; both ends of these tests are on the one device.

use super::{env, receiver, T};
use rdmaft::{send, SendOptions};
use rdmaft_tests::{random_bytes, scratch, temp_files, tree};
use std::path::Path;

/// Packets the device has sent and received (its `hw_counters`).
fn packets(device: &str) -> u64 {
    let dir = Path::new("/sys/class/infiniband")
        .join(device)
        .join("ports/1/hw_counters");
    ["sent_pkts", "rcvd_pkts"]
        .iter()
        .map(|c| {
            let p = dir.join(c);
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e} (Soft-RoCE counters)", p.display()));
            text.trim().parse::<u64>().expect("a packet count")
        })
        .sum()
}

#[test]
fn batches_carry_small_files_in_fewer_packets() {
    let env = env();
    let base = scratch("batch");
    let src = base.join("src/tree");
    // 400 files of at most 900 bytes (one packet of data each) in 4 directories.
    for i in 0..400usize {
        let d = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), random_bytes(100 + i * 2, i as u64)).unwrap();
    }
    let mut used = vec![];
    for batch in [false, true] {
        let dest = base.join(format!("dest-{batch}"));
        std::fs::create_dir_all(&dest).unwrap();
        let r = receiver(&env, &dest, |_| {});
        let before = packets(&env.device);
        let options = SendOptions {
            lanes: 1,
            batch,
            ..SendOptions::default()
        };
        let report = send(r.receiver.local_addr(), vec![src.clone()], options)
            .unwrap()
            .wait()
            .unwrap();
        assert!(report.all_ok(), "batch {batch}: {report:?}");
        assert_eq!(report.counts.sent, 405, "400 files and 5 directories");
        let conn = r.connections.recv_timeout(T).expect("the connection ended");
        assert!(conn.all_ok(), "{conn:?}");
        used.push(packets(&env.device) - before);
        assert_eq!(
            tree(&dest.join("tree")),
            tree(&src),
            "batch {batch}: the tree arrived"
        );
        assert!(temp_files(&dest).is_empty());
    }
    let (plain, batched) = (used[0], used[1]);
    eprintln!("batch: 400 small files in {batched} packets with batches, {plain} without");
    // Five messages per file become about two and a third (the lockstep model); the
    // link's own acknowledgements shrink with them.
    assert!(
        batched * 10 < plain * 7,
        "batched: {batched} packets, unbatched: {plain}"
    );
}
