//! A real OTLP collector for the scenarios: a `rotel-agent` process (installed by
//! `cargo xtask setup` into `target/rotel-venv`) listening on free loopback ports, exporting to
//! nowhere (`--exporter blackhole`) and printing everything it receives with
//! `--debug-log-verbosity detailed`. The readers below parse that text:
//!
//! ```text
//! ResourceLog #0
//! Resource SchemaURL:
//! Resource attributes:
//!      -> service.name: Str(keytrail)
//! ScopeLogs #0
//! ScopeLogs SchemaURL:
//! InstrumentationScope keytrail 0.1.0
//! LogRecord #0
//! ObservedTimestamp: 1795407294861895059
//! Timestamp: 1795407294800000000
//! SeverityText: WARN
//! SeverityNumber: SEVERITY_NUMBER_WARN(13)
//! EventName: keytrail.credential.access
//! Body: Empty
//! Attributes:
//!      -> keytrail.credential.kind: Str(aws_access_key)
//!      -> process.pid: Int(42)
//! ```
//!
//! and likewise `ResourceMetrics #`/`Metric #`/`Descriptor:`/`     -> Name: ...`/
//! `NumberDataPoints #`/`Data point attributes:`/`Value: ...` for metrics and
//! `ResourceSpans #`/`Span #`/`    Name           : ...`/`    Kind           : ...` for spans.
//!
//! The process is killed and its directory removed on drop.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The OTLP transport the agent is told to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    /// As `--otlp-protocol` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// The rotel binary: `KEYTRAIL_ROTEL`, else the one `cargo xtask setup` installs under
/// `<workspace>/target/rotel-venv`.
pub fn rotel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYTRAIL_ROTEL") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .join("target/rotel-venv");
    std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("site-packages/rotel/rotel-agent"))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "rotel not found under {}: run `cargo xtask setup` (which `cargo xtask test` \
                 does) or set KEYTRAIL_ROTEL",
                venv.display()
            )
        })
}

/// One log record the collector received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceivedLog {
    pub event_name: String,
    pub severity_text: String,
    /// `SEVERITY_NUMBER_WARN(13)` -> 13.
    pub severity_number: i32,
    /// Nanoseconds since the epoch (0 when unset).
    pub timestamp: u64,
    pub observed_timestamp: u64,
    /// Attribute values as text (`Str(x)` -> `x`, `Int(3)` -> `3`, `Bool(true)` -> `true`).
    pub attributes: BTreeMap<String, String>,
    /// Attribute types as rotel names them: `Str`, `Int`, `Bool`, `Double`...
    pub attribute_types: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    /// Name of the instrumentation scope.
    pub scope: String,
}

/// One number data point of a metric the collector received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricPoint {
    pub name: String,
    /// `Sum`, `Gauge`...
    pub data_type: String,
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
    pub resource: BTreeMap<String, String>,
}

/// One span the collector received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    /// `SPAN_KIND_CLIENT`...
    pub kind: String,
    pub start: u64,
    pub end: u64,
    pub attributes: BTreeMap<String, String>,
    pub attribute_types: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
}

/// Everything parsed out of the debug output.
#[derive(Debug, Default)]
pub struct Received {
    pub logs: Vec<ReceivedLog>,
    pub metrics: Vec<MetricPoint>,
    pub spans: Vec<ReceivedSpan>,
}

/// A running rotel collector on loopback.
pub struct Collector {
    child: Option<Child>,
    protocol: Protocol,
    grpc_port: u16,
    http_port: u16,
    /// Its stdout and stderr, appended across restarts.
    output: PathBuf,
    dir: tempfile::TempDir,
}

/// How long rotel may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl Collector {
    /// Starts rotel with OTLP gRPC and HTTP receivers on free loopback ports; `protocol`
    /// chooses which one [`Collector::endpoint`] names.
    pub fn start(protocol: Protocol) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kt-rotel-")
            .tempdir()
            .expect("tempdir");
        let mut collector = Self {
            child: None,
            protocol,
            grpc_port: free_port(),
            http_port: free_port(),
            output: dir.path().join("rotel.out"),
            dir,
        };
        collector.spawn();
        collector
    }

    fn spawn(&mut self) {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)
            .expect("rotel output file");
        let mut cmd = Command::new(rotel_bin());
        cmd.arg("start")
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "logs", "--debug-log", "metrics"])
            .args(["--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            // Received data is printed as soon as it arrives.
            .args(["--batch-timeout", "50ms"])
            .arg("--log-file")
            .arg(self.dir.path().join("rotel-agent.log"))
            .arg("--pid-file")
            .arg(self.dir.path().join("rotel-agent.pid"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup rotel output"))
            .stderr(out);
        let child = cmd.spawn().expect("spawning rotel-agent");
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.grpc_port, self.http_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "rotel exited ({status}) before listening on 127.0.0.1:{port}; output:\n{}",
                        self.raw_output()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "rotel did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}; output:\n{}",
                    self.raw_output()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The endpoint the agent is given (`--otlp-endpoint`): `http://127.0.0.1:PORT` of the
    /// receiver of the collector's protocol.
    pub fn endpoint(&self) -> String {
        let port = match self.protocol {
            Protocol::Grpc => self.grpc_port,
            Protocol::Http => self.http_port,
        };
        format!("http://127.0.0.1:{port}")
    }

    /// The `--otlp-endpoint --otlp-protocol` arguments for the agent.
    pub fn agent_args(&self) -> [String; 4] {
        [
            "--otlp-endpoint".into(),
            self.endpoint(),
            "--otlp-protocol".into(),
            self.protocol.as_str().into(),
        ]
    }

    /// SIGTERM, and wait for it to exit (SIGKILL after 10 s). Its ports are closed after this.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for port in [self.grpc_port, self.http_port] {
            assert!(
                TcpStream::connect(("127.0.0.1", port)).is_err(),
                "something still listens on 127.0.0.1:{port} after rotel stopped"
            );
        }
    }

    /// Starts it again on the same ports (after [`Collector::stop`]); what it received before
    /// stays readable.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Everything it printed so far (all runs), for leak checks.
    pub fn raw_output(&self) -> String {
        let bytes = std::fs::read(&self.output).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Everything received so far, parsed.
    pub fn received(&self) -> Received {
        parse(&self.raw_output())
    }

    /// Number data points received so far, oldest first.
    pub fn metric_points(&self) -> Vec<MetricPoint> {
        self.received().metrics
    }

    /// Polls (every 100 ms) until `done` returns something; panics with the collector's
    /// output after `timeout`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Received) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = done(&self.received()) {
                return v;
            }
            if Instant::now() > deadline {
                let out = self.raw_output();
                // The tail is what matters; the whole output can be large.
                let tail: String = out
                    .chars()
                    .skip(out.chars().count().saturating_sub(6000))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; collector output tail:\n{tail}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a log record satisfying `pred`.
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ReceivedLog) -> bool,
    ) -> ReceivedLog {
        self.wait_until(what, timeout, |r| r.logs.iter().find(|l| pred(l)).cloned())
    }

    /// Waits until every metric in `names` was received.
    pub fn wait_for_metrics(&self, names: &[&str], timeout: Duration) {
        self.wait_until(&format!("metrics {names:?}"), timeout, |r| {
            names
                .iter()
                .all(|n| r.metrics.iter().any(|m| m.name == *n))
                .then_some(())
        });
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Where `     -> key: Type(value)` lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Resource,
    Descriptor,
    /// The attributes of the current block (log record, span or data point).
    Block,
}

/// The record being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Log,
    Metric,
    Span,
}

/// A value continued on the next lines (a string holding newlines).
struct OpenValue {
    section: Section,
    key: String,
    text: String,
}

/// The parser's position.
struct Parser {
    out: Received,
    resource: BTreeMap<String, String>,
    scope: String,
    metric_name: String,
    data_type: String,
    section: Section,
    block: Block,
}

/// Parses rotel's detailed debug output (see the module documentation).
pub fn parse(text: &str) -> Received {
    let mut p = Parser {
        out: Received::default(),
        resource: BTreeMap::new(),
        scope: String::new(),
        metric_name: String::new(),
        data_type: String::new(),
        section: Section::None,
        block: Block::None,
    };
    let mut open: Option<OpenValue> = None;
    for raw in text.lines() {
        let line = strip_ansi(raw);
        if let Some(value) = open.as_mut() {
            value.text.push('\n');
            match line.strip_suffix(')') {
                Some(last) => {
                    value.text.push_str(last);
                    let value = open.take().expect("open value");
                    p.attribute(value.section, value.key, "Str".into(), value.text);
                }
                None => value.text.push_str(&line),
            }
            continue;
        }
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("-> ") {
            let Some((key, value)) = rest.split_once(": ") else {
                continue;
            };
            if p.section == Section::Descriptor {
                match key {
                    "Name" => p.metric_name = value.to_string(),
                    "DataType" => p.data_type = value.to_string(),
                    _ => {}
                }
                continue;
            }
            let (ty, inner) = match value.split_once('(') {
                Some((ty, inner))
                    if !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphabetic()) =>
                {
                    (ty.to_string(), inner)
                }
                _ => (String::new(), value),
            };
            match inner.strip_suffix(')') {
                Some(inner) => p.attribute(p.section, key.to_string(), ty, inner.to_string()),
                None => {
                    open = Some(OpenValue {
                        section: p.section,
                        key: key.to_string(),
                        text: inner.to_string(),
                    })
                }
            }
            continue;
        }
        p.line(trimmed);
    }
    p.out
}

impl Parser {
    /// A line that is not an attribute.
    fn line(&mut self, line: &str) {
        let starts = |prefixes: &[&str]| prefixes.iter().any(|p| line.starts_with(p));
        if starts(&["ResourceLog #", "ResourceMetrics #", "ResourceSpans #"]) {
            self.resource.clear();
            self.scope.clear();
            self.section = Section::None;
            self.block = Block::None;
        } else if line == "Resource attributes:" {
            self.section = Section::Resource;
        } else if starts(&["ScopeLogs #", "ScopeMetrics #", "ScopeSpans #"]) {
            self.section = Section::None;
            self.block = Block::None;
        } else if let Some(rest) = line.strip_prefix("InstrumentationScope ") {
            self.scope = rest.split_whitespace().next().unwrap_or("").to_string();
            self.section = Section::None;
        } else if line.starts_with("LogRecord #") {
            self.out.logs.push(ReceivedLog {
                resource: self.resource.clone(),
                scope: self.scope.clone(),
                ..ReceivedLog::default()
            });
            self.section = Section::None;
            self.block = Block::Log;
        } else if line.starts_with("Span #") {
            self.out.spans.push(ReceivedSpan {
                resource: self.resource.clone(),
                ..ReceivedSpan::default()
            });
            self.section = Section::None;
            self.block = Block::Span;
        } else if line.starts_with("Metric #") {
            self.metric_name.clear();
            self.data_type.clear();
            self.section = Section::None;
            self.block = Block::None;
        } else if line == "Descriptor:" {
            self.section = Section::Descriptor;
        } else if line.starts_with("NumberDataPoints #") {
            self.out.metrics.push(MetricPoint {
                name: self.metric_name.clone(),
                data_type: self.data_type.clone(),
                resource: self.resource.clone(),
                ..MetricPoint::default()
            });
            self.section = Section::None;
            self.block = Block::Metric;
        } else if line == "Attributes:" || line == "Data point attributes:" {
            self.section = Section::Block;
        } else if let Some((field, value)) = line.split_once(':') {
            self.section = Section::None;
            self.field(field.trim(), value.trim());
        }
    }

    /// A `Field: value` line of the current block.
    fn field(&mut self, field: &str, value: &str) {
        let number = |v: &str| v.parse::<u64>().unwrap_or(0);
        match self.block {
            Block::Log => {
                let Some(log) = self.out.logs.last_mut() else {
                    return;
                };
                match field {
                    "EventName" => log.event_name = value.to_string(),
                    "SeverityText" => log.severity_text = value.to_string(),
                    "SeverityNumber" => {
                        log.severity_number = value
                            .rsplit_once('(')
                            .and_then(|(_, n)| n.strip_suffix(')'))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0)
                    }
                    "Timestamp" => log.timestamp = number(value),
                    "ObservedTimestamp" => log.observed_timestamp = number(value),
                    _ => {}
                }
            }
            Block::Span => {
                let Some(span) = self.out.spans.last_mut() else {
                    return;
                };
                match field {
                    "Name" => span.name = value.to_string(),
                    "Kind" => span.kind = value.to_string(),
                    "Start time" => span.start = number(value),
                    "End time" => span.end = number(value),
                    _ => {}
                }
            }
            Block::Metric => {
                if field == "Value"
                    && let Some(point) = self.out.metrics.last_mut()
                {
                    point.value = value.parse().unwrap_or(f64::NAN);
                }
            }
            Block::None => {}
        }
    }

    fn attribute(&mut self, section: Section, key: String, ty: String, value: String) {
        match (section, self.block) {
            (Section::Resource, _) => {
                self.resource.insert(key, value);
            }
            (Section::Block, Block::Log) => {
                if let Some(log) = self.out.logs.last_mut() {
                    log.attribute_types.insert(key.clone(), ty);
                    log.attributes.insert(key, value);
                }
            }
            (Section::Block, Block::Span) => {
                if let Some(span) = self.out.spans.last_mut() {
                    span.attribute_types.insert(key.clone(), ty);
                    span.attributes.insert(key, value);
                }
            }
            (Section::Block, Block::Metric) => {
                if let Some(point) = self.out.metrics.last_mut() {
                    point.attributes.insert(key, value);
                }
            }
            _ => {}
        }
    }
}

/// Drops terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rotel 0.0.1a15 output for one log record, one counter, one gauge and one span (the
    /// span's attribute holds a newline), with a coloured log line in between.
    const SAMPLE: &str =
        "\u{1b}[2m2026-11-23T04:14:19.470155Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m Starting Rotel.
ResourceLog #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(keytrail)
     -> host.name: Str(h1)
ScopeLogs #0
ScopeLogs SchemaURL: 
InstrumentationScope keytrail 0.1.0
LogRecord #0
ObservedTimestamp: 1795407294861895059
Timestamp: 1795407294000000000
SeverityText: WARN
SeverityNumber: SEVERITY_NUMBER_WARN(13)
EventName: keytrail.credential.access
Body: Empty
Attributes:
     -> keytrail.credential.kind: Str(aws_access_key)
     -> file.path: Str(/a b/c=d, e (1))
     -> process.pid: Int(42)
     -> keytrail.file.path_truncated: Bool(false)
    Trace ID       : 
    Span ID        : 
Flags: 0
ResourceMetrics #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(keytrail)
ScopeMetrics #0
ScopeMetrics SchemaURL: 
InstrumentationScope keytrail 
Metric #0
Descriptor:
     -> Name: keytrail.credential.accesses
     -> Description: 
     -> Unit: 
     -> DataType: Sum
     -> IsMonotonic: true
     -> AggregationTemporality: AGGREGATION_TEMPORALITY_CUMULATIVE
NumberDataPoints #0
Data point attributes:
     -> keytrail.credential.kind: Str(aws_access_key)
StartTimestamp: 1795407294875338484
Timestamp: 1795407295374997166
Value: 1
Metric #1
Descriptor:
     -> Name: keytrail.probe.events.seen
     -> Description: 
     -> Unit: 
     -> DataType: Gauge
NumberDataPoints #0
Data point attributes:
     -> keytrail.probe: Str(file_open)
StartTimestamp: 0
Timestamp: 1795407295374997166
Value: 5.5
ResourceSpans #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(keytrail)
ScopeSpans #0
ScopeSpans SchemaURL: 
InstrumentationScope keytrail 
Span #0
    Trace ID       : cdc045b153f4f860d0a109d5f0102c24
    Parent ID      : 
    ID             : 6a91dfd850947df6
    Name           : keytrail.credential.use
    Kind           : SPAN_KIND_CLIENT
Start time: 1795407302605149042
End time: 1795407302605158839
    Status code    : STATUS_CODE_UNSET
    Status message : 
Attributes:
     -> a: Str(multi
line)
     -> b: Int(3)
";

    #[test]
    fn parses_logs_metrics_and_spans() {
        let r = parse(SAMPLE);
        assert_eq!(r.logs.len(), 1);
        let log = &r.logs[0];
        assert_eq!(log.event_name, "keytrail.credential.access");
        assert_eq!(log.severity_text, "WARN");
        assert_eq!(log.severity_number, 13);
        assert_eq!(log.timestamp, 1_795_407_294_000_000_000);
        assert_eq!(log.observed_timestamp, 1_795_407_294_861_895_059);
        assert_eq!(log.scope, "keytrail");
        assert_eq!(log.attributes["keytrail.credential.kind"], "aws_access_key");
        assert_eq!(log.attributes["file.path"], "/a b/c=d, e (1)");
        assert_eq!(log.attributes["process.pid"], "42");
        assert_eq!(log.attribute_types["process.pid"], "Int");
        assert_eq!(log.attributes["keytrail.file.path_truncated"], "false");
        assert_eq!(log.attribute_types["keytrail.file.path_truncated"], "Bool");
        assert_eq!(log.attributes.len(), 4);
        assert_eq!(log.resource["service.name"], "keytrail");
        assert_eq!(log.resource["host.name"], "h1");

        assert_eq!(r.metrics.len(), 2);
        assert_eq!(r.metrics[0].name, "keytrail.credential.accesses");
        assert_eq!(r.metrics[0].data_type, "Sum");
        assert_eq!(r.metrics[0].value, 1.0);
        assert_eq!(
            r.metrics[0].attributes["keytrail.credential.kind"],
            "aws_access_key"
        );
        assert_eq!(r.metrics[1].name, "keytrail.probe.events.seen");
        assert_eq!(r.metrics[1].data_type, "Gauge");
        assert_eq!(r.metrics[1].value, 5.5);
        assert_eq!(r.metrics[1].attributes["keytrail.probe"], "file_open");
        assert!(!r.metrics[1].resource.contains_key("host.name"));

        assert_eq!(r.spans.len(), 1);
        let span = &r.spans[0];
        assert_eq!(span.name, "keytrail.credential.use");
        assert_eq!(span.kind, "SPAN_KIND_CLIENT");
        assert_eq!(span.start, 1_795_407_302_605_149_042);
        assert_eq!(span.end, 1_795_407_302_605_158_839);
        assert_eq!(span.attributes["a"], "multi\nline");
        assert_eq!(span.attributes["b"], "3");
        assert_eq!(span.attribute_types["b"], "Int");
    }

    #[test]
    fn a_block_cut_short_does_not_spill_into_the_next() {
        let text = "LogRecord #0\nEventName: a\nAttributes:\n     -> k: Str(v)\nResourceLog #1\n\
                    Resource attributes:\n     -> service.name: Str(x)\nLogRecord #0\nEventName: b\n";
        let r = parse(text);
        assert_eq!(r.logs.len(), 2);
        assert_eq!(r.logs[0].attributes["k"], "v");
        assert!(r.logs[0].resource.is_empty());
        assert!(r.logs[1].attributes.is_empty());
        assert_eq!(r.logs[1].resource["service.name"], "x");
        assert_eq!(r.logs[1].event_name, "b");
    }
}
