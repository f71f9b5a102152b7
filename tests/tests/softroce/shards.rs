//! Several senders, one tree (`send --shard I/N`): three `send` programs at once, each with
//! its share, into one `recv`. Together they must deliver the whole tree (contents and
//! modes), each entry by exactly one of them, with files arriving in directories whose own
//! entry another sender sends.

use super::{env, T};
use rdmaft_tests::{
    example_bin, interrupt, random_bytes, scratch, start_recv, temp_files, tree, wait_child,
    RecvProgram,
};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Every directory and file under `root` (relative names, sorted) with its permission bits.
fn modes(root: &Path) -> Vec<(String, u32)> {
    tree(root)
        .into_iter()
        .map(|(name, _)| {
            let mode = std::fs::symlink_metadata(root.join(&name))
                .unwrap()
                .permissions()
                .mode();
            (name, mode & 0o777)
        })
        .collect()
}

/// The tree: nested directories, 45 files (an empty one, some over the 64 KiB buffer),
/// an empty directory, a directory of mode 0o750 and files of several modes.
fn build(src: &Path) -> std::path::PathBuf {
    let t = src.join("tree");
    std::fs::create_dir_all(t.join("empty")).unwrap();
    for i in 0..44usize {
        let d = t.join(format!("d{}/e{}", i % 4, i % 3));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("f{i}"));
        std::fs::write(&f, random_bytes(i * 7919 % 200_000, i as u64)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][i % 4];
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(t.join("d1/empty-file"), b"").unwrap();
    std::fs::set_permissions(t.join("d2"), std::fs::Permissions::from_mode(0o750)).unwrap();
    t
}

/// The numbers of `send: shard I/N: X of Y files verified, ...`: (X, Y).
fn verified(stdout: &str, shard: &str) -> (u64, u64) {
    let prefix = format!("send: shard {shard}: ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no summary line for shard {shard}: {stdout}"));
    let words: Vec<&str> = line.split(' ').collect();
    match words[..] {
        [x, "of", y, "files", "verified,", ..] => (x.parse().unwrap(), y.parse().unwrap()),
        _ => panic!("unexpected summary line: {line}"),
    }
}

#[test]
fn three_shards_send_one_tree_into_one_receiver() {
    let env = env();
    let base = scratch("shards");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let t = build(&src);
    let RecvProgram {
        child: mut recv,
        mut err,
        out,
        port,
    } = start_recv(env.addr, &dest, ["--preserve-perms"], true, T).unwrap();
    let mut out = out.unwrap();
    // All three at once, each with its share of the same path.
    let senders: Vec<_> = (0..3)
        .map(|i| {
            let child = Command::new(example_bin("send").unwrap())
                .args(["--buffer-size", "64K", "--shard", &format!("{i}/3")])
                .arg(format!("{}:{port}", env.addr))
                .arg(&t)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (format!("{i}/3"), child)
        })
        .collect();
    let mut sum = 0;
    for (shard, child) in senders {
        let done = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&done.stdout);
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert_eq!(
            done.status.code(),
            Some(0),
            "shard {shard}: {stdout}\n{stderr}"
        );
        let (sent, total) = verified(&stdout, &shard);
        assert_eq!(sent, total, "shard {shard}: {stdout}");
        assert!(sent > 0, "every shard has a share: {stdout}");
        sum += sent;
    }
    // Stopped as by Ctrl-C: every connection's lines are out when it exits.
    interrupt(&recv);
    let status = wait_child(&mut recv, T).unwrap();
    assert!(status.success(), "recv: {:?}", err.drain(T));
    let expected = tree(&src);
    assert_eq!(
        sum,
        expected.len() as u64,
        "the shards' counts add up to the tree"
    );
    assert_eq!(tree(&dest), expected);
    assert_eq!(modes(&dest), modes(&src));
    assert!(temp_files(&dest).is_empty());
    // Each entry received once, from one of the three connections.
    let mut received: HashMap<String, usize> = HashMap::new();
    for line in out.drain(T) {
        if let Some(rest) = line.strip_prefix("recv: received ") {
            let name = rest.split(" (").next().unwrap_or(rest).to_owned();
            *received.entry(name).or_default() += 1;
        }
    }
    assert_eq!(received.len(), expected.len(), "{received:?}");
    assert!(received.values().all(|&n| n == 1), "{received:?}");
    std::fs::remove_dir_all(&base).unwrap();
}
