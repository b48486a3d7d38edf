//! Types shared by keytrail's kernel programs and its agent.
//!
//! Everything here is `#[repr(C)]`, free of padding, and holds no logic: the kernel writes these
//! records into maps and the ring buffer, the agent reads them back byte for byte. Feature `user`
//! adds the `aya::Pod` impls the agent needs to use them as map keys and values.
#![no_std]

/// Bytes of a path captured in the kernel, including the terminating NUL. A power of two so the
/// kernel can bound indexes with a mask.
pub const PATH_CAP: usize = 512;
/// Bytes of the path tail the kernel reverses and the suffix filter compares.
pub const SUFFIX_MAX: usize = 64;
/// Most distinct basename-prefix lengths the kernel checks (`.env.` is one length, 5).
pub const MAX_BASENAME_PREFIX_LENS: usize = 4;
/// Bytes of an absolute path the prefix filter compares.
pub const PREFIX_MAX: usize = 128;
/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of a matched `NAME=value` environment string captured in the kernel, including the
/// terminating NUL. Longer values are cut and flagged TRUNCATED.
pub const ENV_CAP: usize = 4096;
/// Bytes of each environment string (or getenv name) read to decide whether it matches: the
/// name and the head of the value.
pub const ENV_WINDOW: usize = 96;
/// Longest variable name the kernel matches; longer names are not secret-like in practice.
pub const ENV_NAME_MAX: usize = 64;
/// Bytes of a value's head the value-prefix trie compares (`ghp_`, `AKIA`, `postgres://`).
pub const ENV_VALUE_PREFIX_MAX: usize = 16;
/// Environment entries walked per exec.
pub const MAX_ENV_ENTRIES: u32 = 256;
/// Bytes of an outbound payload packet, or of a first SSL_write buffer, copied to userspace.
/// A power of two so the kernel can bound lengths with a mask.
pub const PAYLOAD_CAP: usize = 2048;
/// Payload packets looked at per connection, at most: enough for a protocol that negotiates
/// before TLS (PostgreSQL SSLRequest, SMTP STARTTLS, HTTP CONNECT) to reach its ClientHello.
pub const MAX_PAYLOAD_PACKETS: u32 = 4;

/// Names of the maps and programs in the kernel object, so both sides agree.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LIFECYCLE: &str = "LIFECYCLE";
    pub const BUDGETS: &str = "BUDGETS";
    pub const CONFIG: &str = "CONFIG";
    pub const PROBE_STATS: &str = "PROBE_STATS";
    pub const FILTER_SUFFIX: &str = "FILTER_SUFFIX";
    pub const FILTER_GATES: &str = "FILTER_GATES";
    pub const FILTER_PREFIX: &str = "FILTER_PREFIX";
    pub const FILTER_EXACT: &str = "FILTER_EXACT";
    pub const ENV_WORDS: &str = "ENV_WORDS";
    pub const ENV_NAMES: &str = "ENV_NAMES";
    pub const ENV_VALUE_PREFIX: &str = "ENV_VALUE_PREFIX";
    pub const ENV_GATES: &str = "ENV_GATES";
    pub const GETENV_SEEN: &str = "GETENV_SEEN";
    pub const FORGET_PAYLOAD: &str = "FORGET_PAYLOAD";
    pub const CONN_FOLDS: &str = "CONN_FOLDS";
    pub const CONN_FOLD_COUNTS: &str = "CONN_FOLD_COUNTS";
    pub const PENDING_CONNS: &str = "PENDING_CONNS";
    pub const OFFSETS: &str = "OFFSETS";
    pub const KNOWN_HOMES: &str = "KNOWN_HOMES";
    pub const KNOWN_FILES: &str = "KNOWN_FILES";
    pub const KNOWN_INOS: &str = "KNOWN_INOS";
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
    /// [`CgroupChange`]
    CgroupChange = 202,
    /// [`EnvVar`]
    EnvVar = 300,
    /// [`NetConnect`]
    NetConnect = 400,
    /// [`NetState`]
    NetState = 401,
    /// [`NetPayload`]
    NetPayload = 402,
    /// [`TlsWrite`]
    TlsWrite = 403,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            100 => Some(Self::FileOpen),
            200 => Some(Self::ProcExec),
            201 => Some(Self::ProcExit),
            202 => Some(Self::CgroupChange),
            300 => Some(Self::EnvVar),
            400 => Some(Self::NetConnect),
            401 => Some(Self::NetState),
            402 => Some(Self::NetPayload),
            403 => Some(Self::TlsWrite),
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
    /// Secret-like variables captured at execve/execveat.
    ExecEnv = 5,
    /// First getenv/secure_getenv of a secret-like name by a process.
    Getenv = 6,
    /// Later calls for the same process and name: counted, not sent.
    GetenvRepeat = 7,
    /// TCP connects (cgroup connect4/connect6).
    NetConnect = 8,
    /// Connection outcomes (sock_ops).
    NetState = 9,
    /// First payload packets of awaited connections (cgroup_skb egress).
    NetPayload = 10,
    /// First SSL_write of a TLS connection.
    TlsWrite = 11,
    /// cgroup v2 directories created and removed.
    CgroupChange = 12,
}

impl ProbeId {
    pub const COUNT: usize = 13;
    pub const ALL: [ProbeId; Self::COUNT] = [
        Self::FileOpenat,
        Self::FileOpenat2,
        Self::FileOpen,
        Self::ProcExec,
        Self::ProcExit,
        Self::ExecEnv,
        Self::Getenv,
        Self::GetenvRepeat,
        Self::NetConnect,
        Self::NetState,
        Self::NetPayload,
        Self::TlsWrite,
        Self::CgroupChange,
    ];

    /// Stable name used in stats events and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::FileOpenat => "file_openat",
            Self::FileOpenat2 => "file_openat2",
            Self::FileOpen => "file_open",
            Self::ProcExec => "proc_exec",
            Self::ProcExit => "proc_exit",
            Self::ExecEnv => "exec_env",
            Self::Getenv => "getenv",
            Self::GetenvRepeat => "getenv_repeat",
            Self::NetConnect => "net_connect",
            Self::NetState => "net_state",
            Self::NetPayload => "net_payload",
            Self::TlsWrite => "tls_write",
            Self::CgroupChange => "cgroup_change",
        }
    }
}

/// Per-probe counters, one slot per [`ProbeId`] in a per-CPU array. Every event that passed the
/// filter is `seen`, then sent, folded, or lost for one counted cause.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeCounters {
    /// Events that passed the kernel filter and were meant for userspace.
    pub seen: u64,
    /// Lost because the ring buffer (or the pending-open table) was full.
    pub dropped: u64,
    /// Repeats folded in the kernel (the same open by the same process within the window):
    /// counted, not sent. Not a loss.
    pub folded: u64,
    /// Lost because the workload's cgroup was over its budget for this family of records.
    pub over_budget: u64,
    /// Not judged: the path (or string) could not be read from the process's memory (a page
    /// not resident when the tracepoint ran cannot be faulted in there).
    pub read_failed: u64,
}

/// Families of records that share a per-cgroup budget (see [`Budget`]).
pub mod record_family {
    pub const FILES: u32 = 0;
    pub const ENV: u32 = 1;
    pub const NET: u32 = 2;
    pub const COUNT: usize = 3;
    /// Names, by index, for stats.
    pub const NAMES: [&str; COUNT] = ["files", "env", "net"];
}

/// Key of [`names::BUDGETS`]: one token bucket per cgroup and record family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    pub cgroup_id: u64,
    /// A [`record_family`] value.
    pub family: u32,
    pub _reserved: u32,
}

/// A cgroup's token bucket for one record family: a workload that sends more than its rate
/// (plus a burst) loses its own records, counted here, and never another workload's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    /// Tokens left, in thousandths of a record.
    pub tokens_milli: u64,
    /// When the bucket was last refilled (CLOCK_BOOTTIME ns).
    pub last_ns: u64,
    /// Records sent and records lost to the budget, ever.
    pub sent: u64,
    pub dropped: u64,
}

/// Settings the agent writes before attaching (slot 0 of [`names::CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelConfig {
    /// The agent's own process id: its opens are never reported.
    pub agent_tgid: u32,
    /// [`filter`] bits saying which kinds of entries exist, so absent ones cost nothing.
    pub filters: u32,
    /// Distinct lengths of basename prefixes in the suffix trie, longest first; 0 = unused.
    pub basename_prefix_lens: [u8; MAX_BASENAME_PREFIX_LENS],
    /// Entries in `KNOWN_FILES`; while 0, opens are not checked against it.
    pub known_files: u32,
    /// Repeats of an open (same process, same file, same outcome and access) within this many
    /// nanoseconds of the first are folded in the kernel; 0 sends every open.
    pub fold_window_ns: u64,
    /// Per-cgroup budget of each record family: records per second, and the burst above it.
    /// A rate of 0 means no budget.
    pub budget_per_sec: u32,
    pub budget_burst: u32,
}

/// Key of [`names::KNOWN_FILES`]: a file by inode number and device (the kernel's `dev_t`,
/// `major << 20 | minor`). Inode numbers alone repeat across filesystems (every fresh tmpfs
/// counts from the same start).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KnownFile {
    pub ino: u64,
    pub dev: u32,
    pub _reserved: u32,
}

/// Offsets into kernel structures, computed by the agent from the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) before it attaches anything (slot 0 of [`names::OFFSETS`]), so
/// the programs can follow task -> mount namespace, task -> cwd and task -> open file without
/// CO-RE. A chain whose bit is missing from `valid` is not followed (its fields stay 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// [`offsets_valid`] bits.
    pub valid: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns`, `mnt_namespace.ns.inum`.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `task_struct.fs`, `fs_struct.pwd.dentry`, `dentry.d_inode`.
    pub task_fs: u32,
    pub fs_pwd_dentry: u32,
    pub dentry_inode: u32,
    /// `task_struct.files`, `files_struct.fdt`, `files_struct.fdtab` (the table a process with
    /// few descriptors uses, embedded: its `fd` is `files_struct.fd_array`), `fdtable.fd`,
    /// `file.f_inode`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub files_fdtab: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    /// `inode.i_ino`, `inode.i_sb`, `super_block.s_dev`.
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// `task_struct.thread_pid`, `pid.level`, `pid.numbers` + `upid.ns` (the pid namespace of
    /// the task's own pid at level 0), `sizeof(struct upid)`, `pid_namespace.ns.inum`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers_ns: u32,
    pub upid_size: u32,
    pub pid_ns_inum: u32,
    /// `files_struct.fd_array`.
    pub files_fd_array: u32,
    /// `task_struct.start_time`: with the pid, names a process across pid reuse.
    pub task_start_time: u32,
    /// `mnt_namespace.ns.ns_id` (or `mnt_namespace.seq` on older kernels): a mount namespace's
    /// id that is never reused, unlike its inode number.
    pub mnt_ns_unique_id: u32,
    pub _reserved: u32,
}

/// Bits of [`KernelOffsets::valid`].
pub mod offsets_valid {
    /// task -> mount namespace id.
    pub const MNT_NS: u32 = 1 << 0;
    /// task -> cwd dentry -> inode.
    pub const CWD: u32 = 1 << 1;
    /// task -> fd table -> file -> inode.
    pub const FILES: u32 = 1 << 2;
    /// inode -> number and device.
    pub const INODE: u32 = 1 << 3;
    /// task -> its pid namespace id.
    pub const PID_NS: u32 = 1 << 4;
    /// task -> its start time.
    pub const START_TIME: u32 = 1 << 5;
    /// mount namespace -> its id that is never reused.
    pub const MNT_NS_ID: u32 = 1 << 6;
}

/// Which filter matched an open; also the bits of [`KernelConfig::filters`].
///
/// All but PREFIX live in one LPM trie keyed by the reversed path (see ebpf/src/probes/files.rs):
/// path suffixes (`mep.`), exact basenames as `/name` suffixes, directory tails (`/hss./`,
/// looked up from the last '/') and basename prefixes (`.vne./`, looked up from the basename's
/// start).
pub mod filter {
    pub const SUFFIX: u32 = 1 << 0;
    pub const DIR_SUFFIX: u32 = 1 << 1;
    pub const BASENAME_PREFIX: u32 = 1 << 2;
    pub const PREFIX: u32 = 1 << 3;
    /// One exact absolute path (a file named by a workload's environment), in its own trie so
    /// that a short path (`KUBECONFIG=/pr`) can never pass every path it starts.
    pub const EXACT_PATH: u32 = 1 << 6;
    /// Not a filter of the config: the path is spelled so that the prefix filter cannot judge
    /// it (`//x`, `/./x`, `/../x`, `/proc/PID/root/x`); userspace normalises and decides.
    pub const NONCANONICAL: u32 = 1 << 4;
    /// Not a filter of the config: the file opened is one the agent knows holds credentials
    /// (`KNOWN_FILES`), whatever name it was opened by (a hard link, a bind mount, a symlink).
    /// The record carries no path: userspace finds it from the descriptor.
    pub const IDENTITY: u32 = 1 << 5;

    /// Value of a suffix-trie entry: it matches absolute and relative paths.
    pub const MATCH_ANYWHERE: u32 = 1;
    /// Value of a suffix-trie entry: it matches relative paths only (an exact basename whose
    /// directory the kernel cannot see; userspace resolves it and decides).
    pub const MATCH_RELATIVE: u32 = 2;
}

/// Bitmaps the kernel tests before each trie lookup, so the opens that cannot match (nearly all)
/// skip it. Each is a superset computed from the trie entries (slot 0 of
/// [`names::FILTER_GATES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FilterGates {
    /// Last byte of the path, for the suffix lookup.
    pub last_char: [u64; 4],
    /// Last byte of the directory part (before the final '/'), for directory tails.
    pub dir_last_char: [u64; 4],
    /// First byte of the basename, for basename prefixes.
    pub base_first_char: [u64; 4],
    /// Bytes 1 and 2 of an absolute path (`(b1 << 8) | b2`), for the prefix lookup.
    pub prefix_head: [u64; 1024],
}

impl FilterGates {
    pub const EMPTY: Self = Self {
        last_char: [0; 4],
        dir_last_char: [0; 4],
        base_first_char: [0; 4],
        prefix_head: [0; 1024],
    };
}

/// Tests bit `b` of a 256-bit set.
#[inline(always)]
pub fn bit256(set: &[u64; 4], b: u8) -> bool {
    (set[(b >> 6) as usize & 3] >> (b & 63)) & 1 != 0
}

/// Tests bit `(b1 << 8) | b2` of a 65536-bit set.
#[inline(always)]
pub fn bit_head(set: &[u64; 1024], b1: u8, b2: u8) -> bool {
    let i = ((b1 as usize) << 8) | b2 as usize;
    (set[(i >> 6) & 1023] >> (i & 63)) & 1 != 0
}

/// Environment matching (ebpf/src/probes/env.rs). Names are hashed case-insensitively with
/// [`env_hash`]: each `_`-separated word against `ENV_WORDS`, the whole name against
/// `ENV_NAMES`; a value's head is looked up in the `ENV_VALUE_PREFIX` trie.
pub mod env_match {
    /// `ENV_WORDS` value bits.
    pub const WORD_SECRET: u32 = 1 << 0;
    pub const WORD_EXCLUDE: u32 = 1 << 1;
    /// The word `file`: excludes, except as the last word of a secret-like name (`*_FILE`).
    pub const WORD_FILE: u32 = 1 << 2;
    /// `ENV_NAMES` value bits: an exact secret-like name; a name whose value is a credential
    /// file's path (KUBECONFIG, GOOGLE_APPLICATION_CREDENTIALS ...).
    pub const NAME_SECRET: u32 = 1 << 3;
    pub const NAME_FILE: u32 = 1 << 4;
    /// `ENV_NAMES` value bit: never secret-like, whatever its words (PWD).
    pub const NAME_PLAIN: u32 = 1 << 8;
    /// `ENV_NAMES` value bit: the home directory (`HOME`). Its value leaves the kernel only
    /// when its [`home_hash`](super::home_hash) is not in `KNOWN_HOMES`: a home is news once.
    pub const NAME_HOME: u32 = 1 << 9;
    /// Event `matched` bits besides the above: secret-like by its words; `*_FILE` with a
    /// secret-like stem; the value has a known credential prefix.
    pub const BY_WORDS: u32 = 1 << 5;
    pub const FILE_BY_WORDS: u32 = 1 << 6;
    pub const VALUE_PREFIX: u32 = 1 << 7;
    /// Event `matched` bit: the name is longer than the kernel scans (`name_len` is then
    /// `ENV_NAME_MAX`); it was sent for a secret-like word in its first bytes, and userspace
    /// finds where it ends.
    pub const LONG_NAME: u32 = 1 << 10;
}

/// FNV-1a offset basis: the hash of the empty word or name.
pub const ENV_HASH_INIT: u32 = 0x811c_9dc5;

/// One step of a word's hash: FNV-1a over bytes with bit 5 set, so letters hash the same in
/// either case (`api` equals `API`) at the cost of one OR. Other bytes may collide; the hash
/// only pre-filters, userspace decides exactly.
#[inline(always)]
pub const fn env_hash(h: u32, b: u8) -> u32 {
    (h ^ (b | 0x20) as u32).wrapping_mul(0x0100_0193)
}

/// Folds a word's hash into a name's: a name's hash is built from its `_`-separated words
/// (empty ones skipped), so the kernel hashes each byte once.
#[inline(always)]
pub const fn env_fold(name: u32, word: u32) -> u32 {
    (name ^ word).wrapping_mul(0x0100_0193).rotate_left(5)
}

/// The hash of one word with [`env_hash`].
pub const fn env_word_hash(word: &[u8]) -> u32 {
    let mut h = ENV_HASH_INIT;
    let mut i = 0;
    while i < word.len() {
        h = env_hash(h, word[i]);
        i += 1;
    }
    h
}

/// The hash of a whole name: its non-empty `_`-separated words folded with [`env_fold`].
pub const fn env_name_hash(name: &[u8]) -> u32 {
    let mut whole = ENV_HASH_INIT;
    let mut word = ENV_HASH_INIT;
    let mut len = 0;
    let mut i = 0;
    while i <= name.len() {
        if i == name.len() || name[i] == b'_' {
            if len > 0 {
                whole = env_fold(whole, word);
            }
            word = ENV_HASH_INIT;
            len = 0;
        } else {
            word = env_hash(word, name[i]);
            len += 1;
        }
        i += 1;
    }
    whole
}

/// FNV-1a over the exact bytes of a path (no case folding).
pub const fn path_hash(bytes: &[u8]) -> u32 {
    let mut h = ENV_HASH_INIT;
    let mut i = 0;
    while i < bytes.len() {
        h = path_hash_step(h, bytes[i]);
        i += 1;
    }
    h
}

/// The `KNOWN_HOMES` key of a home directory: [`path_hash`] of as much of it as the kernel sees
/// of `HOME=value` in its window.
pub const fn home_hash(home: &[u8]) -> u32 {
    let max = ENV_WINDOW - 1 - b"HOME=".len();
    let mut h = ENV_HASH_INIT;
    let mut i = 0;
    while i < home.len() && i < max {
        h = path_hash_step(h, home[i]);
        i += 1;
    }
    h
}

/// One step of [`path_hash`].
#[inline(always)]
pub const fn path_hash_step(h: u32, b: u8) -> u32 {
    (h ^ b as u32).wrapping_mul(0x0100_0193)
}

/// Bitmaps that gate each environment lookup (slot 0 of [`names::ENV_GATES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvGates {
    /// Indexed by a word's first byte (lowercased) & 31: bit `len` set when a listed word of
    /// that length starts with it.
    pub word_len: [u64; 32],
    /// The same for whole names (lengths of 63 and more share bit 63).
    pub name_len: [u64; 32],
    /// The first two bytes of a listed value prefix (`(b1 << 8) | b2`).
    pub value_head: [u64; 1024],
}

impl EnvGates {
    pub const EMPTY: Self = Self {
        word_len: [0; 32],
        name_len: [0; 32],
        value_head: [0; 1024],
    };
}

/// Tests the gate bit of a word or name of `len` bytes starting with `first`.
#[inline(always)]
pub fn len_gate(set: &[u64; 32], first: u8, len: usize) -> bool {
    let l = if len > 63 { 63 } else { len };
    (set[(first & 31) as usize] >> l) & 1 != 0
}

/// Where an environment variable was seen.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvSource {
    /// In the environment passed to execve/execveat.
    Exec = 0,
    /// Read by the process with getenv/secure_getenv (the name only).
    Getenv = 1,
}

/// Address families of [`NetConnect`] (the kernel's AF_INET, AF_INET6).
pub mod family {
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// [`NetState::state`] values.
pub mod conn_state {
    /// The socket closed before it was established (refused, unreachable, timed out).
    pub const FAILED: u32 = 2;
    /// An established connection closed.
    pub const CLOSED: u32 = 3;
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
    /// [`FileOpen::path`](super::FileOpen) holds the last bytes of a path longer than the
    /// window, not its first.
    pub const PATH_TAIL: u32 = 1 << 1;
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
    /// For a relative path: the inode number of the directory it starts from (the cwd, or
    /// what `dirfd` names) at the open, so userspace can tell whether the directory it finds
    /// later is still that one. 0 when absolute or unknown.
    pub base_ino: u64,
    /// For a successful open: the inode number of the file opened. 0 when unknown.
    pub file_ino: u64,
    /// Directory fd for relative paths (AT_FDCWD = -100).
    pub dirfd: i32,
    /// An [`OpenSyscall`] id.
    pub syscall: u32,
    /// The opener's mount namespace (its inode number); 0 when unknown.
    pub mnt_ns: u32,
    /// Devices (the kernel's `dev_t`: major << 20 | minor) of `base_ino` and `file_ino`.
    pub base_dev: u32,
    pub file_dev: u32,
    /// [`filter`] bits of the filters that matched.
    pub matched: u32,
    /// The opener's pid namespace (its inode number), in which the pids of a `/proc/PID/...`
    /// path are meant; 0 when unknown.
    pub pid_ns: u32,
    /// Bytes of `path` in use, without the NUL. Placed right before `path` on purpose: with
    /// `path` it forms an LPM trie key `{prefix_len, data}` for the prefix filter.
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
    /// The process's mount namespace (its inode number) after the exec; 0 when unknown.
    pub mnt_ns: u32,
    /// The same namespace's id that the kernel never reuses (inode numbers are reused at
    /// once); 0 when unknown.
    pub mnt_ns_id: u64,
    pub filename: [u8; PATH_CAP],
}

/// [`CgroupChange::op`] values.
pub mod cgroup_op {
    pub const MKDIR: u32 = 1;
    pub const RMDIR: u32 = 2;
}

/// A cgroup v2 directory was created (its path is known from then on, even if it and its
/// processes are gone before their records are read) or removed (state kept per cgroup can go).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupChange {
    pub header: EventHeader,
    /// The cgroup's id (the inode number of its directory).
    pub cgroup_id: u64,
    /// A [`cgroup_op`] value.
    pub op: u32,
    /// Bytes of `path` in use, without the NUL.
    pub path_len: u32,
    /// Its path below the cgroup2 root, starting with `/`.
    pub path: [u8; PATH_CAP],
}

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcExit {
    pub header: EventHeader,
}

/// A secret-like environment variable: `NAME=value` from an exec's environment, or `NAME`
/// passed to getenv. Its Debug output leaves `data` out: it holds a secret.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvVar {
    pub header: EventHeader,
    /// Boot time of the execve that carried it: the variables of one exec share it (0 for
    /// getenv).
    pub exec_id: u64,
    /// An [`EnvSource`] id.
    pub source: u32,
    /// [`env_match`] bits saying why it matched.
    pub matched: u32,
    /// Bytes of the name at the start of `data`.
    pub name_len: u32,
    /// Bytes of `data` in use, without the NUL.
    pub len: u32,
    pub data: [u8; ENV_CAP],
}

/// An outbound TCP connect, seen at connect(2) in the connecting process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetConnect {
    pub header: EventHeader,
    /// The socket's cookie: the key of every later record about this connection.
    pub cookie: u64,
    /// A [`family`] value.
    pub family: u16,
    /// Destination port (host byte order).
    pub port: u16,
    pub _reserved: u32,
    /// Destination address: 4 bytes for IPv4, 16 for IPv6 (network byte order).
    pub addr: [u8; 16],
}

/// Bytes of a connection's first payload a fold signature compares at most.
pub const CONN_SIGNATURE_MAX: usize = 64;

/// Key of [`names::CONN_FOLDS`]: repeated connections of one process to one address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnFoldKey {
    pub cgroup_id: u64,
    pub tgid: u32,
    /// A [`family`] value.
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

/// How to recognise a repeat of a connection the agent has already named. The agent writes the
/// signature after it parsed a first payload: the `len` bytes at `offset` of the payload (the
/// SNI, or the Host value) hash to `hash`. While a new connection of the same key matches it
/// within the fold window, the kernel counts it (in `names::CONN_FOLD_COUNTS`, which only the
/// kernel writes) and sends nothing. `len` 0 is the signature of a connection that closed
/// without payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnFold {
    /// When the agent confirmed the signature (CLOCK_BOOTTIME ns): repeats fold for a window
    /// after it, then one goes through in full again.
    pub confirmed_ns: u64,
    pub offset: u16,
    pub len: u16,
    /// [`path_hash`] of the compared bytes.
    pub hash: u32,
}

/// The outcome of a connection, or its end. The header's process fields are not meaningful
/// (these arrive in softirq context): only `kind`, `time_ns` and the cookie are.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetState {
    pub header: EventHeader,
    pub cookie: u64,
    /// A [`conn_state`] value.
    pub state: u32,
    pub _reserved: u32,
}

/// The start of one outbound payload packet of an awaited connection. Holds what the client
/// sent (a ClientHello, an HTTP request head); userspace keeps only what it parses out.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetPayload {
    pub header: EventHeader,
    pub cookie: u64,
    /// Payload packets of this connection before this one.
    pub packet: u32,
    /// Payload bytes in the packet.
    pub len: u32,
    /// Bytes of `data` in use (at most PAYLOAD_CAP).
    pub captured: u32,
    pub _reserved: u32,
    pub data: [u8; PAYLOAD_CAP],
}

/// The first plaintext buffer a process passed to SSL_write/SSL_write_ex on one SSL object.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsWrite {
    pub header: EventHeader,
    /// The SSL object (a pointer in the writer's address space): one record per object.
    pub ssl: u64,
    /// Bytes the caller asked to write.
    pub len: u32,
    /// Bytes of `data` in use.
    pub captured: u32,
    /// The last connection of the writing thread whose connect record the kernel held (it may
    /// repeat one the agent named): its socket cookie (0: none), when it connected
    /// (CLOCK_BOOTTIME ns), its process and destination. The agent knows a folded repeat by
    /// this, not by its cookie; a later connection it saw itself takes precedence.
    pub conn_cookie: u64,
    pub conn_time_ns: u64,
    pub conn: ConnFoldKey,
    pub data: [u8; PAYLOAD_CAP],
}

impl core::fmt::Debug for NetPayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetPayload")
            .field("header", &self.header)
            .field("cookie", &self.cookie)
            .field("packet", &self.packet)
            .field("len", &self.len)
            .field("captured", &self.captured)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for TlsWrite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsWrite")
            .field("header", &self.header)
            .field("ssl", &self.ssl)
            .field("len", &self.len)
            .field("captured", &self.captured)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnvVar")
            .field("header", &self.header)
            .field("exec_id", &self.exec_id)
            .field("source", &self.source)
            .field("matched", &self.matched)
            .field("name_len", &self.name_len)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

// The wire layout is part of the kernel/user contract: fail the build if it moves.
const _: () = {
    assert!(core::mem::size_of::<EventHeader>() == 56);
    assert!(core::mem::size_of::<FileOpen>() == 56 + 64 + PATH_CAP);
    assert!(core::mem::size_of::<CgroupChange>() == 56 + 16 + PATH_CAP);
    assert!(core::mem::size_of::<KernelOffsets>() == 96);
    assert!(core::mem::size_of::<ProcExec>() == 56 + 16 + PATH_CAP);
    assert!(core::mem::size_of::<ProcExit>() == 56);
    assert!(core::mem::size_of::<EnvVar>() == 56 + 24 + ENV_CAP);
    assert!(core::mem::size_of::<EnvGates>() == 512 + 8192);
    assert!(core::mem::size_of::<NetConnect>() == 56 + 32);
    assert!(core::mem::size_of::<NetState>() == 56 + 16);
    assert!(core::mem::size_of::<ConnFoldKey>() == 32);
    assert!(core::mem::size_of::<ConnFold>() == 16);
    assert!(core::mem::size_of::<NetPayload>() == 56 + 24 + PAYLOAD_CAP);
    assert!(core::mem::size_of::<TlsWrite>() == 56 + 64 + PAYLOAD_CAP);
    assert!(PAYLOAD_CAP.is_power_of_two());
    assert!(ENV_WINDOW >= ENV_NAME_MAX + 1 + ENV_VALUE_PREFIX_MAX);
    assert!(core::mem::size_of::<KernelConfig>() == 32);
    assert!(core::mem::size_of::<KnownFile>() == 16);
    assert!(core::mem::size_of::<ProbeCounters>() == 40);
    assert!(core::mem::size_of::<BudgetKey>() == 16);
    assert!(core::mem::size_of::<Budget>() == 32);
    assert!(core::mem::size_of::<FilterGates>() == 96 + 8192);
    assert!(PATH_CAP.is_power_of_two());
    assert!(core::mem::offset_of!(FileOpen, path) == core::mem::offset_of!(FileOpen, path_len) + 4);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data structs and arrays: repr(C), no padding (checked above), every bit
    // pattern valid.
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::ProbeCounters {}
    unsafe impl aya::Pod for super::FilterGates {}
    unsafe impl aya::Pod for super::EnvGates {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::BudgetKey {}
    unsafe impl aya::Pod for super::ConnFoldKey {}
    unsafe impl aya::Pod for super::ConnFold {}
    unsafe impl aya::Pod for super::NetConnect {}
    unsafe impl aya::Pod for super::Budget {}
    unsafe impl aya::Pod for super::KnownFile {}
}
