//! HTTP endpoints: `/metrics` and `/healthz` on their addresses, and the
//! healthCheckNodePort responders of `externalTrafficPolicy: Local` services
//! (kube-proxy's JSON; 200 with local endpoints, 503 without).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::{Health, Metrics};
use crate::model::HealthCheck;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves `handler` on `listener` until the task is aborted.
async fn serve<F>(listener: TcpListener, handler: F)
where
    F: Fn(&str) -> Response<Full<Bytes>> + Send + Sync + Clone + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = h(req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[derive(Debug, thiserror::Error)]
#[error("binding the {what} listener on {addr}: {source}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

/// `/metrics` (and `/healthz` too, as kube-proxy's metrics port does).
pub async fn spawn_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<JoinHandle<()>, BindError> {
    let l = bind("metrics", addr).await?;
    Ok(tokio::spawn(serve(l, move |path| match path {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.encode(),
        ),
        "/healthz" => healthz(&health),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })))
}

fn healthz(health: &Health) -> Response<Full<Bytes>> {
    let (ok, why) = health.check();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, "text/plain", format!("{why}\n"))
}

pub async fn spawn_healthz(
    addr: SocketAddr,
    health: Arc<Health>,
) -> Result<JoinHandle<()>, BindError> {
    let l = bind("healthz", addr).await?;
    Ok(tokio::spawn(serve(l, move |_| healthz(&health))))
}

/// The body kube-proxy's service health server answers with.
pub fn health_check_body(hc: &HealthCheck) -> String {
    serde_json::json!({
        "service": { "namespace": hc.service.namespace, "name": hc.service.name },
        "localEndpoints": hc.local_endpoints,
        "serviceProxyHealthy": true,
    })
    .to_string()
}

/// Keeps one listener per healthCheckNodePort, on all addresses of the node.
#[derive(Default)]
pub struct HealthCheckServers {
    state: Arc<RwLock<BTreeMap<u16, HealthCheck>>>,
    listeners: BTreeMap<u16, JoinHandle<()>>,
}

impl HealthCheckServers {
    /// Starts/stops listeners so exactly `wanted` ports are served; bind
    /// failures are logged and retried on the next call.
    pub async fn sync(&mut self, wanted: BTreeMap<u16, HealthCheck>) {
        let ports: Vec<u16> = wanted.keys().copied().collect();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = wanted;
        self.listeners.retain(|port, task| {
            let keep = ports.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in ports {
            if self.listeners.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::from(([0, 0, 0, 0], port));
            match bind("healthCheckNodePort", addr).await {
                Ok(l) => {
                    let state = self.state.clone();
                    let task = tokio::spawn(serve(l, move |_| {
                        let s = state.read().unwrap_or_else(|e| e.into_inner());
                        match s.get(&port) {
                            Some(hc) => {
                                let status = if hc.local_endpoints > 0 {
                                    StatusCode::OK
                                } else {
                                    StatusCode::SERVICE_UNAVAILABLE
                                };
                                reply(status, "application/json", health_check_body(hc))
                            }
                            None => reply(
                                StatusCode::NOT_FOUND,
                                "text/plain",
                                "no such service\n".into(),
                            ),
                        }
                    }));
                    self.listeners.insert(port, task);
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}
