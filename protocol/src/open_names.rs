//! The names open in a session, so that no two open entries share a path (PROTOCOL.md §4.1):
//! a name may not equal an open name, be a directory prefix of one (`a` while `a/b` is open),
//! or have one as its directory prefix (`a/b` while `a` is open).
//!
//! Without an allocator the names themselves cannot be kept, so the table keeps a keyed hash
//! of every path and of every directory prefix of an open path, each with its parent's hash
//! (to walk up on removal) and two counts: open entries with exactly this path, and open
//! entries below it. Open addressing with linear probing over caller-provided slots; deletion
//! shifts later entries back, so no tombstones build up.
//!
//! Hashes are SipHash-2-4 under a key the driver picks at random per session: a peer cannot
//! craft colliding names. A collision (probability ~ n²/2⁶⁴) could only make the table report
//! a conflict that is not there, or, for a crafted collision, miss one within that peer's own
//! session; the receiver's file layer creates files exclusively and so still never lets two
//! writers share a file.

use crate::siphash::SipHasher;

/// One slot of the open-name table (see [`crate::Storage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameSlot {
    /// Hash of the path; 0 marks a free slot (real hashes have the low bit set).
    key: u64,
    /// Hash of the parent directory, [`ROOT`] for a top-level name.
    parent: u64,
    /// Open entries whose name is exactly this path (0 or 1 in a correct session).
    exact: u32,
    /// Open entries strictly below this path.
    below: u32,
}

impl NameSlot {
    /// A free slot.
    pub const EMPTY: NameSlot = NameSlot {
        key: 0,
        parent: 0,
        exact: 0,
        below: 0,
    };
}

/// The parent of top-level names (never a real hash: real hashes have the low bit set).
const ROOT: u64 = 2;

/// Why a name cannot be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameClash {
    /// It shares a path with an open name.
    Conflict,
    /// The table has no room for the name's directory prefixes now.
    Full,
}

/// Most directory levels one name can have: a name of [`crate::MAX_NAME_LEN`] bytes has at
/// most that many `/`-separated components of at least one byte.
const MAX_LEVELS: usize = crate::MAX_NAME_LEN / 2 + 1;

/// Calls `f(hash, parent_hash, is_whole_name)` for every directory prefix of `name` from the
/// top, then for the whole name, stopping early when `f` returns false.
fn walk(key: [u8; 16], name: &str, mut f: impl FnMut(u64, u64, bool) -> bool) {
    let mut h = SipHasher::new(key);
    let mut parent = ROOT;
    for &b in name.as_bytes() {
        if b == b'/' {
            let prefix = h.finish() | 1;
            if !f(prefix, parent, false) {
                return;
            }
            parent = prefix;
        }
        h.write_u8(b);
    }
    f(h.finish() | 1, parent, true);
}

/// The table over caller-provided `slots` (any length; one slot always stays free so that
/// probing ends). `used` counts the occupied slots and lives with the state machine.
pub(crate) struct OpenNames<'a> {
    slots: &'a mut [NameSlot],
    used: &'a mut usize,
    key: [u8; 16],
}

impl<'a> OpenNames<'a> {
    pub(crate) fn new(slots: &'a mut [NameSlot], used: &'a mut usize, key: [u8; 16]) -> Self {
        OpenNames { slots, used, key }
    }

    /// Where `key` is (`Ok`), or the free slot where it would go (`Err`); `None` only for an
    /// empty slice or a table without a free slot (which `check` never lets happen).
    fn find(&self, key: u64) -> Option<Result<usize, usize>> {
        let n = self.slots.len();
        // The remainder is < n, a usize.
        let start = (key % (n.max(1) as u64)) as usize;
        for i in 0..n {
            let at = (start + i) % n;
            match self.slots[at].key {
                0 => return Some(Err(at)),
                k if k == key => return Some(Ok(at)),
                _ => {}
            }
        }
        None
    }

    fn get(&self, key: u64) -> Option<NameSlot> {
        match self.find(key) {
            Some(Ok(i)) => Some(self.slots[i]),
            _ => None,
        }
    }

    /// Whether `name` (validated) may be opened now.
    pub(crate) fn check(&self, name: &str) -> Result<(), NameClash> {
        let mut conflict = false;
        let mut new_keys = 0usize;
        walk(self.key, name, |key, _, whole| {
            match self.get(key) {
                Some(s) if s.exact > 0 || (whole && s.below > 0) => conflict = true,
                Some(_) => {}
                None => new_keys += 1,
            }
            !conflict
        });
        if conflict {
            return Err(NameClash::Conflict);
        }
        if *self.used + new_keys >= self.slots.len() {
            return Err(NameClash::Full);
        }
        Ok(())
    }

    /// Adds `name` (validated); returns its hash, which [`remove`](Self::remove) takes.
    pub(crate) fn insert(&mut self, name: &str) -> Result<u64, NameClash> {
        self.check(name)?;
        let mut whole_key = 0;
        let key = self.key;
        walk(key, name, |k, parent, whole| {
            match self.find(k) {
                Some(Ok(i)) => {
                    let s = &mut self.slots[i];
                    if whole {
                        s.exact = s.exact.saturating_add(1);
                    } else {
                        s.below = s.below.saturating_add(1);
                    }
                }
                Some(Err(i)) => {
                    self.slots[i] = NameSlot {
                        key: k,
                        parent,
                        exact: u32::from(whole),
                        below: u32::from(!whole),
                    };
                    *self.used += 1;
                }
                // check() made sure every new key has a slot.
                None => return false,
            }
            whole_key = k;
            true
        });
        Ok(whole_key)
    }

    /// Removes the name whose hash [`insert`](Self::insert) returned, walking up through the
    /// parents. Unknown keys end the walk (never a panic).
    pub(crate) fn remove(&mut self, key: u64) {
        let mut k = key;
        let mut whole = true;
        for _ in 0..=MAX_LEVELS {
            let Some(Ok(i)) = self.find(k) else { return };
            let s = &mut self.slots[i];
            if whole {
                s.exact = s.exact.saturating_sub(1);
            } else {
                s.below = s.below.saturating_sub(1);
            }
            let parent = s.parent;
            if s.exact == 0 && s.below == 0 {
                self.delete(i);
            }
            if parent == ROOT {
                return;
            }
            k = parent;
            whole = false;
        }
    }

    /// Empties slot `i` and shifts later members of its probe run back (linear probing's
    /// deletion without tombstones).
    fn delete(&mut self, mut hole: usize) {
        let n = self.slots.len();
        self.slots[hole] = NameSlot::EMPTY;
        *self.used = self.used.saturating_sub(1);
        let mut j = hole;
        for _ in 0..n {
            j = (j + 1) % n;
            let s = self.slots[j];
            if s.key == 0 {
                return;
            }
            let home = (s.key % n as u64) as usize;
            // s may move into the hole unless its home lies cyclically in (hole, j].
            let home_after_hole = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !home_after_hole {
                self.slots[hole] = s;
                self.slots[j] = NameSlot::EMPTY;
                hole = j;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupied(slots: &[NameSlot]) -> usize {
        slots.iter().filter(|s| s.key != 0).count()
    }

    #[test]
    // spec-test: [name.conflict]
    fn same_name_and_prefixes_conflict_both_ways() {
        let mut slots = [NameSlot::EMPTY; 64];
        let mut used = 0;
        let mut t = OpenNames::new(&mut slots, &mut used, [1; 16]);
        let ab = t.insert("a/b").unwrap();
        assert_eq!(t.check("a/b"), Err(NameClash::Conflict), "same name");
        assert_eq!(
            t.check("a"),
            Err(NameClash::Conflict),
            "prefix of an open name"
        );
        assert_eq!(
            t.check("a/b/c"),
            Err(NameClash::Conflict),
            "below an open name"
        );
        assert_eq!(
            t.check("a/c"),
            Ok(()),
            "a sibling shares only the directory"
        );
        assert_eq!(t.check("ab"), Ok(()));
        assert_eq!(t.check("b/a"), Ok(()));
        let ac = t.insert("a/c").unwrap();
        t.remove(ab);
        assert_eq!(t.check("a/b"), Ok(()));
        assert_eq!(t.check("a"), Err(NameClash::Conflict), "a/c is still open");
        t.remove(ac);
        assert_eq!(t.check("a"), Ok(()));
        assert_eq!(used, 0, "everything removed");
        assert_eq!(occupied(&slots), 0);
    }

    #[test]
    fn full_table_refuses_without_changing() {
        let mut slots = [NameSlot::EMPTY; 4];
        let mut used = 0;
        let mut t = OpenNames::new(&mut slots, &mut used, [2; 16]);
        t.insert("x/y").unwrap(); // two slots
        assert_eq!(
            t.check("p/q"),
            Err(NameClash::Full),
            "needs 2, 1 left (one stays free)"
        );
        assert_eq!(t.insert("p/q"), Err(NameClash::Full));
        assert_eq!(
            t.insert("x/z").map(|_| ()),
            Ok(()),
            "x is shared: one new slot"
        );
        assert_eq!(t.check("w"), Err(NameClash::Full), "needs 1, none left");
        assert_eq!(used, 3);
        let mut none: [NameSlot; 0] = [];
        let mut zero = 0;
        let t = OpenNames::new(&mut none, &mut zero, [0; 16]);
        assert_eq!(t.check("a"), Err(NameClash::Full));
    }

    #[test]
    fn deletion_keeps_probe_runs_reachable() {
        // A small table forces collisions; every remaining name must stay findable.
        let mut slots = [NameSlot::EMPTY; 17];
        let mut used = 0;
        let mut t = OpenNames::new(&mut slots, &mut used, [3; 16]);
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        let keys: [u64; 12] = core::array::from_fn(|i| t.insert(names[i]).unwrap());
        for (i, &k) in keys.iter().enumerate().step_by(2) {
            t.remove(k);
            assert_eq!(t.check(names[i]), Ok(()));
        }
        for (i, name) in names.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(t.check(name), Err(NameClash::Conflict), "{name} lost ({i})");
        }
        assert_eq!((used, occupied(&slots)), (6, 6));
    }

    #[test]
    fn removing_an_unknown_key_is_harmless() {
        let mut slots = [NameSlot::EMPTY; 8];
        let mut used = 0;
        let mut t = OpenNames::new(&mut slots, &mut used, [4; 16]);
        let k = t.insert("d/e/f").unwrap();
        t.remove(12345);
        assert_eq!(t.check("d"), Err(NameClash::Conflict));
        t.remove(k);
        t.remove(k);
        assert_eq!(used, 0);
    }
}
