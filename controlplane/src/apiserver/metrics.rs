//! Prometheus metrics: requests by verb, resource and code with latency; open watches; store latency.
//! [`MeteredStore`] wraps any [`Store`] to time its calls.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::store::{KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub watches: IntGauge,
    pub store_latency: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("apiserver_request_total", "API requests by verb, resource and HTTP code"),
            &["verb", "resource", "subresource", "code"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("apiserver_request_duration_seconds", "API request latency (watches: until the stream opens)")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            &["verb", "resource"],
        )
        .expect("static metric definition");
        let watches = IntGauge::new("apiserver_longrunning_watches", "Open watch streams").expect("static metric definition");
        let store_latency = HistogramVec::new(
            HistogramOpts::new("skiff_store_operation_duration_seconds", "Store operation latency")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]),
            &["operation"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(watches.clone()),
            Box::new(store_latency.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics { registry, requests, latency, watches, store_latency }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`Store`] that records the latency of every call.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    fn observe(&self, op: &str, start: Instant) {
        self.metrics.store_latency.with_label_values(&[op]).observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", t);
        r
    }
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(prefix, opts).await;
        self.observe("list", t);
        r
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let t = Instant::now();
        let r = self.inner.count(prefix).await;
        self.observe("count", t);
        r
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.create(key, value).await;
        self.observe("create", t);
        r
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected).await;
        self.observe("update", t);
        r
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision), StoreError> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.observe("delete", t);
        r
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, after).await;
        self.observe("watch", t);
        r
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.compact(revision).await;
        self.observe("compact", t);
        r
    }
    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }
}
