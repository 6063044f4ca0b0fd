//! Connection slots of the management API, sorted by certificate identity after the TLS
//! handshake (INT-1, AVL-1). Over WireGuard every client reaches the box from the hub's tunnel
//! address, so an address cannot tell the operator from a hostile box; its certificate can.
//! Operator identities have slots of their own that no other identity can take; every other
//! identity shares a small pool, with a cap per identity, and is only ever answered 403.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Connections of the operator identities at once (the operator needs one or two).
pub const MAX_OPERATOR_CONNECTIONS: usize = 8;
/// Connections of all other identities together (boxes of the same CA): each gets its 403.
pub const MAX_OTHER_CONNECTIONS: usize = 4;
/// Connections of any one other identity.
pub const MAX_CONNECTIONS_PER_OTHER_IDENTITY: usize = 2;

/// Which pool a connection draws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pool {
    /// One of `management.operator_identities`.
    Operator,
    /// Anyone else, by the name its certificate shows.
    Other(String),
}

#[derive(Debug, Default)]
struct Counts {
    operators: usize,
    others: usize,
    per_other: HashMap<String, usize>,
}

/// The slots of one management listener.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    counts: Arc<Mutex<Counts>>,
}

/// One connection's slot, given back on drop.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    pool: Pool,
}

impl Slots {
    /// Empty pools.
    pub fn new() -> Self {
        Slots::default()
    }

    /// A slot in `pool`, or `None` when that pool (or that identity's share) is full.
    pub fn take(&self, pool: Pool) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match &pool {
            Pool::Operator => {
                if counts.operators >= MAX_OPERATOR_CONNECTIONS {
                    return None;
                }
                counts.operators += 1;
            }
            Pool::Other(name) => {
                let mine = counts.per_other.get(name).copied().unwrap_or(0);
                if counts.others >= MAX_OTHER_CONNECTIONS
                    || mine >= MAX_CONNECTIONS_PER_OTHER_IDENTITY
                {
                    return None;
                }
                counts.others += 1;
                counts.per_other.insert(name.clone(), mine + 1);
            }
        }
        Some(Slot {
            counts: Arc::clone(&self.counts),
            pool,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match &self.pool {
            Pool::Operator => counts.operators = counts.operators.saturating_sub(1),
            Pool::Other(name) => {
                counts.others = counts.others.saturating_sub(1);
                if let Some(n) = counts.per_other.get_mut(name) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.per_other.remove(name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(name: &str) -> Pool {
        Pool::Other(name.to_string())
    }

    #[test]
    fn int1_avl1_other_identities_never_take_the_operators_slots() {
        let slots = Slots::new();
        let held: Vec<Slot> = (0..32)
            .filter_map(|i| slots.take(other(&format!("box{}", i % 8))))
            .collect();
        assert_eq!(held.len(), MAX_OTHER_CONNECTIONS);
        let operators: Vec<Slot> = (0..MAX_OPERATOR_CONNECTIONS)
            .map(|_| slots.take(Pool::Operator).expect("operator slot"))
            .collect();
        assert!(
            slots.take(Pool::Operator).is_none(),
            "the operator's own cap"
        );
        drop(operators);
        assert!(slots.take(Pool::Operator).is_some(), "given back");
    }

    #[test]
    fn int1_one_other_identity_gets_only_its_share() {
        let slots = Slots::new();
        let clinic: Vec<Slot> = (0..10)
            .filter_map(|_| slots.take(other("clinic")))
            .collect();
        assert_eq!(clinic.len(), MAX_CONNECTIONS_PER_OTHER_IDENTITY);
        assert!(slots.take(other("hub")).is_some(), "others still get in");
        drop(clinic);
        assert!(slots.take(other("clinic")).is_some(), "given back");
    }
}
