//! Reads of workload files off the event loop. A workload controls the files the agent reads
//! (a FUSE or NFS mount can make an open or a read wait for ever), so every such read runs on
//! a small pool of reader threads and is waited for at most a timeout. A read still running at
//! its timeout is left to finish on its thread, and a fresh thread takes its place; until it
//! returns, later reads with the same key (the reader's mount namespace and the mount the path
//! lies on) fail at once instead of waiting again, so one stalled filesystem costs one
//! timeout, not one per event, and nothing to the other mounts. Reads
//! stuck at once are bounded; beyond that bound every read fails at once, and says so.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc},
    thread,
    time::Duration,
};

use crate::rootfs::ReadError;

/// Reader threads kept ready.
const WORKERS: usize = 4;
/// Reads left running past their timeout, at most; beyond it reads fail at once. Each holds a
/// thread (with a small stack).
pub const MAX_STUCK: usize = 128;
const STACK_BYTES: usize = 512 * 1024;
/// How long a read is waited for on the calling thread before it is handed to the runtime
/// as blocking (almost every read is done by then).
const QUICK: Duration = Duration::from_millis(20);

/// A read; true when its thread should end after it (its caller gave up on it, and a fresh
/// thread was started in its place).
type Job = Box<dyn FnOnce() -> bool + Send>;

/// What a key's stuck reads look like, shared with the reader threads.
#[derive(Default)]
struct Stuck {
    by_key: HashMap<u64, usize>,
    total: usize,
}

pub struct FileReads {
    jobs: mpsc::Sender<Job>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    timeout: Duration,
    stuck: Arc<Mutex<Stuck>>,
}

/// Where a read's result goes, and whether its caller stopped waiting.
enum Phase<T> {
    Waiting(mpsc::SyncSender<T>),
    Abandoned,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FileReads {
    pub fn new(timeout: Duration) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let reads = Self {
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            timeout,
            stuck: Arc::default(),
        };
        for _ in 0..WORKERS {
            reads.spawn_worker();
        }
        reads
    }

    fn spawn_worker(&self) {
        let queue = Arc::clone(&self.queue);
        let spawned = thread::Builder::new()
            .name("keytrail-read".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                loop {
                    let job = match lock(&queue).recv() {
                        Ok(job) => job,
                        Err(_) => return, // the pool is gone
                    };
                    if job() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a file reader thread");
        }
    }

    /// Reads stuck past their timeout now.
    pub fn stuck(&self) -> usize {
        lock(&self.stuck).total
    }

    /// Runs `read` on a reader thread and returns its result, or [`ReadError::TimedOut`] when
    /// it takes longer than the timeout, or [`ReadError::Stalled`] at once when an earlier
    /// read under `key` is still stuck (or too many are).
    pub fn run<T: Send + 'static>(
        &self,
        key: u64,
        read: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        self.run_keyed(key, || key, read)
    }

    /// [`FileReads::run`], where a read that times out is held stuck under the key
    /// `stuck_key` gives then (the key computed afresh, when the one it was sent with came
    /// from a cache that may be stale).
    pub fn run_keyed<T: Send + 'static>(
        &self,
        key: u64,
        stuck_key: impl FnOnce() -> u64,
        read: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        {
            let stuck = lock(&self.stuck);
            if stuck.total >= MAX_STUCK || stuck.by_key.get(&key).is_some_and(|n| *n > 0) {
                return Err(ReadError::Stalled);
            }
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let phase = Arc::new(Mutex::new(Phase::Waiting(tx)));
        // Where the read is counted stuck if it times out; fixed before it is abandoned.
        let key_cell = Arc::new(std::sync::atomic::AtomicU64::new(key));
        let job_key = Arc::clone(&key_cell);
        let job_phase = Arc::clone(&phase);
        let stuck = Arc::clone(&self.stuck);
        let job: Job = Box::new(move || {
            // A read abandoned while queued is not started at all.
            let key = || job_key.load(std::sync::atomic::Ordering::Acquire);
            if matches!(*lock(&job_phase), Phase::Abandoned) {
                release(&stuck, key());
                return true;
            }
            let result = read();
            match &*lock(&job_phase) {
                Phase::Waiting(tx) => {
                    let _ = tx.try_send(result);
                    false
                }
                Phase::Abandoned => {
                    release(&stuck, key());
                    true
                }
            }
        });
        if self.jobs.send(job).is_err() {
            return Err(ReadError::Io("no file reader thread".into()));
        }
        let waited = match rx.recv_timeout(QUICK.min(self.timeout)) {
            Ok(result) => return result,
            Err(_) => in_place(|| rx.recv_timeout(self.timeout.saturating_sub(QUICK))),
        };
        if let Ok(result) = waited {
            return result;
        }
        // Timed out: unless the result landed meanwhile, the read is abandoned and counted
        // as stuck under its key until its thread comes back.
        let key = stuck_key();
        let mut phase = lock(&phase);
        if let Ok(result) = rx.try_recv() {
            return result;
        }
        key_cell.store(key, std::sync::atomic::Ordering::Release);
        *phase = Phase::Abandoned;
        drop(phase);
        {
            let mut stuck = lock(&self.stuck);
            *stuck.by_key.entry(key).or_default() += 1;
            stuck.total += 1;
        }
        // The stuck read holds a thread (or a queue slot): a fresh thread keeps the pool whole.
        self.spawn_worker();
        Err(ReadError::TimedOut)
    }
}

/// A stuck read under `key` came back (or was never started).
fn release(stuck: &Mutex<Stuck>, key: u64) {
    let mut stuck = lock(stuck);
    if let Some(n) = stuck.by_key.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            stuck.by_key.remove(&key);
        }
        stuck.total = stuck.total.saturating_sub(1);
    }
}

/// Runs a blocking wait so that, on the agent's multi-threaded runtime, the other tasks of
/// this worker thread move elsewhere meanwhile.
fn in_place<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The key of a read for a reader: its mount namespace, else its process.
pub fn key_for(mnt_ns: u64, pid: u32) -> u64 {
    if mnt_ns != 0 {
        mnt_ns
    } else {
        (1 << 63) | u64::from(pid)
    }
}

fn hash_key(parts: impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(parts)
}

/// The key of a read through descriptor `fd` of process `pid`: the namespace and the mount the
/// descriptor's file lies on (from its fdinfo, a procfs file no workload can stall).
pub fn key_for_descriptor(mnt_ns: u64, pid: u32, fd: i32) -> u64 {
    let base = key_for(mnt_ns, pid);
    let mnt_id = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("mnt_id:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
    hash_key((base, "descriptor", mnt_id.unwrap_or(u64::MAX), pid))
}

/// The key of a read of `path` in mount namespace `mnt_ns`: the namespace and the mount the
/// path lies on (the longest of `mounts`, mount points as the namespace sees them), so a
/// stalled file system makes only its own reads skip, not the namespace's. Without the mount
/// table (the reader is gone), the path's directory stands for its mount.
pub fn key_for_path(mnt_ns: u64, pid: u32, mounts: &[String], path: &str) -> u64 {
    let base = key_for(mnt_ns, pid);
    let mount = mounts
        .iter()
        .filter(|m| {
            m.as_str() == "/"
                || path == m.as_str()
                || path
                    .strip_prefix(m.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.len());
    match mount {
        Some(m) => hash_key((base, m.as_str())),
        None => {
            let dir = path.rsplit_once('/').map_or(path, |(d, _)| d);
            hash_key((base, "directory", dir))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_on_different_mounts_of_a_namespace_have_different_keys() {
        let mounts: Vec<String> = ["/", "/mnt/fuse", "/mnt/fuse/inner", "/mnt/fu"]
            .map(String::from)
            .to_vec();
        let key = |p: &str| key_for_path(42, 1, &mounts, p);
        assert_eq!(key("/etc/x.pem"), key("/home/a/.env"));
        assert_ne!(key("/etc/x.pem"), key("/mnt/fuse/a.pem"));
        assert_eq!(key("/mnt/fuse/a.pem"), key("/mnt/fuse/deep/b.pem"));
        assert_ne!(key("/mnt/fuse/a.pem"), key("/mnt/fuse/inner/a.pem"));
        // A prefix of a name is not its mount.
        assert_eq!(key("/mnt/fusex/a.pem"), key("/etc/x.pem"));
        // Another namespace, another key; no mounts known: the namespace's key.
        assert_ne!(
            key_for_path(43, 1, &mounts, "/etc/x.pem"),
            key("/etc/x.pem")
        );
        // No mount table: keyed by directory.
        assert_eq!(
            key_for_path(42, 1, &[], "/etc/x.pem"),
            key_for_path(42, 1, &[], "/etc/y")
        );
        assert_ne!(
            key_for_path(42, 1, &[], "/etc/x.pem"),
            key_for_path(42, 1, &[], "/tmp/x")
        );
    }

    use std::sync::mpsc::Receiver;

    use super::*;

    /// A read that waits until told to finish.
    fn blocked(gate: Receiver<()>) -> impl FnOnce() -> Result<u32, ReadError> + Send + 'static {
        move || {
            let _ = gate.recv();
            Ok(7)
        }
    }

    #[test]
    fn a_stuck_read_times_out_and_its_key_fails_at_once_until_it_returns() {
        let reads = FileReads::new(Duration::from_millis(100));
        assert_eq!(reads.run(1, || Ok(1)), Ok(1));
        let (open_gate, gate) = mpsc::channel();
        assert_eq!(reads.run(1, blocked(gate)), Err(ReadError::TimedOut));
        assert_eq!(reads.stuck(), 1);
        // Same key: refused without waiting; another key still reads.
        let start = std::time::Instant::now();
        assert_eq!(reads.run(1, || Ok(2)), Err(ReadError::Stalled));
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(reads.run(2, || Ok(3)), Ok(3));
        // The stuck read returns: its key reads again.
        open_gate.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reads.stuck() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the stuck read never came back"
            );
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reads.run(1, || Ok(4)), Ok(4));
    }

    #[test]
    fn stuck_reads_are_bounded_and_the_pool_stays_whole() {
        let reads = FileReads::new(Duration::from_millis(30));
        let mut gates = Vec::new();
        for key in 0..MAX_STUCK as u64 {
            let (open_gate, gate) = mpsc::channel();
            gates.push(open_gate);
            assert_eq!(reads.run(key, blocked(gate)), Err(ReadError::TimedOut));
        }
        assert_eq!(reads.stuck(), MAX_STUCK);
        assert_eq!(reads.run(1000, || Ok(1)), Err(ReadError::Stalled));
        for g in &gates {
            g.send(()).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reads.stuck() > 0 {
            assert!(std::time::Instant::now() < deadline);
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reads.run(1000, || Ok(2)), Ok(2));
    }
}
