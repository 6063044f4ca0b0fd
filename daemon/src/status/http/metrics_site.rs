//! The operator's metrics listener: `/metrics` and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::respond::{is_read, method_not_allowed, response, text, Body};
use super::server::Site;
use crate::status::metrics::{self, PeerSeries};
use crate::status::StatusSource;

pub(super) fn metrics_response(source: &StatusSource, series: PeerSeries) -> Response<Body> {
    response(
        StatusCode::OK,
        metrics::CONTENT_TYPE,
        metrics::render(&source.document(), series),
    )
}

/// The operator's listener: `/metrics` and nothing else.
pub(super) struct MetricsSite {
    pub(super) source: StatusSource,
    /// `status.per_peer_metrics`.
    pub(super) series: PeerSeries,
}

impl Site for MetricsSite {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        match (request.uri().path(), is_read(request.method())) {
            ("/metrics", true) => metrics_response(&self.source, self.series),
            ("/metrics", false) => method_not_allowed("GET, HEAD"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: this listener serves only /metrics",
            ),
        }
    }
}
