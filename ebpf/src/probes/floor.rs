//! Empty programs on the same tracepoints as the file-open family. The agent never attaches
//! them; `keytrail bench-floor` does, so benchmarks can measure the cost of tracing itself (the
//! floor) apart from the cost of keytrail's filter.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

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
