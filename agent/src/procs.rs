//! The process table: who a pid is (executable, user, start time), kept exact by exec and exit
//! events from the kernel and filled lazily from /proc for processes that predate the agent.

use std::collections::HashMap;

use keytrail_common::{ProcExec, ProcExit};

use crate::events::{comm, text};

/// What the agent knows about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Executable path as the process sees it (its own mount namespace).
    pub exe: Option<String>,
    /// `comm` at the last event, when nothing better is known.
    pub comm: String,
    /// Start time in clock ticks after boot (/proc/PID/stat field 22): with the pid, the key
    /// that survives pid reuse.
    pub start_ticks: Option<u64>,
    /// Start time as wall-clock time (`process.creation.time`).
    pub creation_time: Option<std::time::SystemTime>,
}

/// Bounds the table if exit events are lost (ring buffer full).
const MAX_PROCESSES: usize = 65_536;

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcInfo>,
    /// Boot time (/proc/stat btime) and clock ticks per second, to turn start ticks into
    /// wall-clock time.
    boot: Option<(std::time::SystemTime, u64)>,
}

impl ProcessTable {
    pub fn new() -> Self {
        Self {
            procs: HashMap::new(),
            boot: boot_clock(),
        }
    }

    fn creation_time(&self, start_ticks: Option<u64>) -> Option<std::time::SystemTime> {
        let (boot, hz) = self.boot?;
        let ticks = start_ticks?;
        Some(boot + std::time::Duration::from_millis(ticks.saturating_mul(1000) / hz))
    }

    pub fn on_exec(&mut self, ev: &ProcExec) {
        let pid = ev.header.pid;
        // /proc/PID/exe is exact (resolved); the tracepoint's filename is what was passed to
        // execve and is the fallback when the process is already gone.
        let exe = read_exe(pid).or_else(|| Some(text(&ev.filename, ev.filename_len)));
        let start_ticks = read_start_ticks(pid);
        self.insert(
            pid,
            ProcInfo {
                exe,
                comm: comm(&ev.header),
                start_ticks,
                creation_time: self.creation_time(start_ticks),
            },
        );
    }

    pub fn on_exit(&mut self, ev: &ProcExit) {
        self.procs.remove(&ev.header.pid);
    }

    /// The process, from the table or else from /proc (then remembered).
    pub fn lookup(&mut self, pid: u32, comm: &str) -> ProcInfo {
        if let Some(p) = self.procs.get(&pid) {
            return p.clone();
        }
        let start_ticks = read_start_ticks(pid);
        let info = ProcInfo {
            exe: read_exe(pid),
            comm: comm.to_string(),
            start_ticks,
            creation_time: self.creation_time(start_ticks),
        };
        if info.exe.is_some() {
            self.insert(pid, info.clone());
        }
        info
    }

    fn insert(&mut self, pid: u32, info: ProcInfo) {
        if self.procs.len() >= MAX_PROCESSES && !self.procs.contains_key(&pid) {
            // Lost exits left stale entries: drop the ones whose process is gone.
            self.procs
                .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        self.procs.insert(pid, info);
    }

    /// After exec or exit records were lost: drops the entries whose process is gone or is
    /// another one now (its start time changed), and refreshes the executable of the others
    /// (a lost exec left the old one). Returns the entries dropped or corrected.
    pub fn repair(&mut self) -> usize {
        let before = self.procs.clone();
        self.procs.retain(|&pid, info| {
            let now = read_start_ticks(pid);
            now.is_some() && (info.start_ticks.is_none() || now == info.start_ticks)
        });
        let mut fixed = before.len() - self.procs.len();
        for (&pid, info) in self.procs.iter_mut() {
            let exe = read_exe(pid);
            if exe.is_some() && exe != info.exe {
                info.exe = exe;
                fixed += 1;
            }
        }
        fixed
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

/// Boot time from /proc/stat (`btime`, seconds since the epoch) and USER_HZ.
fn boot_clock() -> Option<(std::time::SystemTime, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some((
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(btime),
        hz,
    ))
}

/// The executable of a live process (its /proc/PID/exe link).
pub(crate) fn read_exe(pid: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// Field 22 of /proc/PID/stat. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after the last ')'.
fn read_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After ')' come fields 3, 4, ...: field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn repair_drops_gone_processes_and_refreshes_executables() {
        let mut t = ProcessTable::new();
        let me = std::process::id();
        let stale = |exe: &str, start_ticks| ProcInfo {
            exe: Some(exe.into()),
            comm: "x".into(),
            start_ticks,
            creation_time: None,
        };
        t.insert(u32::MAX - 1, stale("/gone", Some(1)));
        t.insert(me, stale("/before/a/lost/exec", read_start_ticks(me)));
        assert_eq!(t.repair(), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(me, "x").exe, read_exe(me));
    }

    use super::*;

    #[test]
    fn start_ticks_survive_odd_command_names() {
        let stat = "4711 (we) ird) name) S 1 4711 4711 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    123456 1000 100 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(123456));
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn own_process_is_found_in_proc() {
        let mut t = ProcessTable::new();
        let me = t.lookup(std::process::id(), "x");
        assert!(me.exe.is_some());
        assert!(me.start_ticks.is_some());
        // Started within the last hour (the test process, moments ago).
        let age = std::time::SystemTime::now()
            .duration_since(me.creation_time.unwrap())
            .unwrap();
        assert!(age < std::time::Duration::from_secs(3600), "{age:?}");
        assert_eq!(t.len(), 1);
    }
}
