//! The receiver's transfer groups (PROTOCOL.md §2.7): a sender's first lane opens one, its
//! other lanes join it by number. A group lives while any of its connections does; a join
//! for a group that is not live (never opened, or all its connections ended) is refused
//! with `UNKNOWN_GROUP`. The group also says when a transfer has ended: with its last
//! connection ([`Membership::leave`]). (Split files are the receiver's, not a group's:
//! `fs/split.rs`, so that parts from several senders meet.)

use crate::sync::lock_std;
use rdmaft_protocol::RejectReason;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Every live group of one receiver, by number.
#[derive(Default)]
pub(crate) struct Groups {
    live: Arc<Mutex<HashMap<u32, Weak<Group>>>>,
}

/// One transfer group; each of its connections holds it.
pub(crate) struct Group {
    id: u32,
    live: Arc<Mutex<HashMap<u32, Weak<Group>>>>,
    /// Connections in the group (their [`Membership`]s).
    members: AtomicUsize,
}

/// One connection's place in a group: [`leave`](Self::leave) says whether it was the last.
#[derive(Debug)]
pub(crate) struct Membership {
    group: Arc<Group>,
    left: bool,
}

impl Membership {
    fn new(group: Arc<Group>) -> Membership {
        group.members.fetch_add(1, Ordering::AcqRel);
        Membership { group, left: false }
    }

    /// The group.
    pub(crate) fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// Leaves the group: true for exactly one of its connections, the last to leave (the
    /// transfer has ended).
    pub(crate) fn leave(mut self) -> bool {
        self.left = true;
        self.group.members.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if !self.left {
            self.group.members.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Groups {
    /// The group for a hello that asks to join `join` (0: a new group). Group numbers are
    /// random, so a number seen once does not name another transfer's group later.
    pub(crate) fn enter(&self, join: u32) -> Result<Membership, RejectReason> {
        let mut live = lock_std(&self.live);
        if join != 0 {
            return live
                .get(&join)
                .and_then(Weak::upgrade)
                .map(Membership::new)
                .ok_or(RejectReason::UNKNOWN_GROUP);
        }
        live.retain(|_, g| g.strong_count() > 0);
        let id = loop {
            let random = crate::key::nonce().map_err(|_| RejectReason::NO_RESOURCES)?;
            let id = u32::from_ne_bytes([random[0], random[1], random[2], random[3]]);
            if id != 0 && !live.contains_key(&id) {
                break id;
            }
        };
        let group = Arc::new(Group {
            id,
            live: Arc::clone(&self.live),
            members: AtomicUsize::new(0),
        });
        live.insert(id, Arc::downgrade(&group));
        Ok(Membership::new(group))
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("id", &self.id).finish()
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
        let mut live = lock_std(&self.live);
        if live.get(&self.id).is_some_and(|g| g.strong_count() == 0) {
            live.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_lives_while_a_connection_holds_it() {
        let groups = Groups::default();
        let first = groups.enter(0).unwrap();
        let id = first.group().id();
        assert_ne!(id, 0);
        let second = groups.enter(id).unwrap();
        assert_eq!(second.group().id(), id);
        let other = groups.enter(0).unwrap();
        assert_ne!(other.group().id(), id);
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
        assert!(lock_std(&groups.live).is_empty());
    }

    #[test]
    fn exactly_the_last_connection_to_leave_ends_the_transfer() {
        let groups = Groups::default();
        let a = groups.enter(0).unwrap();
        let id = a.group().id();
        let b = groups.enter(id).unwrap();
        // A member that went without leaving (a failed accept) does not count.
        drop(groups.enter(id).unwrap());
        let c = groups.enter(id).unwrap();
        assert!(!b.leave());
        assert!(!a.leave());
        assert!(c.leave(), "the last one out");
        // Leaving from several threads at once: one of them is last.
        let a = groups.enter(0).unwrap();
        let id = a.group().id();
        let members: Vec<_> = (0..8).map(|_| groups.enter(id).unwrap()).collect();
        drop(a);
        let lasts = std::thread::scope(|s| {
            let t: Vec<_> = members.into_iter().map(|m| s.spawn(|| m.leave())).collect();
            t.into_iter()
                .map(|t| t.join().unwrap())
                .filter(|last| *last)
                .count()
        });
        assert_eq!(lasts, 1);
    }
}
