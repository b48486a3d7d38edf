//! cgroup v2 directories as they come and go: a new cgroup's path is recorded at its mkdir, so
//! the records of a short-lived job (its own cgroup, removed a moment later) still name it,
//! and a removal lets the agent release what it keeps per cgroup. Rare: one record per
//! mkdir/rmdir.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use keytrail_common::{CgroupChange, EventKind, PATH_CAP, ProbeId, cgroup_op, event_flags};

use super::{LIFECYCLE, ProbeError, ProbeResult, count_dropped, count_seen, fill_header, tp_field};

/// match-proto: cgroup/cgroup_mkdir: int root@8 int level@12 u64 id@16 __data_loc char[] path@24
#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_change(&ctx, cgroup_op::MKDIR);
    0
}

/// match-proto: cgroup/cgroup_rmdir: int root@8 int level@12 u64 id@16 __data_loc char[] path@24
#[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_change(&ctx, cgroup_op::RMDIR);
    0
}

fn try_cgroup_change(ctx: &TracePointContext, op: u32) -> ProbeResult {
    // SAFETY: offsets from the tracepoint's format file. Hierarchy 0 is cgroup v2; the v1
    // hierarchies of a hybrid host have ids of their own.
    let (root, id, loc) = unsafe {
        (
            tp_field::<i32>(ctx, 8),
            tp_field::<u64>(ctx, 16),
            tp_field::<u32>(ctx, 24),
        )
    };
    if root != 0 {
        return Ok(());
    }
    count_seen(ProbeId::CgroupChange);
    let Some(mut entry) = LIFECYCLE.reserve::<CgroupChange>(0) else {
        count_dropped(ProbeId::CgroupChange);
        return Err(ProbeError);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: reserved, writable CgroupChange in the ring buffer; the data_loc offset (low 16
    // bits) comes from the tracepoint record itself and the copy is bounded by PATH_CAP.
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::CgroupChange as u32,
            bpf_get_current_pid_tgid(),
        );
        (*ev).cgroup_id = id;
        (*ev).op = op;
        let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
        let n = generated::bpf_probe_read_kernel_str(
            (*ev).path.as_mut_ptr().cast(),
            PATH_CAP as u32,
            src.cast(),
        );
        (*ev).path_len = if n > 1 { (n - 1) as u32 } else { 0 };
        if n as usize >= PATH_CAP {
            (*ev).header.flags |= event_flags::TRUNCATED;
        }
    }
    // Rare and never urgent: wake nobody.
    entry.submit(aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64);
    Ok(())
}
