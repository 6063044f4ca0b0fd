//! Lets the last packets of closed connections cross the tunnel before it goes away.
//!
//! When the daemon stops, the proxy's drained connections end by closing their sockets: the
//! kernel still has to send their final segments (TLS close_notify, FIN) through the TUN device
//! and get them acknowledged. Removing the device at once strands them, and the far end keeps
//! its half of the connection open until its own timeout. So before the data plane stops, the
//! tunnel waits (briefly, bounded) until no TCP socket on the tunnel address is still closing:
//! FIN_WAIT1, CLOSING or LAST_ACK in the kernel's table (`/proc/net/tcp`, `/proc/net/tcp6`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Longest wait: a peer that is gone must not hold up a stop (systemd's stop timeout is 30 s).
pub const SETTLE_MAX: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// TCP states (include/net/tcp_states.h) in which our FIN is sent but not yet acknowledged.
const FIN_WAIT1: u8 = 0x04;
const LAST_ACK: u8 = 0x09;
const CLOSING: u8 = 0x0B;

/// Waits until no socket on `address` is closing, at most `SETTLE_MAX`. Returns how many were
/// still closing at the end (0: settled).
pub async fn wait_for_closing_sockets(address: IpAddr) -> usize {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        let closing = closing_sockets(address);
        if closing == 0 || tokio::time::Instant::now() >= deadline {
            return closing;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sockets on `address` still closing, by the kernel's tables; 0 when they cannot be read.
fn closing_sockets(address: IpAddr) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| count_closing(&table, address))
        .sum()
}

/// Counts the rows of a `/proc/net/tcp{,6}` table whose local address is `address` and whose
/// state is a closing one. Rows that do not parse are skipped.
fn count_closing(table: &str, address: IpAddr) -> usize {
    table
        .lines()
        .skip(1)
        .filter_map(parse_row)
        .filter(|(local, state)| {
            local.to_canonical() == address.to_canonical()
                && matches!(*state, FIN_WAIT1 | LAST_ACK | CLOSING)
        })
        .count()
}

/// `sl local_address rem_address st ...`: the local address and the state.
fn parse_row(line: &str) -> Option<(IpAddr, u8)> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let (ip, _port) = local.split_once(':')?;
    Some((parse_ip(ip)?, state))
}

/// The kernel prints addresses as 32-bit words in host byte order (little-endian here).
fn parse_ip(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => {
            let word = u32::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    // Rows as Linux prints them; 198.19.0.1 is 0x010013C6 little-endian.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 010013C6:20FB 0A0013C6:C350 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 20 4 0 10 -1
   1: 010013C6:20FB 0A0013C6:C351 04 00000000:00000000 01:00000014 00000000     0        0 0 1 0000000000000000 20 4 0 10 -1
   2: 010013C6:20FB 0A0013C6:C352 09 00000000:00000000 01:00000014 00000000     0        0 0 1 0000000000000000 20 4 0 10 -1
   3: 0100007F:4B3B 0100007F:C353 04 00000000:00000000 01:00000014 00000000     0        0 0 1 0000000000000000 20 4 0 10 -1
   4: 010013C6:20FB 0A0013C6:C354 06 00000000:00000000 03:00000F3E 00000000     0        0 0 3 0000000000000000
   5: garbage
";

    #[test]
    fn counts_only_closing_sockets_on_the_tunnel_address() {
        let tunnel: IpAddr = "198.19.0.1".parse().expect("addr");
        // Row 1 (FIN_WAIT1) and row 2 (LAST_ACK); not the established one, not TIME_WAIT,
        // not the loopback one.
        assert_eq!(count_closing(TCP, tunnel), 2);
        assert_eq!(count_closing(TCP, "198.19.0.2".parse().expect("addr")), 0);
    }

    #[test]
    fn reads_ipv6_rows() {
        let table = "header
   0: 0000DFFD000000000000000001000000:20FB 0000DFFD000000000000000002000000:C350 0B 00000000:00000000 00:00000000 00000000 0 0 1 1
";
        let tunnel: IpAddr = "fddf::1".parse().expect("addr");
        assert_eq!(count_closing(table, tunnel), 1);
    }

    #[test]
    fn the_live_table_parses() {
        // Whatever this machine has: every row of the real tables must parse.
        for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(table) = std::fs::read_to_string(path) {
                for line in table.lines().skip(1) {
                    assert!(parse_row(line).is_some(), "{path}: {line}");
                }
            }
        }
    }
}
