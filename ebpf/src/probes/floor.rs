//! Empty programs on the same hooks as the file-open, exec, getenv and network families. The agent never
//! attaches them; `keytrail bench-floor` does, so benchmarks can measure the cost of tracing
//! itself (the floor) apart from the cost of keytrail's programs.

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock_addr, sock_ops, tracepoint, uprobe},
    programs::{ProbeContext, SkBuffContext, SockAddrContext, SockOpsContext, TracePointContext},
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

/// Empty programs on the network hooks, attached at the cgroup2 root like the agent's.
#[cgroup_sock_addr(connect4)]
pub fn floor_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(connect6)]
pub fn floor_connect6(_ctx: SockAddrContext) -> i32 {
    1
}

#[sock_ops]
pub fn floor_sock_ops(_ctx: SockOpsContext) -> u32 {
    1
}

#[cgroup_skb(egress)]
pub fn floor_egress(_ctx: SkBuffContext) -> i32 {
    1
}
