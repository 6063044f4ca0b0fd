//! The operator's side of the management API: `renkei push`, `renkei confirm` and
//! `renkei push --status`, over the same CRYPTREC-pinned TLS as everything else, with the
//! operator's client certificate.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use super::server::SIGNATURE_HEADER;
use crate::config::{MinTls, TlsConfig};
use crate::tls::credentials::{self, CredentialError};
use crate::tls::profile::{self, ProfileError};
use crate::tls::refusal::{self, TlsRefusal};

/// Largest answer read from a box.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How to reach a box's management API.
#[derive(Debug, Clone)]
pub struct Target {
    /// The box's management address (its tunnel address and port).
    pub address: SocketAddr,
    /// The name in the box's certificate.
    pub server_name: String,
    /// The operator's client certificate chain.
    pub certificate_file: PathBuf,
    /// Its private key.
    pub private_key_file: PathBuf,
    /// The CA that signed the boxes' certificates.
    pub ca_file: PathBuf,
    /// Bound on connecting and on the whole exchange.
    pub timeout: Duration,
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The operator's certificate, key or CA could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// rustls refused the configuration.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// `server_name` is not a DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// TCP, TLS or HTTP failed.
    #[error("{address}: {message}")]
    Transport {
        /// The box.
        address: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The TLS handshake was refused: by the box (its alert: the operator's certificate has
    /// expired by the box's clock, say) or by this side (the box's certificate). The detail
    /// says which side and what rustls saw.
    #[error("{address}: TLS refused, {}: {detail}", refusal.text())]
    Refused {
        /// The box.
        address: SocketAddr,
        /// Why, as a stable word.
        refusal: TlsRefusal,
        /// rustls's own words.
        detail: String,
    },
    /// The bundle to send could not be read.
    #[error("{0}")]
    Bundle(String),
    /// No answer within the timeout.
    #[error("{0}: no answer within {1:?}")]
    Timeout(SocketAddr, Duration),
}

/// The box's HTTP status and JSON answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body, parsed as JSON when it is JSON.
    pub body: serde_json::Value,
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends a config and its signature.
pub async fn push(target: &Target, config: Vec<u8>, signature: &str) -> Result<Reply, ClientError> {
    request(target, Method::POST, "/v1/config", config, Some(signature)).await
}

/// Confirms the pending config (`version`, when given, must be the pending one).
pub async fn confirm(target: &Target, version: Option<u64>) -> Result<Reply, ClientError> {
    let body = match version {
        Some(v) => serde_json::json!({ "version": v }).to_string().into_bytes(),
        None => Vec::new(),
    };
    request(target, Method::POST, "/v1/confirm", body, None).await
}

/// Reads the running config's version, hash, signer and state.
pub async fn status(target: &Target) -> Result<Reply, ClientError> {
    request(target, Method::GET, "/v1/config", Vec::new(), None).await
}

/// Reads the box's facts for the fleet table (`crate::status::facts::FleetFacts`).
pub async fn fleet_facts(target: &Target) -> Result<Reply, ClientError> {
    request(target, Method::GET, "/v1/status", Vec::new(), None).await
}

/// Reads the box's firmware: running version, booted slot, pending bundle, last result.
pub async fn update_status(target: &Target) -> Result<Reply, ClientError> {
    request(target, Method::GET, "/v1/update", Vec::new(), None).await
}

/// Reads the facility's hub group: the active hub, each hub's health, failovers.
pub async fn hubs(target: &Target) -> Result<Reply, ClientError> {
    request(target, Method::GET, "/v1/hubs", Vec::new(), None).await
}

/// Prefers hub `hub` of the facility's hub group until cleared with `None`.
pub async fn prefer_hub(target: &Target, hub: Option<&str>) -> Result<Reply, ClientError> {
    let body = serde_json::json!({ "hub": hub }).to_string().into_bytes();
    request(target, Method::POST, "/v1/hubs/prefer", body, None).await
}

/// Lists the box's journal files (`crate::journal::files::JournalFile` each).
pub async fn journal_files(target: &Target) -> Result<Reply, ClientError> {
    request(target, Method::GET, "/v1/journal", Vec::new(), None).await
}

/// Fetches one of the box's journal files, `name` as listed (`<machine id>/<file>`): its bytes
/// when the box sent them, else the box's JSON answer.
pub async fn journal_file(
    target: &Target,
    name: &str,
) -> Result<Result<Vec<u8>, Reply>, ClientError> {
    let path = format!("/v1/journal/{name}");
    let (status, bytes) = exchange(
        target,
        Method::GET,
        &path,
        Full::new(Bytes::new()),
        &[],
        crate::journal::files::MAX_FILE_BYTES as usize,
    )
    .await?;
    if (200..300).contains(&status) {
        Ok(Ok(bytes.to_vec()))
    } else {
        Ok(Err(reply(status, &bytes)))
    }
}

/// Size of the pieces a bundle is sent in.
const BUNDLE_CHUNK_BYTES: usize = 64 * 1024;

/// Sends a RAUC bundle, read from `bundle` as it is sent (never whole in memory), with its
/// length declared so the box can refuse an oversized one before it arrives.
pub async fn push_bundle(target: &Target, bundle: &std::path::Path) -> Result<Reply, ClientError> {
    use tokio::io::AsyncReadExt as _;
    let local = |e: std::io::Error| ClientError::Bundle(format!("{}: {e}", bundle.display()));
    let file = tokio::fs::File::open(bundle).await.map_err(local)?;
    let length = file.metadata().await.map_err(local)?.len();
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0u8; BUNDLE_CHUNK_BYTES];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buffer))), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    send(
        target,
        Method::POST,
        "/v1/update",
        StreamBody::new(chunks),
        &[
            (hyper::header::CONTENT_LENGTH, length.to_string()),
            (
                hyper::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
        ],
    )
    .await
}

async fn request(
    target: &Target,
    method: Method,
    path: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) -> Result<Reply, ClientError> {
    let mut headers = Vec::new();
    if let Some(signature) = signature {
        headers.push((SIGNATURE_HEADER_NAME, signature.trim().to_string()));
        headers.push((hyper::header::CONTENT_TYPE, "application/toml".to_string()));
    }
    send(target, method, path, Full::new(Bytes::from(body)), &headers).await
}

const SIGNATURE_HEADER_NAME: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static(SIGNATURE_HEADER);

async fn send<B>(
    target: &Target,
    method: Method,
    path: &str,
    body: B,
    headers: &[(hyper::header::HeaderName, String)],
) -> Result<Reply, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (status, bytes) = exchange(target, method, path, body, headers, MAX_ANSWER_BYTES).await?;
    Ok(reply(status, &bytes))
}

/// The box's answer, parsed as JSON when it is JSON.
fn reply(status: u16, bytes: &[u8]) -> Reply {
    let body = serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()));
    Reply { status, body }
}

/// One request; the answer's status and body (at most `limit` bytes).
async fn exchange<B>(
    target: &Target,
    method: Method,
    path: &str,
    body: B,
    headers: &[(hyper::header::HeaderName, String)],
    limit: usize,
) -> Result<(u16, Bytes), ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let credentials = credentials::load(&TlsConfig {
        certificate_file: target.certificate_file.clone(),
        private_key_file: target.private_key_file.clone(),
        ca_file: target.ca_file.clone(),
        crl_file: None,
    })?;
    let tls = profile::client_config(&credentials, MinTls::Tls13)?;
    let name = ServerName::try_from(target.server_name.clone())
        .map_err(|_| ClientError::ServerName(target.server_name.clone()))?;
    let address = target.address;
    let transport = |message: String| ClientError::Transport { address, message };
    // A TLS error may surface at the handshake or, in TLS 1.3, only when the box's alert
    // arrives with the first answer (the server judges the client's certificate after the
    // client has finished): both are told as the refusal they are.
    let failed = |stage: &str, err: &(dyn StdError + 'static)| match tls_error(err) {
        Some(tls) => ClientError::Refused {
            address,
            refusal: refusal::from_rustls(tls),
            detail: tls.to_string(),
        },
        None => transport(format!("{stage}: {err}")),
    };
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| transport(format!("connect: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| failed("TLS", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("HTTP", &e))?;
        let driver = tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, target.server_name.as_str());
        for (name, value) in headers {
            builder = builder.header(name, value.as_str());
        }
        let request = builder
            .body(body)
            .map_err(|e| transport(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("HTTP", &e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| failed("answer", &*e))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    };
    tokio::time::timeout(target.timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(address, target.timeout))?
}

/// The rustls error somewhere in `err`'s chain: hyper wraps the `io::Error` that
/// tokio-rustls wraps around it, and `io::Error::source` skips the error it holds, so each
/// link's own payload is looked at too.
fn tls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut link = Some(err);
    while let Some(current) = link {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let held = current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if held.is_some() {
            return held;
        }
        link = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription;

    /// An error that hides another behind `source`, as hyper's does.
    #[derive(Debug, thiserror::Error)]
    #[error("connection error")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn int2_a_tls_alert_is_found_behind_the_http_error() {
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateExpired);
        let wrapped = Wrapper(io::Error::new(io::ErrorKind::InvalidData, alert.clone()));
        assert_eq!(tls_error(&wrapped), Some(&alert));
        let refusal = tls_error(&wrapped).map(refusal::from_rustls);
        assert_eq!(refusal, Some(TlsRefusal::CertificateExpired));
        // Plain transport failures stay what they are.
        let reset = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(tls_error(&reset), None);
        assert_eq!(tls_error(&io::Error::other("no route")), None);
    }
}
