//! Where a lab path drops packets during a benchmark's measurement: the sender's TCP
//! retransmissions, the receiving data plane's UDP receive-buffer overflows and the TUN devices'
//! full queues. A diagnostic for `bench-proxy` (with `RENKEI_BENCH_COUNT`), read from each
//! namespace's own /proc and /sys.

use crate::netns::Namespace;

/// One box's side of the path: its namespace and its TUN device.
pub struct Side<'a> {
    pub ns: &'a Namespace,
    pub tun: String,
}

/// Counters of both ends at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Losses {
    /// TCP segments the sending box retransmitted (`Tcp: RetransSegs`).
    pub sender_retransmits: u64,
    /// Datagrams the receiving box's kernel dropped for a full socket buffer
    /// (`Udp: RcvbufErrors`): the data plane did not read in time.
    pub receiver_udp_drops: u64,
    /// Packets the kernel could not queue to the sender's TUN device (its `tx_dropped`; `None`
    /// without a TUN device, as on a closed network).
    pub sender_tun_drops: Option<u64>,
    /// The same on the receiver's TUN device.
    pub receiver_tun_drops: Option<u64>,
}

impl Losses {
    /// Reads both ends now; `None` when a TCP or UDP counter cannot be read.
    pub fn read(sender: &Side<'_>, receiver: &Side<'_>) -> Option<Losses> {
        Some(Losses {
            sender_retransmits: snmp(sender.ns, "Tcp:", "RetransSegs")?,
            receiver_udp_drops: snmp(receiver.ns, "Udp:", "RcvbufErrors")?,
            sender_tun_drops: tx_dropped(sender),
            receiver_tun_drops: tx_dropped(receiver),
        })
    }

    /// What happened between `earlier` and this reading, in words.
    pub fn since(&self, earlier: &Losses) -> String {
        format!(
            "sender TCP retransmits {}, receiver UDP buffer drops {}, TUN queue drops sender {} / receiver {}",
            self.sender_retransmits.saturating_sub(earlier.sender_retransmits),
            self.receiver_udp_drops.saturating_sub(earlier.receiver_udp_drops),
            difference(self.sender_tun_drops, earlier.sender_tun_drops),
            difference(self.receiver_tun_drops, earlier.receiver_tun_drops),
        )
    }
}

fn difference(now: Option<u64>, earlier: Option<u64>) -> String {
    match (now, earlier) {
        (Some(now), Some(earlier)) => now.saturating_sub(earlier).to_string(),
        _ => "-".to_string(),
    }
}

fn read_in(ns: &Namespace, path: &str) -> Option<String> {
    let out = ns.command("cat").arg(path).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One field of /proc/net/snmp: a header line names the fields, the next line of the same
/// prefix holds the values.
fn snmp(ns: &Namespace, prefix: &str, field: &str) -> Option<u64> {
    snmp_field(&read_in(ns, "/proc/net/snmp")?, prefix, field)
}

fn snmp_field(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let index = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

fn tx_dropped(side: &Side<'_>) -> Option<u64> {
    read_in(
        side.ns,
        &format!("/sys/class/net/{}/statistics/tx_dropped", side.tun),
    )?
    .trim()
    .parse()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::snmp_field;

    /// The Tcp and Udp lines of this kernel's /proc/net/snmp (6.18), abridged after the fields
    /// read here.
    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 123
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 23 11 0 2 4 81234 90412 3456 0 5 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 7000 1 42 6000 40 0 0 0 0
";

    #[test]
    fn reads_a_field_by_its_name_from_the_line_after_the_header() {
        assert_eq!(snmp_field(SNMP, "Tcp:", "RetransSegs"), Some(3456));
        assert_eq!(snmp_field(SNMP, "Udp:", "RcvbufErrors"), Some(40));
        assert_eq!(snmp_field(SNMP, "Udp:", "NoSuchField"), None);
        assert_eq!(
            snmp_field("Tcp: RetransSegs\n", "Tcp:", "RetransSegs"),
            None
        );
    }
}
