//! One sender's share of a tree (`send --shard I/N`): N senders started on several hosts
//! (by `srun`, `mpirun`, GNU `parallel`) each send the entries whose wire name hashes to
//! their index, so together they move the tree once with no coordinator between them.
//!
//! The hash is part of the command-line contract: every sender of one tree must agree on
//! which shard owns which name, across hosts, runs, releases, Rust versions and byte
//! orders. It is XXH3-64 (seed 0) of the wire name's bytes, followed for a part of a split
//! file by the part's index as 8 big-endian bytes, taken modulo N. XXH3 is specified
//! byte-wise (its output does not depend on the host), unlike `std`'s hashers, which are
//! free to change. Changing it would make senders of different versions overlap or leave
//! gaps; it must not change without a new option name.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (0 ≤ index < count): the entries this sender sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard {text:?}: {why}")]
pub struct InvalidShard {
    text: String,
    why: &'static str,
}

impl Shard {
    /// Shard `index` of `count`; `count` ≥ 1 and `index` < `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, InvalidShard> {
        let invalid = |why| InvalidShard {
            text: format!("{index}/{count}"),
            why,
        };
        if count == 0 {
            return Err(invalid("the count N must be at least 1"));
        }
        if index >= count {
            return Err(invalid(
                "the index I must be below the count N (I counts from 0)",
            ));
        }
        Ok(Shard { index, count })
    }

    /// Parses `I/N` (decimal, I counting from 0, as `$SLURM_PROCID/$SLURM_NTASKS`).
    pub fn parse(text: &str) -> Result<Shard, InvalidShard> {
        let invalid = |why| InvalidShard {
            text: text.to_owned(),
            why,
        };
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| invalid("expected I/N, e.g. 0/3"))?;
        let number = |s: &str, why| {
            // `u32::from_str` takes a leading `+`; a shard is plain digits.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(why));
            }
            s.parse::<u32>().map_err(|_| invalid(why))
        };
        let index = number(i, "the index I is not a number from 0 to 4294967294")?;
        let count = number(n, "the count N is not a number from 1 to 4294967295")?;
        Shard::new(index, count).map_err(|e| invalid(e.why))
    }

    /// This shard's index, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this shard sends the entry of wire name `name` (for a part of a split file,
    /// its index as `part`; `None` for a whole file or a directory).
    pub fn takes(&self, name: &str, part: Option<u64>) -> bool {
        self.takes_bytes(name.as_bytes(), part)
    }

    /// [`takes`](Self::takes) for a name that is not UTF-8 (a path the walk skips: the
    /// shard that owns its would-be name reports it).
    pub fn takes_bytes(&self, name: &[u8], part: Option<u64>) -> bool {
        self.owner_of(name, part) == self.index
    }

    /// The index of the shard that owns `name` (and `part`) among `count`.
    fn owner_of(&self, name: &[u8], part: Option<u64>) -> u32 {
        let hash = match part {
            None => xxhash_rust::xxh3::xxh3_64(name),
            Some(p) => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(name);
                h.update(&p.to_be_bytes());
                h.digest()
            }
        };
        // The remainder is below `count`, a u32.
        u32::try_from(hash % u64::from(self.count)).unwrap_or(0)
    }
}

impl fmt::Display for Shard {
    /// `I/N`, as parsed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = InvalidShard;

    fn from_str(text: &str) -> Result<Shard, InvalidShard> {
        Shard::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: u32) -> Vec<Shard> {
        (0..n).map(|i| Shard::new(i, n).unwrap()).collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("tree/dir{}/file-{i}.dat", i % 17))
            .collect()
    }

    #[test]
    fn every_name_goes_to_exactly_one_shard() {
        for n in [1, 2, 3, 7] {
            let all = shards(n);
            for name in names(500) {
                for part in [None, Some(0), Some(1), Some(u64::MAX)] {
                    let takers = all.iter().filter(|s| s.takes(&name, part)).count();
                    assert_eq!(takers, 1, "{name} part {part:?} among {n}");
                }
            }
        }
    }

    #[test]
    fn three_shards_get_a_fair_share_each() {
        let all = shards(3);
        let names = names(3000);
        for s in &all {
            let mine = names.iter().filter(|n| s.takes(n, None)).count();
            assert!((600..=1410).contains(&mine), "shard {s}: {mine} of 3000");
        }
        // The parts of one file spread too.
        for s in &all {
            let mine = (0..3000).filter(|&p| s.takes("big.dat", Some(p))).count();
            assert!(
                (600..=1410).contains(&mine),
                "shard {s}: {mine} of 3000 parts"
            );
        }
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // The contract, spelled out: XXH3-64 (seed 0) of the name, then the part as 8
        // big-endian bytes, modulo N. Known values pin it across versions of the crate.
        let s = Shard::new(0, u32::MAX).unwrap();
        assert_eq!(
            u64::from(s.owner_of(b"tree/a", None)),
            xxhash_rust::xxh3::xxh3_64(b"tree/a") % u64::from(u32::MAX)
        );
        let mut with_part = b"tree/a".to_vec();
        with_part.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(
            u64::from(s.owner_of(b"tree/a", Some(0x102))),
            xxhash_rust::xxh3::xxh3_64(&with_part) % u64::from(u32::MAX)
        );
        // XXH3-64 of the empty input, from the reference implementation.
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn parse_and_display() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!((s.index(), s.count()), (2, 3));
        assert_eq!(s.to_string(), "2/3");
        assert_eq!(Shard::parse("0/1").unwrap(), Shard::new(0, 1).unwrap());
        assert!(Shard::new(0, 1).unwrap().takes("anything", None));
    }

    #[test]
    fn parse_errors_say_why() {
        let why = |t: &str| Shard::parse(t).unwrap_err().to_string();
        assert!(why("3").contains("expected I/N"), "{}", why("3"));
        assert!(why("3/3").contains("below the count"), "{}", why("3/3"));
        assert!(why("0/0").contains("at least 1"), "{}", why("0/0"));
        for bad in [
            "-1/3",
            "+1/3",
            "a/3",
            "/3",
            "1/",
            "1/3/4",
            " 1/3",
            "1/99999999999",
        ] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert!(
            why("x/3").starts_with("invalid shard \"x/3\": "),
            "{}",
            why("x/3")
        );
        assert!(Shard::new(5, 2).is_err());
    }
}
