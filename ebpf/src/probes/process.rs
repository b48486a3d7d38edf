//! Process lifecycle: exec (the new executable) and exit of the whole process, so the agent's
//! process table stays exact even for processes that live a microsecond.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use keytrail_common::{EventKind, PATH_CAP, ProbeId, ProcExec, ProcExit, event_flags};

use super::{
    LIFECYCLE, ProbeError, ProbeResult, count_dropped, count_seen, current_mnt_ns,
    current_mnt_ns_id, fill_header, lifecycle_flags, tp_field,
};

/// match-proto: sched/sched_process_exec: __data_loc char[] filename@8
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn proc_exec(ctx: TracePointContext) -> u32 {
    let _ = try_proc_exec(&ctx);
    0
}

fn try_proc_exec(ctx: &TracePointContext) -> ProbeResult {
    count_seen(ProbeId::ProcExec);
    let Some(mut entry) = LIFECYCLE.reserve::<ProcExec>(0) else {
        count_dropped(ProbeId::ProcExec);
        return Err(ProbeError);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, writable ProcExec in the ring buffer; the data_loc
    // offset (low 16 bits) comes from the tracepoint record itself.
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::ProcExec as u32,
            bpf_get_current_pid_tgid(),
        );
        let loc: u32 = tp_field(ctx, 8);
        let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
        let n = generated::bpf_probe_read_kernel_str(
            (*ev).filename.as_mut_ptr().cast(),
            PATH_CAP as u32,
            src.cast(),
        );
        (*ev).filename_len = if n > 1 { (n - 1) as u32 } else { 0 };
        // After exec: a process that unshared its mount namespace shows the new one here.
        (*ev).mnt_ns = current_mnt_ns();
        (*ev).mnt_ns_id = current_mnt_ns_id();
        if n as usize >= PATH_CAP {
            (*ev).header.flags |= event_flags::TRUNCATED;
        }
    }
    entry.submit(lifecycle_flags());
    Ok(())
}

/// match-proto: sched/sched_process_exit: bool group_dead@32
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn proc_exit(ctx: TracePointContext) -> u32 {
    let _ = try_proc_exit(&ctx);
    0
}

fn try_proc_exit(ctx: &TracePointContext) -> ProbeResult {
    // SAFETY: offset from the format file. Only the last thread of a process matters.
    let group_dead: u8 = unsafe { tp_field(ctx, 32) };
    if group_dead == 0 {
        return Ok(());
    }
    count_seen(ProbeId::ProcExit);
    let Some(mut entry) = LIFECYCLE.reserve::<ProcExit>(0) else {
        count_dropped(ProbeId::ProcExit);
        return Err(ProbeError);
    };
    // SAFETY: reserved, writable ProcExit in the ring buffer.
    unsafe {
        fill_header(
            &mut (*entry.as_mut_ptr()).header,
            EventKind::ProcExit as u32,
            bpf_get_current_pid_tgid(),
        )
    };
    entry.submit(lifecycle_flags());
    Ok(())
}
