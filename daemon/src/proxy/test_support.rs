//! What the proxy's unit tests share.

use tokio::net::{TcpListener, TcpStream};

/// A connected pair of TCP sockets on loopback: real sockets, so flow control and EOF are the
/// kernel's.
pub(super) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}
