//! One small HTTP port for the kubelet and Prometheus: `/healthz`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::Store;
use rediscluster_crd::RedisCluster;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::metrics::Metrics;

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints report; written by the controller, read by the server.
#[derive(Default)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    clusters: OnceLock<Store<RedisCluster>>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    /// Ready: caches synced as the leader, or waiting as a standby.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The RedisCluster cache, once there is one, for the clusters-by-phase gauge.
    pub fn set_clusters(&self, store: Store<RedisCluster>) {
        let _ = self.clusters.set(store);
    }

    fn respond(&self, method: &Method, path: &str) -> (StatusCode, &'static str, String) {
        if method != Method::GET {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET\n".to_owned(),
            );
        }
        match path {
            "/healthz" => (StatusCode::OK, TEXT, "ok\n".to_owned()),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                (StatusCode::OK, TEXT, "ready\n".to_owned())
            }
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "caches not synced\n".to_owned(),
            ),
            "/metrics" => (
                StatusCode::OK,
                OPENMETRICS,
                self.metrics.render(self.clusters.get()),
            ),
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".to_owned()),
        }
    }
}

/// Binds `addr` now, so a taken port fails start-up, and serves in the background.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(%bound, "serving /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (status, content_type, body) =
                        health.respond(request.method(), request.uri().path());
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", content_type)
                        .body(Full::new(Bytes::from(body)));
                    async move { Ok::<_, Infallible>(response.unwrap_or_default()) }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, %error, "http connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let health = Health::default();
        let get = |path| health.respond(&Method::GET, path);
        assert_eq!(get("/healthz").0, StatusCode::OK);
        assert_eq!(get("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
        health.set_ready(true);
        assert_eq!(get("/readyz").0, StatusCode::OK);
        let (status, content_type, body) = get("/metrics");
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(body.contains("redis_operator_leader"), "{body}");
        assert_eq!(get("/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            health.respond(&Method::POST, "/healthz").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let health = Arc::new(Health::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), health).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("ok\n"), "{response}");
    }
}
