//! The login-free page of a box with no config yet (OPS-1): the public enrolment data and the
//! CSR download, nothing else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::respond::{
    asset, fill_element, is_read, json, method_not_allowed, response, text, Body,
};
use super::server::{bind, serve, HttpError, Site, Transport, MAX_PAGE_CONNECTIONS};
use crate::enrolment::Enrolment;
use crate::status::{assets, cert};

/// A bound enrolment page, not yet serving (tests learn the port first).
pub struct EnrolmentServer {
    listener: TcpListener,
    transport: Transport,
    site: Arc<EnrolmentSite>,
    certificate_sha256: Option<String>,
}

impl EnrolmentServer {
    /// Binds `listen` for the login-free enrolment page of a box that has no config yet,
    /// with the generated self-signed certificate under `state_dir` (plain HTTP on loopback).
    pub async fn bind(
        listen: SocketAddr,
        state_dir: &Path,
        enrolment: Enrolment,
    ) -> Result<EnrolmentServer, HttpError> {
        let (transport, certificate_sha256) = if listen.ip().is_loopback() {
            (Transport::Plain, None)
        } else {
            let c = cert::load_or_generate(state_dir, listen.ip())?;
            (Transport::Tls(c.config), Some(c.sha256))
        };
        let listener = bind(listen).await?;
        Ok(EnrolmentServer {
            listener,
            transport,
            site: Arc::new(EnrolmentSite::new(enrolment)),
            certificate_sha256,
        })
    }

    /// True when the page is served over HTTPS (every address but loopback).
    pub fn is_https(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// SHA-256 of the certificate served (`None` for plain HTTP on loopback).
    pub fn certificate_sha256(&self) -> Option<&str> {
        self.certificate_sha256.as_deref()
    }

    /// Serves until `shutdown` completes; then every connection is closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let address = self
            .local_addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        tracing::info!(
            listen = %address,
            wireguard_public_key = %self.site.enrolment.wireguard_public_key,
            csr_sha256 = self.site.enrolment.csr_sha256.as_deref().unwrap_or("-"),
            certificate_sha256 = self.certificate_sha256.as_deref().unwrap_or("-"),
            "enrolment page listening"
        );
        tokio::select! {
            () = serve(self.listener, self.transport, MAX_PAGE_CONNECTIONS, self.site) => {}
            () = shutdown => {}
        }
    }
}

/// The login-free page of an unenrolled box (OPS-1): the public enrolment data, nothing else.
/// Binds `listen` (HTTPS with a self-signed certificate kept under `state_dir`; plain HTTP on
/// loopback) and serves until `shutdown` completes.
pub async fn serve_enrolment(
    listen: SocketAddr,
    state_dir: &Path,
    enrolment: Enrolment,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), HttpError> {
    EnrolmentServer::bind(listen, state_dir, enrolment)
        .await?
        .serve(shutdown)
        .await;
    Ok(())
}

/// The unenrolled box's page: public enrolment data only, no login.
struct EnrolmentSite {
    enrolment: Enrolment,
    /// The page with the data written in, so it shows without JavaScript too.
    html: Bytes,
    /// The CSR file as read at start, for the operator (`None` without one).
    csr_pem: Option<Bytes>,
}

impl EnrolmentSite {
    fn new(enrolment: Enrolment) -> Self {
        let csr_pem = enrolment
            .csr_file
            .as_deref()
            .and_then(|path| match read_small_file(path) {
                Ok(pem) => Some(Bytes::from(pem)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "the CSR cannot be offered for download");
                    None
                }
            });
        let mut html = assets::ENROLMENT_HTML.to_string();
        html = fill_element(&html, "wg-public-key", &enrolment.wireguard_public_key);
        if let Some(sha256) = &enrolment.csr_sha256 {
            html = fill_element(&html, "csr-sha256", sha256);
        }
        EnrolmentSite {
            enrolment,
            html: Bytes::from(html),
            csr_pem,
        }
    }
}

/// A regular file of at most [`crate::enrolment::MAX_PEM_FILE_BYTES`].
fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > crate::enrolment::MAX_PEM_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a small regular file",
        ));
    }
    std::fs::read(path)
}

/// Path of the CSR download on the enrolment page.
pub const CSR_DOWNLOAD_PATH: &str = "/box.csr";

impl Site for EnrolmentSite {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        let path = request.uri().path();
        let read = is_read(request.method());
        if let Some(r) = asset(path) {
            return if read {
                r
            } else {
                method_not_allowed("GET, HEAD")
            };
        }
        match (path, read) {
            ("/", true) => response(StatusCode::OK, assets::HTML, self.html.clone()),
            ("/api/v1/enrolment", true) => json(StatusCode::OK, &self.enrolment),
            (CSR_DOWNLOAD_PATH, true) => match &self.csr_pem {
                Some(pem) => {
                    let mut r = response(StatusCode::OK, "application/pkcs10", pem.clone());
                    r.headers_mut().insert(
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"box.csr\""),
                    );
                    r
                }
                None => text(StatusCode::NOT_FOUND, "this box has no CSR yet"),
            },
            ("/" | "/api/v1/enrolment" | CSR_DOWNLOAD_PATH, false) => {
                method_not_allowed("GET, HEAD")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops1_enrolment_page_has_the_data_written_in_and_escaped() {
        let enrolment = Enrolment {
            wireguard_public_key: "abc+/=".to_string(),
            csr_file: None,
            csr_sha256: Some("AB:CD".to_string()),
        };
        let site = EnrolmentSite::new(enrolment);
        let html = String::from_utf8_lossy(&site.html);
        assert!(html.contains(r#"id="wg-public-key">abc+/=</dd>"#), "{html}");
        assert!(html.contains(r#"id="csr-sha256">AB:CD</dd>"#), "{html}");
        assert!(site.csr_pem.is_none());
    }
}
