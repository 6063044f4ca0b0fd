//! Which peer a destination belongs to, without scanning every peer (a hub has a thousand).
//!
//! One hash map per prefix length present, probed from the longest length down: a lookup costs
//! at most one probe per distinct length (a handful), whatever the number of peers. Several
//! peers may list the same prefix (the members of a hub group); they are kept in config order
//! and the first one that routes the address right now wins, else a shorter prefix is tried.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Prefixes of one length and the peer slots (config order) that list each.
struct Level {
    prefix_len: u8,
    networks: HashMap<IpNet, Vec<usize>>,
}

/// Longest-prefix match over the peers' allowed IPs.
#[derive(Default)]
pub(crate) struct RouteTable {
    v4: Vec<Level>,
    v6: Vec<Level>,
}

impl RouteTable {
    /// A table of `(peer slot, prefix)` pairs, given in config order.
    pub(crate) fn new<'a>(prefixes: impl IntoIterator<Item = (usize, &'a IpNet)>) -> Self {
        let mut table = RouteTable::default();
        for (slot, net) in prefixes {
            let levels = match net {
                IpNet::V4(_) => &mut table.v4,
                IpNet::V6(_) => &mut table.v6,
            };
            let len = net.prefix_len();
            let at = match levels.binary_search_by(|l| len.cmp(&l.prefix_len)) {
                Ok(at) => at,
                Err(at) => {
                    levels.insert(
                        at,
                        Level {
                            prefix_len: len,
                            networks: HashMap::new(),
                        },
                    );
                    at
                }
            };
            let slots = levels[at].networks.entry(net.trunc()).or_default();
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        table
    }

    /// The slot of the peer for `ip`: longest prefix first, and among the peers listing that
    /// prefix the first for which `routes(slot)` holds.
    pub(crate) fn lookup(&self, ip: IpAddr, routes: impl Fn(usize) -> bool) -> Option<usize> {
        let levels = match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        levels.iter().find_map(|level| {
            let network = IpNet::new(ip, level.prefix_len).ok()?.trunc();
            level
                .networks
                .get(&network)?
                .iter()
                .copied()
                .find(|slot| routes(*slot))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("a test prefix")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    fn table(prefixes: &[(usize, &str)]) -> RouteTable {
        let nets: Vec<(usize, IpNet)> = prefixes.iter().map(|(s, p)| (*s, net(p))).collect();
        RouteTable::new(nets.iter().map(|(s, n)| (*s, n)))
    }

    #[test]
    fn avl6_the_longest_prefix_wins_whatever_the_order() {
        let table = table(&[
            (0, "198.19.0.0/16"),
            (1, "198.19.5.0/24"),
            (2, "198.19.5.7/32"),
            (3, "198.18.0.0/15"),
        ]);
        let any = |_| true;
        assert_eq!(table.lookup(ip("198.19.5.7"), any), Some(2));
        assert_eq!(table.lookup(ip("198.19.5.8"), any), Some(1));
        assert_eq!(table.lookup(ip("198.19.6.1"), any), Some(0));
        assert_eq!(table.lookup(ip("198.18.0.1"), any), Some(3));
        assert_eq!(table.lookup(ip("192.0.2.1"), any), None);
        assert_eq!(table.lookup(ip("fd00::1"), any), None);
    }

    #[test]
    fn avl6_ipv6_prefixes_are_looked_up_apart_from_ipv4() {
        let table = table(&[(0, "fd00::/8"), (1, "fd00:19::/64"), (2, "198.19.0.0/24")]);
        let any = |_| true;
        assert_eq!(table.lookup(ip("fd00:19::5"), any), Some(1));
        assert_eq!(table.lookup(ip("fd00:20::5"), any), Some(0));
        assert_eq!(table.lookup(ip("fe80::1"), any), None);
        assert_eq!(table.lookup(ip("198.19.0.9"), any), Some(2));
    }

    #[test]
    fn avl6_a_prefix_of_two_peers_goes_to_the_first_that_routes_it_then_shorter_ones() {
        // A hub group: primary (slot 1) and backup (slot 2) list the same prefixes.
        let table = table(&[
            (0, "198.19.0.0/16"),
            (1, "198.19.1.0/24"),
            (2, "198.19.1.0/24"),
        ]);
        let destination = ip("198.19.1.5");
        assert_eq!(table.lookup(destination, |_| true), Some(1));
        assert_eq!(table.lookup(destination, |slot| slot != 1), Some(2));
        assert_eq!(table.lookup(destination, |slot| slot == 0), Some(0));
        assert_eq!(table.lookup(destination, |_| false), None);
    }

    #[test]
    fn avl6_a_thousand_facilities_each_get_their_own_address() {
        const FACILITIES: u32 = 1000;
        let base = u32::from(std::net::Ipv4Addr::new(198, 19, 0, 10));
        let host = |n: u32| IpAddr::V4(std::net::Ipv4Addr::from(base + n));
        let nets: Vec<IpNet> = (0..FACILITIES)
            .map(|n| IpNet::new(host(n), 32).expect("a /32"))
            .collect();
        let table = RouteTable::new(nets.iter().enumerate());
        for n in 0..FACILITIES {
            assert_eq!(table.lookup(host(n), |_| true), Some(n as usize));
        }
        assert_eq!(table.lookup(host(FACILITIES), |_| true), None);
        assert_eq!(table.lookup(ip("198.19.0.1"), |_| true), None);
    }
}
