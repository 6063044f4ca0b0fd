//! The Internet checksum (RFC 1071) of IP, TCP and UDP headers, and completing a checksum the
//! kernel left partial.

use super::OffloadError;

/// Adds the one's-complement sum of `bytes` (16-bit big-endian words, an odd last byte
/// padded with zero) to `sum` (not yet folded to 16 bits). `bytes` must start at an even
/// offset of what is summed, as every header and payload here does.
pub(super) fn sum_bytes(sum: u64, bytes: &[u8]) -> u64 {
    // The one's-complement sum does not depend on byte order (RFC 1071, 2.(B)): summing the
    // machine's own 32-bit words and swapping the folded result gives the big-endian sum, in
    // a loop the compiler vectorises (about three times the speed of big-endian 32-bit
    // loads; this is the per-byte cost of splitting a super-segment).
    sum + u64::from(u16::from_be(fold(native_word_sum(bytes))))
}

/// Sum of `bytes` as the machine's 32-bit words in four independent lanes, the tail padded
/// with zeros. No overflow below 16 GiB of input (each lane adds at most 2^32 - 1 per 16 bytes).
fn native_word_sum(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
        }
    }
    let mut sum: u64 = lanes.iter().sum();
    let mut words = blocks.remainder().chunks_exact(4);
    for word in &mut words {
        sum += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
    }
    let mut tail = [0u8; 4];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    sum + u64::from(u32::from_ne_bytes(tail))
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

#[cfg(test)]
mod tests {
    use super::{checksum, fold, sum_bytes};

    /// RFC 1071's definition, word by word: the reference the fast sum is held to.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    proptest::proptest! {
        /// Any length (odd ones included, up to a 64 KiB super-segment and past it) and any
        /// starting sum give RFC 1071's sum.
        #[test]
        fn net1_the_fast_sum_is_rfc_1071_s(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70_000),
            start in 0u64..0x1_0000_0000,
        ) {
            let start_folded = fold(start);
            let expected = fold(u64::from(start_folded) + u64::from(reference_sum(&bytes)));
            proptest::prop_assert_eq!(fold(sum_bytes(start, &bytes)), expected);
        }
    }

    /// The example of RFC 1071 section 3 (bytes 00 01 f2 03 f4 f5 f6 f7: sum ddf2), and an
    /// all-ones packet whose words sum to the one's-complement zero.
    #[test]
    fn net1_the_sum_matches_rfc_1071_s_example() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(0, &bytes)), 0xddf2);
        assert_eq!(checksum(&bytes), !0xddf2);
        assert_eq!(fold(sum_bytes(0, &[0xff; 1500])), 0xffff);
    }
}
