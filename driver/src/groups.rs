//! The receiver's transfer groups (PROTOCOL.md §2.7): a sender's first lane opens one, its
//! other lanes join it by number. A group lives while any of its connections does; a join
//! for a group that is not live (never opened, or all its connections ended) is refused
//! with `UNKNOWN_GROUP`. What the lanes of one transfer share at the receiver lives here:
//! the files split into parts (`fs/split.rs`).

use crate::fs::prune::OfferedNames;
use crate::fs::split::{KeptSplits, SplitFiles};
use crate::sync::{lock, Mutex};
use rdmaft_protocol::RejectReason;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Every live group of one receiver, by number.
#[derive(Default)]
pub(crate) struct Groups {
    live: Arc<Mutex<HashMap<u32, Weak<Group>>>>,
    /// Incomplete split files kept for a resume (with resume; `None`: removed).
    kept: Option<Arc<KeptSplits>>,
}

/// One transfer group; each of its connections holds it.
pub(crate) struct Group {
    id: u32,
    live: Arc<Mutex<HashMap<u32, Weak<Group>>>>,
    /// Files whose parts are arriving.
    pub(crate) splits: SplitFiles,
    /// With DELETE: the names offered per directory, over all lanes.
    pub(crate) offered: Arc<OfferedNames>,
}

impl Groups {
    /// A receiver's groups; with `resume`, incomplete split files are kept for the next
    /// transfer of the same file.
    pub(crate) fn new(resume: bool) -> Groups {
        Groups {
            live: Arc::default(),
            kept: resume.then(Arc::default),
        }
    }

    /// The group for a hello that asks to join `join` (0: a new group). Group numbers are
    /// random, so a number seen once does not name another transfer's group later.
    pub(crate) fn enter(&self, join: u32) -> Result<Arc<Group>, RejectReason> {
        let mut live = lock(&self.live);
        if join != 0 {
            // spec: [lanes.unknown-group]
            return live
                .get(&join)
                .and_then(Weak::upgrade)
                .ok_or(RejectReason::UNKNOWN_GROUP);
        }
        live.retain(|_, g| g.strong_count() > 0);
        let id = loop {
            let random = crate::key::nonce().map_err(|_| RejectReason::NO_RESOURCES)?;
            let id = u32::from_ne_bytes([random[0], random[1], random[2], random[3]]);
            // spec: [lanes.open]
            if id != 0 && !live.contains_key(&id) {
                break id;
            }
        };
        let group = Arc::new(Group {
            id,
            live: Arc::clone(&self.live),
            splits: SplitFiles::new(self.kept.clone()),
            offered: Arc::default(),
        });
        live.insert(id, Arc::downgrade(&group));
        Ok(group)
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("id", &self.id).finish()
    }
}

impl Groups {
    /// Drops the split files kept for a resume past their time.
    pub(crate) fn expire_kept(&self) {
        if let Some(kept) = &self.kept {
            kept.expire_now();
        }
    }
}

impl Group {
    /// The group's number, as the accept carries it.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Group {
    /// The group's last connection ended: later joins are refused.
    fn drop(&mut self) {
        let mut live = lock(&self.live);
        if live.get(&self.id).is_some_and(|g| g.strong_count() == 0) {
            live.remove(&self.id);
        }
    }
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;

    #[test]
    // spec-test: [lanes.open] [lanes.unknown-group]
    fn a_group_lives_while_a_connection_holds_it() {
        let groups = Groups::default();
        let first = groups.enter(0).unwrap();
        let id = first.id();
        assert_ne!(id, 0);
        let second = groups.enter(id).unwrap();
        assert_eq!(second.id(), id);
        let other = groups.enter(0).unwrap();
        assert_ne!(other.id(), id);
        drop(first);
        assert!(groups.enter(id).is_ok(), "one lane still holds it");
        drop(second);
        assert_eq!(
            groups.enter(id).err(),
            Some(RejectReason::UNKNOWN_GROUP),
            "finished"
        );
        assert_eq!(
            groups.enter(id ^ 1).err(),
            Some(RejectReason::UNKNOWN_GROUP),
            "never opened"
        );
        drop(other);
        assert!(lock(&groups.live).is_empty());
    }
}

/// Model checks of the real `Groups` (`make loom`), with the `Weak` registry of `std`: a join
/// racing the end of a group's last lane.
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::thread;

    /// A join that races the last lane's end either gets that very group (which then
    /// stays live while the joiner holds it) or is refused with `UNKNOWN_GROUP`, never
    /// another group; and once every lane ended the registry holds nothing (no group is
    /// kept alive, or kept listed, by a join that lost the race).
    #[test]
    fn a_join_racing_the_last_lane_gets_the_group_or_a_refusal() {
        loom::model(|| {
            let groups = crate::sync::Arc::new(Groups::new(false));
            let first = groups.enter(0).unwrap();
            let id = first.id();
            let join = {
                let groups = crate::sync::Arc::clone(&groups);
                thread::spawn(move || match groups.enter(id) {
                    Ok(g) => {
                        assert_eq!(g.id(), id, "a join got another group");
                        // Held: a third lane joins it too.
                        assert_eq!(groups.enter(id).map(|g| g.id()), Ok(id));
                        true
                    }
                    Err(reason) => {
                        assert_eq!(reason, RejectReason::UNKNOWN_GROUP);
                        false
                    }
                })
            };
            drop(first);
            join.join().unwrap();
            assert_eq!(
                groups.enter(id).err(),
                Some(RejectReason::UNKNOWN_GROUP),
                "every lane ended: the group is over"
            );
            assert!(lock(&groups.live).is_empty(), "an ended group stays listed");
        });
    }
}
