//! Offsets of the few kernel structure fields the programs follow (task -> mount namespace,
//! task -> cwd, task -> open file -> inode), read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) at start and handed to the programs in a map. This is what
//! CO-RE relocations would do at load time; doing it here needs no loader support. A chain
//! whose fields are not all found is left out (its `valid` bit unset), and the programs then
//! report 0 for it.
//!
//! The reader below understands just enough BTF to walk struct members: the one pure-Rust
//! BTF crate is LGPL-licensed, and aya's parser keeps its members private.

use std::collections::HashMap;

use keytrail_common::{KernelOffsets, offsets_valid};

/// Where the running kernel describes its types.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The offsets, with the chains that could not be resolved named in `missing`.
#[derive(Debug, Default)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub missing: Vec<&'static str>,
}

/// Reads the kernel's BTF and resolves every chain it can.
pub fn resolve() -> Result<Resolved, String> {
    let bytes = std::fs::read(VMLINUX_BTF).map_err(|e| format!("{VMLINUX_BTF}: {e}"))?;
    let btf = Btf::parse(&bytes).map_err(|e| format!("{VMLINUX_BTF}: {e}"))?;
    Ok(resolve_from(&btf))
}

/// Resolves the chains from parsed BTF.
pub fn resolve_from(btf: &Btf) -> Resolved {
    let mut r = Resolved::default();
    let o = &mut r.offsets;
    let field = |s: &str, path: &[&str]| btf.member_offset(s, path);

    match (
        field("task_struct", &["nsproxy"]),
        field("nsproxy", &["mnt_ns"]),
        field("mnt_namespace", &["ns", "inum"]),
    ) {
        (Some(a), Some(b), Some(c)) => {
            (o.task_nsproxy, o.nsproxy_mnt_ns, o.mnt_ns_inum) = (a, b, c);
            o.valid |= offsets_valid::MNT_NS;
        }
        _ => r
            .missing
            .push("mount namespace (task_struct.nsproxy->mnt_ns->ns.inum)"),
    }
    match (
        field("task_struct", &["fs"]),
        field("fs_struct", &["pwd", "dentry"]),
        field("dentry", &["d_inode"]),
    ) {
        (Some(a), Some(b), Some(c)) => {
            (o.task_fs, o.fs_pwd_dentry, o.dentry_inode) = (a, b, c);
            o.valid |= offsets_valid::CWD;
        }
        _ => r
            .missing
            .push("working directory (task_struct.fs->pwd.dentry->d_inode)"),
    }
    match (
        field("task_struct", &["files"]),
        field("files_struct", &["fdt"]),
        field("files_struct", &["fdtab"]),
        field("files_struct", &["fd_array"]),
        field("fdtable", &["fd"]),
        field("file", &["f_inode"]),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)) => {
            (o.task_files, o.files_fdt, o.files_fdtab, o.files_fd_array) = (a, b, c, d);
            (o.fdt_fd, o.file_inode) = (e, f);
            o.valid |= offsets_valid::FILES;
        }
        _ => r
            .missing
            .push("open files (task_struct.files->fdt->fd[n]->f_inode)"),
    }
    match (
        field("inode", &["i_ino"]),
        field("inode", &["i_sb"]),
        field("super_block", &["s_dev"]),
    ) {
        (Some(a), Some(b), Some(c)) => {
            (o.inode_ino, o.inode_sb, o.sb_dev) = (a, b, c);
            o.valid |= offsets_valid::INODE;
        }
        _ => r
            .missing
            .push("file identity (inode.i_ino, inode.i_sb->s_dev)"),
    }
    match (
        field("task_struct", &["thread_pid"]),
        field("pid", &["level"]),
        field("pid", &["numbers"]),
        field("upid", &["ns"]),
        btf.struct_size("upid"),
        field("pid_namespace", &["ns", "inum"]),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(size), Some(f)) => {
            (
                o.task_thread_pid,
                o.pid_level,
                o.pid_numbers_ns,
                o.upid_size,
                o.pid_ns_inum,
            ) = (a, b, c + d, size, f);
            o.valid |= offsets_valid::PID_NS;
        }
        _ => r
            .missing
            .push("pid namespace (task_struct.thread_pid->numbers[level].ns->ns.inum)"),
    }
    match field("mnt_namespace", &["ns", "ns_id"]).or_else(|| field("mnt_namespace", &["seq"])) {
        Some(a) if o.valid & offsets_valid::MNT_NS != 0 => {
            o.mnt_ns_unique_id = a;
            o.valid |= offsets_valid::MNT_NS_ID;
        }
        _ => r
            .missing
            .push("mount namespace id (mnt_namespace.ns.ns_id or .seq)"),
    }
    match field("task_struct", &["start_time"]) {
        Some(a) => {
            o.task_start_time = a;
            o.valid |= offsets_valid::START_TIME;
        }
        None => r
            .missing
            .push("process start time (task_struct.start_time)"),
    }
    r
}

/// BTF type kinds (linux/btf.h) this reader distinguishes.
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// One struct or union member: name, type id, offset in bits.
#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

/// One BTF type, reduced to what member lookups need.
#[derive(Debug, Clone)]
struct TypeInfo {
    name: u32,
    kind: u32,
    /// The referenced type (typedefs, qualifiers, pointers).
    refers_to: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types by id (id 0 is void) and the string section.
pub struct Btf {
    types: Vec<TypeInfo>,
    strings: Vec<u8>,
    /// Struct names -> ids of complete definitions.
    structs: HashMap<String, u32>,
}

impl Btf {
    /// Parses a BTF blob (little-endian, as on the hosts the agent runs on). Errors name what
    /// is wrong; no input panics.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
        };
        if u16_at(0) != Some(0xeb9f) {
            return Err("not BTF (bad magic, or big-endian)".into());
        }
        let header = || -> Option<(usize, usize, usize, usize, usize)> {
            let hdr_len = u32_at(4)? as usize;
            Some((
                hdr_len,
                u32_at(8)? as usize,
                u32_at(12)? as usize,
                u32_at(16)? as usize,
                u32_at(20)? as usize,
            ))
        };
        let (hdr_len, type_off, type_len, str_off, str_len) =
            header().ok_or("truncated BTF header")?;
        let types_start = hdr_len.checked_add(type_off).ok_or("bad type offset")?;
        let types_end = types_start
            .checked_add(type_len)
            .filter(|&e| e <= data.len())
            .ok_or("type section out of bounds")?;
        let str_start = hdr_len.checked_add(str_off).ok_or("bad string offset")?;
        let strings = data
            .get(str_start..str_start.saturating_add(str_len))
            .ok_or("string section out of bounds")?
            .to_vec();

        let mut types = vec![TypeInfo {
            name: 0,
            kind: 0,
            refers_to: 0,
            members: Vec::new(),
        }];
        let mut at = types_start;
        while at + 12 <= types_end {
            let name = u32_at(at).ok_or("truncated type")?;
            let info = u32_at(at + 4).ok_or("truncated type")?;
            let size_or_type = u32_at(at + 8).ok_or("truncated type")?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let k = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match k {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let (Some(mname), Some(mty), Some(off)) =
                            (u32_at(m), u32_at(m + 4), u32_at(m + 8))
                        else {
                            return Err("truncated struct member".into());
                        };
                        members.push(Member {
                            name: mname,
                            ty: mty,
                            bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        });
                    }
                    12 * vlen
                }
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                kind::DATASEC | kind::ENUM64 => 12 * vlen,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                other => return Err(format!("unknown BTF kind {other}")),
            };
            at = at.checked_add(extra).ok_or("type section overflow")?;
            types.push(TypeInfo {
                name,
                kind: k,
                refers_to: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
        };
        let structs: HashMap<String, u32> = btf
            .types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == kind::STRUCT && !t.members.is_empty())
            .filter_map(|(id, t)| Some((btf.string(t.name)?.to_string(), id as u32)))
            .collect();
        btf.structs = structs;
        Ok(btf)
    }

    /// The size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        let t = self.types.get(*self.structs.get(name)? as usize)?;
        Some(t.refers_to)
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Byte offset of the member reached by `path` from struct `name`; nested members are
    /// followed through embedded structs, typedefs, qualifiers and anonymous structs/unions.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut ty = *self.structs.get(name)?;
        let mut total = 0u32;
        for (i, want) in path.iter().enumerate() {
            let (bits, member_ty) = self.find_member(ty, want, 0)?;
            total = total.checked_add(bits / 8)?;
            if i + 1 < path.len() {
                ty = self.strip(member_ty)?;
            }
        }
        Some(total)
    }

    /// Finds member `want` in struct/union `ty`, looking inside anonymous members too.
    /// Returns its bit offset from `ty`'s start and its type id.
    fn find_member(&self, ty: u32, want: &str, depth: u32) -> Option<(u32, u32)> {
        let t = self.types.get(ty as usize)?;
        if depth > 8 || !matches!(t.kind, kind::STRUCT | kind::UNION) {
            return None;
        }
        for m in &t.members {
            let name = self.string(m.name).unwrap_or("");
            if name == want {
                return Some((m.bit_offset, m.ty));
            }
            if name.is_empty()
                && let Some(inner) = self.strip(m.ty)
                && let Some((bits, found)) = self.find_member(inner, want, depth + 1)
            {
                return Some((m.bit_offset + bits, found));
            }
        }
        None
    }

    /// The struct or union behind typedefs and qualifiers.
    fn strip(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                kind::STRUCT | kind::UNION => return Some(id),
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.refers_to
                }
                _ => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF resolves every chain.
    #[test]
    fn every_chain_resolves_on_this_kernel() {
        let r = resolve().expect("this kernel has BTF");
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        let o = r.offsets;
        assert_eq!(
            o.valid,
            offsets_valid::MNT_NS
                | offsets_valid::CWD
                | offsets_valid::FILES
                | offsets_valid::INODE
                | offsets_valid::PID_NS
                | offsets_valid::START_TIME
                | offsets_valid::MNT_NS_ID
        );
        assert_eq!(o.upid_size, 16, "{o:?}");
        // Pointers are 8-byte aligned.
        for off in [
            o.task_nsproxy,
            o.task_fs,
            o.task_files,
            o.file_inode,
            o.inode_sb,
            o.fs_pwd_dentry,
            o.files_fdt,
            o.fdt_fd,
        ] {
            assert_eq!(off % 8, 0, "{o:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let real = std::fs::read(VMLINUX_BTF).unwrap();
        for cut in [30, 1000, real.len() / 2] {
            let _ = Btf::parse(&real[..cut]);
        }
        let mut flipped = real[..200_000.min(real.len())].to_vec();
        for i in (24..flipped.len()).step_by(997) {
            flipped[i] ^= 0x5a;
        }
        let _ = Btf::parse(&flipped);
    }
}
