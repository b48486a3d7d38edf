//! The exported event model: a named, timestamped record with flat attributes whose keys are
//! OpenTelemetry attribute names where one exists, else `keytrail.*`. Every sink writes these.
//!
//! Never put a secret value, a command line or an environment value in a record.

use std::{borrow::Cow, time::SystemTime};

use serde::ser::{Serialize, SerializeMap, Serializer};

/// `event.name` values (the external contract).
pub mod names {
    pub const CREDENTIAL_ACCESS: &str = "keytrail.credential.access";
    pub const CREDENTIAL_USE: &str = "keytrail.credential.use";
    pub const AGENT_STATS: &str = "keytrail.agent.stats";
    /// A workload lost records to its per-cgroup budget (WARN, once per interval).
    pub const WORKLOAD_OVER_BUDGET: &str = "keytrail.workload.over_budget";
    /// An outbound connection (debug; `output.connections`).
    pub const CONNECTION: &str = "keytrail.connection";
    /// Output of `keytrail classify` (not an agent event).
    pub const CREDENTIAL_CLASSIFIED: &str = "keytrail.credential.classified";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// An attribute key: borrowed when static (most are), so records allocate no keys.
pub type Key = Cow<'static, str>;

#[derive(Debug, Clone)]
pub struct Record {
    pub time: SystemTime,
    /// One of [`names`].
    pub name: &'static str,
    pub severity: Severity,
    /// Attributes in insertion order. Keys are names from the code (static, or built from
    /// probe and sink names), never data.
    pub attrs: Vec<(Key, Value)>,
}

impl Record {
    pub fn new(name: &'static str, time: SystemTime) -> Self {
        Self {
            time,
            name,
            severity: Severity::Info,
            attrs: Vec::new(),
        }
    }

    /// Adds an attribute.
    pub fn set(&mut self, key: impl Into<Key>, value: impl Into<Value>) -> &mut Self {
        self.attrs.push((key.into(), value.into()));
        self
    }

    /// Adds an attribute when the value is known.
    pub fn set_opt<V: Into<Value>>(&mut self, key: &'static str, value: Option<V>) -> &mut Self {
        if let Some(v) = value {
            self.attrs.push((Cow::Borrowed(key), v.into()));
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(v) => s.serialize_str(v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
        }
    }
}

/// The JSON lines form: one flat object, `time`, `event.name` and `severity` first.
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3 + self.attrs.len()))?;
        m.serialize_entry(
            "time",
            &humantime::format_rfc3339_micros(self.time).to_string(),
        )?;
        m.serialize_entry("event.name", self.name)?;
        m.serialize_entry("severity", self.severity.as_str())?;
        for (k, v) in &self.attrs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_flat_with_header_first() {
        let mut r = Record::new(names::AGENT_STATS, SystemTime::UNIX_EPOCH);
        r.set("process.pid", 42u32).set("file.path", "/x");
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"time":"1970-01-01T00:00:00.000000Z","event.name":"keytrail.agent.stats","severity":"INFO","process.pid":42,"file.path":"/x"}"#
        );
    }
}
