//! Environment variables -> `keytrail.credential.access` records.
//!
//! At exec: the kernel sends each secret-like `NAME=value` of an execve's environment before
//! the exec completes; they wait here, per process, until `sched_process_exec` says the exec
//! happened and which program now runs, then the set is classified as one environment (so
//! AWS key id and secret pair up) and reported as `source=env`, one record per credential.
//! Variables that name credential files are handed back so their paths are watched for that
//! workload. At getenv: the kernel sends a name once per process; the value is the one the
//! process got at exec (kept as its classification, never as the value), else read from
//! /proc/PID/environ.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use keytrail_common::{EnvSource, EnvVar, ProcExec, env_match, env_name_hash, event_flags};

use crate::{
    credential::{Classifier, Credential, Kind},
    dedup::RecentSet,
    files::{CgroupFilter, FirstSeen, Opener, set_credential, set_process},
    record::{Record, names},
};

/// Processes with an exec waiting for its outcome, at most (exits are lost only when the ring
/// buffer overflows).
const MAX_PENDING: usize = 16_384;
/// Variables kept per pending exec (the kernel walks 256 entries).
const MAX_VARS: usize = 256;
/// Distinct environments whose classification is kept: the processes of one workload start
/// with the same secrets again and again, and classifying them (parsing, HMAC) is the agent's
/// largest cost per exec.
const MAX_CACHED_ENVIRONMENTS: usize = 4096;

/// Counters of this stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct EnvCounters {
    /// Exec variables that were not well-formed (skipped).
    pub malformed: AtomicU64,
    /// Repeats of the same (workload, program, credential) within the dedup window.
    pub deduplicated: AtomicU64,
    /// getenv of a set variable that holds no credential (a path, a flag): not reported.
    pub not_credentials: AtomicU64,
}

/// A path a workload's environment names as a credential file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    pub cgroup_id: u64,
    pub path: String,
    pub env_name: String,
}

/// Records to send and paths to watch, from one exec.
#[derive(Debug, Default)]
pub struct ExecOutcome {
    pub records: Vec<Record>,
    pub named_files: Vec<NamedFile>,
    /// The process's `HOME`, when the kernel sent it (a home it had not seen yet).
    pub home: Option<String>,
}

struct PendingExec {
    exec_id: u64,
    vars: Vec<(String, String)>,
    /// Variables whose value the kernel cut at its capture size: classified by the prefix.
    truncated: Vec<String>,
    home: Option<String>,
}

/// Dedup key of exec records: cgroup, program, credential fingerprint.
type ExecKey = (u64, Option<String>, String);

pub struct EnvAccess {
    classifier: Classifier,
    cgroups: CgroupFilter,
    pending: HashMap<u32, PendingExec>,
    /// What each process got at its last exec, for its getenv calls: the credentials, and the
    /// names of every variable the kernel passed (credentials or not).
    held: HashMap<u32, Vec<Credential>>,
    exec_names: HashMap<u32, Vec<String>>,
    /// getenv de-duplication keys the kernel holds per process, to drop at exit.
    getenv_keys: HashMap<u32, Vec<u64>>,
    recent: RecentSet<ExecKey>,
    /// Keyed hash of an environment's captured variables -> its credentials. The key is a
    /// SipHash with this process's random keys: it identifies values only inside this run.
    classified: HashMap<u64, Vec<Credential>>,
    hasher: std::collections::hash_map::RandomState,
}

impl EnvAccess {
    pub fn new(classifier: Classifier, cgroups: CgroupFilter, dedup_window: Duration) -> Self {
        Self {
            classifier,
            cgroups,
            pending: HashMap::new(),
            held: HashMap::new(),
            exec_names: HashMap::new(),
            getenv_keys: HashMap::new(),
            recent: RecentSet::new(dedup_window),
            classified: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Keeps an exec variable until its exec's outcome.
    pub fn on_exec_var(&mut self, ev: &EnvVar, counters: &EnvCounters) {
        let Some((name, value, truncated)) = split_var(ev) else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let pid = ev.header.pid;
        if !self.pending.contains_key(&pid) && self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        let entry = self.pending.entry(pid).or_insert(PendingExec {
            exec_id: ev.exec_id,
            vars: Vec::new(),
            truncated: Vec::new(),
            home: None,
        });
        // A new execve of the same process (the last one failed, or a retry along PATH).
        if entry.exec_id != ev.exec_id {
            entry.exec_id = ev.exec_id;
            entry.vars.clear();
            entry.truncated.clear();
            entry.home = None;
        }
        // HOME is no credential: it names a home directory to watch.
        if ev.matched == env_match::NAME_HOME {
            // A cut home is no home the agent can watch.
            if !truncated {
                entry.home = Some(value);
            }
        } else if entry.vars.len() < MAX_VARS {
            if truncated {
                entry.truncated.push(name.clone());
            }
            entry.vars.push((name, value));
        }
    }

    /// The exec completed: classify what it carried.
    pub fn on_exec(
        &mut self,
        ev: &ProcExec,
        who: &Opener<'_>,
        time: SystemTime,
        first_seen: &mut FirstSeen,
        counters: &EnvCounters,
    ) -> ExecOutcome {
        let pid = ev.header.pid;
        self.held.remove(&pid);
        self.exec_names.remove(&pid);
        let Some(pending) = self.pending.remove(&pid) else {
            return ExecOutcome::default();
        };
        if !self.cgroups.allows(who.cgroup_path) {
            return ExecOutcome::default();
        }
        let mut out = ExecOutcome {
            home: pending.home.filter(|h| !h.is_empty()),
            ..ExecOutcome::default()
        };
        let rules = self.classifier.env_names();
        for (name, value) in &pending.vars {
            if !rules.names_file(name) {
                continue;
            }
            // KUBECONFIG is a list, like PATH.
            let paths: Vec<&str> = if name.eq_ignore_ascii_case("KUBECONFIG") {
                value.split(':').collect()
            } else {
                vec![value.as_str()]
            };
            for path in paths.into_iter().filter(|p| p.starts_with('/')) {
                out.named_files.push(NamedFile {
                    cgroup_id: ev.header.cgroup_id,
                    path: path.to_string(),
                    env_name: name.clone(),
                });
            }
        }
        let now = SystemTime::now();
        let creds = self.classify_cached(&pending.vars, now);
        let mut base = Record::new(names::CREDENTIAL_ACCESS, time);
        base.set("keytrail.credential.source", "env");
        set_process(&mut base, &ev.header, who);
        for c in &creds {
            let key = (
                ev.header.cgroup_id,
                who.proc.exe.clone(),
                c.fingerprint.clone(),
            );
            if self.recent.is_repeat(key) {
                counters.deduplicated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut r = base.clone();
            let age = first_seen.age(&c.fingerprint, now);
            set_credential(&mut r, c, Some(age));
            if env_var(c).is_some_and(|n| pending.truncated.iter().any(|t| t == n)) {
                // Classified and fingerprinted by the part the kernel captured.
                r.set("keytrail.credential.value_truncated", true);
            }
            out.records.push(r);
        }
        if !creds.is_empty() {
            self.held.insert(pid, creds);
        }
        self.exec_names
            .insert(pid, pending.vars.into_iter().map(|(n, _)| n).collect());
        out
    }

    /// The credentials of an exec's captured variables, classified once per distinct set.
    fn classify_cached(&mut self, vars: &[(String, String)], now: SystemTime) -> Vec<Credential> {
        use std::hash::BuildHasher as _;
        let key = self.hasher.hash_one(vars);
        if let Some(creds) = self.classified.get(&key) {
            return creds.clone();
        }
        let creds = self
            .classifier
            .classify_env(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())), now);
        if self.classified.len() >= MAX_CACHED_ENVIRONMENTS {
            self.classified.clear();
        }
        self.classified.insert(key, creds.clone());
        creds
    }

    /// A process read a secret-like variable with getenv (the kernel sends each name once per
    /// process). Reported when the variable holds a credential, or is not set at all (the
    /// program looks for a secret under that name); a set variable that holds no credential
    /// (a path, a flag) is not.
    pub fn on_getenv(
        &mut self,
        ev: &EnvVar,
        who: &Opener<'_>,
        time: SystemTime,
        first_seen: &mut FirstSeen,
        counters: &EnvCounters,
    ) -> Vec<Record> {
        let Some(name) = getenv_name(ev) else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        };
        let pid = ev.header.pid;
        self.getenv_keys
            .entry(pid)
            .or_default()
            .push(((pid as u64) << 32) | env_name_hash(name.as_bytes()) as u64);
        if !self.cgroups.allows(who.cgroup_path) {
            return Vec::new();
        }
        let now = SystemTime::now();
        let mut r = Record::new(names::CREDENTIAL_ACCESS, time);
        r.set("keytrail.credential.source", "getenv");
        set_process(&mut r, &ev.header, who);
        let held = self.held.get(&pid).and_then(|creds| find(creds, &name));
        let captured = self
            .exec_names
            .get(&pid)
            .is_some_and(|names| names.iter().any(|n| n.eq_ignore_ascii_case(&name)));
        let found = match held {
            Some(c) => Some(c.clone()),
            None if captured => {
                counters.not_credentials.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
            None => {
                let (creds, present) = self.read_environ(pid, &name, now);
                match find(&creds, &name) {
                    Some(c) => Some(c.clone()),
                    None if present => {
                        counters.not_credentials.fetch_add(1, Ordering::Relaxed);
                        return Vec::new();
                    }
                    None => None,
                }
            }
        };
        match found {
            Some(c) => {
                let age = first_seen.age(&c.fingerprint, now);
                set_credential(&mut r, &c, Some(age));
                // A paired credential (AWS key id + secret) is located at its secret.
                r.set("keytrail.credential.env_var", name);
            }
            None => {
                r.set("keytrail.credential.kind", "unknown")
                    .set("keytrail.credential.lifetime", "unknown")
                    .set("keytrail.credential.env_var", name)
                    .set(
                        "keytrail.credential.unrecognised",
                        "no credential under this name in the environment the process started \
                         with (unset, set at run time, or not a credential)",
                    );
            }
        }
        vec![r]
    }

    /// Classifies a live process's initial environment (for processes exec'd before the
    /// agent started), and says whether `name` is set in it.
    fn read_environ(&self, pid: u32, name: &str, now: SystemTime) -> (Vec<Credential>, bool) {
        let Ok(bytes) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return (Vec::new(), false);
        };
        let text = String::from_utf8_lossy(&bytes);
        let vars: Vec<(&str, &str)> = text
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        let present = vars.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        (self.classifier.classify_env(vars, now), present)
    }

    /// Forgets a process; returns the kernel's getenv keys to drop.
    pub fn on_exit(&mut self, pid: u32) -> Vec<u64> {
        self.pending.remove(&pid);
        self.held.remove(&pid);
        self.exec_names.remove(&pid);
        self.getenv_keys.remove(&pid).unwrap_or_default()
    }
}

/// The variable a credential was found in (`env NAME`).
fn env_var(c: &Credential) -> Option<&str> {
    c.location.as_deref()?.strip_prefix("env ")
}

/// The credential a variable holds: by its location, or the AWS pair for its key id.
fn find<'a>(creds: &'a [Credential], name: &str) -> Option<&'a Credential> {
    creds
        .iter()
        .find(|c| env_var(c).is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .or_else(|| {
            name.eq_ignore_ascii_case("AWS_ACCESS_KEY_ID")
                .then(|| {
                    creds.iter().find(|c| {
                        matches!(c.kind, Kind::AwsAccessKey | Kind::AwsSessionCredentials)
                    })
                })
                .flatten()
        })
}

/// `NAME=value` of an exec variable and whether the kernel cut the value, or None when
/// malformed. A cut value is kept as far as it goes: its start is enough to classify it.
fn split_var(ev: &EnvVar) -> Option<(String, String, bool)> {
    if ev.source != EnvSource::Exec as u32 {
        return None;
    }
    let len = (ev.len as usize).min(ev.data.len());
    let name_len = if ev.matched & env_match::LONG_NAME != 0 {
        // Longer than the kernel scanned: it ends at the first '='.
        ev.data[..len].iter().position(|&b| b == b'=')?
    } else {
        ev.name_len as usize
    };
    if name_len == 0 || name_len >= len || ev.data[name_len] != b'=' {
        return None;
    }
    let name = std::str::from_utf8(&ev.data[..name_len]).ok()?;
    let value = String::from_utf8_lossy(&ev.data[name_len + 1..len]).into_owned();
    let truncated = ev.header.flags & event_flags::TRUNCATED != 0;
    Some((name.to_string(), value, truncated))
}

/// The name passed to getenv, or None when malformed.
fn getenv_name(ev: &EnvVar) -> Option<String> {
    let len = (ev.name_len as usize).min(ev.data.len());
    let name = std::str::from_utf8(&ev.data[..len]).ok()?;
    (!name.is_empty() && !name.contains(['=', '\0'])).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytrail_common::{ENV_CAP, ENV_NAME_MAX, EventHeader, EventKind};

    fn var(source: EnvSource, data: &[u8], name_len: usize) -> Box<EnvVar> {
        let mut ev = Box::new(EnvVar {
            header: EventHeader {
                kind: EventKind::EnvVar as u32,
                flags: 0,
                time_ns: 0,
                pid: 1,
                tid: 1,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                comm: [0; 16],
            },
            exec_id: 1,
            source: source as u32,
            matched: 0,
            name_len: name_len as u32,
            len: data.len() as u32,
            data: [0; ENV_CAP],
        });
        ev.data[..data.len()].copy_from_slice(data);
        ev
    }

    #[test]
    fn splits_well_formed_variables_only() {
        let ok = var(EnvSource::Exec, b"GITHUB_TOKEN=x=y", 12);
        assert_eq!(
            split_var(&ok),
            Some(("GITHUB_TOKEN".into(), "x=y".into(), false))
        );
        let long_name = format!("{}_API_TOKEN", "DEPLOY".repeat(12));
        let mut long = var(
            EnvSource::Exec,
            format!("{long_name}=v=w").as_bytes(),
            ENV_NAME_MAX,
        );
        long.matched = env_match::LONG_NAME | env_match::BY_WORDS;
        assert_eq!(split_var(&long), Some((long_name, "v=w".into(), false)));
        long.data[..long.len as usize].fill(b'A');
        assert_eq!(split_var(&long), None, "no '=' at all");
        let mut cut = var(EnvSource::Exec, b"GITHUB_TOKEN=ghp_abc", 12);
        cut.header.flags |= event_flags::TRUNCATED;
        assert_eq!(
            split_var(&cut),
            Some(("GITHUB_TOKEN".into(), "ghp_abc".into(), true)),
            "a cut value is kept as far as it goes"
        );
        for (data, name_len) in [
            (&b"GITHUB_TOKEN"[..], 12),
            (b"=value", 0),
            (b"AB=c", 1),
            (b"AB=c", 400),
        ] {
            assert_eq!(split_var(&var(EnvSource::Exec, data, name_len)), None);
        }
        assert_eq!(split_var(&var(EnvSource::Getenv, b"A=b", 1)), None);
        let mut huge = var(EnvSource::Exec, b"K=v", 1);
        huge.len = u32::MAX;
        assert!(split_var(&huge).is_some());
    }

    #[test]
    fn getenv_names() {
        assert_eq!(
            getenv_name(&var(EnvSource::Getenv, b"API_KEY", 7)).as_deref(),
            Some("API_KEY")
        );
        assert_eq!(getenv_name(&var(EnvSource::Getenv, b"", 0)), None);
        assert_eq!(getenv_name(&var(EnvSource::Getenv, b"A=B", 3)), None);
        let mut big = var(EnvSource::Getenv, b"X", 1);
        big.name_len = u32::MAX;
        assert_eq!(getenv_name(&big), None, "NUL padding is not part of a name");
    }
}
