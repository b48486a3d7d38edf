//! Maps and helpers shared by every program family. One module per family below.

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, bpf_probe_read_kernel, generated},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use keytrail_common::{
    Budget, BudgetKey, COMM_LEN, EventHeader, KernelConfig, KernelOffsets, ProbeCounters, ProbeId,
    offsets_valid,
};

mod cgroup;
mod env;
mod files;
mod floor;
mod net;
mod process;

/// Ring buffer size; the agent may resize it at load time.
const EVENTS_BYTES: u32 = 4 << 20;
/// Pending bytes past which a record wakes the agent up. Below it, records wait for the
/// agent's next poll (every few milliseconds): a wakeup per record costs the traced process
/// microseconds (the consumer is woken through irq_work and scheduled), far more than the
/// record itself.
const WAKEUP_BYTES: u64 = 512 * 1024;

/// Every record for userspace but the lifecycle ones. One ring for all CPUs keeps each
/// process's records in order.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Exec, exit and cgroup records, on a ring of their own: a flood of other records can never
/// crowd them out, so the process table stays exact. The agent merges both rings by time.
#[map]
static LIFECYCLE: RingBuf = RingBuf::with_byte_size(LIFECYCLE_BYTES, 0);

/// Size of the lifecycle ring: about 1,600 exec records.
const LIFECYCLE_BYTES: u32 = 1 << 20;

/// Cgroups whose budgets are tracked at most; the least recently used go first.
const MAX_BUDGETS: u32 = 16384;

/// One token bucket per (cgroup, record family): see `within_budget`.
#[map]
static BUDGETS: LruHashMap<BudgetKey, Budget> = LruHashMap::with_max_entries(MAX_BUDGETS, 0);

/// Slot 0: settings written by the agent before it attaches anything.
#[map]
static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Slot 0: kernel structure offsets from the agent (see `KernelOffsets`).
#[map]
static OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

/// Seen/dropped counters per program, per CPU (no atomics on the hot path).
#[map]
static PROBE_STATS: PerCpuArray<ProbeCounters> =
    PerCpuArray::with_max_entries(ProbeId::COUNT as u32, 0);

/// Flags for submitting a record: wake the agent only once enough is pending.
#[inline(always)]
fn submit_flags() -> u64 {
    wake_flags(&EVENTS)
}

/// The same for the lifecycle ring.
#[inline(always)]
fn lifecycle_flags() -> u64 {
    wake_flags(&LIFECYCLE)
}

#[inline(always)]
fn wake_flags(ring: &RingBuf) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if ring.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Sends the first `len` bytes of the record at `record` (a record with a variable tail, built
/// in map memory): a record costs the ring what its data needs, not its full size.
#[inline(always)]
fn output_prefix<T>(record: *const T, len: usize, probe: ProbeId) {
    let max = core::mem::size_of::<T>();
    let len = if len > max { max } else { len };
    // SAFETY: `record` points at a whole T in map memory and `len` is at most its size.
    let bytes = unsafe { core::slice::from_raw_parts(record.cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(bytes, submit_flags()).is_err() {
        count_dropped(probe);
    }
}

/// Whether cgroup `cgroup_id` may send one more record of `family` (a
/// [`keytrail_common::record_family`]
/// value): a token bucket of `budget_per_sec` records a second with `budget_burst` more in
/// reserve. A record refused is counted against the cgroup (and the probe), never taken from
/// another workload's share of the ring. Updates race between CPUs; the bucket is then
/// approximate, never unbounded.
#[inline(always)]
fn within_budget(cfg: &KernelConfig, family: u32, cgroup_id: u64, probe: ProbeId) -> bool {
    let rate = cfg.budget_per_sec as u64;
    if rate == 0 {
        return true;
    }
    let full = (rate + cfg.budget_burst as u64) * 1000;
    // SAFETY: helper without preconditions.
    let now = unsafe { generated::bpf_ktime_get_boot_ns() };
    let key = BudgetKey {
        cgroup_id,
        family,
        _reserved: 0,
    };
    let Some(b) = BUDGETS.get_ptr_mut(key) else {
        let fresh = Budget {
            tokens_milli: full - 1000,
            last_ns: now,
            sent: 1,
            dropped: 0,
        };
        let _ = BUDGETS.insert(key, fresh, 0);
        return true;
    };
    // SAFETY: a value pointer from a successful lookup; plain stores.
    unsafe {
        // At most one second's refill: a long-idle workload starts from a full bucket.
        let elapsed = now.saturating_sub((*b).last_ns).min(1_000_000_000);
        let tokens = ((*b).tokens_milli + elapsed * rate / 1_000_000).min(full);
        (*b).last_ns = now;
        if tokens < 1000 {
            (*b).tokens_milli = tokens;
            (*b).dropped += 1;
            count_over_budget(probe);
            return false;
        }
        (*b).tokens_milli = tokens - 1000;
        (*b).sent += 1;
    }
    true
}

/// Error type of every `try_` program body. Programs that observe only map it to "do nothing".
pub struct ProbeError;

impl From<i32> for ProbeError {
    fn from(_: i32) -> Self {
        ProbeError
    }
}

pub type ProbeResult = Result<(), ProbeError>;

/// The agent's settings, or None before the agent wrote them.
#[inline(always)]
fn config() -> Option<&'static KernelConfig> {
    CONFIG.get(0)
}

#[inline(always)]
fn count_seen(probe: ProbeId) {
    if let Some(c) = PROBE_STATS.get_ptr_mut(probe as u32) {
        // SAFETY: per-CPU slot, programs on one CPU do not run concurrently with each other.
        unsafe { (*c).seen += 1 };
    }
}

#[inline(always)]
fn count_dropped(probe: ProbeId) {
    if let Some(c) = PROBE_STATS.get_ptr_mut(probe as u32) {
        // SAFETY: as in count_seen.
        unsafe { (*c).dropped += 1 };
    }
}

#[inline(always)]
fn count_folded(probe: ProbeId) {
    if let Some(c) = PROBE_STATS.get_ptr_mut(probe as u32) {
        // SAFETY: as in count_seen.
        unsafe { (*c).folded += 1 };
    }
}

#[inline(always)]
fn count_read_failed(probe: ProbeId) {
    if let Some(c) = PROBE_STATS.get_ptr_mut(probe as u32) {
        // SAFETY: as in count_seen.
        unsafe { (*c).read_failed += 1 };
    }
}

#[inline(always)]
fn count_over_budget(probe: ProbeId) {
    if let Some(c) = PROBE_STATS.get_ptr_mut(probe as u32) {
        // SAFETY: as in count_seen.
        unsafe { (*c).over_budget += 1 };
    }
}

/// Fills the common header for the current task.
#[inline(always)]
fn fill_header(h: &mut EventHeader, kind: u32, pid_tgid: u64) {
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind;
    h.flags = 0;
    // SAFETY: helpers without preconditions.
    h.time_ns = unsafe { generated::bpf_ktime_get_boot_ns() };
    h.pid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    // SAFETY: as above.
    h.cgroup_id = unsafe { generated::bpf_get_current_cgroup_id() };
    // SAFETY: writes at most COMM_LEN bytes into the header's comm field.
    unsafe { generated::bpf_get_current_comm(h.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
}

/// Reads a field of a tracepoint record at a fixed offset (from the tracepoint's `format` file).
///
/// # Safety
/// `offset` must lie inside the record and be aligned for `T`.
#[inline(always)]
unsafe fn tp_field<T: Copy>(ctx: &aya_ebpf::programs::TracePointContext, offset: usize) -> T {
    use aya_ebpf::EbpfContext as _;
    // SAFETY: tracepoint context memory is directly readable within the record (caller's contract).
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// Atomically adds `delta` to `*p` (BPF_ATOMIC | BPF_ADD): core's atomics are not available
/// for the BPF target.
#[inline(always)]
fn atomic_add(p: *mut u64, delta: u64) {
    // SAFETY: callers pass an aligned u64 inside a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {d}",
            p = in(reg) p,
            d = in(reg) delta,
        )
    };
}

/// Stores through a volatile write, so the verifier sees a bounded unknown where the value is
/// loaded back, instead of one state per path that produced it.
#[inline(always)]
fn store(slot: &mut u64, v: u64) {
    // SAFETY: a valid, aligned field of a map value.
    unsafe { core::ptr::write_volatile(slot, v) }
}

#[inline(always)]
fn load(slot: &u64) -> u64 {
    // SAFETY: as in `store`.
    unsafe { core::ptr::read_volatile(slot) }
}

/// The offsets the agent found in the kernel's BTF, if it wrote them.
#[inline(always)]
fn offsets() -> Option<&'static KernelOffsets> {
    OFFSETS.get(0)
}

/// Reads the pointer-sized field at `base + offset` of a kernel structure.
#[inline(always)]
fn kernel_u64(base: u64, offset: u32) -> Option<u64> {
    if base == 0 {
        return None;
    }
    // SAFETY: the helper checks the address and reports faults as errors.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u64) }.ok()
}

#[inline(always)]
fn kernel_u32(base: u64, offset: u32) -> Option<u32> {
    if base == 0 {
        return None;
    }
    // SAFETY: as in kernel_u64.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u32) }.ok()
}

/// The current task (`struct task_struct *`).
#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { generated::bpf_get_current_task() }
}

/// The current task's mount namespace id (the inode number of /proc/PID/ns/mnt), 0 if unknown.
#[inline(always)]
fn current_mnt_ns() -> u32 {
    let Some(o) = offsets() else { return 0 };
    if o.valid & offsets_valid::MNT_NS == 0 {
        return 0;
    }
    let nsproxy = kernel_u64(current_task(), o.task_nsproxy).unwrap_or(0);
    let mnt_ns = kernel_u64(nsproxy, o.nsproxy_mnt_ns).unwrap_or(0);
    kernel_u32(mnt_ns, o.mnt_ns_inum).unwrap_or(0)
}

/// The current task's start time (ns since boot, monotonic), 0 if unknown: with the pid it
/// names one process, whatever reuse of the pid.
#[inline(always)]
fn current_start_time() -> u64 {
    let Some(o) = offsets() else { return 0 };
    if o.valid & offsets_valid::START_TIME == 0 {
        return 0;
    }
    kernel_u64(current_task(), o.task_start_time).unwrap_or(0)
}

/// The current task's pid namespace id (the inode number of /proc/PID/ns/pid), 0 if unknown.
#[inline(always)]
fn current_pid_ns() -> u32 {
    let Some(o) = offsets() else { return 0 };
    if o.valid & offsets_valid::PID_NS == 0 {
        return 0;
    }
    let pid = kernel_u64(current_task(), o.task_thread_pid).unwrap_or(0);
    let level = kernel_u32(pid, o.pid_level).unwrap_or(0) & 31;
    let ns = kernel_u64(pid, o.pid_numbers_ns + level * o.upid_size).unwrap_or(0);
    kernel_u32(ns, o.pid_ns_inum).unwrap_or(0)
}

/// The current task's mount namespace id that is never reused, 0 if unknown.
#[inline(always)]
fn current_mnt_ns_id() -> u64 {
    let Some(o) = offsets() else { return 0 };
    let need = offsets_valid::MNT_NS | offsets_valid::MNT_NS_ID;
    if o.valid & need != need {
        return 0;
    }
    let nsproxy = kernel_u64(current_task(), o.task_nsproxy).unwrap_or(0);
    let mnt_ns = kernel_u64(nsproxy, o.nsproxy_mnt_ns).unwrap_or(0);
    kernel_u64(mnt_ns, o.mnt_ns_unique_id).unwrap_or(0)
}

/// Inode number and device (`dev_t`) of a `struct inode *`; (0, 0) if unknown.
#[inline(always)]
fn inode_identity(o: &KernelOffsets, inode: u64) -> (u64, u32) {
    if o.valid & offsets_valid::INODE == 0 || inode == 0 {
        return (0, 0);
    }
    let ino = kernel_u64(inode, o.inode_ino).unwrap_or(0);
    let sb = kernel_u64(inode, o.inode_sb).unwrap_or(0);
    (ino, kernel_u32(sb, o.sb_dev).unwrap_or(0))
}

/// Identity of the current task's working directory.
#[inline(always)]
fn cwd_identity() -> (u64, u32) {
    let Some(o) = offsets() else { return (0, 0) };
    if o.valid & offsets_valid::CWD == 0 {
        return (0, 0);
    }
    let fs = kernel_u64(current_task(), o.task_fs).unwrap_or(0);
    let dentry = kernel_u64(fs, o.fs_pwd_dentry).unwrap_or(0);
    let inode = kernel_u64(dentry, o.dentry_inode).unwrap_or(0);
    inode_identity(o, inode)
}

/// Identity of the file the current task holds open as `fd`.
#[inline(always)]
fn fd_identity(fd: i64) -> (u64, u32) {
    let (inode, ino) = fd_inode(fd);
    (ino, inode_dev(inode))
}

/// The `struct inode *` of the file the current task holds open as `fd`, and its number;
/// (0, 0) if unknown. Dependent reads task -> files -> fdt -> file -> inode -> number; the
/// descriptor array is read only when the process has outgrown the table embedded in its
/// `files_struct` (whose array sits at a known offset). The descriptor was just returned by
/// open, so no bound check against `max_fds` is needed (a wrong read is only a failed read).
#[inline(always)]
fn fd_inode(fd: i64) -> (u64, u64) {
    let Some(o) = offsets() else { return (0, 0) };
    let need = offsets_valid::FILES | offsets_valid::INODE;
    if o.valid & need != need || !(0..1 << 20).contains(&fd) {
        return (0, 0);
    }
    let files = kernel_u64(current_task(), o.task_files).unwrap_or(0);
    let fdt = kernel_u64(files, o.files_fdt).unwrap_or(0);
    let array = if files != 0 && fdt == files + o.files_fdtab as u64 {
        files + o.files_fd_array as u64
    } else {
        kernel_u64(fdt, o.fdt_fd).unwrap_or(0)
    };
    let file = kernel_u64(array, (fd as u32) * 8).unwrap_or(0);
    let inode = kernel_u64(file, o.file_inode).unwrap_or(0);
    (inode, kernel_u64(inode, o.inode_ino).unwrap_or(0))
}

/// The device (`dev_t`) of a `struct inode *`; 0 if unknown.
#[inline(always)]
fn inode_dev(inode: u64) -> u32 {
    let Some(o) = offsets() else { return 0 };
    let sb = kernel_u64(inode, o.inode_sb).unwrap_or(0);
    kernel_u32(sb, o.sb_dev).unwrap_or(0)
}
