//! Prometheus metrics and the `/metrics` server: sync duration, last successful sync, rule/chain counts, routes.

use std::future::Future;
use std::net::SocketAddr;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::proxier::SyncReport;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("binding the metrics address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving metrics: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub sync_duration: HistogramVec,
    pub last_sync: IntGauge,
    pub sync_errors: IntCounter,
    pub rules: IntGaugeVec,
    pub chains: IntGaugeVec,
    pub routes: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let sync_duration = HistogramVec::new(
            HistogramOpts::new("skiff_netproxy_sync_duration_seconds", "Time to render and apply the rules")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["mode"],
        )?;
        let last_sync =
            IntGauge::new("skiff_netproxy_last_successful_sync_timestamp_seconds", "Unix time of the last successful sync")?;
        let sync_errors = IntCounter::new("skiff_netproxy_sync_errors_total", "Syncs that failed to apply")?;
        let rules = IntGaugeVec::new(Opts::new("skiff_netproxy_rules", "Rules in our chains"), &["table"])?;
        let chains = IntGaugeVec::new(Opts::new("skiff_netproxy_chains", "Chains we own"), &["table"])?;
        let routes = IntGauge::new("skiff_netproxy_routes", "Routes to other nodes' pod CIDRs")?;
        registry.register(Box::new(sync_duration.clone()))?;
        registry.register(Box::new(last_sync.clone()))?;
        registry.register(Box::new(sync_errors.clone()))?;
        registry.register(Box::new(rules.clone()))?;
        registry.register(Box::new(chains.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        Ok(Metrics { registry, sync_duration, last_sync, sync_errors, rules, chains, routes })
    }

    pub fn record(&self, r: &SyncReport) {
        self.sync_duration.with_label_values(&[if r.full { "full" } else { "partial" }]).observe(r.duration.as_secs_f64());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.last_sync.set(i64::try_from(now).unwrap_or(i64::MAX));
        self.rules.with_label_values(&["nat"]).set(r.nat_rules as i64);
        self.rules.with_label_values(&["filter"]).set(r.filter_rules as i64);
        self.chains.with_label_values(&["nat"]).set(r.nat_chains as i64);
        self.chains.with_label_values(&["filter"]).set(r.filter_chains as i64);
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { m.encode() }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(MetricsError::Serve)
}
