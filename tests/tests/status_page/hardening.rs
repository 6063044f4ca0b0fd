//! The status server against bad and slow clients: header and body limits, paths, methods,
//! timeouts, connection limits (INT-1).

use std::io::Write;
use std::time::{Duration, Instant};

use renkei_lab::web::{curl, get, login, ADMIN_PASSWORD, STATUS_PORT};
use renkei_lab::{require_root, wait_until, Lab, Namespace, Node};

use crate::fixtures::{clinic_base, clinic_with_page};

#[test]
fn int1_oversized_headers_get_431() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let big = format!("X-Filler: {}", "a".repeat(10 * 1024));
    let reply = curl(lan, &["-H", &big, &format!("{base}/login")]).expect("curl");
    assert_eq!(reply.status, 431, "{reply:?}");
    let many: Vec<String> = (0..80).map(|i| format!("X-H{i}: {i}")).collect();
    let mut args: Vec<&str> = Vec::new();
    for header in &many {
        args.extend(["-H", header]);
    }
    let url = format!("{base}/login");
    args.push(&url);
    let reply = curl(lan, &args).expect("curl");
    assert_eq!(reply.status, 431, "too many headers: {reply:?}");
    assert_eq!(
        curl(lan, &[&url]).expect("curl").status,
        200,
        "still serving"
    );
}

#[test]
fn int1_oversized_body_gets_413() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let url = format!("{base}/login");
    let body = format!("password={}", "x".repeat(100 * 1024));
    let declared = curl(lan, &["--data-binary", &body, &url]).expect("curl");
    assert_eq!(declared.status, 413, "{declared:?}");
    // Chunked, so no Content-Length warns the server in advance.
    // The first oversized body counted as a failed login attempt (the limiter reserves the
    // attempt before the body is read): the next one is answered once the delay has passed.
    let file = lab.dir.join("big-body");
    std::fs::write(&file, &body).expect("write");
    let chunked = wait_until(Duration::from_secs(10), "the login delay to pass", || {
        let reply = curl(
            lan,
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", file.display()),
                &url,
            ],
        )
        .expect("curl");
        (reply.status != 429).then_some(reply)
    })
    .expect("chunked request");
    assert_eq!(chunked.status, 413, "{chunked:?}");
    assert_eq!(
        curl(lan, &[&url]).expect("curl").status,
        200,
        "still serving"
    );
}

#[test]
fn int1_path_traversal_gets_404() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/app.js/../../etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/static/../../../proc/self/environ",
        "/.%2e/.%2e/etc/shadow",
    ] {
        let reply = get(lan, &base, &session, path).expect("curl");
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert!(!reply.body.contains("root:"), "{path}: {reply:?}");
    }
    assert_eq!(
        get(lan, &base, &session, "/app.js").expect("curl").status,
        200
    );
}

#[test]
fn int1_unknown_methods_get_405() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    for (method, path, allow) in [
        ("BREW", "/", "GET, HEAD"),
        ("DELETE", "/api/v1/status", "GET, HEAD"),
        ("PUT", "/login", "GET, HEAD, POST"),
        ("TRACE", "/metrics", "GET, HEAD"),
        ("GET", "/api/v1/tunnel/connect", "POST"),
        ("PROPFIND", "/app.js", "GET, HEAD"),
    ] {
        let reply = curl(lan, &["-X", method, &format!("{base}{path}")]).expect("curl");
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    let missing = curl(lan, &[&format!("{base}/nothing-here")]).expect("curl");
    assert_eq!(missing.status, 404);
}

/// Connects from the LAN and returns how long the server took to close the connection.
/// How long after `started` (taken when the connection was made) the server closed it.
fn time_until_closed(mut stream: std::net::TcpStream, send: &[u8], started: Instant) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    stream.write_all(send).expect("write");
    let mut buf = [0u8; 4096];
    loop {
        match renkei_lab::sockio::read_past_signals(&mut stream, &mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn int1_slow_clients_are_cut_after_the_header_timeout() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let address = format!("198.18.20.1:{STATUS_PORT}");
    // A client that opens TCP and never starts TLS.
    let silent = lan
        .tcp_connect(&address, Duration::from_secs(5))
        .expect("connect");
    // Timed from the connect, not from when the thread gets to run on a busy machine.
    let connected = Instant::now();
    let silent = std::thread::spawn(move || time_until_closed(silent, b"", connected));
    // A client that completes TLS and sends half a request header, then nothing.
    let mut slowloris = std::process::Command::new("ip");
    slowloris
        .args([
            "netns",
            "exec",
            lan.name(),
            "openssl",
            "s_client",
            "-quiet",
            "-connect",
            &address,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = slowloris.spawn().expect("openssl");
    let started = Instant::now();
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(b"GET /login HTTP/1.1\r\nHost: 198.18.20.1\r\nX-Slow: ")
        .expect("partial header");
    input.flush().expect("flush");
    let exited = wait_until(
        Duration::from_secs(30),
        "the server to cut the slow client",
        || child.try_wait().ok().flatten().map(|_| started.elapsed()),
    );
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(input);
    let slow = exited.expect("the slow client was cut");
    let header_timeout = Duration::from_secs(renkei::status::http::HEADER_READ_TIMEOUT_SECS);
    assert!(
        slow >= header_timeout - Duration::from_secs(1)
            && slow < header_timeout + Duration::from_secs(8),
        "cut after {slow:?}"
    );
    let silent = silent.join().expect("silent client");
    let handshake_timeout = Duration::from_secs(renkei::status::http::TLS_HANDSHAKE_TIMEOUT_SECS);
    assert!(
        silent >= handshake_timeout - Duration::from_secs(1)
            && silent < handshake_timeout + Duration::from_secs(8),
        "silent client cut after {silent:?}"
    );
    let url = format!("{}/login", clinic_base());
    assert_eq!(
        curl(lan, &[&url]).expect("curl").status,
        200,
        "still serving"
    );
}

/// A TCP connection from `source` (an address of the namespace) to `destination`.
fn connect_from(ns: &Namespace, source: &str, destination: &str) -> std::net::TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let source: std::net::SocketAddrV4 = format!("{source}:0").parse().expect("source");
    let destination: std::net::SocketAddrV4 = destination.parse().expect("destination");
    ns.run_inside(move || -> nix::Result<std::net::TcpStream> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(source),
        )?;
        connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(destination),
        )?;
        Ok(std::net::TcpStream::from(fd))
    })
    .expect("inside the namespace")
    .expect("connect")
}

#[test]
fn int1_status_server_limits_concurrent_connections() {
    require_root!();
    use renkei::status::http::{MAX_CONNECTIONS_PER_ADDRESS, MAX_PAGE_CONNECTIONS};
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let address = format!("198.18.20.1:{STATUS_PORT}");
    let url = format!("{}/login", clinic_base());
    let hosts = MAX_PAGE_CONNECTIONS / MAX_CONNECTIONS_PER_ADDRESS;
    let sources: Vec<String> = (0..=hosts)
        .map(|i| format!("198.18.20.{}", 2 + i))
        .collect();
    for source in &sources[1..] {
        lan.ip(&["addr", "add", &format!("{source}/24"), "dev", "lan0"])
            .expect("LAN address");
    }

    // One host: its own cap, while other hosts are still served.
    let mut held: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS_PER_ADDRESS)
        .map(|_| connect_from(lan, &sources[0], &address))
        .collect();
    let over = connect_from(lan, &sources[0], &address);
    let closed_after = time_until_closed(over, b"", Instant::now());
    assert!(
        closed_after < Duration::from_secs(3),
        "held for {closed_after:?}"
    );
    let other = curl(lan, &["--interface", &sources[1], &url]).expect("curl");
    assert_eq!(other.status, 200, "another host is still served: {other:?}");

    // All hosts together: the listener's cap.
    for source in &sources[1..hosts] {
        held.extend((0..MAX_CONNECTIONS_PER_ADDRESS).map(|_| connect_from(lan, source, &address)));
    }
    assert_eq!(held.len(), MAX_PAGE_CONNECTIONS);
    let over = connect_from(lan, &sources[hosts], &address);
    let closed_after = time_until_closed(over, b"", Instant::now());
    assert!(
        closed_after < Duration::from_secs(3),
        "the connection over the limit was held for {closed_after:?}"
    );
    let refused = curl(lan, &["--interface", &sources[hosts], &url]).expect("curl");
    assert_eq!(refused.status, 0, "no HTTP answer while full: {refused:?}");
    drop(held);
    wait_until(Duration::from_secs(10), "the page to serve again", || {
        (curl(lan, &[&url]).ok()?.status == 200).then_some(())
    })
    .expect("serving again once the held connections closed");
}
