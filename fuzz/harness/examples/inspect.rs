//! Replays fuzz inputs outside libFuzzer, for a crash the fuzzer found or to judge how deep
//! a corpus gets:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example inspect -- [--trace] TARGET PATH...
//! ```
//!
//! Each PATH is an input file or a directory of them. Every input runs through TARGET's
//! harness (a failing check panics, with the trace above it under `--trace`); for the
//! `sender` and `receiver` targets it then prints how many files the inputs resolved and how
//! many ended cleanly or failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::{env, fs, process};

fn main() {
    let mut args: Vec<String> = env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--trace") {
        rdmaft_fuzz::set_trace(true);
        args.remove(0);
    }
    let Some((target, paths)) = args.split_first() else {
        eprintln!("usage: inspect [--trace] TARGET PATH...");
        process::exit(2);
    };
    let Some((_, harness)) = rdmaft_fuzz::TARGETS.iter().find(|(t, _)| t == target) else {
        eprintln!("inspect: unknown target {target}");
        process::exit(2);
    };
    let mut inputs: Vec<PathBuf> = Vec::new();
    for p in paths.iter().map(PathBuf::from) {
        match fs::read_dir(&p) {
            Ok(dir) => inputs.extend(dir.filter_map(|e| e.ok().map(|e| e.path()))),
            Err(_) => inputs.push(p),
        }
    }
    inputs.sort();
    let mut resolved: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut closed, mut failed) = (0, 0);
    for path in &inputs {
        let data = fs::read(path).unwrap_or_else(|e| {
            eprintln!("inspect: {}: {e}", path.display());
            process::exit(1);
        });
        harness(&data);
        if let Some((files, ok, bad)) = rdmaft_fuzz::depth(target, &data) {
            *resolved.entry(files).or_default() += 1;
            closed += usize::from(ok);
            failed += usize::from(bad);
        }
    }
    println!("{} inputs passed", inputs.len());
    if !resolved.is_empty() {
        println!("{closed} closed, {failed} failed; inputs by files resolved: {resolved:?}");
    }
}
