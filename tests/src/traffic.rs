//! Small real TCP and UDP traffic for the tests: an echo server and a round trip that checks
//! every byte comes back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a single read or write may block in these helpers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Echoes `connections` connections, one after another, then stops.
pub fn spawn_echo(listener: TcpListener, connections: usize) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stream.shutdown(Shutdown::Write);
        }
    })
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Sends `payload` through an echo server and checks it all comes back unchanged.
pub fn echo_round_trip(mut stream: TcpStream, payload: &[u8]) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let writer_stream = stream.try_clone()?;
    let to_send = payload.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = writer_stream;
        s.write_all(&to_send)?;
        s.shutdown(Shutdown::Write)
    });
    let mut received = Vec::with_capacity(payload.len());
    stream.read_to_end(&mut received)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    anyhow::ensure!(
        received == payload,
        "echo returned {} bytes, sent {}; contents differ",
        received.len(),
        payload.len()
    );
    Ok(())
}
