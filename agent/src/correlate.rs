//! Joins who (workload), what (credential fingerprint) and where (destination) into **uses**,
//! and decides when a `keytrail.credential.use` record is written.
//!
//! Evidence for a use, strongest first:
//! - `wire`: the credential was seen in the request to the destination (`source=wire` access);
//! - `process`: the process that connected had read or held the credential at most
//!   `correlate.process_window` before (its whole life when shorter: entries leave at exit);
//! - `workload`: another process of the same container, pod or unit had.
//!
//! An edge keeps its strongest evidence, a count, and first/last seen. Its record is written
//! when the edge is new, when its evidence gets stronger, when the number of workloads sharing
//! its credential grows, and otherwise at most once per `correlate.emit_interval` with updated
//! counters. Every table is bounded: edges and credentials are LRU-evicted past
//! `correlate.max_edges` (counted), per-process entries leave at exit.

use std::{
    collections::HashSet,
    num::NonZeroUsize,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use lru::LruCache;

use crate::{
    config::CorrelateConfig,
    inventory::{StoredHolder, StoredUse},
    record::{Key, Record, Severity, Value, names},
};

/// Kinds whose public id names one credential: a wire sighting of the id is that credential.
const ID_NAMES_CREDENTIAL: &[&str] = &["aws_access_key", "aws_session_credentials"];

/// Credentials remembered per process and per workload, at most (oldest dropped first).
const MAX_HELD: usize = 64;
/// Processes and workloads with held credentials, at most.
const MAX_HOLDERS: usize = 65_536;
/// A wire sighting this soon after a connection of the same process to the same destination
/// is that connection's request: it strengthens the edge without counting a second use.
const SAME_REQUEST: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    Workload,
    Process,
    Wire,
}

impl Evidence {
    pub const fn as_str(self) -> &'static str {
        match self {
            Evidence::Wire => "wire",
            Evidence::Process => "process",
            Evidence::Workload => "workload",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "wire" => Some(Evidence::Wire),
            "process" => Some(Evidence::Process),
            "workload" => Some(Evidence::Workload),
            _ => None,
        }
    }
}

/// Counters of this stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct CorrelateCounters {
    /// Edges held in memory now.
    pub edges: AtomicU64,
    /// Edges evicted to stay within `max_edges`.
    pub evicted: AtomicU64,
    /// Use records written.
    pub emitted: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    workload: String,
    fingerprint: String,
    address: String,
    port: u16,
}

#[derive(Debug)]
struct Edge {
    evidence: Evidence,
    count: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
    /// When a record was last written for it (None: never, in this run).
    emitted_at: Option<SystemTime>,
    /// Counters changed since the last record.
    changed: bool,
    /// The process and workload attributes of the latest evidence.
    who: Vec<(Key, Value)>,
    peer: Option<String>,
    /// The process of the latest connection counted, and when.
    last_connection: Option<(i64, SystemTime)>,
}

/// What is known of a credential, from its access records.
#[derive(Debug, Default)]
struct CredentialInfo {
    attrs: Vec<(Key, Value)>,
    lifetime_static: bool,
    /// Workloads seen holding or using it.
    workloads: HashSet<String>,
    namespaces: HashSet<String>,
}

/// A credential a process or workload read or holds, and when.
#[derive(Debug, Clone)]
struct Held {
    fingerprint: String,
    pid: i64,
    time: SystemTime,
}

/// The credential attributes copied from access records onto use records.
const CREDENTIAL_KEYS: &[&str] = &[
    "keytrail.credential.kind",
    "keytrail.credential.lifetime",
    "keytrail.credential.id",
    "keytrail.credential.expires_at",
    "keytrail.credential.age_s",
];

/// Whether an attribute describes the process or its workload (as opposed to the file, the
/// credential or the connection), so it belongs on a use record.
fn is_who(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "process.",
        "container.",
        "k8s.",
        "keytrail.workload.",
        "keytrail.cgroup.",
        "keytrail.systemd.",
        "keytrail.user_session",
        "keytrail.owner",
        "keytrail.k8s.qos_class",
        "keytrail.k8s.service_account",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) && key != "process.creation.time"
}

fn str_attr<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    match r.get(key) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(r: &Record, key: &str) -> Option<i64> {
    match r.get(key) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    }
}

/// The workload key of a record: `kind/name`.
fn workload_key(r: &Record) -> Option<String> {
    Some(format!(
        "{}/{}",
        str_attr(r, "keytrail.workload.kind")?,
        str_attr(r, "keytrail.workload.name")?
    ))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub struct Correlator {
    config: CorrelateConfig,
    edges: LruCache<EdgeKey, Edge>,
    credentials: LruCache<String, CredentialInfo>,
    /// Least recently active processes go first when full: a workload starting processes
    /// in bulk pushes out its own and the oldest, never the whole table.
    by_process: lru::LruCache<i64, Vec<Held>>,
    by_workload: LruCache<String, Vec<Held>>,
    /// `kind/id` -> fingerprint of credentials whose public id names them alone (AWS key ids).
    by_id: LruCache<String, String>,
    /// Edges whose counters changed since their last record.
    pending: HashSet<EdgeKey>,
}

impl Correlator {
    pub fn new(config: &CorrelateConfig) -> Self {
        let cap = NonZeroUsize::new(config.max_edges).unwrap_or(NonZeroUsize::MIN);
        Self {
            config: config.clone(),
            edges: LruCache::new(cap),
            credentials: LruCache::new(cap),
            by_process: lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_HOLDERS).expect("a nonzero bound"),
            ),
            by_workload: LruCache::new(NonZeroUsize::new(MAX_HOLDERS).unwrap_or(NonZeroUsize::MIN)),
            by_id: LruCache::new(cap),
            pending: HashSet::new(),
        }
    }

    /// Continues from the inventory: counts, evidence and sharing survive a restart.
    pub fn seed(
        &mut self,
        uses: &[StoredUse],
        holders: &[StoredHolder],
        counters: &CorrelateCounters,
    ) {
        for h in holders {
            let info = self.credential(&h.fingerprint);
            info.workloads.insert(h.workload.clone());
            if let Some(ns) = &h.namespace {
                info.namespaces.insert(ns.clone());
            }
        }
        // Oldest first, so the most recent end up least likely to be evicted.
        for u in uses.iter().rev() {
            let Some(evidence) = Evidence::parse(&u.evidence) else {
                continue;
            };
            self.credential(&u.fingerprint)
                .workloads
                .insert(u.workload.clone());
            let key = EdgeKey {
                workload: u.workload.clone(),
                fingerprint: u.fingerprint.clone(),
                address: u.server_address.clone(),
                port: u.server_port,
            };
            let edge = Edge {
                evidence,
                count: u.count,
                first_seen: u.first_seen,
                last_seen: u.last_seen,
                emitted_at: Some(u.last_seen),
                changed: false,
                who: Vec::new(),
                peer: None,
                last_connection: None,
            };
            self.insert_edge(key, edge, counters);
        }
    }

    fn credential(&mut self, fingerprint: &str) -> &mut CredentialInfo {
        if !self.credentials.contains(fingerprint) {
            self.credentials
                .put(fingerprint.to_string(), CredentialInfo::default());
        }
        self.credentials
            .get_mut(fingerprint)
            .expect("inserted above")
    }

    fn insert_edge(&mut self, key: EdgeKey, edge: Edge, counters: &CorrelateCounters) {
        if let Some((old, _)) = self.edges.push(key.clone(), edge)
            && old != key
        {
            self.pending.remove(&old);
            counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        counters
            .edges
            .store(self.edges.len() as u64, Ordering::Relaxed);
    }

    /// An access record: remembers who holds the credential; a wire sighting is a use. A
    /// wire sighting that shows only a public id (an AWS SigV4 key id) takes the fingerprint of
    /// the credential read with that id, so both are one credential everywhere.
    pub fn on_access(&mut self, r: &mut Record, counters: &CorrelateCounters) -> Vec<Record> {
        let mut out = Vec::new();
        if r.name != names::CREDENTIAL_ACCESS {
            return out;
        }
        self.unify_by_id(r);
        let r = &*r;
        let (Some(fp), Some(workload)) = (
            str_attr(r, "keytrail.credential.fingerprint"),
            workload_key(r),
        ) else {
            return out;
        };
        let fp = fp.to_string();
        let pid = int_attr(r, "process.pid").unwrap_or(0);
        let namespace = str_attr(r, "k8s.namespace.name").map(str::to_string);
        let info = self.credential(&fp);
        info.attrs = CREDENTIAL_KEYS
            .iter()
            .filter_map(|k| r.get(k).map(|v| (Key::Borrowed(k), v.clone())))
            .collect();
        info.lifetime_static = str_attr(r, "keytrail.credential.lifetime") == Some("static");
        let new_holder = info.workloads.insert(workload.clone());
        if let Some(ns) = namespace {
            info.namespaces.insert(ns);
        }
        if new_holder && info.workloads.len() > 1 {
            // Every edge of this credential now reports a larger shared_by.
            self.touch_credential(&fp);
        }
        if str_attr(r, "keytrail.credential.source") == Some("wire") {
            if let (Some(address), Some(port)) =
                (str_attr(r, "server.address"), int_attr(r, "server.port"))
            {
                let key = EdgeKey {
                    workload,
                    fingerprint: fp,
                    address: address.to_string(),
                    port: u16::try_from(port).unwrap_or(0),
                };
                let peer = str_attr(r, "network.peer.address").map(str::to_string);
                out.extend(self.observe(key, Evidence::Wire, r, pid, peer, 1, counters));
            }
        } else {
            let held = Held {
                fingerprint: fp,
                pid,
                time: r.time,
            };
            remember(
                self.by_process.get_or_insert_mut(pid, Vec::new),
                held.clone(),
            );
            if !workload.starts_with("process/") {
                if !self.by_workload.contains(&workload) {
                    self.by_workload.put(workload.clone(), Vec::new());
                }
                if let Some(list) = self.by_workload.get_mut(&workload) {
                    remember(list, held);
                }
            }
        }
        out
    }

    /// A connection record (destination named or connection closed): a use of every credential
    /// its process, or another process of its workload, held within the window.
    pub fn on_connection(&mut self, r: &Record, counters: &CorrelateCounters) -> Vec<Record> {
        self.on_connections(r, 1, counters)
    }

    /// `n` connections like the one of record `r` (the kernel folded repeats of a connection
    /// already named: same process, same destination, same name): each counts as a use, as
    /// if each had its own record.
    pub fn on_connections(
        &mut self,
        r: &Record,
        n: u64,
        counters: &CorrelateCounters,
    ) -> Vec<Record> {
        if str_attr(r, "keytrail.connection.outcome") == Some("failed") {
            return Vec::new();
        }
        let (Some(workload), Some(address), Some(port)) = (
            workload_key(r),
            str_attr(r, "server.address"),
            int_attr(r, "server.port"),
        ) else {
            return Vec::new();
        };
        let pid = int_attr(r, "process.pid").unwrap_or(0);
        let window = self.config.process_window;
        let fresh = |h: &Held| {
            r.time
                .duration_since(h.time)
                .map(|d| d <= window)
                .unwrap_or(true)
        };
        let mut candidates: Vec<(String, Evidence)> = Vec::new();
        for h in self.by_process.get(&pid).into_iter().flatten() {
            if fresh(h) {
                candidates.push((h.fingerprint.clone(), Evidence::Process));
            }
        }
        for h in self.by_workload.get(&workload).into_iter().flatten() {
            if h.pid != pid && fresh(h) && !candidates.iter().any(|(f, _)| *f == h.fingerprint) {
                candidates.push((h.fingerprint.clone(), Evidence::Workload));
            }
        }
        let peer = str_attr(r, "network.peer.address").map(str::to_string);
        let mut out = Vec::new();
        for (fp, evidence) in candidates {
            let key = EdgeKey {
                workload: workload.clone(),
                fingerprint: fp,
                address: address.to_string(),
                port: u16::try_from(port).unwrap_or(0),
            };
            out.extend(self.observe(key, evidence, r, pid, peer.clone(), n, counters));
        }
        out
    }

    fn unify_by_id(&mut self, r: &mut Record) {
        let (Some(kind), Some(id), Some(fp)) = (
            str_attr(r, "keytrail.credential.kind"),
            str_attr(r, "keytrail.credential.id"),
            str_attr(r, "keytrail.credential.fingerprint"),
        ) else {
            return;
        };
        if !ID_NAMES_CREDENTIAL.contains(&kind) {
            return;
        }
        let key = format!("{kind}/{id}");
        if str_attr(r, "keytrail.credential.source") != Some("wire") {
            let fp = fp.to_string();
            self.by_id.put(key, fp);
            return;
        }
        if let Some(known) = self.by_id.get(&key).cloned()
            && let Some((_, v)) = r
                .attrs
                .iter_mut()
                .find(|(k, _)| k == "keytrail.credential.fingerprint")
        {
            *v = Value::Str(known);
        }
    }

    /// A process exited: what it held is no longer evidence for its own connections.
    pub fn on_exit(&mut self, pid: u32) {
        self.by_process.pop(&i64::from(pid));
    }

    /// `n` more sightings of an edge; returns its record when one is due now.
    #[expect(
        clippy::too_many_arguments,
        reason = "an edge sighting is all of these; a struct for one private call adds nothing"
    )]
    fn observe(
        &mut self,
        key: EdgeKey,
        evidence: Evidence,
        r: &Record,
        pid: i64,
        peer: Option<String>,
        n: u64,
        counters: &CorrelateCounters,
    ) -> Option<Record> {
        let who: Vec<(Key, Value)> = r.attrs.iter().filter(|(k, _)| is_who(k)).cloned().collect();
        let time = r.time;
        self.credential(&key.fingerprint)
            .workloads
            .insert(key.workload.clone());
        let emit_now = match self.edges.get_mut(&key) {
            Some(edge) => {
                let same_request = evidence == Evidence::Wire
                    && edge.last_connection.is_some_and(|(p, t)| {
                        p == pid
                            && time
                                .duration_since(t)
                                .map(|d| d <= SAME_REQUEST)
                                .unwrap_or(true)
                    });
                if !same_request {
                    edge.count += n;
                }
                if evidence != Evidence::Wire {
                    edge.last_connection = Some((pid, time));
                }
                edge.first_seen = edge.first_seen.min(time);
                edge.last_seen = edge.last_seen.max(time);
                edge.who = who;
                edge.peer = peer.or(edge.peer.take());
                edge.changed = true;
                let stronger = evidence > edge.evidence;
                if stronger {
                    edge.evidence = evidence;
                }
                stronger || edge.emitted_at.is_none()
            }
            None => {
                let edge = Edge {
                    evidence,
                    count: n,
                    first_seen: time,
                    last_seen: time,
                    emitted_at: None,
                    changed: true,
                    who,
                    peer,
                    last_connection: (evidence != Evidence::Wire).then_some((pid, time)),
                };
                self.insert_edge(key.clone(), edge, counters);
                true
            }
        };
        if emit_now {
            self.pending.remove(&key);
            self.emit(&key, time, counters)
        } else {
            self.pending.insert(key);
            None
        }
    }

    /// Marks every edge of a credential for a new record now (its sharing changed).
    fn touch_credential(&mut self, fingerprint: &str) {
        for (key, edge) in self.edges.iter_mut() {
            if key.fingerprint == fingerprint {
                edge.changed = true;
                edge.emitted_at = None;
                self.pending.insert(key.clone());
            }
        }
    }

    /// Records of edges whose counters changed and whose interval has passed (or every
    /// changed edge when `all`, at shutdown).
    pub fn due(&mut self, now: SystemTime, all: bool, counters: &CorrelateCounters) -> Vec<Record> {
        let interval = self.config.emit_interval;
        let due: Vec<EdgeKey> = self
            .pending
            .iter()
            .filter(|k| {
                all || self.edges.peek(*k).is_some_and(|e| match e.emitted_at {
                    None => true,
                    Some(t) => now
                        .duration_since(t)
                        .map(|d| d >= interval)
                        .unwrap_or(false),
                })
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in due {
            self.pending.remove(&key);
            out.extend(self.emit(&key, now, counters));
        }
        out
    }

    /// The use record of an edge.
    fn emit(
        &mut self,
        key: &EdgeKey,
        now: SystemTime,
        counters: &CorrelateCounters,
    ) -> Option<Record> {
        let (shared_by, namespaces, cred_attrs, is_static) =
            match self.credentials.peek(&key.fingerprint) {
                Some(info) => (
                    info.workloads.len().max(1),
                    info.namespaces.len(),
                    info.attrs.clone(),
                    info.lifetime_static,
                ),
                None => (1, 0, Vec::new(), false),
            };
        let edge = self.edges.peek_mut(key)?;
        if !edge.changed {
            return None;
        }
        edge.changed = false;
        edge.emitted_at = Some(now);
        let mut r = Record::new(names::CREDENTIAL_USE, edge.last_seen);
        if is_static {
            r.severity = Severity::Warn;
        }
        r.attrs.extend(edge.who.iter().cloned());
        r.set("keytrail.credential.fingerprint", key.fingerprint.clone());
        r.attrs.extend(cred_attrs);
        r.set("keytrail.evidence", edge.evidence.as_str())
            .set("server.address", key.address.clone())
            .set("server.port", u64::from(key.port))
            .set_opt("network.peer.address", edge.peer.clone())
            .set("keytrail.use.count", edge.count)
            .set("keytrail.use.first_seen", rfc3339(edge.first_seen))
            .set("keytrail.use.last_seen", rfc3339(edge.last_seen))
            .set("keytrail.credential.shared_by", shared_by as u64);
        if namespaces > 1 {
            // The same secret in two namespaces crosses an isolation boundary (OWASP NHI8).
            r.set("keytrail.credential.cross_namespace", true);
        }
        if !r.attrs.iter().any(|(k, _)| k == "keytrail.workload.kind") {
            // A seeded edge seen again only through a credential attribute: name its workload.
            let (kind, name) = key
                .workload
                .split_once('/')
                .unwrap_or(("process", &key.workload));
            r.set("keytrail.workload.kind", kind.to_string())
                .set("keytrail.workload.name", name.to_string());
        }
        counters.emitted.fetch_add(1, Ordering::Relaxed);
        Some(r)
    }
}

/// Adds a held credential, replacing an older entry for the same fingerprint and process.
fn remember(list: &mut Vec<Held>, held: Held) {
    list.retain(|h| !(h.fingerprint == held.fingerprint && h.pid == held.pid));
    if list.len() >= MAX_HELD {
        list.remove(0);
    }
    list.push(held);
}

#[cfg(test)]
mod tests;
