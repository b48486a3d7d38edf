//! File opens. `sys_enter_{open,openat,openat2}` read the path and keep it only when it passes the
//! prefilter built from the watch rules; `sys_exit_*` complete the kept open with its result and
//! send it.
//!
//! The prefilter is a superset of the watch globs (userspace does the exact glob match) and is
//! built to cost little on the opens it rejects, which are nearly all of them: one string read,
//! a backward scan to the last '/', and a few bit tests (`FilterGates`) that tell whether a trie
//! lookup could match at all. Only then is the tail reversed and the trie walked. No key is
//! copied: lookups point into the reversed buffer (or at the event's own `path_len` + `path`),
//! with the LPM prefix length written into the four bytes just before the key data.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{map, tracepoint},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TracePointContext,
};
use keytrail_common::{
    ENV_HASH_INIT, EventKind, FileOpen, FilterGates, KernelConfig, KnownFile, OpenSyscall,
    PATH_CAP, PREFIX_MAX, ProbeId, SUFFIX_MAX, bit_head, bit256, event_flags, filter,
    path_hash_step, record_family,
};

use super::{
    EVENTS, ProbeError, ProbeResult, atomic_add, config, count_dropped, count_folded,
    count_read_failed, count_seen, current_mnt_ns, current_pid_ns, current_start_time,
    cwd_identity, fd_identity, fd_inode, fill_header, inode_dev, load, output_prefix, store,
    submit_flags, tp_field, within_budget,
};

/// Room for compiled watch rules per filter map.
const MAX_FILTER_ENTRIES: u32 = 1024;
/// Files known to hold credentials, checked by identity at every open.
const MAX_KNOWN_FILES: u32 = 4096;
/// Distinct (process, file, outcome) opens remembered for folding repeats.
const MAX_FOLDS: u32 = 65536;

/// What makes two opens the same: the process (pid and start time, so a reused pid is another
/// process), the name it used (a hash of the path) and the file it got (inode and device), and
/// the outcome and access mode.
#[repr(C)]
struct FoldKey {
    tgid: u32,
    /// bit 0: succeeded; bits 1-2: access mode; from bit 4: the filter that matched.
    bits: u32,
    start_ns: u64,
    path: u64,
    ino: u64,
    dev: u32,
    _reserved: u32,
}

/// When each open was last sent: repeats within the fold window are counted, not sent, so a
/// process opening one file a million times costs the ring one record per window.
#[map]
static OPEN_FOLDS: LruHashMap<FoldKey, u64> = LruHashMap::with_max_entries(MAX_FOLDS, 0);
/// Opens in flight between enter and exit; LRU so a lost exit cannot leak a slot.
const MAX_PENDING_OPENS: u32 = 8192;
const PATH_MASK: usize = PATH_CAP - 1;
/// Window-sized steps taken to find the end of a path longer than the window: enough for
/// PATH_MAX (4096) bytes.
const LONG_PATH_STEPS: usize = 8;
const AT_FDCWD: i32 = -100;
/// `OpenScratch::slash` when no '/' is in the reversed window.
const NO_SLASH: u64 = u64::MAX;
/// Reversed path buffer: 4 bytes for the first key's prefix length, SUFFIX_MAX reversed bytes
/// (plus one virtual '/'), and room for a key of SUFFIX_MAX bytes starting at any of them.
const REV_BYTES: usize = 4 + 2 * SUFFIX_MAX + 8;

/// Reversed tails: path suffixes (`mep.` for `*.pem`), exact basenames (`slaitnederc/` for
/// `*/credentials`), directory tails (`/hss./` for `*/.ssh/*`), basename prefixes (`.vne./` for
/// `.env.*`). The value is `filter::MATCH_*`.
#[map]
static FILTER_SUFFIX: LpmTrie<[u8; SUFFIX_MAX], u32> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Slot 0: bitmaps that gate each lookup (see `FilterGates`).
#[map]
static FILTER_GATES: Array<FilterGates> = Array::with_max_entries(1, 0);

/// Absolute directory prefixes (`/var/run/secrets/`) and literal paths of the config.
#[map]
static FILTER_PREFIX: LpmTrie<[u8; PREFIX_MAX], u32> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Exact paths named by workloads' environments; the value is the path's length: a hit counts
/// only for a path of that very length.
#[map]
static FILTER_EXACT: LpmTrie<[u8; PREFIX_MAX], u32> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Files (inode number and device) the agent classified as holding credentials: an open of one
/// under any other name (hard link, bind mount, symlink, odd spelling) is reported too.
#[map]
static KNOWN_FILES: HashMap<KnownFile, u8> = HashMap::with_max_entries(MAX_KNOWN_FILES, 0);

/// Inode numbers of `KNOWN_FILES` -> how many known files have that number: checked first, so
/// an open of any other file costs one lookup and no read of its device.
#[map]
static KNOWN_INOS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_KNOWN_FILES, 0);

/// Per-CPU working memory: the event under construction and the reversed path (too big for
/// the 512-byte stack).
#[repr(C)]
struct OpenScratch {
    event: FileOpen,
    /// Path length; index of the last '/' in the path; the same '/' as an index into the
    /// reversed path. Kept here, not in registers, so the verifier sees bounded unknowns after each loop
    /// instead of one state per loop exit.
    len: u64,
    last_slash: u64,
    slash: u64,
    /// The path starts with '/'; `event.path` holds the tail of a longer path.
    absolute: u64,
    tail: u64,
    rev: [u8; REV_BYTES],
}

#[map]
static OPEN_SCRATCH: PerCpuArray<OpenScratch> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: how many candidate opens are waiting for their exit, node-wide. The exit programs
/// skip the PENDING_OPENS lookup while it is 0, which is nearly always. A lost exit only
/// leaves it above 0, which costs the lookup again, never an event.
#[map]
static PENDING_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Candidate opens waiting for their syscall exit, by pid_tgid.
#[map]
static PENDING_OPENS: LruHashMap<u64, FileOpen> =
    LruHashMap::with_max_entries(MAX_PENDING_OPENS, 0);

/// match-proto: syscalls/sys_enter_openat: dfd@16 filename@24 flags@32
#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn file_enter_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let (dirfd, filename, flags) = unsafe {
        (
            tp_field::<i64>(&ctx, 16) as i32,
            tp_field::<u64>(&ctx, 24) as *const u8,
            tp_field::<u64>(&ctx, 32) & 0xffff_ffff,
        )
    };
    let _ = open_enter(
        OpenSyscall::Openat,
        ProbeId::FileOpenat,
        dirfd,
        filename,
        flags,
    );
    0
}

/// match-proto: syscalls/sys_enter_openat2: dfd@16 filename@24 how@32 (struct open_how *)
#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn file_enter_openat2(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let (dirfd, filename, how) = unsafe {
        (
            tp_field::<i64>(&ctx, 16) as i32,
            tp_field::<u64>(&ctx, 24) as *const u8,
            tp_field::<u64>(&ctx, 32) as *const u64,
        )
    };
    // open_how.flags is its first field. SAFETY: reads user memory through the helper.
    let flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how) }.unwrap_or(0);
    let _ = open_enter(
        OpenSyscall::Openat2,
        ProbeId::FileOpenat2,
        dirfd,
        filename,
        flags,
    );
    0
}

/// match-proto: syscalls/sys_enter_open: filename@16 flags@24
#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn file_enter_open(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let (filename, flags) = unsafe {
        (
            tp_field::<u64>(&ctx, 16) as *const u8,
            tp_field::<u64>(&ctx, 24) & 0xffff_ffff,
        )
    };
    let _ = open_enter(
        OpenSyscall::Open,
        ProbeId::FileOpen,
        AT_FDCWD,
        filename,
        flags,
    );
    0
}

/// match-proto: syscalls/sys_exit_openat: ret@16
#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn file_exit_openat(ctx: TracePointContext) -> u32 {
    let _ = open_exit(&ctx, ProbeId::FileOpenat);
    0
}

/// match-proto: syscalls/sys_exit_openat2: ret@16
#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn file_exit_openat2(ctx: TracePointContext) -> u32 {
    let _ = open_exit(&ctx, ProbeId::FileOpenat2);
    0
}

/// match-proto: syscalls/sys_exit_open: ret@16
#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn file_exit_open(ctx: TracePointContext) -> u32 {
    let _ = open_exit(&ctx, ProbeId::FileOpen);
    0
}

#[inline(always)]
fn open_enter(
    syscall: OpenSyscall,
    probe: ProbeId,
    dirfd: i32,
    filename: *const u8,
    open_flags: u64,
) -> ProbeResult {
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config().ok_or(ProbeError)?;
    if cfg.agent_tgid == (pid_tgid >> 32) as u32 || cfg.filters == 0 {
        return Ok(());
    }
    let filters = cfg.filters;
    let s = OPEN_SCRATCH.get_ptr_mut(0).ok_or(ProbeError)?;
    // SAFETY: per-CPU scratch slot, only this program instance uses it until it returns.
    let s = unsafe { &mut *s };
    // SAFETY: the helper bounds the copy by PATH_CAP and faults are reported as errors.
    let n = unsafe {
        generated::bpf_probe_read_user_str(
            s.event.path.as_mut_ptr().cast(),
            PATH_CAP as u32,
            filename.cast(),
        )
    };
    if n <= 1 {
        if n < 0 && !filename.is_null() {
            count_read_failed(probe);
        }
        return Ok(());
    }
    let len = ((n - 1) as usize) & PATH_MASK;
    let truncated = n as usize >= PATH_CAP;
    let matched = prefilter(s, len, filters, cfg, truncated, filename);
    if matched == 0 {
        return Ok(());
    }
    let tail = load(&s.tail) != 0;
    let absolute = load(&s.absolute) != 0;
    let ev = &mut s.event;
    fill_header(&mut ev.header, EventKind::FileOpen as u32, pid_tgid);
    if truncated {
        ev.header.flags |= event_flags::TRUNCATED;
    }
    if tail {
        ev.header.flags |= event_flags::PATH_TAIL;
    }
    ev.ret = 0;
    ev.open_flags = open_flags;
    ev.dirfd = dirfd;
    ev.syscall = syscall as u32;
    ev.matched = matched;
    ev.path_len = load(&s.len) as u32;
    ev.mnt_ns = current_mnt_ns();
    ev.pid_ns = current_pid_ns();
    // Where a relative path starts, as the kernel sees it now: the process may chdir or close
    // its dirfd before userspace looks.
    let (base_ino, base_dev) = if absolute {
        (0, 0)
    } else if dirfd == AT_FDCWD {
        cwd_identity()
    } else {
        fd_identity(dirfd as i64)
    };
    ev.base_ino = base_ino;
    ev.base_dev = base_dev;
    ev.file_ino = 0;
    ev.file_dev = 0;
    count_seen(probe);
    if insert_pending(pid_tgid, ev).is_err() {
        count_dropped(probe);
    } else {
        pending_add(1);
    }
    Ok(())
}

/// Takes the event by reference: by value it would be copied onto the 512-byte BPF stack.
#[inline(always)]
fn insert_pending(pid_tgid: u64, ev: &FileOpen) -> Result<(), i32> {
    PENDING_OPENS.insert(pid_tgid, ev, 0)
}

#[inline(always)]
fn open_exit(ctx: &TracePointContext, probe: ProbeId) -> ProbeResult {
    // SAFETY: offset from the format file.
    let ret = unsafe { tp_field::<i64>(ctx, 16) };
    // No candidate open is in flight anywhere: the common case skips the lookup.
    if pending_count() != 0 {
        let pid_tgid = bpf_get_current_pid_tgid();
        if let Some(ev) = PENDING_OPENS.get_ptr_mut(pid_tgid) {
            // SAFETY: the pointer comes from a successful lookup.
            let ev = unsafe {
                (*ev).ret = ret;
                // The file opened, whatever name it was opened by: lets userspace find its real
                // path and tell a reused descriptor from this one.
                let (ino, dev) = fd_identity(ret);
                (*ev).file_ino = ino;
                (*ev).file_dev = dev;
                &*ev
            };
            send_open(ev, probe);
            if PENDING_OPENS.remove(pid_tgid).is_ok() {
                pending_add(u64::MAX); // wrapping -1
            }
            return Ok(());
        }
    }
    if ret >= 0 {
        known_file_open(ret, probe)?;
    }
    Ok(())
}

/// Sends a completed open, unless it repeats one sent within the fold window (counted as
/// folded) or its cgroup is over its budget (counted against it).
#[inline(always)]
fn send_open(ev: &FileOpen, probe: ProbeId) {
    let Some(cfg) = config() else { return };
    if cfg.fold_window_ns != 0 && is_repeat(&fold_key(ev), cfg.fold_window_ns) {
        count_folded(probe);
        return;
    }
    if !within_budget(cfg, record_family::FILES, ev.header.cgroup_id, probe) {
        return;
    }
    // The path's bytes only: most records are a quarter of the full size.
    let len = core::mem::offset_of!(FileOpen, path) + (ev.path_len as usize & PATH_MASK) + 1;
    output_prefix(ev, len, probe);
}

/// The fold key of a completed open.
#[inline(always)]
fn fold_key(ev: &FileOpen) -> FoldKey {
    let ok = ev.ret >= 0;
    FoldKey {
        tgid: ev.header.pid,
        bits: ok as u32 | ((ev.open_flags as u32 & 3) << 1) | (ev.matched << 4),
        start_ns: current_start_time(),
        path: path_hash(ev),
        ino: ev.file_ino,
        dev: ev.file_dev,
        _reserved: 0,
    }
}

/// True when the same open was sent within `window` ns; else remembers this one as sent.
#[inline(always)]
fn is_repeat(key: &FoldKey, window: u64) -> bool {
    // SAFETY: helper without preconditions.
    let now = unsafe { generated::bpf_ktime_get_boot_ns() };
    // SAFETY: a plain u64 read before any update.
    if let Some(&last) = unsafe { OPEN_FOLDS.get(key) }
        && now.wrapping_sub(last) < window
    {
        return true;
    }
    let _ = OPEN_FOLDS.insert(key, now, 0);
    false
}

/// FNV-1a of the captured path, with its length.
#[inline(always)]
fn path_hash(ev: &FileOpen) -> u64 {
    let len = ev.path_len as usize;
    let mut h = ENV_HASH_INIT;
    for i in 0..PATH_CAP {
        if i >= len {
            break;
        }
        h = path_hash_step(h, ev.path[i & PATH_MASK]);
    }
    h as u64 | ((len as u64) << 32)
}

/// An open that passed no path filter but returned a file the agent knows: reported without
/// its path (gone with the syscall's entry), which userspace reads from the descriptor.
#[inline(always)]
fn known_file_open(fd: i64, probe: ProbeId) -> ProbeResult {
    let cfg = config().ok_or(ProbeError)?;
    if cfg.known_files == 0 {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if cfg.agent_tgid == (pid_tgid >> 32) as u32 {
        return Ok(());
    }
    let (inode, ino) = fd_inode(fd);
    // SAFETY: plain values read before any update of the maps.
    if ino == 0 || unsafe { KNOWN_INOS.get(ino) }.is_none() {
        return Ok(());
    }
    let dev = inode_dev(inode);
    let known = KnownFile {
        ino,
        dev,
        _reserved: 0,
    };
    // SAFETY: as above.
    if unsafe { KNOWN_FILES.get(known) }.is_none() {
        return Ok(());
    }
    count_seen(probe);
    let key = FoldKey {
        tgid: (pid_tgid >> 32) as u32,
        bits: 1 | (filter::IDENTITY << 4),
        start_ns: current_start_time(),
        path: 0,
        ino,
        dev,
        _reserved: 0,
    };
    if cfg.fold_window_ns != 0 && is_repeat(&key, cfg.fold_window_ns) {
        count_folded(probe);
        return Ok(());
    }
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { generated::bpf_get_current_cgroup_id() };
    if !within_budget(cfg, record_family::FILES, cgroup_id, probe) {
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<FileOpen>(0) else {
        count_dropped(probe);
        return Err(ProbeError);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: reserved, writable FileOpen in the ring buffer; every field userspace reads is
    // written (the path is empty).
    unsafe {
        fill_header(&mut (*ev).header, EventKind::FileOpen as u32, pid_tgid);
        (*ev).ret = fd;
        (*ev).open_flags = 0;
        (*ev).base_ino = 0;
        (*ev).file_ino = ino;
        (*ev).dirfd = AT_FDCWD;
        (*ev).syscall = match probe {
            ProbeId::FileOpenat2 => OpenSyscall::Openat2,
            ProbeId::FileOpen => OpenSyscall::Open,
            _ => OpenSyscall::Openat,
        } as u32;
        (*ev).mnt_ns = current_mnt_ns();
        (*ev).base_dev = 0;
        (*ev).file_dev = dev;
        (*ev).matched = filter::IDENTITY;
        (*ev).pid_ns = current_pid_ns();
        (*ev).path_len = 0;
        (*ev).path[0] = 0;
    }
    entry.submit(submit_flags());
    Ok(())
}

#[inline(always)]
fn pending_count() -> u64 {
    match PENDING_COUNT.get_ptr(0) {
        // SAFETY: slot 0 of an array map always exists; a racy read is fine here.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 1,
    }
}

#[inline(always)]
fn pending_add(delta: u64) {
    if let Some(p) = PENDING_COUNT.get_ptr_mut(0) {
        atomic_add(p, delta);
    }
}

/// Returns the [`filter`] bit of the first filter the path in `s.event.path[..len]` passes, or 0.
/// `truncated`: the path filled the window; the suffix filters then judge its real tail, read
/// again from `filename`.
#[inline(always)]
fn prefilter(
    s: &mut OpenScratch,
    len: usize,
    filters: u32,
    cfg: &KernelConfig,
    truncated: bool,
    filename: *const u8,
) -> u32 {
    let Some(gates) = FILTER_GATES.get(0) else {
        return 0;
    };
    let absolute = s.event.path[0] == b'/';
    store(&mut s.absolute, absolute as u64);
    store(&mut s.tail, 0);
    store(&mut s.len, len as u64);

    if absolute {
        let (b1, b2) = (s.event.path[1], s.event.path[2]);
        // `//x`, `/./x`, `/../x`: the prefix trie compares bytes, not paths.
        if b1 == b'/' || (b1 == b'.' && (b2 == b'/' || b2 == b'.')) {
            return filter::NONCANONICAL;
        }
        if bit_head(&gates.prefix_head, b1, b2) {
            if filters & filter::PREFIX != 0 && lookup_prefix(s, &FILTER_PREFIX, false) {
                return filter::PREFIX;
            }
            if filters & filter::EXACT_PATH != 0 && lookup_prefix(s, &FILTER_EXACT, true) {
                return filter::EXACT_PATH;
            }
        }
        if b1 == b'p' && b2 == b'r' && is_proc_root(s) {
            return filter::NONCANONICAL;
        }
    }
    if truncated {
        if !load_tail(s, filename) {
            // Longer than PATH_MAX or unreadable: the kernel cannot judge it; userspace
            // reports it as truncated.
            return filter::NONCANONICAL;
        }
        store(&mut s.tail, 1);
    }

    // Which trie lookups could match, from single bytes around the last '/'.
    find_last_slash(s);
    let len = load(&s.len) as usize & PATH_MASK;
    let last = s.event.path[(len.wrapping_sub(1)) & PATH_MASK];
    let want_suffix = filters & filter::SUFFIX != 0 && bit256(&gates.last_char, last);
    let p = load(&s.last_slash);
    let (want_dir, base_start) = if p == NO_SLASH {
        // No '/' in the window: a short relative path is all basename.
        (false, if len < SUFFIX_MAX { Some(0) } else { None })
    } else {
        let p = p as usize & PATH_MASK;
        let dir_char = s.event.path[p.wrapping_sub(1) & PATH_MASK];
        (
            filters & filter::DIR_SUFFIX != 0 && p >= 1 && bit256(&gates.dir_last_char, dir_char),
            Some((p + 1) & PATH_MASK),
        )
    };
    let want_base_prefix = filters & filter::BASENAME_PREFIX != 0
        && base_start.is_some_and(|b| bit256(&gates.base_first_char, s.event.path[b]));
    if !(want_suffix || want_dir || want_base_prefix) {
        return 0;
    }

    reverse_tail(s);
    let len = load(&s.len) as usize & PATH_MASK;
    // The reversed length, with a virtual leading '/' for a relative path that fits whole:
    // `.aws/credentials` opened from a home directory then meets `/.aws/credentials`.
    let mut rlen = if len < SUFFIX_MAX { len } else { SUFFIX_MAX };
    if !absolute && len < SUFFIX_MAX {
        s.rev[4 + (rlen & (SUFFIX_MAX - 1))] = b'/';
        if load(&s.slash) == NO_SLASH {
            store(&mut s.slash, rlen as u64);
        }
        rlen += 1;
    }

    if want_suffix && lookup_suffix(s, 0, rlen, absolute) {
        return filter::SUFFIX;
    }
    let slash = load(&s.slash);
    if slash != NO_SLASH {
        let slash = slash as usize & (SUFFIX_MAX - 1);
        // Lookups at growing offsets: each one's prefix length overwrites bytes that only
        // earlier (smaller) offsets used.
        if want_base_prefix {
            for l in cfg.basename_prefix_lens {
                let l = l as usize;
                if l != 0 && l <= slash && lookup_suffix(s, slash - l, rlen, absolute) {
                    return filter::BASENAME_PREFIX;
                }
            }
        }
        if want_dir && lookup_suffix(s, slash, rlen, absolute) {
            return filter::DIR_SUFFIX;
        }
    }
    0
}

/// True for `/proc/<pid|self|thread-self>/{root,cwd}/...` (also under `task/<tid>/`): a path
/// into another root or working directory, which the prefix filter cannot judge.
#[inline(always)]
fn is_proc_root(s: &OpenScratch) -> bool {
    let p = &s.event.path;
    if !(p[3] == b'o' && p[4] == b'c' && p[5] == b'/') {
        return false;
    }
    // The end of the pid component (`self`, `thread-self` or digits).
    let Some(mut i) = component_end(p, 6) else {
        return false;
    };
    if p[(i + 1) & PATH_MASK] == b't'
        && p[(i + 2) & PATH_MASK] == b'a'
        && p[(i + 3) & PATH_MASK] == b's'
        && p[(i + 4) & PATH_MASK] == b'k'
        && p[(i + 5) & PATH_MASK] == b'/'
    {
        match component_end(p, (i + 6) & PATH_MASK) {
            Some(j) => i = j,
            None => return false,
        }
    }
    let at = |k: usize| p[(i + k) & PATH_MASK];
    (at(1) == b'r' && at(2) == b'o' && at(3) == b'o' && at(4) == b't' && at(5) == b'/')
        || (at(1) == b'c' && at(2) == b'w' && at(3) == b'd' && at(4) == b'/')
}

/// Index of the '/' ending the component that starts at `start` (at most 16 bytes on).
#[inline(always)]
fn component_end(p: &[u8; PATH_CAP], start: usize) -> Option<usize> {
    for k in 0..16 {
        let i = (start + k) & PATH_MASK;
        match p[i] {
            b'/' => return Some(i),
            0 => return None,
            _ => {}
        }
    }
    None
}

/// For a path longer than the window: finds its end in user memory and puts its last
/// `PATH_CAP - 1` bytes in `s.event.path` (the suffix filters need the real tail). False when
/// the end was not found.
#[inline(always)]
fn load_tail(s: &mut OpenScratch, filename: *const u8) -> bool {
    let step = PATH_CAP - 1;
    let mut at = filename as u64;
    let mut end = 0u64;
    for _ in 0..LONG_PATH_STEPS {
        at += step as u64;
        // SAFETY: bounded by PATH_CAP; faults are reported as errors.
        let n = unsafe {
            generated::bpf_probe_read_user_str(
                s.event.path.as_mut_ptr().cast(),
                PATH_CAP as u32,
                at as *const core::ffi::c_void,
            )
        };
        if n <= 0 {
            return false;
        }
        if (n as usize) < PATH_CAP {
            end = at + n as u64 - 1;
            break;
        }
    }
    if end == 0 {
        return false;
    }
    // SAFETY: as above; the range lies inside the string just measured.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            s.event.path.as_mut_ptr().cast(),
            step as u32,
            (end - step as u64) as *const core::ffi::c_void,
        )
    };
    s.event.path[step] = 0;
    store(&mut s.len, step as u64);
    rc == 0
}

/// Stores the index of the last '/' among the last SUFFIX_MAX bytes in `s.last_slash`.
#[inline(always)]
fn find_last_slash(s: &mut OpenScratch) {
    let len = load(&s.len) as usize & PATH_MASK;
    store(&mut s.last_slash, NO_SLASH);
    for i in 0..SUFFIX_MAX {
        if i >= len {
            break;
        }
        let idx = len - 1 - i;
        if s.event.path[idx & PATH_MASK] == b'/' {
            store(&mut s.last_slash, idx as u64);
            break;
        }
    }
}

/// Writes the last SUFFIX_MAX bytes of the path reversed into `s.rev[4..]`, and where the last
/// '/' (found by `find_last_slash`) lands in them into `s.slash`.
#[inline(always)]
fn reverse_tail(s: &mut OpenScratch) {
    let len = load(&s.len) as usize & PATH_MASK;
    let last = load(&s.last_slash);
    // Both scans cover the same last SUFFIX_MAX bytes, so the index just mirrors.
    let slash = if last == NO_SLASH {
        NO_SLASH
    } else {
        (len as u64).wrapping_sub(1).wrapping_sub(last)
    };
    store(&mut s.slash, slash);
    for i in 0..SUFFIX_MAX {
        if i >= len {
            break;
        }
        s.rev[4 + i] = s.event.path[(len - 1 - i) & PATH_MASK];
    }
}

/// Looks up the reversed path from byte `offset` on in FILTER_SUFFIX.
#[inline(always)]
fn lookup_suffix(s: &mut OpenScratch, offset: usize, rlen: usize, absolute: bool) -> bool {
    let offset = offset & (SUFFIX_MAX - 1);
    let bits = (rlen.saturating_sub(offset) * 8) as u32;
    // The key {prefix_len: u32, data} starts 4 bytes before the data at `offset`.
    let key = s.rev[offset..].as_mut_ptr();
    // SAFETY: `key` points into the scratch map value with room for 4 + SUFFIX_MAX bytes
    // (REV_BYTES covers any offset < SUFFIX_MAX); unaligned writes are fine in map memory.
    let hit = unsafe {
        core::ptr::write_unaligned(key.cast::<u32>(), bits);
        FILTER_SUFFIX.get(&*key.cast::<Key<[u8; SUFFIX_MAX]>>())
    };
    match hit {
        Some(&v) => v & filter::MATCH_ANYWHERE != 0 || !absolute,
        None => false,
    }
}

/// Looks up the absolute path in `trie`, using the event's `path_len` + `path` fields as the
/// key (they are laid out as `{prefix_len, data}`). `exact`: the entry's value is a path length
/// the path must have.
#[inline(always)]
fn lookup_prefix(s: &mut OpenScratch, trie: &LpmTrie<[u8; PREFIX_MAX], u32>, exact: bool) -> bool {
    let len = load(&s.len) as usize & PATH_MASK;
    s.event.path_len = (if len < PREFIX_MAX { len } else { PREFIX_MAX } * 8) as u32;
    let key = (&raw const s.event.path_len).cast::<Key<[u8; PREFIX_MAX]>>();
    // SAFETY: path_len is immediately followed by path (asserted in keytrail-common), so the
    // key lies inside the event; bytes past `len` are stale but not compared.
    let hit = match trie.get(unsafe { &*key }) {
        Some(&v) => !exact || v as usize == len,
        None => false,
    };
    s.event.path_len = len as u32;
    hit
}
