//! File opens. `sys_enter_{open,openat,openat2}` read the path and keep it only when it passes the
//! prefilter built from the watch rules (exact basename, basename prefix, path suffix, directory
//! suffix, absolute prefix); `sys_exit_*` complete the kept open with its result and send it.
//!
//! The prefilter is a superset of the watch globs: userspace does the exact glob match. An open
//! that passes nothing costs one string read and at most one lookup per non-empty filter map.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{map, tracepoint},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TracePointContext,
};
use keytrail_common::{
    BASENAME_MAX, EventKind, FileOpen, OpenSyscall, PATH_CAP, PREFIX_MAX, ProbeId, SUFFIX_MAX,
    event_flags, filter,
};

use super::{
    EVENTS, ProbeError, ProbeResult, config, count_dropped, count_seen, fill_header, tp_field,
};

/// Room for compiled watch rules per filter map.
const MAX_FILTER_ENTRIES: u32 = 1024;
/// Opens in flight between enter and exit; LRU so a lost exit cannot leak a slot.
const MAX_PENDING_OPENS: u32 = 8192;
const PATH_MASK: usize = PATH_CAP - 1;
const AT_FDCWD: i32 = -100;
/// `OpenScratch::base` when the basename is too long for the basename filters.
const NO_BASE: u64 = u64::MAX;

/// Exact basenames, zero padded (`.pgpass`); the value says whether absolute opens count too.
#[map]
static FILTER_BASENAME: HashMap<[u8; BASENAME_MAX], u32> =
    HashMap::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Basename prefixes (`.env.` for `.env.*`).
#[map]
static FILTER_BASENAME_PREFIX: LpmTrie<[u8; BASENAME_MAX], u32> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Reversed path tails: `mep.` for `*.pem`, `slaitnederc/swa./` for `*/.aws/credentials`; and,
/// starting with `/`, reversed directory tails (`/hss./` for `*/.ssh/*`).
#[map]
static FILTER_SUFFIX: LpmTrie<[u8; SUFFIX_MAX], u32> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Absolute directory prefixes (`/var/run/secrets/`).
#[map]
static FILTER_PREFIX: LpmTrie<[u8; PREFIX_MAX], u32> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Per-CPU working memory: the event under construction and the lookup keys (too big for the
/// 512-byte stack).
#[repr(C)]
struct OpenScratch {
    event: FileOpen,
    /// Path length, then basename start (see `prefilter`).
    len: u64,
    base: u64,
    basename: Key<[u8; BASENAME_MAX]>,
    suffix: Key<[u8; SUFFIX_MAX]>,
    dir_suffix: Key<[u8; SUFFIX_MAX]>,
    prefix: Key<[u8; PREFIX_MAX]>,
}

#[map]
static OPEN_SCRATCH: PerCpuArray<OpenScratch> = PerCpuArray::with_max_entries(1, 0);

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
        return Ok(());
    }
    let len = ((n - 1) as usize) & PATH_MASK;
    let matched = prefilter(s, len, filters);
    if matched == 0 {
        return Ok(());
    }
    let ev = &mut s.event;
    fill_header(&mut ev.header, EventKind::FileOpen as u32, pid_tgid);
    if n as usize >= PATH_CAP {
        ev.header.flags |= event_flags::TRUNCATED;
    }
    ev.ret = 0;
    ev.open_flags = open_flags;
    ev.dirfd = dirfd;
    ev.syscall = syscall as u32;
    ev.matched = matched;
    ev.path_len = len as u32;
    count_seen(probe);
    if insert_pending(pid_tgid, ev).is_err() {
        count_dropped(probe);
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
    let pid_tgid = bpf_get_current_pid_tgid();
    // The common case: this open was not a candidate.
    let ev = PENDING_OPENS.get_ptr_mut(pid_tgid).ok_or(ProbeError)?;
    // SAFETY: the pointer comes from a successful lookup; offset from the format file.
    let ev = unsafe {
        (*ev).ret = tp_field::<i64>(ctx, 16);
        &*ev
    };
    if EVENTS.output::<FileOpen>(ev, 0).is_err() {
        count_dropped(probe);
    }
    let _ = PENDING_OPENS.remove(pid_tgid);
    Ok(())
}

/// Returns the [`filter`] bit of the first filter the path in `s.event.path[..len]` passes, or 0.
///
/// Each step reloads its inputs from the scratch map with volatile reads: the verifier then
/// sees bounded unknowns instead of the exact values each earlier loop exit produced, so the
/// states of consecutive loops add up instead of multiplying.
#[inline(always)]
fn prefilter(s: &mut OpenScratch, len: usize, filters: u32) -> u32 {
    store(&mut s.len, len as u64);
    find_basename(s);
    if filters & (filter::BASENAME | filter::BASENAME_PREFIX) != 0 {
        let m = match_basename(s, filters);
        if m != 0 {
            return m;
        }
    }
    if filters & filter::SUFFIX != 0 && match_suffix(s) {
        return filter::SUFFIX;
    }
    if filters & filter::DIR_SUFFIX != 0 && match_dir_suffix(s) {
        return filter::DIR_SUFFIX;
    }
    if filters & filter::PREFIX != 0 && match_prefix(s) {
        return filter::PREFIX;
    }
    0
}

#[inline(always)]
fn store(slot: &mut u64, v: u64) {
    // SAFETY: a valid, aligned field of the scratch map value.
    unsafe { core::ptr::write_volatile(slot, v) }
}

#[inline(always)]
fn load(slot: &u64) -> u64 {
    // SAFETY: as in `store`.
    unsafe { core::ptr::read_volatile(slot) }
}

/// Stores the basename's start (after the last '/' among the last BASENAME_MAX bytes) in
/// `s.base`, or NO_BASE when the basename is longer than that.
#[inline(always)]
fn find_basename(s: &mut OpenScratch) {
    let len = load(&s.len) as usize & PATH_MASK;
    let mut base = NO_BASE;
    for i in 0..BASENAME_MAX {
        if i >= len {
            base = 0;
            break;
        }
        let idx = len - 1 - i;
        if s.event.path[idx & PATH_MASK] == b'/' {
            base = (idx + 1) as u64;
            break;
        }
    }
    store(&mut s.base, base);
}

#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the key must stay in the scratch map, not be copied to the stack"
)]
#[inline(always)]
fn match_basename(s: &mut OpenScratch, filters: u32) -> u32 {
    let base = load(&s.base);
    if base == NO_BASE {
        return 0;
    }
    let base = base as usize & PATH_MASK;
    let len = load(&s.len) as usize & PATH_MASK;
    let base_len = len.wrapping_sub(base);
    let absolute = s.event.path[0] == b'/';
    for i in 0..BASENAME_MAX {
        s.basename.data[i] = if i < base_len {
            s.event.path[(base + i) & PATH_MASK]
        } else {
            0
        };
    }
    if filters & filter::BASENAME != 0
        && let Some(v) = FILTER_BASENAME.get_ptr(&s.basename.data)
    {
        // SAFETY: pointer from a successful lookup of a map the agent fills before attaching.
        let v = unsafe { *v };
        if v & filter::BASENAME_ANYWHERE != 0 || !absolute {
            return filter::BASENAME;
        }
    }
    if filters & filter::BASENAME_PREFIX != 0 {
        s.basename.prefix_len = ((base_len & (BASENAME_MAX - 1)) * 8) as u32;
        if FILTER_BASENAME_PREFIX.get(&s.basename).is_some() {
            return filter::BASENAME_PREFIX;
        }
    }
    0
}

/// The path reversed; a relative path gets a virtual leading '/' so that `.aws/credentials`
/// opened from a home directory still meets the rule for `/.aws/credentials`.
#[inline(always)]
fn match_suffix(s: &mut OpenScratch) -> bool {
    let len = load(&s.len) as usize & PATH_MASK;
    let absolute = s.event.path[0] == b'/';
    for i in 0..SUFFIX_MAX {
        s.suffix.data[i] = if i < len {
            s.event.path[(len - 1 - i) & PATH_MASK]
        } else if i == len && !absolute {
            b'/'
        } else {
            0
        };
    }
    let rlen = if absolute { len } else { len + 1 };
    s.suffix.prefix_len = (if rlen < SUFFIX_MAX { rlen } else { SUFFIX_MAX } * 8) as u32;
    FILTER_SUFFIX.get(&s.suffix).is_some()
}

/// The directory part reversed, starting with its trailing '/'.
#[inline(always)]
fn match_dir_suffix(s: &mut OpenScratch) -> bool {
    let base = load(&s.base);
    if base == NO_BASE || base == 0 {
        return false;
    }
    let base = base as usize & PATH_MASK;
    let absolute = s.event.path[0] == b'/';
    for i in 0..SUFFIX_MAX {
        s.dir_suffix.data[i] = if i < base {
            s.event.path[(base - 1 - i) & PATH_MASK]
        } else if i == base && !absolute {
            b'/'
        } else {
            0
        };
    }
    let rlen = if absolute { base } else { base + 1 };
    s.dir_suffix.prefix_len = (if rlen < SUFFIX_MAX { rlen } else { SUFFIX_MAX } * 8) as u32;
    FILTER_SUFFIX.get(&s.dir_suffix).is_some()
}

#[inline(always)]
fn match_prefix(s: &mut OpenScratch) -> bool {
    if s.event.path[0] != b'/' {
        return false;
    }
    let len = load(&s.len) as usize & PATH_MASK;
    // Bytes past `len` are stale but the trie compares only `prefix_len` bits.
    // SAFETY: both buffers are in the scratch map value and PREFIX_MAX <= PATH_CAP.
    unsafe {
        generated::bpf_probe_read_kernel(
            s.prefix.data.as_mut_ptr().cast(),
            PREFIX_MAX as u32,
            s.event.path.as_ptr().cast(),
        )
    };
    s.prefix.prefix_len = (if len < PREFIX_MAX { len } else { PREFIX_MAX } * 8) as u32;
    FILTER_PREFIX.get(&s.prefix).is_some()
}
