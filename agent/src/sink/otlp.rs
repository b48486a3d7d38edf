//! OTLP sink: every record becomes one OTLP log record (event name, severity, typed
//! attributes); counters and gauges derived from the records go out as OTLP metrics; and, when
//! `output.otlp.spans` is on, every use record also becomes one client span.
//!
//! Log records are batched and exported from this sink's own task, so a collector outage is
//! handled here: failed exports are retried with exponential backoff while records keep
//! arriving; records waiting for export are bounded by `output.otlp.queue` (past it the oldest
//! batch is dropped), and a batch that still fails after [`MAX_ATTEMPTS`] is dropped. Every
//! record lost this way is counted in [`OtlpCounters::failed`]. Export resumes by itself when
//! the collector is back; memory stays bounded whatever the collector does.
//!
//! Metrics and spans go through the OpenTelemetry SDK (periodic reader, batch span processor),
//! whose worker threads run the exporters on the agent's Tokio runtime. Metrics are
//! cumulative, so an export lost during an outage is made up by the next one.
//!
//! Header values from the config are credentials: they go into the exporters and nowhere else.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use opentelemetry::{
    Context, InstrumentationScope, Key, KeyValue,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity as LogSeverity},
    metrics::{Counter, Gauge, MeterProvider as _},
    trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{
    Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
    tonic_types::{
        metadata::MetadataMap,
        transport::{Certificate, ClientTlsConfig},
    },
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider},
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter,
    },
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData,
        SpanExporter,
    },
};
use tokio::{
    runtime::Handle,
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use crate::{
    config::{OtlpConfig, OtlpProtocol},
    record::{Record, Severity, Value, names},
};

/// Records wait at most this long for a batch to fill before they are exported.
pub const FLUSH_DELAY: Duration = Duration::from_millis(200);
/// First pause after a failed export; it doubles after each further failure.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest pause between two export attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Export attempts of one batch before its records are dropped (and counted as failed).
pub const MAX_ATTEMPTS: u32 = 8;
/// Spans wait at most this long before they are exported.
pub const SPAN_EXPORT_DELAY: Duration = Duration::from_secs(1);
/// Distinct static credential fingerprints remembered for `keytrail.credentials.static_in_use`.
pub const STATIC_FINGERPRINTS_CAP: usize = 100_000;
/// Longest metric attribute value kept as is; longer (or odd) values become `other`.
const LABEL_MAX: usize = 64;

/// Resource attributes that come from the host, not the config.
#[derive(Debug, Clone, Default)]
pub struct OtlpResource {
    /// `host.name`.
    pub host_name: String,
    /// `k8s.node.name`, when the agent runs on a Kubernetes node.
    pub node_name: Option<String>,
}

/// What became of the log records handed to the sink (records the producer could not queue
/// are counted by the producer, per sink).
#[derive(Debug, Default)]
pub struct OtlpCounters {
    /// Records the collector accepted.
    pub exported: AtomicU64,
    /// Records lost: their batch failed [`MAX_ATTEMPTS`] times, or the export queue was full.
    pub failed: AtomicU64,
    /// Export attempts repeated after a failure.
    pub retries: AtomicU64,
    /// From each exported access record's time (the traced call) to the collector's
    /// acknowledgement.
    pub latency: Latency,
}

/// Upper bounds (milliseconds) of the latency buckets; the last bucket is everything above.
const LATENCY_BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// A histogram of export latencies in fixed buckets, readable while the sink writes it.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl Latency {
    pub fn record(&self, latency: Duration) {
        let ms = latency.as_millis();
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= u128::from(*b))
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound (ms) of the bucket holding quantile `q` (0..1); None before any export.
    /// Above the last bound it says the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_MS[i.min(LATENCY_BOUNDS_MS.len() - 1)]);
            }
        }
        LATENCY_BOUNDS_MS.last().copied()
    }
}

/// The endpoint as it may be logged: without the user name and password a URL can carry
/// (`https://user:token@collector:4318`), which are credentials of their own.
pub fn endpoint_for_logs(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            format!("{url} (user info removed)")
        }
        Ok(_) => endpoint.to_string(),
        // Not a URL: nothing can be said about which part is secret.
        Err(_) => "(not a URL; not shown)".to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("output.otlp.endpoint is empty (OTLP export is off)")]
    NoEndpoint,
    #[error("cannot read output.otlp.ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("output.otlp.ca_file {path} holds no PEM certificate")]
    CaFileNotPem { path: PathBuf },
    #[error("output.otlp.ca_file {path}: {source}")]
    CaFileInvalid {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the OTLP/HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("output.otlp.headers.{name}: {reason}")]
    Header { name: String, reason: &'static str },
    #[error("the OTLP sink must be created inside the agent's Tokio runtime")]
    NoRuntime,
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Exports records to an OTLP collector; see the module documentation.
pub struct OtlpSink {
    exporter: Arc<opentelemetry_otlp::LogExporter>,
    scope: Arc<InstrumentationScope>,
    /// Makes the SDK's log records (their constructor is the SDK's own).
    logger: SdkLogger,
    logger_provider: SdkLoggerProvider,
    meter_provider: SdkMeterProvider,
    instruments: Instruments,
    book: Bookkeeping,
    tracing: Option<(SdkTracerProvider, SdkTracer)>,
    counters: Arc<OtlpCounters>,
    batch: usize,
    queue: usize,
    timeout: Duration,
}

impl OtlpSink {
    /// Builds the exporters. Nothing is sent yet and the collector need not be up. Must be
    /// called inside the agent's (multi-thread) Tokio runtime.
    pub fn new(
        config: &OtlpConfig,
        resource: OtlpResource,
        counters: Arc<OtlpCounters>,
    ) -> Result<Self, OtlpError> {
        if config.endpoint.is_empty() {
            return Err(OtlpError::NoEndpoint);
        }
        let handle = Handle::try_current().map_err(|_| OtlpError::NoRuntime)?;
        // TLS (https endpoints) uses ring; the agent installs it at start, this covers any
        // other caller. Already installed is fine.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let transport = Transport::new(config)?;
        let resource = build_resource(&resource);
        let scope = InstrumentationScope::builder("keytrail")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();

        let mut exporter = transport.log_exporter()?;
        opentelemetry_sdk::logs::LogExporter::set_resource(&mut exporter, &resource);
        // A provider without processors: records are made by its logger and exported here.
        let logger_provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .build();
        let logger = logger_provider.logger_with_scope(scope.clone());

        let reader = PeriodicReader::builder(OnRuntime {
            inner: transport.metric_exporter()?,
            handle: handle.clone(),
        })
        .with_interval(config.metrics_interval)
        .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .build();
        let instruments = Instruments::new(&meter_provider.meter_with_scope(scope.clone()));

        let tracing = if config.spans {
            let processor = BatchSpanProcessor::builder(OnRuntime {
                inner: transport.span_exporter()?,
                handle,
            })
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(SPAN_EXPORT_DELAY)
                    .with_max_export_batch_size(config.batch)
                    .build(),
            )
            .build();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_span_processor(processor)
                .build();
            let tracer = provider.tracer_with_scope(scope.clone());
            Some((provider, tracer))
        } else {
            None
        };

        Ok(Self {
            exporter: Arc::new(exporter),
            scope: Arc::new(scope),
            logger,
            logger_provider,
            meter_provider,
            instruments,
            book: Bookkeeping::default(),
            tracing,
            counters,
            batch: config.batch.max(1),
            queue: config.queue.max(1),
            timeout: config.timeout,
        })
    }

    /// Exports records until every sender is gone, then exports what is left (for at most
    /// `output.otlp.timeout`), flushes the metrics and spans and shuts the exporters down.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Arc<Record>>) {
        // Records wait as they came (shared with the other sinks) and become OTLP log records
        // only when their batch leaves, so a backlog costs a pointer per record.
        let mut pending: VecDeque<Arc<Record>> = VecDeque::new();
        // When the oldest record in `pending` arrived (or the last batch left).
        let mut pending_since = Instant::now();
        // A batch that failed and waits for its next attempt, with its attempt count.
        let mut retry: Option<(Vec<SdkLogRecord>, u32)> = None;
        let mut exporting: Option<Exporting> = None;
        let mut backoff = Backoff::default();
        // No export starts before this (set after a failure).
        let mut not_before = Instant::now();
        let mut outage = Outage::default();
        let mut closed_at: Option<Instant> = None;

        loop {
            let now = Instant::now();
            if exporting.is_none() && now >= not_before {
                let next = match retry.take() {
                    Some(b) => Some(b),
                    None if !pending.is_empty()
                        && (pending.len() >= self.batch
                            || closed_at.is_some()
                            || now >= pending_since + FLUSH_DELAY) =>
                    {
                        let n = self.batch.min(pending.len());
                        pending_since = now;
                        let batch = pending.drain(..n).map(|r| self.log_record(&r)).collect();
                        Some((batch, 0))
                    }
                    None => None,
                };
                if let Some((records, attempts)) = next {
                    exporting = Some(Exporting {
                        records: records.len() as u64,
                        attempts,
                        task: self.spawn_export(records),
                    });
                }
            }
            if let Some(closed) = closed_at {
                let idle = exporting.is_none() && retry.is_none() && pending.is_empty();
                if idle || now >= closed + self.timeout {
                    let mut left = pending.len() as u64;
                    if let Some((records, _)) = retry.take() {
                        left += records.len() as u64;
                    }
                    if let Some(export) = exporting.take() {
                        export.task.abort();
                        match export.task.await {
                            Ok(Attempt {
                                records,
                                result: Ok(()),
                            }) => self.count_exported(&records),
                            _ => left += export.records,
                        }
                    }
                    if left > 0 {
                        self.counters.failed.fetch_add(left, Ordering::Relaxed);
                        tracing::warn!(
                            records = left,
                            "OTLP export: records not exported before the shutdown deadline"
                        );
                    }
                    break;
                }
            }
            // When to look again without news: the flush delay, the backoff, or the deadline.
            let mut wake: Option<Instant> = None;
            let mut wake_at = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            if exporting.is_none() && (retry.is_some() || !pending.is_empty()) {
                let ready = retry.is_some() || closed_at.is_some() || pending.len() >= self.batch;
                wake_at(not_before.max(if ready {
                    now
                } else {
                    pending_since + FLUSH_DELAY
                }));
            }
            if let Some(closed) = closed_at {
                wake_at(closed + self.timeout);
            }

            tokio::select! {
                done = async { (&mut exporting.as_mut().expect("guarded").task).await },
                    if exporting.is_some() =>
                {
                    let Exporting {
                        records: n,
                        attempts,
                        ..
                    } = exporting.take().expect("guarded");
                    let Ok(Attempt { records, result }) = done else {
                        // The export task panicked: its records are gone.
                        self.counters.failed.fetch_add(n, Ordering::Relaxed);
                        continue;
                    };
                    match result {
                        Ok(()) => {
                            self.count_exported(&records);
                            backoff = Backoff::default();
                            not_before = Instant::now();
                            outage.resumed(&self.counters);
                        }
                        Err(error) => {
                            let attempts = attempts + 1;
                            outage.failed(&error, &self.counters);
                            not_before = Instant::now() + backoff.next_delay();
                            if attempts >= MAX_ATTEMPTS {
                                self.counters
                                    .failed
                                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                            } else {
                                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                                retry = Some((records, attempts));
                            }
                        }
                    }
                }
                received = rx.recv(), if closed_at.is_none() => match received {
                    Some(record) => {
                        self.observe(&record);
                        if pending.is_empty() {
                            pending_since = Instant::now();
                        }
                        pending.push_back(record);
                        if pending.len() > self.queue {
                            // Full: the oldest batch goes.
                            let n = self.batch.min(pending.len());
                            pending.drain(..n);
                            outage.overflowed(n, &self.counters);
                            self.counters.failed.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    None => closed_at = Some(Instant::now()),
                },
                _ = async {
                    match wake {
                        Some(t) => sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
        self.shutdown().await;
    }

    fn count_exported(&self, records: &[SdkLogRecord]) {
        self.counters
            .exported
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let now = SystemTime::now();
        // Access records carry the time of the traced call; a use record's time is its edge's
        // last sighting, written up to an emit interval later by design.
        for r in records
            .iter()
            .filter(|r| r.event_name() == Some(names::CREDENTIAL_ACCESS))
        {
            if let Some(t) = r.timestamp() {
                self.counters
                    .latency
                    .record(now.duration_since(t).unwrap_or_default());
            }
        }
    }

    /// Exports one batch on its own task, so records keep arriving meanwhile.
    fn spawn_export(&self, records: Vec<SdkLogRecord>) -> JoinHandle<Attempt> {
        let exporter = Arc::clone(&self.exporter);
        let scope = Arc::clone(&self.scope);
        // The exporters have their own time limit; this one only guards against a hang.
        let limit = self.timeout + Duration::from_secs(1);
        tokio::spawn(async move {
            let result = {
                let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                    records.iter().map(|r| (r, &*scope)).collect();
                match tokio::time::timeout(limit, exporter.export(LogBatch::new(&refs))).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer within {}",
                        humantime::format_duration(limit)
                    )),
                }
            };
            Attempt { records, result }
        })
    }

    /// The OTLP log record of a record.
    fn log_record(&self, record: &Record) -> SdkLogRecord {
        let mut log = self.logger.create_log_record();
        fill_log_record(&mut log, record, SystemTime::now());
        log
    }

    /// Metrics and spans of one record.
    fn observe(&mut self, record: &Record) {
        for update in self.book.updates(record) {
            self.instruments.apply(&update);
        }
        if let Some((_, tracer)) = &self.tracing
            && record.name == names::CREDENTIAL_USE
        {
            let mut span = tracer
                .span_builder(record.name)
                .with_kind(SpanKind::Client)
                .with_start_time(record.time)
                .with_attributes(key_values(record))
                .start_with_context(tracer, &Context::new());
            span.end_with_timestamp(record.time);
        }
    }

    /// Shuts down the metrics and spans, which exports what they hold (their exports block a
    /// thread: not one of the runtime's; both at once, for `output.otlp.timeout` at most), then
    /// the log exporter.
    async fn shutdown(self) {
        let timeout = self.timeout;
        let meter_provider = self.meter_provider;
        let metrics = tokio::task::spawn_blocking(move || {
            let _ = meter_provider.shutdown_with_timeout(timeout);
        });
        let spans = self.tracing.map(|(provider, _)| {
            tokio::task::spawn_blocking(move || {
                let _ = provider.shutdown_with_timeout(timeout);
            })
        });
        let both = async {
            let _ = metrics.await;
            if let Some(spans) = spans {
                let _ = spans.await;
            }
        };
        if tokio::time::timeout(timeout, both).await.is_err() {
            tracing::warn!("OTLP: metrics and spans not flushed before the shutdown deadline");
        }
        let _ = self.exporter.shutdown_with_timeout(timeout);
        let _ = self.logger_provider.shutdown();
    }
}

/// A batch being exported on its own task.
struct Exporting {
    task: JoinHandle<Attempt>,
    /// Records in the batch.
    records: u64,
    /// Attempts before this one.
    attempts: u32,
}

/// One export attempt: the batch comes back, to be retried or counted.
struct Attempt {
    records: Vec<SdkLogRecord>,
    result: Result<(), String>,
}

/// Exponential backoff: [`BACKOFF_START`] doubling up to [`BACKOFF_MAX`].
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = BACKOFF_START
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

/// Logs an outage once when it starts and once when it ends, not per attempt.
#[derive(Debug, Default)]
struct Outage {
    active: bool,
    failed_before: u64,
}

impl Outage {
    fn failed(&mut self, error: &str, counters: &OtlpCounters) {
        if !self.active {
            self.active = true;
            self.failed_before = counters.failed.load(Ordering::Relaxed);
            tracing::warn!(
                error,
                "OTLP export failed; retrying with backoff while records queue up"
            );
        }
    }

    /// Called before the `n` dropped records are counted.
    fn overflowed(&mut self, n: usize, counters: &OtlpCounters) {
        if !self.active {
            self.active = true;
            self.failed_before = counters.failed.load(Ordering::Relaxed);
            tracing::warn!(
                records = n,
                "OTLP export queue full; dropping the oldest records"
            );
        }
    }

    fn resumed(&mut self, counters: &OtlpCounters) {
        if self.active {
            self.active = false;
            let lost = counters
                .failed
                .load(Ordering::Relaxed)
                .saturating_sub(self.failed_before);
            tracing::info!(lost, "OTLP export resumed");
        }
    }
}

/// Resource attributes of everything the agent exports.
fn build_resource(host: &OtlpResource) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.name", "keytrail"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("host.name", host.host_name.clone()),
    ];
    if let Some(node) = &host.node_name {
        attrs.push(KeyValue::new("k8s.node.name", node.clone()));
    }
    Resource::builder_empty().with_attributes(attrs).build()
}

/// Fills an SDK log record from a record; `observed` is when the sink saw it.
fn fill_log_record(log: &mut SdkLogRecord, record: &Record, observed: SystemTime) {
    log.set_event_name(record.name);
    let (number, text) = severity(record.severity);
    log.set_severity_number(number);
    log.set_severity_text(text);
    log.set_timestamp(record.time);
    log.set_observed_timestamp(observed);
    log.add_attributes(log_attributes(record));
}

fn severity(severity: Severity) -> (LogSeverity, &'static str) {
    match severity {
        Severity::Info => (LogSeverity::Info, Severity::Info.as_str()),
        Severity::Warn => (LogSeverity::Warn, Severity::Warn.as_str()),
    }
}

/// A record's attributes as log attributes, types kept.
fn log_attributes(record: &Record) -> Vec<(Key, AnyValue)> {
    record
        .attrs
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Str(s) => AnyValue::String(s.clone().into()),
                Value::Int(i) => AnyValue::Int(*i),
                Value::Bool(b) => AnyValue::Boolean(*b),
            };
            (Key::new(k.clone()), value)
        })
        .collect()
}

/// A record's attributes as span attributes, types kept.
fn key_values(record: &Record) -> Vec<KeyValue> {
    record
        .attrs
        .iter()
        .map(|(k, v)| match v {
            Value::Str(s) => KeyValue::new(k.clone(), s.clone()),
            Value::Int(i) => KeyValue::new(k.clone(), *i),
            Value::Bool(b) => KeyValue::new(k.clone(), *b),
        })
        .collect()
}

/// What one record changes in the metrics. Attribute values are low-cardinality labels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Update {
    /// `keytrail.credential.accesses` +1.
    Access {
        kind: String,
        lifetime: String,
        source: String,
    },
    /// `keytrail.credential.uses` +1.
    Use {
        kind: String,
        lifetime: String,
        evidence: String,
    },
    /// `keytrail.credentials.static_in_use` =.
    StaticInUse(u64),
    /// `keytrail.probe.events.seen` =.
    ProbeSeen { probe: String, value: u64 },
    /// `keytrail.probe.events.dropped` =.
    ProbeDropped { probe: String, value: u64 },
    /// `keytrail.sink.dropped` =.
    SinkDropped { sink: String, value: u64 },
}

/// The metric state kept across records: the distinct static fingerprints seen in use.
#[derive(Debug)]
struct Bookkeeping {
    /// Hashes of the fingerprints (a fingerprint itself is never a metric attribute).
    static_fingerprints: HashSet<u64>,
    cap: usize,
}

impl Default for Bookkeeping {
    fn default() -> Self {
        Self::with_cap(STATIC_FINGERPRINTS_CAP)
    }
}

impl Bookkeeping {
    fn with_cap(cap: usize) -> Self {
        Self {
            static_fingerprints: HashSet::new(),
            cap,
        }
    }

    fn updates(&mut self, record: &Record) -> Vec<Update> {
        match record.name {
            names::CREDENTIAL_ACCESS => vec![Update::Access {
                kind: label(record.get("keytrail.credential.kind")),
                lifetime: label(record.get("keytrail.credential.lifetime")),
                source: label(record.get("keytrail.credential.source")),
            }],
            names::CREDENTIAL_USE => {
                let lifetime = label(record.get("keytrail.credential.lifetime"));
                let mut out = Vec::with_capacity(2);
                if lifetime == "static"
                    && let Some(Value::Str(fp)) = record.get("keytrail.credential.fingerprint")
                    && self.static_fingerprints.len() < self.cap
                {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    fp.hash(&mut h);
                    self.static_fingerprints.insert(h.finish());
                }
                out.push(Update::Use {
                    kind: label(record.get("keytrail.credential.kind")),
                    lifetime,
                    evidence: label(record.get("keytrail.evidence")),
                });
                out.push(Update::StaticInUse(self.static_fingerprints.len() as u64));
                out
            }
            names::AGENT_STATS => record
                .attrs
                .iter()
                .filter_map(|(key, value)| {
                    let Value::Int(v) = value else { return None };
                    let value = u64::try_from(*v).unwrap_or(0);
                    if let Some(rest) = key.strip_prefix("keytrail.probe.") {
                        if let Some(probe) = rest.strip_suffix(".seen") {
                            return Some(Update::ProbeSeen {
                                probe: token(probe)?,
                                value,
                            });
                        }
                        if let Some(probe) = rest.strip_suffix(".dropped") {
                            return Some(Update::ProbeDropped {
                                probe: token(probe)?,
                                value,
                            });
                        }
                    }
                    // `keytrail.sink.dropped` (the total) has no name and is left out.
                    let sink = key
                        .strip_prefix("keytrail.sink.")?
                        .strip_suffix(".dropped")?;
                    Some(Update::SinkDropped {
                        sink: token(sink)?,
                        value,
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A metric attribute value: a short token as is, `unknown` when absent, else `other`.
fn label(value: Option<&Value>) -> String {
    match value {
        None => "unknown".into(),
        Some(Value::Str(s)) => token(s).unwrap_or_else(|| "other".into()),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Int(_)) => "other".into(),
    }
}

/// `s` if it is a short token of lowercase letters, digits, `_`, `-` and `.`.
fn token(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.len() <= LABEL_MAX
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        }))
    .then(|| s.to_string())
}

/// The metric instruments.
struct Instruments {
    accesses: Counter<u64>,
    uses: Counter<u64>,
    static_in_use: Gauge<u64>,
    probe_seen: Gauge<u64>,
    probe_dropped: Gauge<u64>,
    sink_dropped: Gauge<u64>,
}

impl Instruments {
    fn new(meter: &opentelemetry::metrics::Meter) -> Self {
        Self {
            accesses: meter
                .u64_counter("keytrail.credential.accesses")
                .with_description("Credential accesses reported")
                .with_unit("{access}")
                .build(),
            uses: meter
                .u64_counter("keytrail.credential.uses")
                .with_description("Credential use records (workload, credential, destination)")
                .with_unit("{use}")
                .build(),
            static_in_use: meter
                .u64_gauge("keytrail.credentials.static_in_use")
                .with_description("Distinct static credentials seen in use")
                .with_unit("{credential}")
                .build(),
            probe_seen: meter
                .u64_gauge("keytrail.probe.events.seen")
                .with_description("Kernel events seen per probe since start")
                .with_unit("{event}")
                .build(),
            probe_dropped: meter
                .u64_gauge("keytrail.probe.events.dropped")
                .with_description("Kernel events dropped per probe since start")
                .with_unit("{event}")
                .build(),
            sink_dropped: meter
                .u64_gauge("keytrail.sink.dropped")
                .with_description("Records dropped per sink (queue full) since start")
                .with_unit("{record}")
                .build(),
        }
    }

    fn apply(&self, update: &Update) {
        match update {
            Update::Access {
                kind,
                lifetime,
                source,
            } => self.accesses.add(
                1,
                &[
                    KeyValue::new("keytrail.credential.kind", kind.clone()),
                    KeyValue::new("keytrail.credential.lifetime", lifetime.clone()),
                    KeyValue::new("keytrail.credential.source", source.clone()),
                ],
            ),
            Update::Use {
                kind,
                lifetime,
                evidence,
            } => self.uses.add(
                1,
                &[
                    KeyValue::new("keytrail.credential.kind", kind.clone()),
                    KeyValue::new("keytrail.credential.lifetime", lifetime.clone()),
                    KeyValue::new("keytrail.evidence", evidence.clone()),
                ],
            ),
            Update::StaticInUse(n) => self.static_in_use.record(*n, &[]),
            Update::ProbeSeen { probe, value } => self
                .probe_seen
                .record(*value, &[KeyValue::new("keytrail.probe", probe.clone())]),
            Update::ProbeDropped { probe, value } => self
                .probe_dropped
                .record(*value, &[KeyValue::new("keytrail.probe", probe.clone())]),
            Update::SinkDropped { sink, value } => self
                .sink_dropped
                .record(*value, &[KeyValue::new("keytrail.sink", sink.clone())]),
        }
    }
}

/// Runs an exporter that needs a Tokio runtime (tonic, async reqwest) from the SDK's own
/// worker threads: each export is driven on the agent's runtime.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    handle: Handle,
}

/// Whether this thread runs outside any Tokio runtime (the SDK's worker threads do).
fn on_plain_thread() -> bool {
    Handle::try_current().is_err()
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        let plain = on_plain_thread();
        async move {
            if plain {
                self.handle.block_on(self.inner.export(metrics))
            } else {
                self.inner.export(metrics).await
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let plain = on_plain_thread();
        async move {
            if plain {
                self.handle.block_on(self.inner.export(batch))
            } else {
                self.inner.export(batch).await
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporters' shared settings for the configured protocol.
struct Transport {
    protocol: OtlpProtocol,
    /// As configured (gRPC) or the base of the per-signal paths (HTTP).
    endpoint: String,
    timeout: Duration,
    metadata: MetadataMap,
    headers: HashMap<String, String>,
    tls: Option<ClientTlsConfig>,
    /// The client of the HTTP exporters: system roots plus `ca_file`.
    http_client: Option<reqwest::Client>,
}

impl Transport {
    fn new(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let https = config.endpoint.starts_with("https://");
        let ca_pem = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| OtlpError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                if !pem
                    .windows(b"-----BEGIN CERTIFICATE-----".len())
                    .any(|w| w == b"-----BEGIN CERTIFICATE-----")
                {
                    return Err(OtlpError::CaFileNotPem { path: path.clone() });
                }
                Some(pem)
            }
            None => None,
        };
        let mut metadata = MetadataMap::new();
        let mut headers = HashMap::new();
        for (name, value) in &config.headers {
            let reason = "the value must be visible ASCII (no control characters)";
            if !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return Err(OtlpError::Header {
                    name: name.clone(),
                    reason,
                });
            }
            match config.protocol {
                OtlpProtocol::Grpc => {
                    // Metadata keys are lowercase; the map takes `&'static str` keys (its key
                    // type is not exported), so the few configured names live for the process.
                    let lower = name.to_ascii_lowercase();
                    let valid = !lower.is_empty()
                        && !lower.ends_with("-bin")
                        && lower
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !valid {
                        return Err(OtlpError::Header {
                            name: name.clone(),
                            reason: "not a gRPC ASCII metadata key (letters, digits, `-`, `_`; \
                                     no `-bin` suffix)",
                        });
                    }
                    let key: &'static str = Box::leak(lower.into_boxed_str());
                    let value = value.parse().map_err(|_| OtlpError::Header {
                        name: name.clone(),
                        reason,
                    })?;
                    metadata.insert(key, value);
                }
                OtlpProtocol::Http => {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
        let mut tls = None;
        let mut http_client = None;
        match config.protocol {
            OtlpProtocol::Grpc if https => {
                let mut config = ClientTlsConfig::new().with_native_roots();
                if let Some(pem) = ca_pem {
                    config = config.ca_certificate(Certificate::from_pem(pem));
                }
                tls = Some(config);
            }
            OtlpProtocol::Grpc => {}
            OtlpProtocol::Http => {
                let mut builder = reqwest::Client::builder().timeout(config.timeout);
                if let (Some(pem), Some(path)) = (ca_pem, &config.ca_file) {
                    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                        OtlpError::CaFileInvalid {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    builder = builder.tls_certs_merge(certs);
                }
                http_client = Some(builder.build().map_err(OtlpError::HttpClient)?);
            }
        }
        Ok(Self {
            protocol: config.protocol,
            endpoint: config.endpoint.trim_end_matches('/').to_string(),
            timeout: config.timeout,
            metadata,
            headers,
            tls,
            http_client,
        })
    }

    /// The HTTP URL of one signal.
    fn http_url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// The gRPC settings shared by the three exporters.
    fn tonic<B: WithExportConfig + WithTonicConfig>(&self, builder: B) -> B {
        let mut b = builder
            .with_endpoint(self.endpoint.clone())
            .with_timeout(self.timeout)
            .with_metadata(self.metadata.clone());
        if let Some(tls) = &self.tls {
            b = b.with_tls_config(tls.clone());
        }
        b
    }

    /// The HTTP settings shared by the three exporters; `path` is the signal's.
    fn http<B: WithExportConfig + WithHttpConfig>(&self, builder: B, path: &str) -> B {
        builder
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(self.http_url(path))
            .with_timeout(self.timeout)
            .with_http_client(self.http_client.clone().unwrap_or_default())
            .with_headers(self.headers.clone())
    }

    fn log_exporter(&self) -> Result<opentelemetry_otlp::LogExporter, OtlpError> {
        let builder = opentelemetry_otlp::LogExporter::builder();
        // Retries are this sink's, so they are counted and never block it.
        match self.protocol {
            OtlpProtocol::Grpc => self
                .tonic(builder.with_tonic())
                .with_retry_policy(RetryPolicy::disabled())
                .build(),
            OtlpProtocol::Http => self
                .http(builder.with_http(), "/v1/logs")
                .with_retry_policy(RetryPolicy::disabled())
                .build(),
        }
        .map_err(|source| OtlpError::Exporter {
            signal: "logs",
            source,
        })
    }

    fn metric_exporter(&self) -> Result<opentelemetry_otlp::MetricExporter, OtlpError> {
        let builder =
            opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative);
        match self.protocol {
            OtlpProtocol::Grpc => self.tonic(builder.with_tonic()).build(),
            OtlpProtocol::Http => self.http(builder.with_http(), "/v1/metrics").build(),
        }
        .map_err(|source| OtlpError::Exporter {
            signal: "metrics",
            source,
        })
    }

    fn span_exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, OtlpError> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        match self.protocol {
            OtlpProtocol::Grpc => self.tonic(builder.with_tonic()).build(),
            OtlpProtocol::Http => self.http(builder.with_http(), "/v1/traces").build(),
        }
        .map_err(|source| OtlpError::Exporter {
            signal: "traces",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_are_logged_without_user_info() {
        let shown = endpoint_for_logs("https://svc:s3cr3t-t0ken@collector.example:4318/");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("svc"), "{shown}");
        assert!(shown.contains("collector.example:4318"), "{shown}");
        assert_eq!(
            endpoint_for_logs("http://127.0.0.1:4317"),
            "http://127.0.0.1:4317"
        );
        assert!(!endpoint_for_logs("s3cr3t@collector").contains("s3cr3t"));
    }

    use std::sync::Mutex;

    use opentelemetry::logs::LoggerProvider as _;
    use tokio::{
        io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
        net::TcpListener,
    };

    use super::*;

    fn record(name: &'static str) -> Record {
        Record::new(
            name,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    fn access(kind: &str, lifetime: &str, source: &str) -> Record {
        let mut r = record(names::CREDENTIAL_ACCESS);
        r.severity = Severity::Warn;
        r.set("keytrail.credential.kind", kind)
            .set("keytrail.credential.lifetime", lifetime)
            .set("keytrail.credential.source", source)
            .set("keytrail.credential.fingerprint", "f00d")
            .set("file.path", "/home/app/.aws/credentials")
            .set("process.pid", 4242u32)
            .set("keytrail.file.path_truncated", false);
        r
    }

    fn use_record(fingerprint: &str, lifetime: &str) -> Record {
        let mut r = record(names::CREDENTIAL_USE);
        r.set("keytrail.credential.fingerprint", fingerprint)
            .set("keytrail.credential.kind", "github_token")
            .set("keytrail.credential.lifetime", lifetime)
            .set("keytrail.evidence", "same_process")
            .set("server.address", "api.github.com");
        r
    }

    #[test]
    fn log_record_carries_event_name_severity_times_and_typed_attributes() {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger("test");
        let mut log = logger.create_log_record();
        let r = access("aws_access_key", "static", "file");
        let observed = SystemTime::now();
        fill_log_record(&mut log, &r, observed);
        assert_eq!(log.event_name(), Some("keytrail.credential.access"));
        assert_eq!(log.severity_number(), Some(LogSeverity::Warn));
        assert_eq!(log.severity_text(), Some("WARN"));
        assert_eq!(log.timestamp(), Some(r.time));
        assert_eq!(log.observed_timestamp(), Some(observed));
        let attrs: Vec<(String, AnyValue)> = log
            .attributes_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(attrs.len(), r.attrs.len());
        assert!(attrs.contains(&(
            "keytrail.credential.kind".into(),
            AnyValue::String("aws_access_key".into())
        )));
        assert!(attrs.contains(&("process.pid".into(), AnyValue::Int(4242))));
        assert!(attrs.contains(&(
            "keytrail.file.path_truncated".into(),
            AnyValue::Boolean(false)
        )));

        let mut info = record(names::AGENT_STATS);
        info.set("keytrail.agent.final", true);
        let mut log = logger.create_log_record();
        fill_log_record(&mut log, &info, observed);
        assert_eq!(log.severity_number(), Some(LogSeverity::Info));
        assert_eq!(log.severity_text(), Some("INFO"));
        assert_eq!(log.event_name(), Some("keytrail.agent.stats"));
    }

    #[test]
    fn span_attributes_keep_types() {
        let r = access("aws_access_key", "static", "file");
        let kvs = key_values(&r);
        assert!(kvs.contains(&KeyValue::new("process.pid", 4242i64)));
        assert!(kvs.contains(&KeyValue::new("keytrail.file.path_truncated", false)));
        assert!(kvs.contains(&KeyValue::new("file.path", "/home/app/.aws/credentials")));
    }

    #[test]
    fn access_and_use_records_count_by_low_cardinality_labels() {
        let mut book = Bookkeeping::default();
        assert_eq!(
            book.updates(&access("aws_access_key", "static", "file")),
            vec![Update::Access {
                kind: "aws_access_key".into(),
                lifetime: "static".into(),
                source: "file".into(),
            }]
        );
        // Odd or missing values never become attribute values.
        let mut odd = record(names::CREDENTIAL_ACCESS);
        odd.set("keytrail.credential.kind", "/etc/passwd")
            .set("keytrail.credential.lifetime", "x".repeat(100));
        assert_eq!(
            book.updates(&odd),
            vec![Update::Access {
                kind: "other".into(),
                lifetime: "other".into(),
                source: "unknown".into(),
            }]
        );
        assert_eq!(
            book.updates(&use_record("aa", "static")),
            vec![
                Update::Use {
                    kind: "github_token".into(),
                    lifetime: "static".into(),
                    evidence: "same_process".into(),
                },
                Update::StaticInUse(1),
            ]
        );
        // The same fingerprint again, a short-lived one, then another static one.
        assert_eq!(
            book.updates(&use_record("aa", "static"))[1],
            Update::StaticInUse(1)
        );
        assert_eq!(
            book.updates(&use_record("bb", "short_lived"))[1],
            Update::StaticInUse(1)
        );
        assert_eq!(
            book.updates(&use_record("cc", "static"))[1],
            Update::StaticInUse(2)
        );
        assert!(book.updates(&record(names::CONNECTION)).is_empty());
    }

    #[test]
    fn static_fingerprints_are_capped() {
        let mut book = Bookkeeping::with_cap(3);
        for i in 0..10 {
            book.updates(&use_record(&format!("fp{i}"), "static"));
        }
        assert_eq!(
            book.updates(&use_record("fp0", "static"))[1],
            Update::StaticInUse(3)
        );
    }

    #[test]
    fn stats_records_become_probe_and_sink_gauges() {
        let mut book = Bookkeeping::default();
        let mut stats = record(names::AGENT_STATS);
        stats
            .set("keytrail.agent.final", false)
            .set("keytrail.probe.file_open.seen", 10u64)
            .set("keytrail.probe.file_open.dropped", 1u64)
            .set("keytrail.probe.connect.seen", 3u64)
            .set("keytrail.events.received", 14u64)
            .set("keytrail.sink.otlp.dropped", 5u64)
            .set("keytrail.sink.dropped", 5u64);
        assert_eq!(
            book.updates(&stats),
            vec![
                Update::ProbeSeen {
                    probe: "file_open".into(),
                    value: 10
                },
                Update::ProbeDropped {
                    probe: "file_open".into(),
                    value: 1
                },
                Update::ProbeSeen {
                    probe: "connect".into(),
                    value: 3
                },
                Update::SinkDropped {
                    sink: "otlp".into(),
                    value: 5
                },
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
    }

    fn config(endpoint: &str, protocol: OtlpProtocol) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            protocol,
            timeout: Duration::from_secs(2),
            metrics_interval: Duration::from_secs(1),
            ..OtlpConfig::default()
        }
    }

    #[tokio::test]
    async fn config_errors_name_the_field_and_never_a_header_value() {
        let resource = OtlpResource::default;
        let counters = Arc::<OtlpCounters>::default;
        let mut c = config("", OtlpProtocol::Grpc);
        assert!(matches!(
            OtlpSink::new(&c, resource(), counters()),
            Err(OtlpError::NoEndpoint)
        ));
        c.endpoint = "https://collector.example:4317".into();
        c.ca_file = Some("/nonexistent/keytrail-ca.pem".into());
        let e = OtlpSink::new(&c, resource(), counters()).err().unwrap();
        assert!(
            e.to_string().contains("/nonexistent/keytrail-ca.pem"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        c.ca_file = Some(not_pem);
        let e = OtlpSink::new(&c, resource(), counters()).err().unwrap();
        assert!(matches!(e, OtlpError::CaFileNotPem { .. }), "{e}");

        c.ca_file = None;
        let secret = "s3cr3t-Value\n";
        c.headers.insert("Authorization".into(), secret.into());
        let e = OtlpSink::new(&c, resource(), counters()).err().unwrap();
        let text = format!("{e} {e:?}");
        assert!(text.contains("output.otlp.headers.Authorization"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");

        c.headers.clear();
        c.headers.insert("x-key-bin".into(), "abc".into());
        assert!(matches!(
            OtlpSink::new(&c, resource(), counters()),
            Err(OtlpError::Header { .. })
        ));
        c.headers.clear();
        c.headers.insert("X-Api-Key".into(), "abc".into());
        assert!(OtlpSink::new(&c, resource(), counters()).is_ok());
    }

    /// Requests received: (path, body).
    type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    /// A minimal OTLP/HTTP collector: answers 200 to every POST and keeps (path, body).
    #[derive(Clone, Default)]
    struct FakeCollector {
        requests: Received,
    }

    impl FakeCollector {
        async fn serve(&self, listener: TcpListener) {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let requests = Arc::clone(&self.requests);
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut request_line = String::new();
                        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = request_line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        requests.lock().unwrap().push((path, body));
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                                      content-length: 0\r\n\r\n";
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }

        /// Log requests whose body holds `needle`.
        fn logs_with(&self, needle: &[u8]) -> usize {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .filter(|(path, body)| {
                    path == "/v1/logs" && body.windows(needle.len()).any(|w| w == needle)
                })
                .count()
        }

        fn paths(&self) -> Vec<String> {
            let requests = self.requests.lock().unwrap();
            requests.iter().map(|(p, _)| p.clone()).collect()
        }
    }

    async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_and_metrics_reach_an_http_collector() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = FakeCollector::default();
        let server = tokio::spawn({
            let c = collector.clone();
            async move { c.serve(listener).await }
        });
        let counters = Arc::new(OtlpCounters::default());
        let sink = OtlpSink::new(
            &config(&endpoint, OtlpProtocol::Http),
            OtlpResource {
                host_name: "node-a".into(),
                node_name: Some("node-a".into()),
            },
            Arc::clone(&counters),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(sink.run(rx));
        for _ in 0..3 {
            tx.send(Arc::new(access("aws_access_key", "static", "file")))
                .await
                .unwrap();
        }
        wait_for("3 exported records", Duration::from_secs(10), || {
            counters.exported.load(Ordering::Relaxed) == 3
        })
        .await;
        assert!(collector.logs_with(b"keytrail.credential.access") >= 1);
        assert!(collector.logs_with(b"node-a") >= 1, "resource attributes");
        wait_for("a metrics export", Duration::from_secs(10), || {
            collector.paths().iter().any(|p| p == "/v1/metrics")
        })
        .await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("the sink stops when its queue closes")
            .unwrap();
        assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
        server.abort();
    }

    /// An OTLP/HTTP collector over TLS with a certificate for 127.0.0.1 from a fresh CA:
    /// returns its port, the CA's PEM, and its (path, body) requests. It serves until the test
    /// process exits.
    fn tls_collector() -> (u16, String, Received) {
        use std::io::{BufRead as _, Read as _, Write as _};

        let ca_params = {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        };
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            )
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Received::default();
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = Arc::clone(&config);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut stream = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
                    loop {
                        let mut request_line = String::new();
                        if stream.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = request_line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; length];
                        if stream.read_exact(&mut body).is_err() {
                            return;
                        }
                        seen.lock().unwrap().push((path, body));
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                                      content-length: 0\r\n\r\n";
                        if stream.get_mut().write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                        let _ = stream.get_mut().flush();
                    }
                });
            }
        });
        (port, ca.pem(), requests)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_endpoint_is_trusted_through_ca_file() {
        let (port, ca_pem, requests) = tls_collector();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let endpoint = format!("https://127.0.0.1:{port}");

        // Without the CA, the collector's certificate is not trusted: nothing is exported.
        let counters = Arc::new(OtlpCounters::default());
        let c = config(&endpoint, OtlpProtocol::Http);
        let sink = OtlpSink::new(&c, OtlpResource::default(), Arc::clone(&counters)).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(sink.run(rx));
        tx.send(Arc::new(access("aws_access_key", "static", "file")))
            .await
            .unwrap();
        wait_for("a failed export", Duration::from_secs(10), || {
            counters.retries.load(Ordering::Relaxed) >= 1
        })
        .await;
        assert_eq!(counters.exported.load(Ordering::Relaxed), 0);
        drop(tx);
        task.await.unwrap();
        assert!(
            !requests
                .lock()
                .unwrap()
                .iter()
                .any(|(p, _)| p == "/v1/logs")
        );

        // With it, records go through.
        let counters = Arc::new(OtlpCounters::default());
        let mut c = config(&endpoint, OtlpProtocol::Http);
        c.ca_file = Some(ca_file);
        let sink = OtlpSink::new(&c, OtlpResource::default(), Arc::clone(&counters)).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(sink.run(rx));
        for _ in 0..2 {
            tx.send(Arc::new(access("aws_access_key", "static", "file")))
                .await
                .unwrap();
        }
        wait_for("2 records over TLS", Duration::from_secs(10), || {
            counters.exported.load(Ordering::Relaxed) == 2
        })
        .await;
        drop(tx);
        task.await.unwrap();
        assert!(
            requests
                .lock()
                .unwrap()
                .iter()
                .any(|(p, _)| p == "/v1/logs")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_resumes_after_an_outage_and_counts_retries() {
        // Reserve a port, then leave it closed: the collector is "down".
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let counters = Arc::new(OtlpCounters::default());
        let sink = OtlpSink::new(
            &config(&format!("http://{addr}"), OtlpProtocol::Http),
            OtlpResource::default(),
            Arc::clone(&counters),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(sink.run(rx));
        for _ in 0..5 {
            tx.send(Arc::new(access("aws_access_key", "static", "file")))
                .await
                .unwrap();
        }
        wait_for("a retry", Duration::from_secs(10), || {
            counters.retries.load(Ordering::Relaxed) >= 2
        })
        .await;
        assert_eq!(counters.exported.load(Ordering::Relaxed), 0);
        let listener = TcpListener::bind(addr).await.unwrap();
        let collector = FakeCollector::default();
        let server = tokio::spawn({
            let c = collector.clone();
            async move { c.serve(listener).await }
        });
        wait_for("the export to resume", Duration::from_secs(15), || {
            counters.exported.load(Ordering::Relaxed) == 5
        })
        .await;
        assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .unwrap()
            .unwrap();
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_the_oldest_batch_and_shutdown_is_bounded() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let counters = Arc::new(OtlpCounters::default());
        let mut c = config(&format!("http://{addr}"), OtlpProtocol::Grpc);
        c.queue = 8;
        c.batch = 4;
        c.timeout = Duration::from_secs(1);
        let sink = OtlpSink::new(&c, OtlpResource::default(), Arc::clone(&counters)).unwrap();
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(sink.run(rx));
        for _ in 0..100 {
            tx.send(Arc::new(access("aws_access_key", "static", "file")))
                .await
                .unwrap();
        }
        // At most one batch in flight plus a full queue are kept.
        wait_for("the overflow", Duration::from_secs(10), || {
            counters.failed.load(Ordering::Relaxed) >= 100 - 8 - 4
        })
        .await;
        drop(tx);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("shutdown is bounded by output.otlp.timeout")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(8));
        assert_eq!(counters.exported.load(Ordering::Relaxed), 0);
        assert_eq!(
            counters.failed.load(Ordering::Relaxed),
            100,
            "every record accounted"
        );
    }

    #[test]
    fn latency_quantiles_are_bucket_bounds() {
        let l = Latency::default();
        assert_eq!(l.quantile_ms(0.5), None);
        for _ in 0..98 {
            l.record(Duration::from_millis(3));
        }
        l.record(Duration::from_millis(700));
        l.record(Duration::from_secs(1000));
        assert_eq!(l.quantile_ms(0.5), Some(5));
        assert_eq!(l.quantile_ms(0.99), Some(1_000));
        assert_eq!(l.quantile_ms(1.0), Some(300_000));
    }
}
