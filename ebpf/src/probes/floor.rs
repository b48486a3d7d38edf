//! Empty programs on the same hooks as the file-open, exec and getenv families. The agent never
//! attaches them; `keytrail bench-floor` does, so benchmarks can measure the cost of tracing
//! itself (the floor) apart from the cost of keytrail's programs.

use aya_ebpf::{
    macros::{tracepoint, uprobe},
    programs::{ProbeContext, TracePointContext},
};

macro_rules! floor_program {
    ($fn_name:ident, $tp:literal) => {
        #[tracepoint(category = "syscalls", name = $tp)]
        pub fn $fn_name(_ctx: TracePointContext) -> u32 {
            0
        }
    };
}

floor_program!(floor_enter_openat, "sys_enter_openat");
floor_program!(floor_exit_openat, "sys_exit_openat");
floor_program!(floor_enter_openat2, "sys_enter_openat2");
floor_program!(floor_exit_openat2, "sys_exit_openat2");
floor_program!(floor_enter_open, "sys_enter_open");
floor_program!(floor_exit_open, "sys_exit_open");
floor_program!(floor_enter_execve, "sys_enter_execve");
floor_program!(floor_enter_execveat, "sys_enter_execveat");

/// Attached to getenv and secure_getenv like the agent's getenv program.
#[uprobe]
pub fn floor_getenv(_ctx: ProbeContext) -> u32 {
    0
}
