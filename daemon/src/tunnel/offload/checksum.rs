//! The Internet checksum (RFC 1071) of IP, TCP and UDP headers, and completing a checksum the
//! kernel left partial.

use super::OffloadError;

/// Folds the one's-complement sum of `bytes` into `sum` (not yet folded to 16 bits).
pub(super) fn sum_bytes(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

pub(super) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `bytes` (complemented, ready to store).
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum_bytes(0, bytes))
}

/// The pseudo-header sum of an IPv4/IPv6 `packet`'s addresses, `protocol` and transport
/// `length` (not complemented).
pub(super) fn pseudo_header_sum(packet: &[u8], protocol: u8, length: usize) -> u64 {
    let addresses = if packet[0] >> 4 == 4 {
        &packet[12..20]
    } else {
        &packet[8..40]
    };
    sum_bytes(0, addresses) + u64::from(protocol) + length as u64
}

/// Completes a partial checksum: the field at `start + offset` holds the pseudo-header sum, the
/// sum of everything from `start` on goes into it.
pub(super) fn complete_checksum(
    packet: &mut [u8],
    start: usize,
    offset: usize,
) -> Result<(), OffloadError> {
    let field = start + offset;
    if start >= packet.len() || field + 2 > packet.len() {
        return Err(OffloadError::BadHeaders);
    }
    let sum = !fold(sum_bytes(0, &packet[start..]));
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}
