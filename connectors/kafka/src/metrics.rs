//! Every Prometheus metric tradestream exports, defined in one place so names and labels stay
//! consistent across processes. Labels are low-cardinality: topic, processor, reason category.
//! Per-record work increments counters in batches (see the runner), not one call per record.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The process's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `tradestream_records_in_total{processor,topic}`.
    pub records_in: IntCounterVec,
    /// `tradestream_records_out_total{processor,topic}`.
    pub records_out: IntCounterVec,
    /// `tradestream_records_dead_lettered_total{processor,topic,class}`.
    pub dead_lettered: IntCounterVec,
    /// `tradestream_batch_processing_seconds{processor}`: decode → process → produce → ack.
    pub processing_seconds: HistogramVec,
    /// `tradestream_end_to_end_latency_seconds{processor,topic}`: output produced minus the
    /// input's event time (for replays of history this is the replay lag).
    pub end_to_end_seconds: HistogramVec,
    /// `tradestream_consumer_lag{processor,topic,partition}` records behind the high watermark.
    pub consumer_lag: IntGaugeVec,
    /// `tradestream_risk_rejections_total{reason}` by CATEGORY_CONDITION.
    pub risk_rejections: IntCounterVec,
    /// `tradestream_portfolio_value{account}`.
    pub portfolio_value: GaugeVec,
    /// `tradestream_up`: 1 while the process runs.
    pub up: Gauge,
    /// `tradestream_state_restores_total{processor}`: tasks rebuilt from the changelog.
    pub state_restores: IntCounterVec,
    /// `tradestream_state_replayed_records_total{processor}`: inputs re-applied on restore.
    pub state_replayed: IntCounterVec,
    /// `tradestream_state_snapshot_bytes_total{processor}`: snapshot bytes written (compressed).
    pub snapshot_bytes: IntCounterVec,
    /// `tradestream_instant_step{processor}`: the last market instant the trading core
    /// processed. Flat while market data flows means it waits for a missing bar or signal.
    pub instant_step: IntGaugeVec,
    /// `tradestream_instants_held{processor}`: instants whose inputs it holds, waiting.
    pub instants_held: IntGaugeVec,
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let processing_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tradestream_batch_processing_seconds",
                "Time to decode, process, produce and acknowledge one batch.",
            )
            .buckets(latency_buckets.clone()),
            &["processor"],
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let end_to_end_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tradestream_end_to_end_latency_seconds",
                "Output production time minus the input record's event time.",
            )
            .buckets(latency_buckets),
            &["processor", "topic"],
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "tradestream_consumer_lag",
                "Records between the committed position and the high watermark.",
            ),
            &["processor", "topic", "partition"],
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let portfolio_value = GaugeVec::new(
            Opts::new(
                "tradestream_portfolio_value",
                "Account total value (cash + positions at last price).",
            ),
            &["account"],
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let up = Gauge::new("tradestream_up", "1 while the process runs.")
            .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        for m in [
            Box::new(processing_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(end_to_end_seconds.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(portfolio_value.clone()),
            Box::new(up.clone()),
        ] {
            let _ = registry.register(m);
        }
        up.set(1.0);
        Self {
            records_in: counter(
                &registry,
                "tradestream_records_in_total",
                "Records consumed.",
                &["processor", "topic"],
            ),
            records_out: counter(
                &registry,
                "tradestream_records_out_total",
                "Records produced.",
                &["processor", "topic"],
            ),
            dead_lettered: counter(
                &registry,
                "tradestream_records_dead_lettered_total",
                "Records sent to a dead-letter topic.",
                &["processor", "topic", "class"],
            ),
            risk_rejections: counter(
                &registry,
                "tradestream_risk_rejections_total",
                "Orders rejected by risk checks.",
                &["reason"],
            ),
            state_restores: counter(
                &registry,
                "tradestream_state_restores_total",
                "Processor tasks whose state was rebuilt from the changelog.",
                &["processor"],
            ),
            state_replayed: counter(
                &registry,
                "tradestream_state_replayed_records_total",
                "Input records re-applied while restoring state.",
                &["processor"],
            ),
            snapshot_bytes: counter(
                &registry,
                "tradestream_state_snapshot_bytes_total",
                "State snapshot bytes written to the changelog (compressed).",
                &["processor"],
            ),
            instant_step: gauge(
                &registry,
                "tradestream_instant_step",
                "The last market instant (step) the trading core processed.",
                &["processor"],
            ),
            instants_held: gauge(
                &registry,
                "tradestream_instants_held",
                "Market instants whose inputs the trading core holds, waiting for the rest or an earlier instant.",
                &["processor"],
            ),
            processing_seconds,
            end_to_end_seconds,
            consumer_lag,
            portfolio_value,
            up,
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// An axum router serving `GET /metrics` and `GET /healthz` (the process is alive).
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let body = metrics.render();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            body,
                        )
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }))
    }

    /// [`Self::router`] plus `GET /readyz`: 200 `{"status":"ready"}` when `check` finds
    /// every dependency answering, else 503 with the failures (what Kubernetes readiness
    /// probes and load balancers act on).
    pub fn router_with_readiness(&self, check: ReadinessCheck) -> axum::Router {
        self.router().route(
            "/readyz",
            axum::routing::get(move || {
                let check = check.clone();
                async move {
                    let failures = check().await;
                    let (status, body) = if failures.is_empty() {
                        (
                            axum::http::StatusCode::OK,
                            serde_json::json!({"status": "ready"}),
                        )
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            serde_json::json!({"status": "unready", "failures": failures}),
                        )
                    };
                    (
                        status,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                }
            }),
        )
    }
}

/// A readiness probe: resolves to one line per dependency that does not answer (empty when
/// the process is ready).
pub type ReadinessCheck = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send>>
        + Send
        + Sync,
>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new();
        m.records_in
            .with_label_values(&["features", "market_data"])
            .inc_by(3);
        m.risk_rejections
            .with_label_values(&["RISK_BUYING_POWER"])
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                "tradestream_records_in_total{processor=\"features\",topic=\"market_data\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("tradestream_risk_rejections_total{reason=\"RISK_BUYING_POWER\"} 1"),
            "{text}"
        );
        assert!(text.contains("tradestream_up 1"), "{text}");
    }

    #[tokio::test]
    async fn readyz_reports_failures_with_503() -> Result<(), Box<dyn std::error::Error>> {
        use tower::ServiceExt;
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = ready.clone();
        let check: ReadinessCheck = std::sync::Arc::new(move || {
            let up = flag.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Vec::new()
                } else {
                    vec!["postgres: \"refused\"".to_string()]
                }
            })
        });
        let app = Metrics::new().router_with_readiness(check);
        let get = || axum::http::Request::get("/readyz").body(axum::body::Body::empty());
        let ok = app.clone().oneshot(get()?).await?;
        assert_eq!(ok.status(), 200);
        ready.store(false, std::sync::atomic::Ordering::SeqCst);
        let down = app.oneshot(get()?).await?;
        assert_eq!(down.status(), 503);
        let body = axum::body::to_bytes(down.into_body(), 1 << 16).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(v["failures"][0], "postgres: \"refused\"");
        Ok(())
    }
}
