//! Secret-like environment variables: in the environment handed to execve/execveat (read at
//! syscall entry, so a process that exits a microsecond later is still seen), and in the names
//! passed to getenv/secure_getenv (uprobes the agent attaches to every libc it finds).
//!
//! Only matches leave the kernel. A name matches when its whole hash is in ENV_NAMES (exact
//! names, file-naming names), or its `_`-separated words hit ENV_WORDS the way CREDENTIALS.md
//! says (a secret word and no excluding word; `*_FILE` after a secret-like stem). An exec's
//! variable also matches when its value starts with a known credential prefix (ENV_VALUE_PREFIX).
//! Bitmaps gate every lookup, so the common variables (PATH, HOME, LANG ...) cost a string read
//! and a short scan.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{map, tracepoint, uprobe},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::{ProbeContext, TracePointContext},
};
use keytrail_common::{
    ENV_CAP, ENV_HASH_INIT, ENV_NAME_MAX, ENV_VALUE_PREFIX_MAX, ENV_WINDOW, EnvGates, EnvSource,
    EnvVar, EventKind, MAX_ENV_ENTRIES, ProbeId, bit_head, env_fold, env_hash, env_match,
    event_flags, len_gate, path_hash_step, record_family,
};

use super::{
    ProbeError, ProbeResult, atomic_add, config, count_seen, fill_header, load, output_prefix,
    store, tp_field, within_budget,
};

/// Room for words, names and value prefixes from the config.
const MAX_ENV_RULES: u32 = 1024;
/// (process, name) pairs remembered for getenv de-duplication.
const MAX_GETENV_SEEN: u32 = 16384;
/// Home directories the agent already knows.
const MAX_KNOWN_HOMES: u32 = 8192;

/// Word hash -> `env_match::WORD_*` bits.
#[map]
static ENV_WORDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ENV_RULES, 0);

/// Whole-name hash -> `env_match::NAME_*` bits.
#[map]
static ENV_NAMES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ENV_RULES, 0);

/// Value heads of known credential kinds (`AKIA`, `ghp_`, `eyJ`, `postgres://` ...).
#[map]
static ENV_VALUE_PREFIX: LpmTrie<[u8; ENV_VALUE_PREFIX_MAX], u32> =
    LpmTrie::with_max_entries(MAX_ENV_RULES, 0);

/// Slot 0: the gate bitmaps (see `EnvGates`).
#[map]
static ENV_GATES: Array<EnvGates> = Array::with_max_entries(1, 0);

/// `home_hash` of each home directory the agent knows: an exec's `HOME` leaves the kernel only
/// when it is not here, so a home costs one record when first seen, not one per exec.
#[map]
static KNOWN_HOMES: HashMap<u32, u8> = HashMap::with_max_entries(MAX_KNOWN_HOMES, 0);

/// `(tgid << 32) | name hash` -> getenv calls seen. The agent removes a process's keys when it
/// exits, so a reused pid starts afresh.
#[map]
static GETENV_SEEN: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_GETENV_SEEN, 0);

/// Per-CPU working memory for one string.
#[repr(C)]
struct EnvScratch {
    /// The head of the string (name and the start of the value), NUL-terminated.
    window: [u8; ENV_WINDOW],
    /// Bytes read into `window`, including the NUL.
    read: u64,
    /// Where the name ends ('=' or NUL), the running hash of the name, and its ENV_NAMES
    /// bits.
    name_len: u64,
    name_hash: u64,
    name_flags: u64,
    /// Where the current word starts (its hash stays in a register).
    word_start: u64,
    /// Word flags seen, and the flags of the last word.
    words: u64,
    last_word: u64,
    /// LPM key for the value head: `{prefix_len, data}`.
    value_key_len: u32,
    value_key: [u8; ENV_VALUE_PREFIX_MAX],
    /// A batch of envp pointers, read with one helper call instead of one per entry.
    pointers: [u64; POINTER_BATCH],
}

/// envp entries read per helper call.
const POINTER_BATCH: usize = 16;

#[map]
static ENV_SCRATCH: PerCpuArray<EnvScratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build one record before it is sent with only the bytes its data needs.
#[map]
static ENV_RECORD: PerCpuArray<EnvVar> = PerCpuArray::with_max_entries(1, 0);

/// The bytes of an EnvVar holding `len` bytes of data.
#[inline(always)]
fn env_record_len(len: usize) -> usize {
    core::mem::offset_of!(EnvVar, data) + len + 1
}

/// match-proto: syscalls/sys_enter_execve: filename@16 argv@24 envp@32
#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn exec_env_execve(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let envp: u64 = unsafe { tp_field(&ctx, 32) };
    let _ = walk_env(envp);
    0
}

/// match-proto: syscalls/sys_enter_execveat: fd@16 filename@24 argv@32 envp@40 flags@48
#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn exec_env_execveat(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let envp: u64 = unsafe { tp_field(&ctx, 40) };
    let _ = walk_env(envp);
    0
}

/// getenv(name) and secure_getenv(name): the agent attaches this to both symbols.
#[uprobe]
pub fn getenv_enter(ctx: ProbeContext) -> u32 {
    let name: *const u8 = ctx.arg(0).unwrap_or_default();
    let _ = on_getenv(name);
    0
}

/// State of one envp walk, on the program's stack and handed to each bpf_loop step.
#[repr(C)]
struct EnvWalk {
    envp: u64,
    exec_id: u64,
    pid_tgid: u64,
}

#[inline(always)]
fn walk_env(envp: u64) -> ProbeResult {
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config().ok_or(ProbeError)?;
    if envp == 0 || cfg.agent_tgid == (pid_tgid >> 32) as u32 {
        return Ok(());
    }
    let mut walk = EnvWalk {
        envp,
        // SAFETY: helper without preconditions.
        exec_id: unsafe { generated::bpf_ktime_get_boot_ns() },
        pid_tgid,
    };
    // SAFETY: bpf_loop calls `env_step` with `walk` (on this stack) at most MAX_ENV_ENTRIES
    // times; the callback has the signature the helper expects.
    unsafe {
        generated::bpf_loop(
            MAX_ENV_ENTRIES,
            env_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        )
    };
    Ok(())
}

/// One envp entry: returns 1 to stop at the terminating NULL (or an unreadable pointer).
#[inline(never)]
extern "C" fn env_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the EnvWalk that walk_env passed to bpf_loop.
    let walk = unsafe { &*ctx.cast::<EnvWalk>() };
    let Ok(s) = scratch() else {
        return 1;
    };
    let i = index as usize % POINTER_BATCH;
    if i == 0 {
        let batch = (walk.envp + index * 8) as *const u8;
        // SAFETY: reads user memory through the helper into the scratch's pointer batch; a
        // fault is an error, not a crash.
        let rc = unsafe {
            generated::bpf_probe_read_user(
                s.pointers.as_mut_ptr().cast(),
                (POINTER_BATCH * 8) as u32,
                batch.cast(),
            )
        };
        if rc != 0 {
            // The array may end near the end of its mapping: read this batch one by one.
            for j in 0..POINTER_BATCH {
                let slot = (walk.envp + (index + j as u64) * 8) as *const u64;
                // SAFETY: as above, one pointer.
                let p = unsafe { bpf_probe_read_user(slot) }.unwrap_or(0);
                s.pointers[j] = p;
                if p == 0 {
                    break;
                }
            }
        }
    }
    let ptr = s.pointers[i];
    if ptr == 0 {
        return 1;
    }
    let _ = match_exec_var(walk, ptr as *const u8);
    0
}

#[inline(always)]
fn match_exec_var(walk: &EnvWalk, ptr: *const u8) -> ProbeResult {
    let s = scratch()?;
    if !read_window(s, ptr) {
        return Ok(());
    }
    let Some(gates) = ENV_GATES.get(0) else {
        return Ok(());
    };
    let mut matched = scan_name(s, gates, b'=');
    let name_len = load(&s.name_len) as usize;
    if name_len >= ENV_NAME_MAX {
        // Longer than the scan: judged by the words of its first bytes (a secret-like word
        // and no excluding one); userspace finds its end and checks the whole name.
        let words = load(&s.words) as u32;
        if words & env_match::WORD_SECRET != 0 && words & env_match::WORD_EXCLUDE == 0 {
            let matched = env_match::BY_WORDS | env_match::LONG_NAME;
            return emit_exec_var(walk, ptr, matched, ENV_NAME_MAX as u32);
        }
        return Ok(());
    }
    if load(&s.name_flags) as u32 & env_match::NAME_HOME != 0 {
        if home_is_known(s, name_len + 1) {
            return Ok(());
        }
        return emit_exec_var(walk, ptr, env_match::NAME_HOME, name_len as u32);
    }
    if matched == 0 {
        matched = match_value_head(s, gates, name_len + 1);
    }
    if matched == 0 {
        return Ok(());
    }
    emit_exec_var(walk, ptr, matched, name_len as u32)
}

/// Sends a matched exec variable with as much of `NAME=value` as fits.
#[inline(always)]
fn emit_exec_var(walk: &EnvWalk, ptr: *const u8, matched: u32, name_len: u32) -> ProbeResult {
    count_seen(ProbeId::ExecEnv);
    let cfg = config().ok_or(ProbeError)?;
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { generated::bpf_get_current_cgroup_id() };
    if !within_budget(cfg, record_family::ENV, cgroup_id, ProbeId::ExecEnv) {
        return Ok(());
    }
    let ev = ENV_RECORD.get_ptr_mut(0).ok_or(ProbeError)?;
    // SAFETY: per-CPU scratch record; the string read is bounded by ENV_CAP.
    let len = unsafe {
        fill_header(&mut (*ev).header, EventKind::EnvVar as u32, walk.pid_tgid);
        (*ev).exec_id = walk.exec_id;
        (*ev).source = EnvSource::Exec as u32;
        (*ev).matched = matched;
        (*ev).name_len = name_len;
        let n = generated::bpf_probe_read_user_str(
            (*ev).data.as_mut_ptr().cast(),
            ENV_CAP as u32,
            ptr.cast(),
        );
        (*ev).len = if n > 1 { (n - 1) as u32 } else { 0 };
        if n as usize >= ENV_CAP {
            (*ev).header.flags |= event_flags::TRUNCATED;
        }
        (*ev).len as usize & (ENV_CAP - 1)
    };
    output_prefix(ev, env_record_len(len), ProbeId::ExecEnv);
    Ok(())
}

#[inline(always)]
fn on_getenv(name: *const u8) -> ProbeResult {
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config().ok_or(ProbeError)?;
    let tgid = (pid_tgid >> 32) as u32;
    if name.is_null() || cfg.agent_tgid == tgid {
        return Ok(());
    }
    let s = scratch()?;
    if !read_window(s, name) {
        return Ok(());
    }
    let Some(gates) = ENV_GATES.get(0) else {
        return Ok(());
    };
    let matched = scan_name(s, gates, 0);
    let name_len = load(&s.name_len) as usize;
    if matched == 0 || name_len >= ENV_NAME_MAX {
        return Ok(());
    }
    let key = ((tgid as u64) << 32) | (load(&s.name_hash) & 0xffff_ffff);
    if let Some(calls) = GETENV_SEEN.get_ptr_mut(key) {
        atomic_add(calls, 1);
        count_seen(ProbeId::GetenvRepeat);
        return Ok(());
    }
    let _ = GETENV_SEEN.insert(key, 1, 0);
    count_seen(ProbeId::Getenv);
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { generated::bpf_get_current_cgroup_id() };
    if !within_budget(cfg, record_family::ENV, cgroup_id, ProbeId::Getenv) {
        return Ok(());
    }
    let ev = ENV_RECORD.get_ptr_mut(0).ok_or(ProbeError)?;
    // SAFETY: per-CPU scratch record; the copy is bounded by the window size.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::EnvVar as u32, pid_tgid);
        (*ev).exec_id = 0;
        (*ev).source = EnvSource::Getenv as u32;
        (*ev).matched = matched;
        (*ev).name_len = name_len as u32;
        (*ev).len = name_len as u32;
        generated::bpf_probe_read_kernel(
            (*ev).data.as_mut_ptr().cast(),
            ENV_NAME_MAX as u32,
            s.window.as_ptr().cast(),
        );
    }
    output_prefix(ev, env_record_len(ENV_NAME_MAX), ProbeId::Getenv);
    Ok(())
}

#[inline(always)]
fn scratch() -> Result<&'static mut EnvScratch, ProbeError> {
    let s = ENV_SCRATCH.get_ptr_mut(0).ok_or(ProbeError)?;
    // SAFETY: per-CPU slot; nothing else on this CPU uses it until the program returns.
    Ok(unsafe { &mut *s })
}

/// Reads the head of a user string into the window. False when it is empty or unreadable.
#[inline(always)]
fn read_window(s: &mut EnvScratch, ptr: *const u8) -> bool {
    // SAFETY: the helper bounds the copy by the window size and reports faults.
    let n = unsafe {
        generated::bpf_probe_read_user_str(
            s.window.as_mut_ptr().cast(),
            ENV_WINDOW as u32,
            ptr.cast(),
        )
    };
    store(&mut s.read, if n > 1 { n as u64 } else { 0 });
    n > 1
}

/// Hashes the name in the window up to `end` (or NUL) and its words, and returns the
/// `env_match` bits the name earns. Leaves the name's length (ENV_NAME_MAX when `end` was
/// not found in time) and hash in the scratch.
///
#[inline(always)]
fn scan_name(s: &mut EnvScratch, gates: &EnvGates, end: u8) -> u32 {
    store(&mut s.name_len, ENV_NAME_MAX as u64);
    store(&mut s.word_start, 0);
    store(&mut s.words, 0);
    store(&mut s.last_word, 0);
    let mut word = ENV_HASH_INIT;
    let mut whole = ENV_HASH_INIT;
    // Per byte: one load, three compares, one hash step. Everything else happens at word
    // ends, which are few.
    for i in 0..ENV_NAME_MAX {
        let c = s.window[i];
        if c == end || c == 0 || c == b'_' {
            // The word's start goes through the scratch: as a register the verifier would
            // track its exact value and explore one state per (position, start).
            let start = load(&s.word_start) as usize & (ENV_NAME_MAX - 1);
            let flags = if i > start {
                whole = env_fold(whole, word);
                word_flags(s, gates, word, start, i - start)
            } else {
                0
            };
            let words = load(&s.words) | flags;
            store(&mut s.words, words);
            store(&mut s.last_word, flags);
            if c != b'_' {
                // A getenv name ends at NUL; an exec string must have its '='.
                if c == end {
                    store(&mut s.name_len, i as u64);
                }
                break;
            }
            word = ENV_HASH_INIT;
            store(&mut s.word_start, (i + 1) as u64);
        } else {
            word = env_hash(word, c);
        }
    }
    store(&mut s.name_hash, whole as u64);
    store(&mut s.name_flags, 0);
    let name_len = load(&s.name_len) as usize;
    if name_len == 0 || name_len >= ENV_NAME_MAX {
        return 0;
    }
    let mut matched = 0u32;
    // The scan stopped before hashing the terminator.
    let whole = load(&s.name_hash) as u32;
    // SAFETY: the value is a plain u32 read before any update of the map.
    if len_gate(&gates.name_len, s.window[0] | 0x20, name_len)
        && let Some(&f) = unsafe { ENV_NAMES.get(whole) }
    {
        store(&mut s.name_flags, f as u64);
        if f & env_match::NAME_PLAIN != 0 {
            return 0;
        }
        matched |= f & (env_match::NAME_SECRET | env_match::NAME_FILE);
    }
    let words = load(&s.words) as u32;
    let last = load(&s.last_word) as u32;
    if words & env_match::WORD_SECRET != 0 && words & env_match::WORD_EXCLUDE == 0 {
        if words & env_match::WORD_FILE == 0 {
            matched |= env_match::BY_WORDS;
        } else if last & env_match::WORD_FILE != 0 {
            matched |= env_match::FILE_BY_WORDS;
        }
    }
    matched
}

/// Whether the value in the window from byte `start` (`HOME=` ends there) hashes to a home in
/// KNOWN_HOMES. A value cut by the window hashes as far as it goes, as `home_hash` does.
#[inline(always)]
fn home_is_known(s: &EnvScratch, start: usize) -> bool {
    let read = load(&s.read) as usize;
    let mut h = ENV_HASH_INIT;
    for i in 0..ENV_WINDOW {
        let at = start + i;
        // `read` counts the NUL.
        if at + 1 >= read || at >= ENV_WINDOW {
            break;
        }
        h = path_hash_step(h, s.window[at]);
    }
    // SAFETY: the value is a plain u8 read before any update of the map.
    unsafe { KNOWN_HOMES.get(h) }.is_some()
}

/// The `env_match::WORD_*` bits of the word of `len` bytes at `start`.
#[inline(always)]
fn word_flags(s: &EnvScratch, gates: &EnvGates, word: u32, start: usize, len: usize) -> u64 {
    let first = s.window[start & (ENV_NAME_MAX - 1)] | 0x20;
    if !len_gate(&gates.word_len, first, len) {
        return 0;
    }
    // SAFETY: the value is a plain u32 read before any update of the map.
    match unsafe { ENV_WORDS.get(word) } {
        Some(&f) => f as u64,
        None => 0,
    }
}

/// Looks up the value's head (from window byte `start`) in the value-prefix trie.
#[inline(always)]
fn match_value_head(s: &mut EnvScratch, gates: &EnvGates, start: usize) -> u32 {
    let read = load(&s.read) as usize;
    // Bytes of value in the window (read counts the NUL).
    let avail = read.saturating_sub(start + 1);
    if avail < 2 {
        return 0;
    }
    let start = start & (ENV_NAME_MAX - 1);
    if !bit_head(&gates.value_head, s.window[start], s.window[start + 1]) {
        return 0;
    }
    let n = if avail < ENV_VALUE_PREFIX_MAX {
        avail
    } else {
        ENV_VALUE_PREFIX_MAX
    };
    s.value_key_len = (n * 8) as u32;
    // SAFETY: start < ENV_NAME_MAX, so start + ENV_VALUE_PREFIX_MAX lies inside the window
    // (asserted in keytrail-common); both ends are in the scratch map value.
    unsafe {
        generated::bpf_probe_read_kernel(
            s.value_key.as_mut_ptr().cast(),
            ENV_VALUE_PREFIX_MAX as u32,
            s.window.as_ptr().add(start).cast(),
        )
    };
    let key = (&raw const s.value_key_len).cast::<Key<[u8; ENV_VALUE_PREFIX_MAX]>>();
    // SAFETY: value_key_len is immediately followed by value_key (repr(C), no padding), the
    // layout of an LPM key.
    match ENV_VALUE_PREFIX.get(unsafe { &*key }) {
        Some(_) => env_match::VALUE_PREFIX,
        None => 0,
    }
}
