//! Blocking socket reads in tests that wait for a peer to close.
//!
//! A read on a socket with a receive timeout (`set_read_timeout`, SO_RCVTIMEO) is never
//! restarted after a signal handler ran, whatever SA_RESTART says (signal(7)): it fails with
//! EINTR. Test binaries run many tests side by side, and any of them may make a child exit
//! (SIGCHLD) while another thread waits in such a read; that error is not the peer closing.

use std::io::{self, Read};

/// `reader.read(buf)`, retried while it is interrupted by a signal.
pub fn read_past_signals(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
