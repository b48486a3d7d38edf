//! The local credential inventory: a SQLite database (the agent's state file, WAL mode) of
//! credentials, workloads, which workloads held which credential, and uses (workload,
//! credential, destination). Written from access and use records by its own blocking task;
//! read back at start to seed the correlator (so counts continue across restarts) and by
//! `keytrail report`.
//!
//! Never stores a secret value: only what the records carry (fingerprint, kind, id ...).
//!
//! Every write is an upsert keyed like the table's primary key, so applying the same records
//! twice, or again after a restart, never adds rows: first seen keeps the minimum, last seen
//! the maximum, use counts (absolute in the records) the maximum and evidence the strongest.
//! Times are stored as unix milliseconds.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Transaction, params};
use tokio::sync::mpsc;

use crate::record::{Record, Value, names};

/// Version of the schema below, stored in `meta`.
const SCHEMA_VERSION: i64 = 1;
/// How long a statement waits for another connection's lock (the report reading while the
/// agent writes, or two agents on one file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Records written in one transaction, at most.
const BATCH: usize = 4096;
/// Pause before each transaction, so records arriving meanwhile join it.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// How often rows past the retention are deleted while the agent runs.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    fingerprint TEXT PRIMARY KEY,
    kind TEXT,
    lifetime TEXT,
    id TEXT,
    expires_at INTEGER,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    accesses INTEGER NOT NULL DEFAULT 0,
    age_s INTEGER
);
CREATE TABLE IF NOT EXISTS workloads (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    namespace TEXT,
    pod TEXT,
    container_id TEXT,
    owner TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS holders (
    fingerprint TEXT NOT NULL,
    workload TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    accesses INTEGER NOT NULL DEFAULT 0,
    sources TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (fingerprint, workload)
);
CREATE TABLE IF NOT EXISTS uses (
    workload TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    server_address TEXT NOT NULL,
    server_port INTEGER NOT NULL,
    evidence TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (workload, fingerprint, server_address, server_port)
);
CREATE INDEX IF NOT EXISTS uses_last_seen ON uses (last_seen);
CREATE INDEX IF NOT EXISTS uses_fingerprint ON uses (fingerprint);
";

const UPSERT_CREDENTIAL: &str = "
INSERT INTO credentials
    (fingerprint, kind, lifetime, id, expires_at, first_seen, last_seen, accesses, age_s)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (fingerprint) DO UPDATE SET
    kind = COALESCE(excluded.kind, kind),
    lifetime = COALESCE(excluded.lifetime, lifetime),
    id = COALESCE(excluded.id, id),
    expires_at = COALESCE(excluded.expires_at, expires_at),
    first_seen = MIN(first_seen, excluded.first_seen),
    last_seen = MAX(last_seen, excluded.last_seen),
    accesses = accesses + excluded.accesses,
    age_s = MAX(COALESCE(age_s, excluded.age_s), COALESCE(excluded.age_s, age_s))
";

const UPSERT_WORKLOAD: &str = "
INSERT INTO workloads
    (key, kind, name, namespace, pod, container_id, owner, first_seen, last_seen)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (key) DO UPDATE SET
    namespace = COALESCE(excluded.namespace, namespace),
    pod = COALESCE(excluded.pod, pod),
    container_id = COALESCE(excluded.container_id, container_id),
    owner = COALESCE(excluded.owner, owner),
    first_seen = MIN(first_seen, excluded.first_seen),
    last_seen = MAX(last_seen, excluded.last_seen)
";

/// `sources` is a comma list of distinct sources; a use adds none (empty).
const UPSERT_HOLDER: &str = "
INSERT INTO holders (fingerprint, workload, first_seen, last_seen, accesses, sources)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (fingerprint, workload) DO UPDATE SET
    first_seen = MIN(first_seen, excluded.first_seen),
    last_seen = MAX(last_seen, excluded.last_seen),
    accesses = accesses + excluded.accesses,
    sources = CASE
        WHEN excluded.sources = ''
            OR instr(',' || sources || ',', ',' || excluded.sources || ',') > 0 THEN sources
        WHEN sources = '' THEN excluded.sources
        ELSE sources || ',' || excluded.sources
    END
";

/// Counts in use records are cumulative, so the larger one is the newer.
const UPSERT_USE: &str = "
INSERT INTO uses
    (workload, fingerprint, server_address, server_port, evidence, count, first_seen, last_seen)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (workload, fingerprint, server_address, server_port) DO UPDATE SET
    evidence = CASE
        WHEN (CASE excluded.evidence WHEN 'wire' THEN 3 WHEN 'process' THEN 2
                  WHEN 'workload' THEN 1 ELSE 0 END)
           > (CASE evidence WHEN 'wire' THEN 3 WHEN 'process' THEN 2
                  WHEN 'workload' THEN 1 ELSE 0 END)
        THEN excluded.evidence
        ELSE evidence
    END,
    count = MAX(count, excluded.count),
    first_seen = MIN(first_seen, excluded.first_seen),
    last_seen = MAX(last_seen, excluded.last_seen)
";

/// The underlying error, when there is one, is the [`std::error::Error::source`] (printed after
/// the message by the binary), not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory {path}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "cannot create the inventory {path} (create its directory, mode 0700, or pass another \
         --state)"
    )]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no inventory at {path}: run `keytrail agent --state {path}` first, or pass the agent's \
         --state"
    )]
    Missing { path: String },
    #[error("{path} is not a keytrail inventory: pass the agent's --state file")]
    NotAnInventory { path: String },
    #[error(
        "inventory {path} has schema version {found}, newer than this keytrail's ({supported}): \
         use a newer keytrail, or pass another --state"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("inventory {path}: the writer thread stopped unexpectedly")]
    Writer { path: String },
}

/// A use edge as stored, to seed the correlator.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUse {
    /// `keytrail.workload.kind` + `/` + `keytrail.workload.name`.
    pub workload: String,
    pub fingerprint: String,
    pub server_address: String,
    pub server_port: u16,
    /// `wire`, `process` or `workload`.
    pub evidence: String,
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

/// A workload seen holding a credential, to seed the correlator's shared_by.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHolder {
    pub fingerprint: String,
    pub workload: String,
    /// `k8s.namespace.name` of the workload, when known.
    pub namespace: Option<String>,
}

/// One credential with everything the inventory knows of its holders and uses (for the
/// report). Lists are distinct and sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialSummary {
    pub fingerprint: String,
    pub kind: Option<String>,
    /// `static`, `short_lived` or `unknown`.
    pub lifetime: Option<String>,
    pub id: Option<String>,
    pub expires_at: Option<SystemTime>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// Access records seen.
    pub accesses: u64,
    /// The largest `keytrail.credential.age_s` recorded.
    pub age_s: Option<u64>,
    /// Owners (`keytrail.owner`) of its workloads.
    pub owners: Vec<String>,
    /// Workloads that held or used it.
    pub workloads: Vec<String>,
    /// `address:port` of its uses (`[v6]:port` for IPv6 addresses).
    pub destinations: Vec<String>,
    /// Strongest evidence of its uses; None when it was never seen going anywhere.
    pub evidence: Option<String>,
    /// Sum of the counts of its uses.
    pub uses: u64,
    /// Namespaces of its workloads.
    pub namespaces: Vec<String>,
}

pub struct Inventory {
    conn: rusqlite::Connection,
    path: String,
    /// Malformed records skipped since open.
    skipped: u64,
}

impl Inventory {
    /// Deletes the rows (uses, holders, credentials, workloads) last seen before `cutoff`;
    /// returns how many.
    pub fn prune(&mut self, cutoff: SystemTime) -> Result<u64, InventoryError> {
        let ms = to_ms(cutoff);
        let tx = self.conn.transaction().map_err(|e| sqlite(&self.path, e))?;
        let mut deleted = 0;
        for table in ["uses", "holders", "credentials", "workloads"] {
            let n = tx
                .execute(&format!("DELETE FROM {table} WHERE last_seen < ?1"), [ms])
                .map_err(|e| sqlite(&self.path, e))?;
            deleted += n as u64;
        }
        tx.commit().map_err(|e| sqlite(&self.path, e))?;
        Ok(deleted)
    }

    /// [`Inventory::prune`] of what was not seen within `retention` (zero: nothing), logged.
    pub fn prune_logged(&mut self, retention: Duration) {
        if retention.is_zero() {
            return;
        }
        let Some(cutoff) = SystemTime::now().checked_sub(retention) else {
            return;
        };
        match self.prune(cutoff) {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                state = %self.path,
                rows,
                retention = %humantime::format_duration(retention),
                "inventory rows past their retention deleted"
            ),
            Err(e) => tracing::warn!(state = %self.path, error = %e, "cannot prune the inventory"),
        }
    }

    /// Opens (creating it and its directory, mode 0700, if needed) the inventory in WAL mode.
    pub fn open(path: &Path) -> Result<Self, InventoryError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| InventoryError::Create {
                    path: shown.clone(),
                    source,
                })?;
        }
        if !path.exists() {
            // Created owner-only; SQLite gives its -wal and -shm files the same mode.
            use std::os::unix::fs::OpenOptionsExt as _;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(InventoryError::Create {
                        path: shown,
                        source,
                    });
                }
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite(&shown, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite(&shown, e))?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0))
            .map_err(|e| classify(&shown, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| sqlite(&shown, e))?;
        let tx = conn.transaction().map_err(|e| sqlite(&shown, e))?;
        // Another program's database is left alone.
        let (tables, meta): (i64, i64) = tx
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE name = 'meta')
                 FROM sqlite_master WHERE type = 'table'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| classify(&shown, e))?;
        if tables > 0 && meta == 0 {
            return Err(InventoryError::NotAnInventory { path: shown });
        }
        tx.execute_batch(SCHEMA).map_err(|e| classify(&shown, e))?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION.to_string()],
        )
        .map_err(|e| sqlite(&shown, e))?;
        tx.commit().map_err(|e| sqlite(&shown, e))?;
        check_version(&conn, &shown)?;
        Ok(Self {
            conn,
            path: shown,
            skipped: 0,
        })
    }

    /// Opens an existing inventory for reading only (`keytrail report`); never creates one.
    pub fn open_read_only(path: &Path) -> Result<Self, InventoryError> {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(InventoryError::Missing { path: shown });
        }
        if path.is_dir() {
            return Err(InventoryError::NotAnInventory { path: shown });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite(&shown, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite(&shown, e))?;
        check_version(&conn, &shown)?;
        Ok(Self {
            conn,
            path: shown,
            skipped: 0,
        })
    }

    /// The file, as shown in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Malformed records (missing or mistyped attributes) skipped since open.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Stored uses and holders, most recent first, at most `limit` uses.
    pub fn load(
        &self,
        limit: usize,
    ) -> Result<(Vec<StoredUse>, Vec<StoredHolder>), InventoryError> {
        self.load_inner(limit).map_err(|e| sqlite(&self.path, e))
    }

    fn load_inner(&self, limit: usize) -> rusqlite::Result<(Vec<StoredUse>, Vec<StoredHolder>)> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(
            "SELECT workload, fingerprint, server_address, server_port, evidence, count,
                    first_seen, last_seen
             FROM uses ORDER BY last_seen DESC, rowid DESC LIMIT ?1",
        )?;
        let uses = stmt
            .query_map([limit], |row| {
                Ok(StoredUse {
                    workload: row.get(0)?,
                    fingerprint: row.get(1)?,
                    server_address: row.get(2)?,
                    server_port: u16::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    evidence: row.get(4)?,
                    count: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
                    first_seen: from_ms(row.get(6)?),
                    last_seen: from_ms(row.get(7)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT h.fingerprint, h.workload, w.namespace
             FROM holders h LEFT JOIN workloads w ON w.key = h.workload
             ORDER BY h.last_seen DESC, h.rowid DESC",
        )?;
        let holders = stmt
            .query_map([], |row| {
                Ok(StoredHolder {
                    fingerprint: row.get(0)?,
                    workload: row.get(1)?,
                    namespace: row.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((uses, holders))
    }

    /// Every credential with its holders and uses folded in, in no particular order.
    pub fn credentials(&self) -> Result<Vec<CredentialSummary>, InventoryError> {
        self.credentials_inner().map_err(|e| sqlite(&self.path, e))
    }

    fn credentials_inner(&self) -> rusqlite::Result<Vec<CredentialSummary>> {
        #[derive(Default)]
        struct Fold {
            owners: BTreeSet<String>,
            workloads: BTreeSet<String>,
            destinations: BTreeSet<String>,
            namespaces: BTreeSet<String>,
            evidence: Option<String>,
            uses: u64,
        }
        impl Fold {
            fn workload(&mut self, key: String, owner: Option<String>, namespace: Option<String>) {
                self.workloads.insert(key);
                self.owners.extend(owner.filter(|o| !o.is_empty()));
                self.namespaces.extend(namespace.filter(|n| !n.is_empty()));
            }
        }

        let mut folds: HashMap<String, Fold> = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT h.fingerprint, h.workload, w.owner, w.namespace
             FROM holders h LEFT JOIN workloads w ON w.key = h.workload",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            folds
                .entry(row.get(0)?)
                .or_default()
                .workload(row.get(1)?, row.get(2)?, row.get(3)?);
        }
        let mut stmt = self.conn.prepare(
            "SELECT u.fingerprint, u.workload, w.owner, w.namespace, u.server_address,
                    u.server_port, u.evidence, u.count
             FROM uses u LEFT JOIN workloads w ON w.key = u.workload",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let fold = folds.entry(row.get(0)?).or_default();
            fold.workload(row.get(1)?, row.get(2)?, row.get(3)?);
            let address: String = row.get(4)?;
            let port: i64 = row.get(5)?;
            fold.destinations.insert(if address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            });
            let evidence: String = row.get(6)?;
            if rank(&evidence) > fold.evidence.as_deref().map_or(-1, rank) {
                fold.evidence = Some(evidence);
            }
            let count = u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0);
            fold.uses = fold.uses.saturating_add(count);
        }

        let mut stmt = self.conn.prepare(
            "SELECT fingerprint, kind, lifetime, id, expires_at, first_seen, last_seen, accesses,
                    age_s
             FROM credentials",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let fingerprint: String = row.get(0)?;
            let fold = folds.remove(&fingerprint).unwrap_or_default();
            out.push(CredentialSummary {
                fingerprint,
                kind: row.get(1)?,
                lifetime: row.get(2)?,
                id: row.get(3)?,
                expires_at: row.get::<_, Option<i64>>(4)?.map(from_ms),
                first_seen: from_ms(row.get(5)?),
                last_seen: from_ms(row.get(6)?),
                accesses: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
                age_s: row
                    .get::<_, Option<i64>>(8)?
                    .and_then(|a| u64::try_from(a).ok()),
                owners: fold.owners.into_iter().collect(),
                workloads: fold.workloads.into_iter().collect(),
                destinations: fold.destinations.into_iter().collect(),
                evidence: fold.evidence,
                uses: fold.uses,
                namespaces: fold.namespaces.into_iter().collect(),
            });
        }
        Ok(out)
    }

    /// Applies a batch of records in one transaction: access records update credentials,
    /// workloads and holders; use records upsert uses (counts are absolute: the larger wins).
    pub fn apply(&mut self, records: &[Arc<Record>]) -> Result<(), InventoryError> {
        let mut skipped = 0;
        let result = self
            .conn
            .transaction()
            .and_then(|tx| apply_all(&tx, records, &mut skipped).and_then(|()| tx.commit()));
        self.skipped += skipped;
        result.map_err(|e| sqlite(&self.path, e))
    }
}

/// Writes records until every sender is gone, batching whatever is queued into one
/// transaction, and deletes rows not seen within `retention` (zero: never) at start and every
/// [`PRUNE_INTERVAL`]. Runs on a blocking thread.
pub async fn run(
    inventory: Inventory,
    rx: mpsc::Receiver<Arc<Record>>,
    retention: Duration,
) -> Result<(), InventoryError> {
    let path = inventory.path.clone();
    tokio::task::spawn_blocking(move || write_loop(inventory, rx, retention))
        .await
        .map_err(|_| InventoryError::Writer { path })
}

fn write_loop(mut inventory: Inventory, mut rx: mpsc::Receiver<Arc<Record>>, retention: Duration) {
    let mut warned = false;
    let mut lost: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    // Pruned at open (before the agent loads the inventory), then every interval.
    let mut pruned_at = std::time::Instant::now();
    loop {
        if !retention.is_zero() && pruned_at.elapsed() >= PRUNE_INTERVAL {
            pruned_at = std::time::Instant::now();
            inventory.prune_logged(retention);
        }
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        // Let a busy stream gather for a moment: one transaction per interval, not per record.
        std::thread::sleep(COMMIT_INTERVAL);
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if let Err(e) = inventory.apply(&batch) {
            lost += batch.len() as u64;
            if !warned {
                warned = true;
                let cause = match &e {
                    InventoryError::Sqlite { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                tracing::warn!(
                    state = %inventory.path,
                    error = %cause,
                    "cannot write the inventory; records are dropped until it works again \
                     (check the disk and the file's permissions)"
                );
            }
        }
        batch.clear();
    }
    if lost > 0 || inventory.skipped > 0 {
        tracing::warn!(
            state = %inventory.path,
            lost,
            malformed = inventory.skipped,
            "records not written to the inventory"
        );
    }
}

fn sqlite(path: &str, source: rusqlite::Error) -> InventoryError {
    InventoryError::Sqlite {
        path: path.to_string(),
        source,
    }
}

/// Like [`sqlite`], but a file that is not a database says so.
fn classify(path: &str, source: rusqlite::Error) -> InventoryError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => InventoryError::NotAnInventory {
            path: path.to_string(),
        },
        _ => sqlite(path, source),
    }
}

/// Refuses a file that is not an inventory, or one from a newer schema.
fn check_version(conn: &Connection, path: &str) -> Result<(), InventoryError> {
    let has_meta = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(|e| classify(path, e))?
        .is_some();
    let version = if has_meta {
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get::<_, String>(0),
        )
        .optional()
        .map_err(|e| sqlite(path, e))?
    } else {
        None
    };
    let Some(found) = version.and_then(|v| v.parse::<i64>().ok()) else {
        return Err(InventoryError::NotAnInventory {
            path: path.to_string(),
        });
    };
    if found > SCHEMA_VERSION {
        return Err(InventoryError::NewerSchema {
            path: path.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Strength of an evidence value (higher is stronger; unknown values are weakest).
fn rank(evidence: &str) -> i32 {
    match evidence {
        "wire" => 3,
        "process" => 2,
        "workload" => 1,
        _ => 0,
    }
}

fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    let t = if ms >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Why a record is not written.
#[derive(Debug, PartialEq)]
enum Skip {
    /// Not for the inventory (another event, or a credential without a fingerprint).
    Ignored,
    /// A missing or mistyped attribute: counted.
    Malformed,
}

fn opt_str<'a>(r: &'a Record, key: &str) -> Result<Option<&'a str>, Skip> {
    match r.get(key) {
        None => Ok(None),
        Some(Value::Str(s)) if s.is_empty() => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(Skip::Malformed),
    }
}

fn req_str<'a>(r: &'a Record, key: &str) -> Result<&'a str, Skip> {
    opt_str(r, key)?.ok_or(Skip::Malformed)
}

fn opt_int(r: &Record, key: &str) -> Result<Option<i64>, Skip> {
    match r.get(key) {
        None => Ok(None),
        Some(Value::Int(i)) => Ok(Some(*i)),
        Some(_) => Err(Skip::Malformed),
    }
}

/// An RFC 3339 attribute, as unix milliseconds.
fn opt_time(r: &Record, key: &str) -> Result<Option<i64>, Skip> {
    match opt_str(r, key)? {
        None => Ok(None),
        Some(s) => humantime::parse_rfc3339_weak(s)
            .map(|t| Some(to_ms(t)))
            .map_err(|_| Skip::Malformed),
    }
}

/// The credential attributes of an access or use record.
struct CredentialRow<'a> {
    fingerprint: &'a str,
    kind: Option<&'a str>,
    lifetime: Option<&'a str>,
    id: Option<&'a str>,
    expires_at: Option<i64>,
    age_s: Option<i64>,
}

/// The workload attributes of an access or use record.
struct WorkloadRow<'a> {
    key: String,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    container_id: Option<&'a str>,
    owner: Option<&'a str>,
}

struct UseRow<'a> {
    address: &'a str,
    port: i64,
    evidence: &'a str,
    count: i64,
    first_seen: i64,
    last_seen: i64,
}

fn credential_row(r: &Record) -> Result<CredentialRow<'_>, Skip> {
    let fingerprint = match r.get("keytrail.credential.fingerprint") {
        None => return Err(Skip::Ignored),
        Some(Value::Str(s)) if !s.is_empty() => s.as_str(),
        Some(_) => return Err(Skip::Malformed),
    };
    Ok(CredentialRow {
        fingerprint,
        kind: opt_str(r, "keytrail.credential.kind")?,
        lifetime: opt_str(r, "keytrail.credential.lifetime")?,
        id: opt_str(r, "keytrail.credential.id")?,
        expires_at: opt_time(r, "keytrail.credential.expires_at")?,
        age_s: opt_int(r, "keytrail.credential.age_s")?.filter(|a| *a >= 0),
    })
}

fn workload_row(r: &Record) -> Result<WorkloadRow<'_>, Skip> {
    let kind = req_str(r, "keytrail.workload.kind")?;
    let name = req_str(r, "keytrail.workload.name")?;
    Ok(WorkloadRow {
        key: format!("{kind}/{name}"),
        kind,
        name,
        namespace: opt_str(r, "k8s.namespace.name")?,
        pod: opt_str(r, "k8s.pod.name")?,
        container_id: opt_str(r, "container.id")?,
        owner: opt_str(r, "keytrail.owner")?,
    })
}

fn use_row(r: &Record) -> Result<UseRow<'_>, Skip> {
    let evidence = req_str(r, "keytrail.evidence")?;
    if rank(evidence) == 0 {
        return Err(Skip::Malformed);
    }
    let port = opt_int(r, "server.port")?.ok_or(Skip::Malformed)?;
    if u16::try_from(port).is_err() {
        return Err(Skip::Malformed);
    }
    let count = opt_int(r, "keytrail.use.count")?.ok_or(Skip::Malformed)?;
    if count < 0 {
        return Err(Skip::Malformed);
    }
    let time = to_ms(r.time);
    let first_seen = opt_time(r, "keytrail.use.first_seen")?.unwrap_or(time);
    let last_seen = opt_time(r, "keytrail.use.last_seen")?.unwrap_or(time);
    Ok(UseRow {
        address: req_str(r, "server.address")?,
        port,
        evidence,
        count,
        first_seen: first_seen.min(last_seen),
        last_seen: last_seen.max(first_seen),
    })
}

/// Applies a batch: rows are merged in memory first (a busy workload reads the same
/// credential many times per batch), then each distinct row is upserted once.
fn apply_all(
    tx: &Transaction<'_>,
    records: &[Arc<Record>],
    skipped: &mut u64,
) -> rusqlite::Result<()> {
    let mut batch = Merged::default();
    for r in records {
        match batch.add(r) {
            Ok(()) | Err(Skip::Ignored) => {}
            Err(Skip::Malformed) => *skipped += 1,
        }
    }
    batch.write(tx)
}

/// A holder row of a batch: first seen, last seen, accesses, distinct sources.
type HolderTimes = (i64, i64, i64, Vec<String>);

/// Rows of one batch, merged by key as the upserts would merge them.
#[derive(Default)]
struct Merged<'a> {
    credentials: HashMap<&'a str, CredentialRow<'a>>,
    /// With first and last seen, and accesses.
    credential_times: HashMap<&'a str, (i64, i64, i64)>,
    workloads: HashMap<String, (WorkloadRow<'a>, i64, i64)>,
    holders: HashMap<(&'a str, String), HolderTimes>,
    uses: HashMap<(String, &'a str, &'a str, i64), UseRow<'a>>,
}

impl<'a> Merged<'a> {
    fn add(&mut self, r: &'a Record) -> Result<(), Skip> {
        let is_access = match r.name {
            names::CREDENTIAL_ACCESS => true,
            names::CREDENTIAL_USE => false,
            _ => return Err(Skip::Ignored),
        };
        let credential = credential_row(r)?;
        let workload = workload_row(r)?;
        let (first_seen, last_seen, accesses, source, used) = if is_access {
            let source = opt_str(r, "keytrail.credential.source")?.unwrap_or("");
            let time = to_ms(r.time);
            (time, time, 1, source.replace(',', "_"), None)
        } else {
            let u = use_row(r)?;
            (u.first_seen, u.last_seen, 0, String::new(), Some(u))
        };
        let fp = credential.fingerprint;
        let times = self
            .credential_times
            .entry(fp)
            .or_insert((first_seen, last_seen, 0));
        *times = (
            times.0.min(first_seen),
            times.1.max(last_seen),
            times.2 + accesses,
        );
        match self.credentials.get_mut(fp) {
            Some(c) => {
                c.kind = credential.kind.or(c.kind);
                c.lifetime = credential.lifetime.or(c.lifetime);
                c.id = credential.id.or(c.id);
                c.expires_at = credential.expires_at.or(c.expires_at);
                c.age_s = c.age_s.max(credential.age_s);
            }
            None => {
                self.credentials.insert(fp, credential);
            }
        }
        let holder = self.holders.entry((fp, workload.key.clone())).or_insert((
            first_seen,
            last_seen,
            0,
            Vec::new(),
        ));
        holder.0 = holder.0.min(first_seen);
        holder.1 = holder.1.max(last_seen);
        holder.2 += accesses;
        if !source.is_empty() && !holder.3.contains(&source) {
            holder.3.push(source);
        }
        if let Some(u) = used {
            let key = (workload.key.clone(), fp, u.address, u.port);
            match self.uses.get_mut(&key) {
                Some(old) => {
                    if rank(u.evidence) > rank(old.evidence) {
                        old.evidence = u.evidence;
                    }
                    old.count = old.count.max(u.count);
                    old.first_seen = old.first_seen.min(u.first_seen);
                    old.last_seen = old.last_seen.max(u.last_seen);
                }
                None => {
                    self.uses.insert(key, u);
                }
            }
        }
        match self.workloads.get_mut(&workload.key) {
            Some((w, first, last)) => {
                *first = (*first).min(first_seen);
                *last = (*last).max(last_seen);
                w.namespace = workload.namespace.or(w.namespace);
                w.pod = workload.pod.or(w.pod);
                w.container_id = workload.container_id.or(w.container_id);
                w.owner = workload.owner.or(w.owner);
            }
            None => {
                self.workloads
                    .insert(workload.key.clone(), (workload, first_seen, last_seen));
            }
        }
        Ok(())
    }

    fn write(self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for (fp, c) in &self.credentials {
            let (first_seen, last_seen, accesses) = self.credential_times[fp];
            tx.prepare_cached(UPSERT_CREDENTIAL)?.execute(params![
                c.fingerprint,
                c.kind,
                c.lifetime,
                c.id,
                c.expires_at,
                first_seen,
                last_seen,
                accesses,
                c.age_s,
            ])?;
        }
        for (w, first_seen, last_seen) in self.workloads.values() {
            tx.prepare_cached(UPSERT_WORKLOAD)?.execute(params![
                w.key,
                w.kind,
                w.name,
                w.namespace,
                w.pod,
                w.container_id,
                w.owner,
                first_seen,
                last_seen,
            ])?;
        }
        for ((fp, workload), (first_seen, last_seen, accesses, sources)) in &self.holders {
            // One upsert per distinct source (the statement adds one); the accesses once.
            let mut accesses = *accesses;
            let no_source = [String::new()];
            let sources = if sources.is_empty() {
                &no_source[..]
            } else {
                &sources[..]
            };
            for source in sources {
                tx.prepare_cached(UPSERT_HOLDER)?.execute(params![
                    fp, workload, first_seen, last_seen, accesses, source,
                ])?;
                accesses = 0;
            }
        }
        for ((workload, fp, _, _), u) in &self.uses {
            tx.prepare_cached(UPSERT_USE)?.execute(params![
                workload,
                fp,
                u.address,
                u.port,
                u.evidence,
                u.count,
                u.first_seen,
                u.last_seen,
            ])?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FP: &str = "kt1:00000000000000000000000000000001";
    pub(crate) const FP2: &str = "kt1:00000000000000000000000000000002";

    pub(crate) fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn rfc3339(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }

    fn who(r: &mut Record, workload: &str, namespace: Option<&str>, owner: Option<&str>) {
        let (kind, name) = workload.split_once('/').unwrap();
        r.set("process.pid", 10u32)
            .set("process.executable.path", "/usr/bin/client")
            .set("keytrail.workload.kind", kind)
            .set("keytrail.workload.name", name)
            .set_opt("k8s.namespace.name", namespace)
            .set_opt("keytrail.owner", owner);
    }

    /// A `keytrail.credential.access` record.
    pub(crate) fn access(
        time: u64,
        workload: &str,
        fp: &str,
        lifetime: &str,
        source: &str,
        namespace: Option<&str>,
        owner: Option<&str>,
    ) -> Arc<Record> {
        let mut r = Record::new(names::CREDENTIAL_ACCESS, t(time));
        who(&mut r, workload, namespace, owner);
        r.set("keytrail.credential.source", source)
            .set("keytrail.credential.kind", "aws_access_key")
            .set("keytrail.credential.lifetime", lifetime)
            .set("keytrail.credential.fingerprint", fp)
            .set("keytrail.credential.id", "AKIAEXAMPLEEXAMPLE00")
            .set("keytrail.credential.age_s", 30u64)
            .set("file.path", "/home/app/.aws/credentials");
        Arc::new(r)
    }

    /// A `keytrail.credential.use` record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn use_of(
        workload: &str,
        fp: &str,
        address: &str,
        port: u16,
        evidence: &str,
        count: u64,
        first: u64,
        last: u64,
    ) -> Arc<Record> {
        let mut r = Record::new(names::CREDENTIAL_USE, t(last));
        who(&mut r, workload, Some("payments"), None);
        r.set("keytrail.credential.fingerprint", fp)
            .set("keytrail.credential.kind", "aws_access_key")
            .set("keytrail.credential.lifetime", "static")
            .set("keytrail.evidence", evidence)
            .set("server.address", address)
            .set("server.port", u32::from(port))
            .set("keytrail.use.count", count)
            .set("keytrail.use.first_seen", rfc3339(t(first)))
            .set("keytrail.use.last_seen", rfc3339(t(last)))
            .set("keytrail.credential.shared_by", 1u64);
        Arc::new(r)
    }

    fn count(inv: &Inventory, table: &str) -> i64 {
        inv.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn counts(inv: &Inventory) -> [i64; 4] {
        ["credentials", "workloads", "holders", "uses"].map(|t| count(inv, t))
    }

    fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("keytrail.db");
        (dir, path)
    }

    fn sample() -> Vec<Arc<Record>> {
        vec![
            access(
                0,
                "pod/payments/api",
                FP,
                "static",
                "file",
                Some("payments"),
                Some("team-a"),
            ),
            access(
                5,
                "pod/payments/api",
                FP,
                "static",
                "env",
                Some("payments"),
                None,
            ),
            use_of(
                "pod/payments/api",
                FP,
                "sts.example.test",
                443,
                "process",
                3,
                1,
                6,
            ),
        ]
    }

    #[test]
    fn prune_deletes_only_what_was_last_seen_before_the_cutoff() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        // Old: an access and a use of FP by one workload at t(0)..t(6).
        inv.apply(&sample()).unwrap();
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
        // Recent: another credential of another workload at t(1000).
        inv.apply(&[
            access(
                1000,
                "pod/web/front",
                "fp-recent",
                "static",
                "file",
                Some("web"),
                None,
            ),
            use_of(
                "pod/web/front",
                "fp-recent",
                "api.example.test",
                443,
                "wire",
                1,
                1000,
                1000,
            ),
        ])
        .unwrap();
        assert_eq!(counts(&inv), [2, 2, 2, 2]);
        assert_eq!(inv.prune(t(500)).unwrap(), 4);
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
        let left: String = inv
            .conn
            .query_row("SELECT fingerprint FROM credentials", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, "fp-recent");
        // Nothing older than the oldest row: nothing deleted.
        assert_eq!(inv.prune(t(0)).unwrap(), 0);
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
    }

    #[test]
    fn open_leaves_the_mode_of_an_existing_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_dir, path) = temp();
        let state = path.parent().unwrap();
        std::fs::create_dir(state).unwrap();
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o755)).unwrap();
        Inventory::open(&path).unwrap();
        let mode = std::fs::metadata(state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn open_creates_an_owner_only_directory_and_the_schema() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_dir, path) = temp();
        let inv = Inventory::open(&path).unwrap();
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        let version: String = inv
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        let mode: String = inv
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(counts(&inv), [0, 0, 0, 0]);
    }

    #[test]
    fn an_access_upserts_credential_workload_and_holder() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        inv.apply(&sample()[..2]).unwrap();
        assert_eq!(counts(&inv), [1, 1, 1, 0]);
        let (kind, lifetime, id, first, last, accesses, age): (
            String,
            String,
            String,
            i64,
            i64,
            i64,
            i64,
        ) = inv
            .conn
            .query_row(
                "SELECT kind, lifetime, id, first_seen, last_seen, accesses, age_s
                 FROM credentials WHERE fingerprint = ?1",
                [FP],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (kind.as_str(), lifetime.as_str()),
            ("aws_access_key", "static")
        );
        assert_eq!(id, "AKIAEXAMPLEEXAMPLE00");
        assert_eq!((first, last), (to_ms(t(0)), to_ms(t(5))));
        assert_eq!((accesses, age), (2, 30));
        let (ns, owner): (String, String) = inv
            .conn
            .query_row(
                "SELECT namespace, owner FROM workloads WHERE key = 'pod/payments/api'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((ns.as_str(), owner.as_str()), ("payments", "team-a"));
        let (accesses, sources): (i64, String) = inv
            .conn
            .query_row("SELECT accesses, sources FROM holders", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((accesses, sources.as_str()), (2, "file,env"));
    }

    #[test]
    fn a_use_implies_credential_workload_and_holder() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        inv.apply(&[use_of(
            "container/web",
            FP2,
            "db.example.test",
            5432,
            "workload",
            7,
            2,
            9,
        )])
        .unwrap();
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
        let accesses: i64 = inv
            .conn
            .query_row("SELECT accesses FROM credentials", [], |r| r.get(0))
            .unwrap();
        assert_eq!(accesses, 0);
        let (uses, holders) = inv.load(10).unwrap();
        assert_eq!(
            uses,
            vec![StoredUse {
                workload: "container/web".into(),
                fingerprint: FP2.into(),
                server_address: "db.example.test".into(),
                server_port: 5432,
                evidence: "workload".into(),
                count: 7,
                first_seen: t(2),
                last_seen: t(9),
            }]
        );
        assert_eq!(
            holders,
            vec![StoredHolder {
                fingerprint: FP2.into(),
                workload: "container/web".into(),
                namespace: Some("payments".into()),
            }]
        );
    }

    #[test]
    fn applying_the_same_records_again_adds_no_rows() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        inv.apply(&sample()).unwrap();
        let before = counts(&inv);
        assert_eq!(before, [1, 1, 1, 1]);
        inv.apply(&sample()).unwrap();
        assert_eq!(counts(&inv), before);
        let (uses, _) = inv.load(10).unwrap();
        assert_eq!(uses[0].count, 3);
    }

    #[test]
    fn a_restart_continues_the_same_rows() {
        let (_dir, path) = temp();
        {
            let mut inv = Inventory::open(&path).unwrap();
            inv.apply(&sample()).unwrap();
        }
        let mut inv = Inventory::open(&path).unwrap();
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
        inv.apply(&sample()).unwrap();
        inv.apply(&[use_of(
            "pod/payments/api",
            FP,
            "sts.example.test",
            443,
            "process",
            4,
            1,
            8,
        )])
        .unwrap();
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
        let (uses, _) = inv.load(10).unwrap();
        assert_eq!((uses[0].count, uses[0].last_seen), (4, t(8)));
        drop(inv);
        let read = Inventory::open_read_only(&path).unwrap();
        assert_eq!(counts(&read), [1, 1, 1, 1]);
    }

    #[test]
    fn counts_take_the_max_and_times_widen() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        let edge = |count, first, last| {
            use_of(
                "pod/payments/api",
                FP,
                "sts.example.test",
                443,
                "process",
                count,
                first,
                last,
            )
        };
        inv.apply(&[edge(10, 5, 20)]).unwrap();
        // An older record arriving late lowers nothing but first_seen.
        inv.apply(&[edge(4, 1, 8)]).unwrap();
        let (uses, _) = inv.load(10).unwrap();
        assert_eq!(uses[0].count, 10);
        assert_eq!((uses[0].first_seen, uses[0].last_seen), (t(1), t(20)));
        inv.apply(&[edge(12, 5, 25)]).unwrap();
        let (uses, _) = inv.load(10).unwrap();
        assert_eq!((uses[0].count, uses[0].last_seen), (12, t(25)));
    }

    #[test]
    fn evidence_keeps_the_strongest() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        let edge = |evidence| {
            use_of(
                "pod/payments/api",
                FP,
                "sts.example.test",
                443,
                evidence,
                1,
                0,
                1,
            )
        };
        let evidence = |inv: &Inventory| inv.load(1).unwrap().0[0].evidence.clone();
        inv.apply(&[edge("workload")]).unwrap();
        assert_eq!(evidence(&inv), "workload");
        inv.apply(&[edge("process")]).unwrap();
        assert_eq!(evidence(&inv), "process");
        inv.apply(&[edge("wire")]).unwrap();
        assert_eq!(evidence(&inv), "wire");
        inv.apply(&[edge("workload"), edge("process")]).unwrap();
        assert_eq!(evidence(&inv), "wire");
    }

    #[test]
    fn kind_lifetime_and_id_follow_the_latest_known_value() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        let mut bare = Record::new(names::CREDENTIAL_USE, t(3));
        who(&mut bare, "pod/payments/api", None, None);
        bare.set("keytrail.credential.fingerprint", FP)
            .set("keytrail.evidence", "process")
            .set("server.address", "sts.example.test")
            .set("server.port", 443u32)
            .set("keytrail.use.count", 1u64);
        let mut renamed =
            (*access(4, "pod/payments/api", FP, "short_lived", "file", None, None)).clone();
        renamed.attrs.retain(|(k, _)| k != "keytrail.credential.id");
        inv.apply(&[access(
            0,
            "pod/payments/api",
            FP,
            "static",
            "file",
            Some("payments"),
            Some("o"),
        )])
        .unwrap();
        inv.apply(&[Arc::new(bare), Arc::new(renamed)]).unwrap();
        let all = inv.credentials().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].lifetime.as_deref(), Some("short_lived"));
        assert_eq!(all[0].kind.as_deref(), Some("aws_access_key"));
        assert_eq!(all[0].id.as_deref(), Some("AKIAEXAMPLEEXAMPLE00"));
        assert_eq!(all[0].owners, vec!["o".to_string()]);
        assert_eq!(all[0].namespaces, vec!["payments".to_string()]);
        assert_eq!(all[0].accesses, 2);
    }

    #[test]
    fn malformed_records_are_skipped_and_counted() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        let mutate = |r: &Arc<Record>, key: &str, value: Option<Value>| {
            let mut r = (**r).clone();
            r.attrs.retain(|(k, _)| k != key);
            if let Some(v) = value {
                r.attrs.push((key.to_string().into(), v));
            }
            Arc::new(r)
        };
        let a = access(0, "pod/payments/api", FP, "static", "file", None, None);
        let u = use_of(
            "pod/payments/api",
            FP,
            "sts.example.test",
            443,
            "process",
            1,
            0,
            1,
        );
        let bad = vec![
            mutate(&a, "keytrail.workload.name", None),
            mutate(&a, "keytrail.credential.fingerprint", Some(Value::Int(1))),
            mutate(&a, "keytrail.credential.kind", Some(Value::Bool(true))),
            mutate(
                &a,
                "keytrail.credential.expires_at",
                Some(Value::Str("soon".into())),
            ),
            mutate(&u, "server.port", Some(Value::Int(70_000))),
            mutate(&u, "server.port", None),
            mutate(&u, "keytrail.use.count", Some(Value::Str("3".into()))),
            mutate(&u, "keytrail.evidence", Some(Value::Str("rumour".into()))),
            mutate(
                &u,
                "keytrail.use.last_seen",
                Some(Value::Str("yesterday".into())),
            ),
            mutate(&u, "server.address", None),
        ];
        let n = bad.len() as u64;
        let mut batch = bad;
        batch.push(a.clone());
        inv.apply(&batch).unwrap();
        assert_eq!(inv.skipped(), n);
        assert_eq!(counts(&inv), [1, 1, 1, 0]);
    }

    #[test]
    fn other_events_and_records_without_fingerprint_are_ignored() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        let mut stats = Record::new(names::AGENT_STATS, t(0));
        stats.set("keytrail.credential.fingerprint", FP);
        let mut connection = Record::new(names::CONNECTION, t(0));
        who(&mut connection, "pod/payments/api", None, None);
        let mut failed_open = (*access(0, "pod/a", FP, "static", "file", None, None)).clone();
        failed_open
            .attrs
            .retain(|(k, _)| k != "keytrail.credential.fingerprint");
        inv.apply(&[Arc::new(stats), Arc::new(connection), Arc::new(failed_open)])
            .unwrap();
        assert_eq!(inv.skipped(), 0);
        assert_eq!(counts(&inv), [0, 0, 0, 0]);
    }

    #[test]
    fn load_returns_the_most_recent_uses_first_and_every_holder() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        inv.apply(&[
            access(
                0,
                "pod/payments/api",
                FP,
                "static",
                "file",
                Some("payments"),
                None,
            ),
            access(0, "container/worker", FP, "static", "env", None, None),
            use_of(
                "pod/payments/api",
                FP,
                "a.example.test",
                443,
                "wire",
                2,
                0,
                10,
            ),
            use_of(
                "pod/payments/api",
                FP,
                "b.example.test",
                443,
                "process",
                1,
                0,
                30,
            ),
            use_of(
                "container/worker",
                FP2,
                "c.example.test",
                8443,
                "workload",
                5,
                0,
                20,
            ),
        ])
        .unwrap();
        let (uses, holders) = inv.load(2).unwrap();
        let order: Vec<&str> = uses.iter().map(|u| u.server_address.as_str()).collect();
        assert_eq!(order, ["b.example.test", "c.example.test"]);
        assert_eq!(uses[1].server_port, 8443);
        assert_eq!(holders.len(), 3);
        // The worker's namespace came with its use record, after its access.
        assert!(holders.contains(&StoredHolder {
            fingerprint: FP.into(),
            workload: "container/worker".into(),
            namespace: Some("payments".into()),
        }));
        // Loading what was stored and storing it again as use records changes nothing.
        let (all, _) = inv.load(100).unwrap();
        let before = counts(&inv);
        let again: Vec<Arc<Record>> = all
            .iter()
            .map(|u| {
                let (kind, name) = u.workload.split_once('/').unwrap();
                let mut r = Record::new(names::CREDENTIAL_USE, u.last_seen);
                r.set("keytrail.workload.kind", kind)
                    .set("keytrail.workload.name", name)
                    .set("keytrail.credential.fingerprint", u.fingerprint.clone())
                    .set("keytrail.evidence", u.evidence.clone())
                    .set("server.address", u.server_address.clone())
                    .set("server.port", u32::from(u.server_port))
                    .set("keytrail.use.count", u.count)
                    .set("keytrail.use.first_seen", rfc3339(u.first_seen))
                    .set("keytrail.use.last_seen", rfc3339(u.last_seen));
                Arc::new(r)
            })
            .collect();
        inv.apply(&again).unwrap();
        assert_eq!(counts(&inv), before);
        assert_eq!(inv.load(100).unwrap().0, all);
    }

    #[test]
    fn credentials_fold_holders_and_uses() {
        let (_dir, path) = temp();
        let mut inv = Inventory::open(&path).unwrap();
        inv.apply(&[
            access(
                0,
                "pod/payments/api",
                FP,
                "static",
                "file",
                Some("payments"),
                Some("team-a"),
            ),
            access(
                0,
                "container/worker",
                FP,
                "static",
                "env",
                None,
                Some("team-b"),
            ),
            use_of(
                "pod/payments/api",
                FP,
                "a.example.test",
                443,
                "process",
                2,
                0,
                10,
            ),
            use_of("pod/other/job", FP, "2001:db8::1", 443, "wire", 3, 0, 10),
            access(0, "container/worker", FP2, "short_lived", "env", None, None),
        ])
        .unwrap();
        let mut all = inv.credentials().unwrap();
        all.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        let c = &all[0];
        assert_eq!(
            c.workloads,
            ["container/worker", "pod/other/job", "pod/payments/api"]
        );
        assert_eq!(c.destinations, ["[2001:db8::1]:443", "a.example.test:443"]);
        assert_eq!(c.owners, ["team-a", "team-b"]);
        assert_eq!(c.namespaces, ["payments"]);
        assert_eq!((c.evidence.as_deref(), c.uses), (Some("wire"), 5));
        assert_eq!((all[1].evidence.as_deref(), all[1].uses), (None, 0));
        assert!(all[1].destinations.is_empty());
    }

    #[test]
    fn the_report_reads_while_the_agent_writes() {
        let (_dir, path) = temp();
        let mut writer = Inventory::open(&path).unwrap();
        writer.apply(&sample()).unwrap();
        let reader = Inventory::open_read_only(&path).unwrap();
        assert_eq!(reader.credentials().unwrap().len(), 1);
        writer
            .apply(&[access(9, "pod/b", FP2, "static", "file", None, None)])
            .unwrap();
        assert_eq!(reader.credentials().unwrap().len(), 2);
        assert!(path.with_extension("db-wal").exists());
    }

    #[test]
    fn read_only_open_of_a_missing_file_says_what_to_do() {
        let (_dir, path) = temp();
        let err = Inventory::open_read_only(&path).err().unwrap().to_string();
        let shown = path.display().to_string();
        assert_eq!(
            err,
            format!(
                "no inventory at {shown}: run `keytrail agent --state {shown}` first, or pass the \
                 agent's --state"
            )
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_file_that_is_not_an_inventory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "not a database, just some text that is long enough ".repeat(20),
        )
        .unwrap();
        let err = Inventory::open_read_only(&text).err().unwrap();
        assert!(
            matches!(err, InventoryError::NotAnInventory { .. }),
            "{err}"
        );
        let err = Inventory::open(&text).err().unwrap();
        assert!(
            matches!(err, InventoryError::NotAnInventory { .. }),
            "{err}"
        );
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = Inventory::open_read_only(&other).err().unwrap();
        assert!(
            matches!(err, InventoryError::NotAnInventory { .. }),
            "{err}"
        );
        let err = Inventory::open(&other).err().unwrap();
        assert!(
            matches!(err, InventoryError::NotAnInventory { .. }),
            "{err}"
        );
        let tables: i64 = Connection::open(&other)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, path) = temp();
        drop(Inventory::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        let err = Inventory::open(&path).err().unwrap();
        assert!(
            matches!(err, InventoryError::NewerSchema { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer keytrail"));
    }

    #[tokio::test]
    async fn run_writes_until_the_channel_closes() {
        let (_dir, path) = temp();
        let inv = Inventory::open(&path).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run(inv, rx, Duration::ZERO));
        for r in sample() {
            tx.send(r).await.unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
        let inv = Inventory::open_read_only(&path).unwrap();
        assert_eq!(counts(&inv), [1, 1, 1, 1]);
    }

    #[test]
    fn the_writer_keeps_going_when_a_batch_cannot_be_written() {
        let (_dir, path) = temp();
        let inv = Inventory::open(&path).unwrap();
        inv.conn.execute_batch("DROP TABLE uses").unwrap();
        // A full first batch that fails on its use record, then one access alone.
        let (tx, rx) = mpsc::channel(BATCH + 1);
        tx.try_send(sample()[2].clone()).unwrap();
        for _ in 1..BATCH {
            tx.try_send(Arc::new(Record::new(names::AGENT_STATS, t(0))))
                .unwrap();
        }
        tx.try_send(sample()[0].clone()).unwrap();
        drop(tx);
        write_loop(inv, rx, Duration::ZERO);
        let inv = Inventory::open_read_only(&path).unwrap();
        assert_eq!(
            ["credentials", "workloads", "holders"].map(|t| count(&inv, t)),
            [1, 1, 1]
        );
    }
}
