//! Where a uprobe on a function traps cheaply.
//!
//! On x86-64 the kernel emulates a few instructions at a uprobe (push of a register, direct
//! calls and jumps) and single-steps every other one out of line: a second trap, which costs
//! tens of microseconds in some virtual machines (28-33 us per `SSL_write_ex` call measured on
//! one, against 1.6 us for `getenv`, whose first instruction is a push). OpenSSL 3's
//! `SSL_write` and `SSL_write_ex` begin with `sub $n,%rsp`, then call the internal write
//! function with their first three arguments unchanged; that function begins with a push. So
//! for a function whose first instruction is not emulated, and that reaches a direct call
//! without touching its first three argument registers (`rdi`, `rsi`, `rdx`; a sign extension
//! of `edx` into `rdx` keeps the value), the call's target is probed instead, when its own
//! first instruction is emulated: it sees the same three arguments. Anything else (another
//! branch, a write to an argument register, an indirect call, a target outside the segment)
//! keeps the function's own entry.
//!
//! The bytes come from a workload's library: decoding is bounded and never panics on them.

use std::ops::Range;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic,
    OpAccess, OpKind, Register,
};

/// Instructions looked at before the call, at most.
const MAX_INSTRUCTIONS: usize = 16;
/// Bytes decoded from a function's entry, at most (x86 instructions are at most 15 bytes).
const MAX_BYTES: usize = MAX_INSTRUCTIONS * 15;

/// The file offset to probe for the function at file offset `entry` of `code` (the whole
/// file), whose executable segment spans the file range `segment`. Returns `entry` unless a
/// cheaper equivalent point is found; always `entry` on other architectures.
pub fn cheap_entry(code: &[u8], entry: u64, segment: &Range<u64>) -> u64 {
    if !cfg!(target_arch = "x86_64") {
        return entry;
    }
    let Some(first) = decode_one(code, entry, segment) else {
        return entry;
    };
    if emulated(&first) {
        return entry;
    }
    match call_with_arguments_intact(code, entry, segment) {
        Some(target) if decode_one(code, target, segment).is_some_and(|i| emulated(&i)) => target,
        _ => entry,
    }
}

/// Whether the kernel emulates this instruction at a uprobe instead of single-stepping it:
/// a push of a 64-bit register, a direct near call or jump.
fn emulated(i: &Instruction) -> bool {
    matches!(
        i.code(),
        Code::Push_r64 | Code::Call_rel32_64 | Code::Jmp_rel32_64 | Code::Jmp_rel8_64
    )
}

/// The instruction at file offset `at`, if it lies whole inside `segment`.
fn decode_one(code: &[u8], at: u64, segment: &Range<u64>) -> Option<Instruction> {
    let bytes = window(code, at, segment, 15)?;
    let mut decoder = Decoder::with_ip(64, bytes, at, DecoderOptions::NONE);
    let i = decoder.decode();
    (!i.is_invalid()).then_some(i)
}

/// Up to `max` bytes of `code` from `at`, not past the end of `segment` or of the file.
fn window<'a>(code: &'a [u8], at: u64, segment: &Range<u64>, max: usize) -> Option<&'a [u8]> {
    if !segment.contains(&at) {
        return None;
    }
    let end = segment.end.min(code.len() as u64).min(at + max as u64);
    code.get(at as usize..end as usize)
}

/// The target of the first direct call from `entry`, if the path to it (falling through
/// conditional branches) leaves `rdi`, `rsi` and `rdx` as they were at entry.
fn call_with_arguments_intact(code: &[u8], entry: u64, segment: &Range<u64>) -> Option<u64> {
    let bytes = window(code, entry, segment, MAX_BYTES)?;
    let mut decoder = Decoder::with_ip(64, bytes, entry, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for _ in 0..MAX_INSTRUCTIONS {
        if !decoder.can_decode() {
            return None;
        }
        let i = decoder.decode();
        if i.is_invalid() {
            return None;
        }
        match i.flow_control() {
            FlowControl::Next | FlowControl::ConditionalBranch => {}
            FlowControl::Call if i.code() == Code::Call_rel32_64 => {
                let target = i.near_branch_target();
                return segment.contains(&target).then_some(target);
            }
            _ => return None,
        }
        if writes_an_argument(&i, &mut info) {
            return None;
        }
    }
    None
}

/// Whether `i` may change the value of `rdi`, `rsi` or `rdx` (any part of them). `movsxd rdx,
/// edx` does not: it only widens the `int` the caller passed.
fn writes_an_argument(i: &Instruction, info: &mut InstructionInfoFactory) -> bool {
    if i.mnemonic() == Mnemonic::Movsxd
        && i.op0_register() == Register::RDX
        && i.op1_kind() == OpKind::Register
        && i.op1_register() == Register::EDX
    {
        return false;
    }
    info.info(i).used_registers().iter().any(|r| {
        matches!(
            r.register().full_register(),
            Register::RDI | Register::RSI | Register::RDX
        ) && matches!(
            r.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    })
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// `code` placed at file offset 0x1000 of a file whose executable segment is the code.
    fn file(code: &[u8]) -> (Vec<u8>, Range<u64>) {
        let mut data = vec![0u8; 0x1000];
        data.extend_from_slice(code);
        let end = data.len() as u64;
        (data, 0x1000..end)
    }

    /// `call rel32` from the instruction at `at` (5 bytes) to `target`.
    fn call(at: u64, target: u64) -> Vec<u8> {
        let rel = (target as i64 - (at as i64 + 5)) as i32;
        let mut b = vec![0xe8];
        b.extend_from_slice(&rel.to_le_bytes());
        b
    }

    #[test]
    fn a_wrapper_that_calls_with_its_arguments_is_probed_at_the_callee() {
        // 0x1000: sub $8,%rsp; call 0x1020; add $8,%rsp; ret   0x1020: push %r12; ret
        let mut code = vec![0x48, 0x83, 0xec, 0x08];
        code.extend(call(0x1004, 0x1020));
        code.extend([0x48, 0x83, 0xc4, 0x08, 0xc3]);
        code.resize(0x20, 0xcc);
        code.extend([0x41, 0x54, 0xc3]);
        let (data, seg) = file(&code);
        assert_eq!(cheap_entry(&data, 0x1000, &seg), 0x1020);
    }

    #[test]
    fn stack_protector_and_a_sign_extended_length_still_reach_the_callee() {
        // OpenSSL 3's SSL_write: sub; mov %fs:0x28,%rax; mov %rax,8(%rsp); xor %eax,%eax;
        // test %edx,%edx; js +0x10; mov %rsp,%rcx; movslq %edx,%rdx; call.
        let mut code = vec![
            0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, 0x48,
            0x89, 0x44, 0x24, 0x08, 0x31, 0xc0, 0x85, 0xd2, 0x78, 0x10, 0x48, 0x89, 0xe1, 0x48,
            0x63, 0xd2,
        ];
        let at = 0x1000 + code.len() as u64;
        code.extend(call(at, 0x1040));
        code.resize(0x40, 0xcc);
        code.extend([0x55, 0xc3]);
        let (data, seg) = file(&code);
        assert_eq!(cheap_entry(&data, 0x1000, &seg), 0x1040);
    }

    #[test]
    fn anything_else_keeps_the_entry() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            // Already emulated: push %rbp.
            ("push first", vec![0x55, 0xc3]),
            // An argument changed before the call: mov %rsi,%rdi.
            ("argument written", {
                let mut c = vec![0x48, 0x83, 0xec, 0x08, 0x48, 0x89, 0xf7];
                c.extend(call(0x1007, 0x1020));
                c.resize(0x20, 0xcc);
                c.extend([0x55, 0xc3]);
                c
            }),
            // The callee is not emulated either (sub first).
            ("callee not emulated", {
                let mut c = vec![0x48, 0x83, 0xec, 0x08];
                c.extend(call(0x1004, 0x1020));
                c.resize(0x20, 0xcc);
                c.extend([0x48, 0x83, 0xec, 0x08, 0xc3]);
                c
            }),
            // A return before any call.
            ("returns", vec![0x48, 0x83, 0xec, 0x08, 0xc3]),
            // A call outside the segment.
            ("target outside", {
                let mut c = vec![0x48, 0x83, 0xec, 0x08];
                c.extend(call(0x1004, 0x9000));
                c
            }),
            // Garbage and a truncated instruction.
            ("garbage", vec![0x0f, 0x0b, 0xff]),
            ("truncated", vec![0x48, 0x83]),
        ];
        for (what, code) in cases {
            let (data, seg) = file(&code);
            assert_eq!(cheap_entry(&data, 0x1000, &seg), 0x1000, "{what}");
        }
        // An entry outside the segment, or past the file.
        let (data, seg) = file(&[0x55]);
        assert_eq!(cheap_entry(&data, 0x10, &seg), 0x10);
        assert_eq!(cheap_entry(&data, 0x5000, &(0x1000..0x6000)), 0x5000);
    }

    #[test]
    fn the_system_libssl_write_functions_trap_where_the_kernel_emulates() {
        let path = [
            "/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libssl.so.3 (the e2e tests' clients use it)");
        let data = std::fs::read(path).unwrap();
        let offsets = crate::elf::function_offsets(&data, &["SSL_write", "SSL_write_ex"]).unwrap();
        for (name, o) in ["SSL_write", "SSL_write_ex"].iter().zip(offsets) {
            let o = o.unwrap_or_else(|| panic!("{name} not in {path}"));
            let segment = crate::elf::executable_segment(&data, o).unwrap();
            let p = cheap_entry(&data, o, &segment);
            let i = decode_one(&data, p, &segment).unwrap();
            assert!(emulated(&i), "{name}: {o:#x} -> {p:#x}: {:?}", i.code());
        }
    }
}
