//! The demo lab's document server: a small, real HTTP/1.1 file server for the hospital LAN.
//!
//! `lab up` runs it as its own process (`lab serve-documents`) inside the hospital's LAN
//! namespace, so a viewer on the clinic LAN fetches real files with `curl` through the whole
//! chain. It answers `GET` and `HEAD` for the plain file names of one folder, one request per
//! connection (`Connection: close`), and nothing else. Written with std only, so the lab adds no
//! crate to the build.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Longest the server waits for a request or for the client to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most connections served at once; more are answered 503.
const MAX_CONNECTIONS: usize = 64;

/// One document the server offers, as recorded in `lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// File name, also the URL path (`/<name>`).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// Writes the demo documents into `dir` and describes them: a discharge summary, laboratory
/// results and an 8 MiB imaging file (large enough that the transfer takes a moment).
pub fn write_documents(dir: &Path) -> anyhow::Result<Vec<Document>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let summary = "退院時サマリー (discharge summary) — renkei lab, fictitious patient\n\
                   Patient: 連携 太郎 (test), born 1950-01-01\n\
                   Diagnosis: community-acquired pneumonia, resolved\n\
                   Follow-up: clinic visit in 2 weeks; chest X-ray attached in ct-series.bin\n"
        .as_bytes()
        .to_vec();
    let results = br#"{"patient":"lab-0001","panel":"CBC","results":[{"test":"WBC","value":6.1,"unit":"10^3/uL"},{"test":"Hb","value":13.8,"unit":"g/dL"},{"test":"PLT","value":231,"unit":"10^3/uL"}],"note":"fictitious data for the renkei lab"}
"#
    .to_vec();
    let mut imaging = vec![0u8; 8 << 20];
    crate::tlstools::Pattern::new(2026).fill(&mut imaging);
    let mut documents = Vec::new();
    for (name, content) in [
        ("discharge-summary.txt", summary),
        ("lab-results.json", results),
        ("ct-series.bin", imaging),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &content).with_context(|| format!("writing {}", path.display()))?;
        documents.push(Document {
            name: name.to_string(),
            bytes: content.len() as u64,
            sha256: sha256_hex(&content),
        });
    }
    Ok(documents)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET` or `HEAD` (`head_only`) of a file name in the served folder.
    File {
        /// The file name (validated: no folders, no hidden files).
        name: String,
        /// True for `HEAD`.
        head_only: bool,
    },
    /// The index: `GET /`.
    Index {
        /// True for `HEAD`.
        head_only: bool,
    },
    /// Anything else, with the status line to answer.
    Refused(&'static str),
}

/// Parses a request line (`GET /name HTTP/1.1`). Only plain names of letters, digits, `-`, `_`
/// and `.` (not leading) are files: nothing can escape the folder.
pub fn parse_request_line(line: &str) -> Request {
    let mut words = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Request::Refused("400 Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Refused("505 HTTP Version Not Supported");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::Refused("405 Method Not Allowed"),
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(name) = path.strip_prefix('/') else {
        return Request::Refused("400 Bad Request");
    };
    if name.is_empty() {
        return Request::Index { head_only };
    }
    let plain = !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Request::Refused("404 Not Found");
    }
    Request::File {
        name: name.to_string(),
        head_only,
    }
}

/// Serves `dir` on `listener` until the process is killed.
pub fn serve(listener: TcpListener, dir: PathBuf) -> anyhow::Result<()> {
    let dir = Arc::new(dir);
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                0,
                None,
            );
            continue;
        }
        let (dir, active) = (dir.clone(), active.clone());
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &dir) {
                eprintln!("document server: {e:#}");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, dir: &Path) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD_BYTES as u64));
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(()); // a probe that connected and closed
    }
    // Read (and ignore) the headers up to the blank line.
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header)?;
        if n == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut out = &stream;
    let request = parse_request_line(line.trim_end());
    let status = match &request {
        Request::Index { head_only } => {
            let mut names: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            names.sort();
            let mut body = names.join("\n");
            body.push('\n');
            let bytes = body.into_bytes();
            let shown = (!head_only).then_some(bytes.as_slice());
            respond(&mut out, "200 OK", "text/plain", bytes.len() as u64, shown)?;
            "200"
        }
        Request::File { name, head_only } => match std::fs::read(dir.join(name)) {
            Ok(content) => {
                let shown = (!head_only).then_some(content.as_slice());
                let kind = content_type(name);
                respond(&mut out, "200 OK", kind, content.len() as u64, shown)?;
                "200"
            }
            Err(_) => {
                respond(&mut out, "404 Not Found", "text/plain", 0, None)?;
                "404"
            }
        },
        Request::Refused(status) => {
            respond(&mut out, status, "text/plain", 0, None)?;
            status
        }
    };
    println!("{peer} {:?} {status}", line.trim_end());
    Ok(())
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn respond(
    out: &mut impl Write,
    status: &str,
    content_type: &str,
    length: u64,
    body: Option<&[u8]>,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nServer: renkei-lab\r\nContent-Type: {content_type}\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    out.write_all(head.as_bytes())?;
    if let Some(body) = body {
        out.write_all(body)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_files_and_nothing_escapes_the_folder() {
        assert_eq!(
            parse_request_line("GET /lab-results.json HTTP/1.1"),
            Request::File {
                name: "lab-results.json".into(),
                head_only: false
            }
        );
        assert_eq!(
            parse_request_line("HEAD /a.txt?x=1 HTTP/1.0"),
            Request::File {
                name: "a.txt".into(),
                head_only: true
            }
        );
        assert_eq!(
            parse_request_line("GET / HTTP/1.1"),
            Request::Index { head_only: false }
        );
        for bad in [
            "GET /../etc/passwd HTTP/1.1",
            "GET /.hidden HTTP/1.1",
            "GET /a/b HTTP/1.1",
            "GET /%2e%2e HTTP/1.1",
        ] {
            assert_eq!(
                parse_request_line(bad),
                Request::Refused("404 Not Found"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_request_line("POST /a HTTP/1.1"),
            Request::Refused("405 Method Not Allowed")
        );
        assert_eq!(
            parse_request_line("GET /a SPDY/3"),
            Request::Refused("505 HTTP Version Not Supported")
        );
        for bad in ["", "GET", "GET /a HTTP/1.1 extra", "GET a HTTP/1.1"] {
            assert_eq!(
                parse_request_line(bad),
                Request::Refused("400 Bad Request"),
                "{bad}"
            );
        }
    }

    #[test]
    fn serves_a_file_with_its_length_over_real_tcp() {
        let dir =
            std::env::temp_dir().join(format!("renkei-docserver-test-{}", std::process::id()));
        let documents = write_documents(&dir).expect("documents");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = dir.clone();
        std::thread::spawn(move || serve(listener, served));
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream
            .write_all(b"GET /lab-results.json HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("answer");
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let doc = &documents[1];
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", doc.bytes)),
            "{head}"
        );
        assert_eq!(sha256_hex(body.as_bytes()), doc.sha256);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
