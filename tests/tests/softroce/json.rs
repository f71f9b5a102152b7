//! `--json` over a real device: `rdmaft send --json` into `recv --once --json`; every line
//! either prints is one JSON object of the documented schema (cli/JSON.md), and the events
//! say what happened.

use super::{env, T};
use rdmaft_tests::{example_bin, random_bytes, scratch, start_recv, wait_child};
use serde_json::Value;
use std::process::Command;

/// Every line of `text` parsed; each is an object with a known `event` and `"v": 1`.
fn events(text: &str, known: &[&str]) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            let event = v["event"].as_str().unwrap_or_default();
            assert!(known.contains(&event), "unknown event {event:?}: {line}");
            assert_eq!(v["v"], 1, "{line}");
            v
        })
        .collect()
}

fn of<'a>(events: &'a [Value], event: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event).collect()
}

#[test]
fn json_lines_parse_and_say_what_happened() {
    let env = env();
    let base = scratch("json");
    let (src, dest) = (base.join("src/tree"), base.join("dest"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    // Big enough to take over a second on Soft-RoCE: at least one progress event.
    std::fs::write(src.join("big"), random_bytes(64 << 20, 71)).unwrap();
    std::fs::write(src.join("sub/small"), random_bytes(1000, 72)).unwrap();
    std::os::unix::fs::symlink("big", src.join("link")).unwrap();
    let mut recv = start_recv(env.addr, &dest, ["--once", "--json"], true, T).unwrap();
    let send = Command::new(example_bin("rdmaft").unwrap())
        .args(["send", "--json", "--links", "--lanes", "1"])
        .arg(format!("{}:{}", env.addr, recv.port))
        .arg(&src)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&send.stderr);
    assert_eq!(send.status.code(), Some(0), "{stderr}");
    let sent = events(
        &String::from_utf8_lossy(&send.stdout),
        &["file", "progress", "summary", "error"],
    );
    // One file event per entry: 2 files, a link, 2 directories.
    let files = of(&sent, "file");
    assert_eq!(files.len(), 5, "{sent:?}");
    for f in &files {
        assert_eq!(f["outcome"], "sent", "{f}");
        assert_eq!(f["ok"], true, "{f}");
        assert!(f["name"].is_string() && f["size"].is_u64() && f["changes"].is_array());
    }
    let link = files.iter().find(|f| f["name"] == "tree/link").unwrap();
    assert_eq!(link["kind"], "link");
    let big = files.iter().find(|f| f["name"] == "tree/big").unwrap();
    assert_eq!(
        (&big["kind"], &big["size"]),
        (&"file".into(), &(64u64 << 20).into())
    );
    let progress = of(&sent, "progress");
    assert!(
        !progress.is_empty(),
        "a transfer of over a second reports progress"
    );
    for p in &progress {
        assert!(p["bytes"].as_u64().unwrap() <= p["bytes_total"].as_u64().unwrap());
        assert!(p["bytes_per_second"].is_number() && p["files_total"].is_u64());
    }
    let summary = sent.last().unwrap();
    assert_eq!(summary["event"], "summary", "the last line");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["counts"]["sent"], 5);
    assert!(summary["bytes"].as_u64().unwrap() >= 64 << 20);
    assert!(summary["error"].is_null());

    assert!(wait_child(&mut recv.child, T).unwrap().success());
    let mut out = recv.out.take().unwrap();
    let received = events(
        &out.drain(T).join("\n"),
        &["listening", "file", "connection", "stopped", "error"],
    );
    assert_eq!(received[0]["event"], "listening");
    let files = of(&received, "file");
    assert_eq!(files.len(), 5, "{received:?}");
    assert!(files
        .iter()
        .all(|f| f["outcome"] == "received" && f["ok"] == true));
    assert!(files.iter().all(|f| f["peer"].is_string()));
    let connections = of(&received, "connection");
    assert_eq!(connections.len(), 1, "{received:?}");
    assert_eq!(connections[0]["counts"]["received"], 5);
    assert_eq!(received.last().unwrap()["event"], "stopped");
    assert_eq!(received.last().unwrap()["ok"], true);
    std::fs::remove_dir_all(&base).unwrap();
}
