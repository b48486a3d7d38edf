//! keytrail's kernel programs. Each family lives in its own module under `probes`.
#![no_std]
#![no_main]
// BPF atomics (the pending-open counter) are written as inline assembly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: never reached in a program the verifier accepted; this only satisfies no_std.
    unsafe { core::hint::unreachable_unchecked() }
}

/// GPL so the kernel lets the programs call GPL-only helpers (bpf_probe_read_user_str ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
