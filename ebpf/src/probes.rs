//! Maps and helpers shared by every program family. One module per family below.

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, generated},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use keytrail_common::{COMM_LEN, EventHeader, KernelConfig, ProbeCounters, ProbeId};

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

/// Every record for userspace. One ring for all CPUs keeps exec -> open -> exit in order.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Slot 0: settings written by the agent before it attaches anything.
#[map]
static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Seen/dropped counters per program, per CPU (no atomics on the hot path).
#[map]
static PROBE_STATS: PerCpuArray<ProbeCounters> =
    PerCpuArray::with_max_entries(ProbeId::COUNT as u32, 0);

/// Flags for submitting a record: wake the agent only once enough is pending.
#[inline(always)]
fn submit_flags() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
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
