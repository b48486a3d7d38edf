//! Types shared by keytrail's kernel programs and its agent.
//!
//! Everything here is `#[repr(C)]`, free of padding, and holds no logic: the kernel writes these
//! records into maps and the ring buffer, the agent reads them back byte for byte. Feature `user`
//! adds the `aya::Pod` impls the agent needs to use them as map keys and values.
#![no_std]

/// Bytes of a path captured in the kernel, including the terminating NUL. A power of two so the
/// kernel can bound indexes with a mask.
pub const PATH_CAP: usize = 512;
/// Longest basename the exact-basename and basename-prefix filters can hold.
pub const BASENAME_MAX: usize = 64;
/// Bytes of the reversed path tail the suffix filter compares.
pub const SUFFIX_MAX: usize = 64;
/// Bytes of an absolute path the prefix filter compares.
pub const PREFIX_MAX: usize = 128;
/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Names of the maps and programs in the kernel object, so both sides agree.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const CONFIG: &str = "CONFIG";
    pub const PROBE_STATS: &str = "PROBE_STATS";
    pub const FILTER_BASENAME: &str = "FILTER_BASENAME";
    pub const FILTER_BASENAME_PREFIX: &str = "FILTER_BASENAME_PREFIX";
    pub const FILTER_SUFFIX: &str = "FILTER_SUFFIX";
    pub const FILTER_PREFIX: &str = "FILTER_PREFIX";
}

/// Kinds of records on the ring buffer. Ids are grouped by family and never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`FileOpen`]
    FileOpen = 100,
    /// [`ProcExec`]
    ProcExec = 200,
    /// [`ProcExit`]
    ProcExit = 201,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            100 => Some(Self::FileOpen),
            200 => Some(Self::ProcExec),
            201 => Some(Self::ProcExit),
            _ => None,
        }
    }
}

/// The kernel programs, as indexes into [`names::PROBE_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeId {
    FileOpenat = 0,
    FileOpenat2 = 1,
    FileOpen = 2,
    ProcExec = 3,
    ProcExit = 4,
}

impl ProbeId {
    pub const COUNT: usize = 5;
    pub const ALL: [ProbeId; Self::COUNT] = [
        Self::FileOpenat,
        Self::FileOpenat2,
        Self::FileOpen,
        Self::ProcExec,
        Self::ProcExit,
    ];

    /// Stable name used in stats events and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::FileOpenat => "file_openat",
            Self::FileOpenat2 => "file_openat2",
            Self::FileOpen => "file_open",
            Self::ProcExec => "proc_exec",
            Self::ProcExit => "proc_exit",
        }
    }
}

/// Per-probe counters, one slot per [`ProbeId`] in a per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeCounters {
    /// Events that passed the kernel filter and were meant for userspace.
    pub seen: u64,
    /// Events lost because the ring buffer (or the pending-open table) was full.
    pub dropped: u64,
}

/// Settings the agent writes before attaching (slot 0 of [`names::CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelConfig {
    /// The agent's own process id: its opens are never reported.
    pub agent_tgid: u32,
    /// [`filter`] bits saying which filter maps hold entries, so empty ones cost nothing.
    pub filters: u32,
}

/// Which filter matched an open; also the bits of [`KernelConfig::filters`].
pub mod filter {
    pub const BASENAME: u32 = 1 << 0;
    pub const BASENAME_PREFIX: u32 = 1 << 1;
    pub const SUFFIX: u32 = 1 << 2;
    pub const DIR_SUFFIX: u32 = 1 << 3;
    pub const PREFIX: u32 = 1 << 4;

    /// Value of a basename entry: the name matches wherever the file is.
    pub const BASENAME_ANYWHERE: u32 = 1;
    /// Value of a basename entry: the name matches only relative opens (the kernel cannot see
    /// which directory they are relative to; userspace decides).
    pub const BASENAME_RELATIVE_ONLY: u32 = 2;
}

/// Which syscall an open came from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenSyscall {
    Open = 0,
    Openat = 1,
    Openat2 = 2,
}

/// Bits of `EventHeader::flags`.
pub mod event_flags {
    /// The captured path or filename filled the buffer and may be cut short.
    pub const TRUNCATED: u32 = 1 << 0;
}

/// Fields every record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] id.
    pub kind: u32,
    /// [`event_flags`] bits.
    pub flags: u32,
    /// CLOCK_BOOTTIME nanoseconds.
    pub time_ns: u64,
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id: the inode number of the cgroup's directory.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// An open of a candidate secret path, completed with its result at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileOpen {
    pub header: EventHeader,
    /// The syscall's return value: a file descriptor, or minus an errno.
    pub ret: i64,
    /// Open flags (O_RDONLY ...); openat2's `how.flags`.
    pub open_flags: u64,
    /// Directory fd for relative paths (AT_FDCWD = -100).
    pub dirfd: i32,
    /// An [`OpenSyscall`] id.
    pub syscall: u32,
    /// [`filter`] bits of the filters that matched.
    pub matched: u32,
    /// Bytes of `path` in use, without the NUL.
    pub path_len: u32,
    pub path: [u8; PATH_CAP],
}

/// A successful exec: the process now runs `filename`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcExec {
    pub header: EventHeader,
    /// Bytes of `filename` in use, without the NUL.
    pub filename_len: u32,
    pub _reserved: u32,
    pub filename: [u8; PATH_CAP],
}

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcExit {
    pub header: EventHeader,
}

// The wire layout is part of the kernel/user contract: fail the build if it moves.
const _: () = {
    assert!(core::mem::size_of::<EventHeader>() == 56);
    assert!(core::mem::size_of::<FileOpen>() == 56 + 32 + PATH_CAP);
    assert!(core::mem::size_of::<ProcExec>() == 56 + 8 + PATH_CAP);
    assert!(core::mem::size_of::<ProcExit>() == 56);
    assert!(core::mem::size_of::<KernelConfig>() == 8);
    assert!(core::mem::size_of::<ProbeCounters>() == 16);
    assert!(PATH_CAP.is_power_of_two());
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data structs and arrays: repr(C), no padding (checked above), every bit
    // pattern valid.
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::ProbeCounters {}
}
