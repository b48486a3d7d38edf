//! The agent's configuration: YAML with an embedded, commented default (`config/default.yaml`),
//! parsed strictly (unknown fields are errors) and validated apart from parsing so every error
//! names the field at fault.

use std::{path::Path, time::Duration};

use serde::Deserialize;

/// The commented default configuration, printed by `keytrail config default`.
pub const DEFAULT_YAML: &str = include_str!("config/default.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What to watch.
    #[serde(default)]
    pub watch: WatchConfig,
    /// How credentials are classified.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// Where the fingerprint key comes from.
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
    /// Which processes to report, by cgroup.
    #[serde(default)]
    pub cgroups: CgroupsConfig,
    /// Where events go.
    #[serde(default)]
    pub output: OutputConfig,
    /// Sizes of kernel structures.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Secret-like environment variables and the getenv probe.
    #[serde(default)]
    pub env: EnvConfig,
    /// Outbound connections and credentials on the wire.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Pod, owner and volume names from the Kubernetes API (`k8s` module).
    #[serde(default)]
    pub kubernetes: crate::k8s::KubernetesConfig,
    /// How credentials are joined with destinations into use records.
    #[serde(default)]
    pub correlate: CorrelateConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateConfig {
    /// A connection is joined with the credentials its process (or workload) touched at most
    /// this long before (a process's whole life when it is shorter).
    #[serde(default = "default_process_window", with = "humantime_serde")]
    pub process_window: Duration,
    /// After the first use event of an edge (and any with stronger evidence), at most one per
    /// this interval, with updated counters.
    #[serde(default = "default_emit_interval", with = "humantime_serde")]
    pub emit_interval: Duration,
    /// Edges (workload, credential, destination) kept in memory; the least recently used are
    /// evicted past this, and counted.
    #[serde(default = "default_max_edges")]
    pub max_edges: usize,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            process_window: default_process_window(),
            emit_interval: default_emit_interval(),
            max_edges: default_max_edges(),
        }
    }
}

const fn default_process_window() -> Duration {
    Duration::from_secs(600)
}
const fn default_emit_interval() -> Duration {
    Duration::from_secs(60)
}
const fn default_max_edges() -> usize {
    100_000
}

/// OTLP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Collector endpoint (`http://host:4317`, `https://...`); empty: no OTLP export.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default = "default_otlp_protocol")]
    pub protocol: OtlpProtocol,
    /// Extra request headers (authentication to a vendor's collector).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// CA certificate (PEM) to trust for an `https://` endpoint, besides the system roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// One export attempt's time limit.
    #[serde(default = "default_otlp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Records waiting for export at most; past it records are dropped and counted.
    #[serde(default = "default_otlp_queue")]
    pub queue: usize,
    /// Log records per export request at most.
    #[serde(default = "default_otlp_batch")]
    pub batch: usize,
    /// Period of the metrics export.
    #[serde(default = "default_otlp_metrics_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Also export one span per use event, for trace backends.
    #[serde(default)]
    pub spans: bool,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: default_otlp_protocol(),
            headers: Default::default(),
            ca_file: None,
            timeout: default_otlp_timeout(),
            queue: default_otlp_queue(),
            batch: default_otlp_batch(),
            metrics_interval: default_otlp_metrics_interval(),
            spans: false,
        }
    }
}

const fn default_otlp_protocol() -> OtlpProtocol {
    OtlpProtocol::Grpc
}
const fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}
const fn default_otlp_queue() -> usize {
    16_384
}
const fn default_otlp_batch() -> usize {
    512
}
const fn default_otlp_metrics_interval() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Trace outbound TCP connections (cgroup programs at the cgroup2 root).
    #[serde(default = "default_true")]
    pub connections: bool,
    /// Attach the SSL_write uprobes (credentials in TLS request heads).
    #[serde(default = "default_true")]
    pub ssl_write_probe: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            connections: true,
            ssl_write_probe: true,
        }
    }
}

const fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Names that are secret-like whatever their words.
    #[serde(default = "default_secret_names")]
    pub secret_names: Vec<String>,
    /// Words (between `_`) that make a name secret-like ...
    #[serde(default = "default_secret_words")]
    pub secret_words: Vec<String>,
    /// ... unless one of these words is also in it.
    #[serde(default = "default_except_words")]
    pub except_words: Vec<String>,
    /// Names whose value is the path of a credential file.
    #[serde(default = "default_file_names")]
    pub file_names: Vec<String>,
    /// Names that are never secret-like, whatever their words.
    #[serde(default = "default_plain_names")]
    pub plain_names: Vec<String>,
    /// Attach the getenv/secure_getenv uprobes.
    #[serde(default = "default_getenv_probe")]
    pub getenv_probe: bool,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Config::embedded().env
    }
}

// The lists default to the classifier's own (a test checks default.yaml says the same).
fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
fn default_secret_names() -> Vec<String> {
    strings(crate::credential::envname::DEFAULT_SECRET_NAMES)
}
fn default_secret_words() -> Vec<String> {
    strings(crate::credential::envname::DEFAULT_SECRET_WORDS)
}
fn default_except_words() -> Vec<String> {
    strings(crate::credential::envname::DEFAULT_EXCEPT_WORDS)
}
fn default_file_names() -> Vec<String> {
    strings(crate::credential::envname::DEFAULT_FILE_NAMES)
}
fn default_plain_names() -> Vec<String> {
    strings(crate::credential::envname::DEFAULT_PLAIN_NAMES)
}
/// Must equal `env.getenv_probe` in default.yaml (tested).
const fn default_getenv_probe() -> bool {
    false
}

impl EnvConfig {
    /// The lists as classification rules.
    pub fn rules(&self) -> crate::credential::EnvNameRules {
        crate::credential::EnvNameRules::new(
            &self.secret_names,
            &self.secret_words,
            &self.except_words,
            &self.file_names,
        )
        .with_plain_names(&self.plain_names)
    }
}

/// Longest variable name the kernel matches (keytrail_common::ENV_NAME_MAX, less one).
const MAX_ENV_NAME: usize = keytrail_common::ENV_NAME_MAX - 1;
/// Entries per kernel list (the size of the kernel's maps).
const MAX_ENV_LIST: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Globs of credential files; see default.yaml for the syntax.
    #[serde(default = "default_watch_paths")]
    pub paths: Vec<String>,
    /// Check every open against the files known to hold credentials (by inode), so that
    /// another name for one (hard link, bind mount, symlink, spelling) is reported too.
    #[serde(default = "default_by_identity")]
    pub by_identity: bool,
}

const fn default_by_identity() -> bool {
    true
}

fn default_watch_paths() -> Vec<String> {
    Config::embedded().watch.paths
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Expiry within this long of issue means short-lived.
    #[serde(default = "default_short_lived_threshold", with = "humantime_serde")]
    pub short_lived_threshold: Duration,
    /// Files larger than this are not read.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            short_lived_threshold: default_short_lived_threshold(),
            max_file_bytes: default_max_file_bytes(),
        }
    }
}

const fn default_short_lived_threshold() -> Duration {
    Duration::from_secs(24 * 3600)
}
const fn default_max_file_bytes() -> u64 {
    1 << 20
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// File holding the key (trimmed).
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// Environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupsConfig {
    /// Globs of cgroup v2 paths to report; empty means all.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of cgroup v2 paths never to report.
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `-` for stdout, else a file path.
    #[serde(default = "default_jsonl")]
    pub jsonl: String,
    /// Period of `keytrail.agent.stats`.
    #[serde(default = "default_stats_interval", with = "humantime_serde")]
    pub stats_interval: Duration,
    /// Window in which a repeated (process, file, outcome) is counted, not reported.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Also write `keytrail.connection` debug records.
    #[serde(default)]
    pub connections: bool,
    /// Keep the credential inventory (SQLite) in the state file.
    #[serde(default = "default_true")]
    pub inventory: bool,
    /// Inventory rows not seen for this long are deleted (0: never).
    #[serde(default = "default_inventory_retention", with = "humantime_serde")]
    pub inventory_retention: Duration,
    /// OTLP export.
    #[serde(default)]
    pub otlp: OtlpConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Ring buffer bytes: a power of two, at least 64 KiB.
    #[serde(default = "default_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    /// Records a workload (cgroup) may send per second, per family (file opens, environment,
    /// connections); 0 for no budget.
    #[serde(default = "default_workload_records_per_second")]
    pub workload_records_per_second: u32,
    /// Records a workload may send at once above its rate.
    #[serde(default = "default_workload_burst")]
    pub workload_burst: u32,
}

const fn default_workload_records_per_second() -> u32 {
    2000
}
const fn default_workload_burst() -> u32 {
    5000
}

fn default_jsonl() -> String {
    "-".into()
}
const fn default_stats_interval() -> Duration {
    Duration::from_secs(60)
}
const fn default_dedup_window() -> Duration {
    Duration::from_secs(60)
}
const fn default_inventory_retention() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
const fn default_ring_buffer_bytes() -> u32 {
    4 << 20
}

impl Default for WatchConfig {
    fn default() -> Self {
        Config::embedded().watch
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            jsonl: default_jsonl(),
            stats_interval: default_stats_interval(),
            dedup_window: default_dedup_window(),
            connections: false,
            inventory: true,
            inventory_retention: default_inventory_retention(),
            otlp: OtlpConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: default_ring_buffer_bytes(),
            workload_records_per_second: default_workload_records_per_second(),
            workload_burst: default_workload_burst(),
        }
    }
}

/// A configuration problem, with the dotted path of the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: field `{field}`: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
    #[error("config {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

impl ConfigError {
    fn field(origin: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Field {
            origin: origin.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// The embedded default. It is tested to parse and validate, so this cannot fail at run time.
    pub fn embedded() -> Self {
        let de = serde_yaml_ng::Deserializer::from_str(DEFAULT_YAML);
        // Parse without the Default impls (they call back into this function).
        let raw: RawDefault = serde::Deserialize::deserialize(de)
            .unwrap_or_else(|e| panic!("embedded default config is invalid: {e}"));
        raw.0
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = match serde_path_to_error::deserialize(de) {
            Ok(c) => c,
            Err(e) => {
                let field = e.path().to_string();
                let message = e.into_inner().to_string();
                return Err(if field == "." || field.is_empty() {
                    ConfigError::Syntax {
                        origin: origin.into(),
                        message,
                    }
                } else {
                    ConfigError::field(origin, field, message)
                });
            }
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks values that parse but make no sense. Pure: touches nothing outside `self`.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        // The `kubernetes:` section validates itself (k8s module).
        self.kubernetes
            .validate()
            .map_err(|(f, m)| ConfigError::field(origin, f, m))?;
        if self.watch.paths.is_empty() {
            return Err(ConfigError::field(
                origin,
                "watch.paths",
                "must list at least one pattern",
            ));
        }
        for (i, pattern) in self.watch.paths.iter().enumerate() {
            crate::watch::check_pattern(pattern)
                .map_err(|m| ConfigError::field(origin, format!("watch.paths[{i}]"), m))?;
        }
        for (name, list) in [
            ("cgroups.include", &self.cgroups.include),
            ("cgroups.exclude", &self.cgroups.exclude),
        ] {
            for (i, pattern) in list.iter().enumerate() {
                if !pattern.starts_with('/') {
                    return Err(ConfigError::field(
                        origin,
                        format!("{name}[{i}]"),
                        format!(
                            "`{pattern}` must start with `/` (paths are relative to the cgroup2 mount)"
                        ),
                    ));
                }
                globset::Glob::new(pattern).map_err(|e| {
                    ConfigError::field(origin, format!("{name}[{i}]"), e.kind().to_string())
                })?;
            }
        }
        if self.credentials.short_lived_threshold.is_zero() {
            return Err(ConfigError::field(
                origin,
                "credentials.short_lived_threshold",
                "must be more than 0s",
            ));
        }
        if self.credentials.max_file_bytes == 0 {
            return Err(ConfigError::field(
                origin,
                "credentials.max_file_bytes",
                "must be at least 1",
            ));
        }
        if self.fingerprint.key_file.is_some() && self.fingerprint.key_env.is_some() {
            return Err(ConfigError::field(
                origin,
                "fingerprint",
                "set key_file or key_env, not both",
            ));
        }
        if self.output.jsonl.is_empty() {
            return Err(ConfigError::field(
                origin,
                "output.jsonl",
                "must be `-` (stdout) or a file path",
            ));
        }
        if self.output.stats_interval < Duration::from_secs(1) {
            return Err(ConfigError::field(
                origin,
                "output.stats_interval",
                "must be at least 1s",
            ));
        }
        for (field, list, is_word) in [
            ("env.secret_names", &self.env.secret_names, false),
            ("env.file_names", &self.env.file_names, false),
            ("env.plain_names", &self.env.plain_names, false),
            ("env.secret_words", &self.env.secret_words, true),
            ("env.except_words", &self.env.except_words, true),
        ] {
            if list.len() > MAX_ENV_LIST {
                return Err(ConfigError::field(
                    origin,
                    field,
                    format!("{} entries; at most {MAX_ENV_LIST}", list.len()),
                ));
            }
            for (i, name) in list.iter().enumerate() {
                check_env_name(name, is_word)
                    .map_err(|m| ConfigError::field(origin, format!("{field}[{i}]"), m))?;
            }
        }
        let rb = self.limits.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 65536 {
            return Err(ConfigError::field(
                origin,
                "limits.ring_buffer_bytes",
                format!("{rb} is not a power of two of at least 65536"),
            ));
        }
        self.validate_export(origin)
    }

    /// The correlation and OTLP settings.
    fn validate_export(&self, origin: &str) -> Result<(), ConfigError> {
        let c = &self.correlate;
        if c.process_window.is_zero() {
            return Err(ConfigError::field(
                origin,
                "correlate.process_window",
                "must be more than 0s",
            ));
        }
        if c.max_edges == 0 {
            return Err(ConfigError::field(
                origin,
                "correlate.max_edges",
                "must be at least 1",
            ));
        }
        let o = &self.output.otlp;
        if !o.endpoint.is_empty() {
            check_otlp_endpoint(&o.endpoint)
                .map_err(|m| ConfigError::field(origin, "output.otlp.endpoint", m))?;
        }
        for (field, value, min) in [
            ("output.otlp.queue", o.queue, 1),
            ("output.otlp.batch", o.batch, 1),
        ] {
            if value < min {
                return Err(ConfigError::field(
                    origin,
                    field,
                    format!("must be at least {min}"),
                ));
            }
        }
        if o.timeout.is_zero() {
            return Err(ConfigError::field(
                origin,
                "output.otlp.timeout",
                "must be more than 0s",
            ));
        }
        if o.metrics_interval < Duration::from_secs(1) {
            return Err(ConfigError::field(
                origin,
                "output.otlp.metrics_interval",
                "must be at least 1s",
            ));
        }
        for name in o.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::field(
                    origin,
                    format!("output.otlp.headers.{name}"),
                    "a header name is ASCII letters, digits, `-` and `_`",
                ));
            }
        }
        Ok(())
    }
}

/// An OTLP endpoint is an `http://` or `https://` URL with a host.
pub fn check_otlp_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("`{endpoint}` must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
        return Err(format!("`{endpoint}` names no host"));
    }
    Ok(())
}

/// A variable name (or, with `is_word`, one `_`-separated word of one) the kernel can match.
fn check_env_name(name: &str, is_word: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ENV_NAME {
        return Err(format!("must have 1 to {MAX_ENV_NAME} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || (b == b'_' && !is_word))
    {
        return Err(format!(
            "`{name}` must be ASCII letters, digits{}",
            if is_word {
                " (a word has no `_`: names are split into words at `_`)"
            } else {
                " and `_`"
            }
        ));
    }
    Ok(())
}

/// The embedded default parsed with every field required, so defaults come from the YAML alone.
struct RawDefault(Config);

impl<'de> Deserialize<'de> for RawDefault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            watch: WatchConfig,
            credentials: CredentialsConfig,
            fingerprint: FingerprintConfig,
            cgroups: CgroupsConfig,
            output: OutputConfig,
            limits: LimitsConfig,
            env: EnvConfig,
            network: NetworkConfig,
            kubernetes: crate::k8s::KubernetesConfig,
            correlate: CorrelateConfig,
        }
        let f = Full::deserialize(d)?;
        Ok(RawDefault(Config {
            watch: f.watch,
            credentials: f.credentials,
            fingerprint: f.fingerprint,
            cgroups: f.cgroups,
            output: f.output,
            limits: f.limits,
            env: f.env,
            network: f.network,
            kubernetes: f.kubernetes,
            correlate: f.correlate,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_validates() {
        let c = Config::parse(DEFAULT_YAML, "default").unwrap();
        assert!(c.watch.paths.iter().any(|p| p == "~/.aws/credentials"));
        assert_eq!(c.output.stats_interval, Duration::from_secs(60));
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::parse("{}", "t").unwrap();
        assert_eq!(c.watch.paths, Config::embedded().watch.paths);
        assert_eq!(c.limits.ring_buffer_bytes, 4 << 20);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::parse("watch:\n  pathz: []\n", "t").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("watch") && s.contains("pathz"), "{s}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = Config::parse("output:\n  stats_interval: soon\n", "t").unwrap_err();
        assert!(e.to_string().contains("output.stats_interval"), "{e}");
    }

    #[test]
    fn bad_pattern_names_its_index() {
        let e = Config::parse("watch:\n  paths: [\"/ok/**\", \"relative/x\"]\n", "t").unwrap_err();
        assert!(e.to_string().contains("watch.paths[1]"), "{e}");
    }

    #[test]
    fn fingerprint_sources_are_exclusive() {
        let e = Config::parse("fingerprint:\n  key_file: /k\n  key_env: K\n", "t").unwrap_err();
        assert!(e.to_string().contains("fingerprint"), "{e}");
        let c = Config::parse("credentials:\n  short_lived_threshold: 2h\n", "t").unwrap();
        assert_eq!(
            c.credentials.short_lived_threshold,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn default_env_lists_are_the_classifiers() {
        let c = Config::embedded();
        assert_eq!(
            c.env.rules(),
            crate::credential::EnvNameRules::default(),
            "config/default.yaml `env:` and credential/envname.rs disagree"
        );
        assert_eq!(c.env.getenv_probe, default_getenv_probe());
        let partial = Config::parse("env:\n  getenv_probe: true\n", "t").unwrap();
        assert!(partial.env.getenv_probe);
        assert_eq!(partial.env.rules(), c.env.rules());
    }

    #[test]
    fn env_words_have_no_underscore() {
        let e = Config::parse("env:\n  secret_words: [token, api_key]\n", "t").unwrap_err();
        assert!(e.to_string().contains("env.secret_words[1]"), "{e}");
        let e = Config::parse("env:\n  getenv_probe: maybe\n", "t").unwrap_err();
        assert!(e.to_string().contains("env.getenv_probe"), "{e}");
    }

    #[test]
    fn ring_buffer_must_be_power_of_two() {
        let e = Config::parse("limits:\n  ring_buffer_bytes: 100000\n", "t").unwrap_err();
        assert!(e.to_string().contains("limits.ring_buffer_bytes"), "{e}");
    }
}
