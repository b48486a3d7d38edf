//! Where the probed functions are in a library file: the file offsets the kernel attaches
//! uprobes at, read from the file itself.
//!
//! The file comes from a workload's root, so its bytes are hostile. It is read once, through
//! the descriptor the library finder opened, and only if it is at most [`MAX_LIBRARY_BYTES`];
//! only its own symbol tables are looked at (`.dynsym`, then `.symtab`); nothing it names is
//! ever opened (no `.gnu_debuglink`, no build-id lookup, no path of any kind); malformed input
//! is an error, never a panic. A symbol's virtual address becomes a file offset through the
//! executable loadable segment that holds it: offset = vaddr - p_vaddr + p_offset.

use std::{fs::File, ops::Range, os::unix::fs::FileExt as _};

use object::{
    Endianness, elf,
    read::elf::{FileHeader, ProgramHeader as _, Sym as _, SymbolTable},
};

/// Larger files are refused unread (libc is about 2 MiB, libssl less than 1 MiB).
pub const MAX_LIBRARY_BYTES: u64 = 64 << 20;

/// Why a library's functions could not be looked up. Never carries the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("larger than {} MiB", MAX_LIBRARY_BYTES >> 20)]
    TooLarge,
    #[error("reading failed: {0}")]
    Read(std::io::ErrorKind),
    #[error("not an ELF file")]
    NotElf,
    #[error("built for another machine")]
    OtherMachine,
    /// object's own description of what is wrong (a fixed text, not the file's content).
    #[error("malformed ELF: {0}")]
    Malformed(String),
}

fn malformed(e: object::read::Error) -> ElfError {
    ElfError::Malformed(e.to_string())
}

/// The whole file, read through `file` from its start (whatever the descriptor's position);
/// refused when larger than [`MAX_LIBRARY_BYTES`]. A file that shrinks meanwhile yields what
/// was there; one that grows is read up to its size at the start.
pub fn read_library(file: &File) -> Result<Vec<u8>, ElfError> {
    let len = file.metadata().map_err(|e| ElfError::Read(e.kind()))?.len();
    if len > MAX_LIBRARY_BYTES {
        return Err(ElfError::TooLarge);
    }
    let mut data = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < data.len() {
        match file.read_at(&mut data[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ElfError::Read(e.kind())),
        }
    }
    data.truncate(filled);
    Ok(data)
}

/// The file offset of each of `names` in the ELF image `data`, in the same order: `None` for
/// a function the file does not define (in an executable segment). Symbol names may carry a
/// version (`getenv@@GLIBC_2.2.5` in `.symtab`): the base name is matched, and the default
/// version wins over a hidden (compatibility) one.
pub fn function_offsets(data: &[u8], names: &[&str]) -> Result<Vec<Option<u64>>, ElfError> {
    // The magic number, then the class (EI_CLASS).
    match data.get(..5) {
        Some([m0, m1, m2, m3, class]) if [*m0, *m1, *m2, *m3] == elf::ELFMAG => match *class {
            elf::ELFCLASS64 => offsets::<elf::FileHeader64<Endianness>>(data, names),
            elf::ELFCLASS32 => offsets::<elf::FileHeader32<Endianness>>(data, names),
            _ => Err(ElfError::NotElf),
        },
        _ => Err(ElfError::NotElf),
    }
}

/// The file range of the executable loadable segment that holds file offset `offset` (bounded
/// by the file's end): where code reached from there may be looked for.
pub fn executable_segment(data: &[u8], offset: u64) -> Option<Range<u64>> {
    match *data.get(4)? {
        elf::ELFCLASS64 => segment_of::<elf::FileHeader64<Endianness>>(data, offset),
        elf::ELFCLASS32 => segment_of::<elf::FileHeader32<Endianness>>(data, offset),
        _ => None,
    }
}

fn segment_of<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
    offset: u64,
) -> Option<Range<u64>> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let file_len = data.len() as u64;
    header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD && p.p_flags(endian) & elf::PF_X != 0)
        .map(|p| {
            let start: u64 = p.p_offset(endian).into();
            let size: u64 = p.p_filesz(endian).into();
            start..start.saturating_add(size).min(file_len)
        })
        .find(|r| r.contains(&offset))
}

/// Whether code for `machine` runs here (a uprobe in a foreign library, run by an emulator,
/// would corrupt the code it emulates).
fn native_machine(machine: u16) -> bool {
    if cfg!(target_arch = "x86_64") {
        machine == elf::EM_X86_64 || machine == elf::EM_386
    } else if cfg!(target_arch = "aarch64") {
        machine == elf::EM_AARCH64
    } else {
        true
    }
}

/// The best symbol seen so far for one wanted name: its address, and whether it is a hidden
/// (non-default) version.
#[derive(Clone, Copy)]
struct Candidate {
    address: u64,
    hidden: bool,
}

fn offsets<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
    names: &[&str],
) -> Result<Vec<Option<u64>>, ElfError> {
    let header = Elf::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    if !native_machine(header.e_machine(endian)) {
        return Err(ElfError::OtherMachine);
    }
    let segments = header.program_headers(endian, data).map_err(malformed)?;
    let sections = header.sections(endian, data).map_err(malformed)?;
    let mut best: Vec<Option<Candidate>> = vec![None; names.len()];

    // The exported functions, as the dynamic loader binds them.
    let dynsym = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(malformed)?;
    let versions = sections.versions(endian, data).map_err(malformed)?;
    pick(&dynsym, endian, names, &mut best, |index| {
        versions
            .as_ref()
            .is_some_and(|v| v.version_index(endian, index).is_hidden())
    });
    // The full symbol table (absent from stripped files) for what is not exported.
    if best.iter().any(Option::is_none) {
        let symtab = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(malformed)?;
        let mut more: Vec<Option<Candidate>> = vec![None; names.len()];
        pick(&symtab, endian, names, &mut more, |_| false);
        for (b, m) in best.iter_mut().zip(more) {
            if b.is_none() {
                *b = m;
            }
        }
    }

    let file_len = data.len() as u64;
    Ok(best
        .into_iter()
        .map(|c| c.and_then(|c| file_offset::<Elf>(segments, endian, c.address, file_len)))
        .collect())
}

/// Records, for each wanted name, the defined function symbol of `table` with that base name:
/// the first one, replaced by a later one only if that is a default version and the first is
/// hidden. `hidden_version` says whether the symbol at an index has a hidden version.
fn pick<Elf: FileHeader<Endian = Endianness>>(
    table: &SymbolTable<'_, Elf>,
    endian: Endianness,
    names: &[&str],
    best: &mut [Option<Candidate>],
    hidden_version: impl Fn(object::SymbolIndex) -> bool,
) {
    for (index, sym) in table.enumerate().skip(1) {
        if sym.st_shndx(endian) == elf::SHN_UNDEF
            || !matches!(sym.st_type(), elf::STT_FUNC | elf::STT_GNU_IFUNC)
        {
            continue;
        }
        let address: u64 = sym.st_value(endian).into();
        if address == 0 {
            continue;
        }
        let Ok(name) = table.symbol_name(endian, sym) else {
            continue;
        };
        let (base, version) = split_version(name);
        let Some(slot) = names.iter().position(|n| n.as_bytes() == base) else {
            continue;
        };
        let hidden = hidden_version(index) || version.is_some_and(|v| !v.starts_with(b"@"));
        // A default version replaces a hidden one seen first; otherwise the first one stays.
        let replace = best[slot].is_none_or(|current| current.hidden && !hidden);
        if replace {
            best[slot] = Some(Candidate { address, hidden });
        }
    }
}

/// `getenv@@GLIBC_2.2.5` -> (`getenv`, `@GLIBC_2.2.5`); `getenv@GLIBC_2.2.5` -> (`getenv`,
/// `GLIBC_2.2.5`): a version after `@@` is the default one, after a single `@` a hidden one.
fn split_version(name: &[u8]) -> (&[u8], Option<&[u8]>) {
    match name.iter().position(|&b| b == b'@') {
        Some(at) => (&name[..at], Some(&name[at + 1..])),
        None => (name, None),
    }
}

/// The file offset of `vaddr`: inside the file-backed part of an executable PT_LOAD segment,
/// and inside the file.
fn file_offset<Elf: FileHeader<Endian = Endianness>>(
    segments: &[Elf::ProgramHeader],
    endian: Endianness,
    vaddr: u64,
    file_len: u64,
) -> Option<u64> {
    segments
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD && p.p_flags(endian) & elf::PF_X != 0)
        .find_map(|p| {
            let into_segment = vaddr.checked_sub(p.p_vaddr(endian).into())?;
            if into_segment >= p.p_filesz(endian).into() {
                return None;
            }
            let offset = into_segment.checked_add(p.p_offset(endian).into())?;
            (offset < file_len).then_some(offset)
        })
}

#[cfg(test)]
mod tests {
    use std::{
        ffi::{CStr, CString, c_void},
        path::{Path, PathBuf},
        process::Command,
        sync::mpsc,
        time::Duration,
    };

    use super::*;

    fn tool(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// The address of `name` as `nm` lists it (`nm -D` for the dynamic table), default version.
    fn nm_address(path: &Path, dynamic: bool, name: &str) -> u64 {
        let mut cmd = Command::new("nm");
        if dynamic {
            cmd.arg("-D");
        }
        let listing = tool(cmd.arg("--defined-only").arg(path));
        listing
            .lines()
            .filter_map(|l| {
                let [addr, _kind, sym] = l.split_whitespace().collect::<Vec<_>>()[..] else {
                    return None;
                };
                let (base, version) = sym.split_once('@').unwrap_or((sym, "@"));
                (base == name && version.starts_with('@')).then(|| u64::from_str_radix(addr, 16))
            })
            .next()
            .unwrap_or_else(|| panic!("nm lists no {name} in {}", path.display()))
            .unwrap()
    }

    /// `vaddr` converted to a file offset with the executable LOAD segments `readelf -lW`
    /// lists.
    fn readelf_offset(path: &Path, vaddr: u64) -> u64 {
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        tool(Command::new("readelf").arg("-lW").arg(path))
            .lines()
            .map(str::split_whitespace)
            .filter_map(|mut f| (f.next() == Some("LOAD")).then(|| f.collect::<Vec<_>>()))
            .find_map(|f| {
                let (offset, start, filesz) = (hex(f[0]), hex(f[1]), hex(f[3]));
                let executable = f[5..f.len() - 1].contains(&"E");
                (executable && (start..start + filesz).contains(&vaddr))
                    .then(|| vaddr - start + offset)
            })
            .unwrap_or_else(|| panic!("{vaddr:#x} is in no executable LOAD segment"))
    }

    /// Where the loader put `name` of the library `handle`: the library's path, and the file
    /// offset its mapping holds the function at (/proc/self/maps).
    fn loaded(handle: *mut c_void, name: &CStr) -> (PathBuf, u64) {
        // SAFETY: dlsym/dladdr with a valid handle and NUL-terminated name; Dl_info is filled
        // by dladdr and its file name points into the loader's own data.
        let (address, path) = unsafe {
            let address = libc::dlsym(handle, name.as_ptr());
            assert!(!address.is_null(), "{name:?} not found");
            let mut info: libc::Dl_info = std::mem::zeroed();
            assert_ne!(libc::dladdr(address, &mut info), 0);
            let path = CStr::from_ptr(info.dli_fname).to_str().unwrap().to_string();
            (address as u64, PathBuf::from(path))
        };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let offset = maps
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (start, end) = f[0].split_once('-')?;
                let (start, end) = (
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                );
                let pgoff = u64::from_str_radix(f[2], 16).ok()?;
                (start..end)
                    .contains(&address)
                    .then(|| address - start + pgoff)
            })
            .expect("the function's mapping");
        (path, offset)
    }

    fn offsets_of(path: &Path, names: &[&str]) -> Result<Vec<Option<u64>>, ElfError> {
        let data = read_library(&File::open(path).unwrap())?;
        function_offsets(&data, names)
    }

    #[test]
    fn offsets_in_the_libc_and_libssl_this_process_loads_match_nm_readelf_and_the_loader() {
        let libssl = CString::new("libssl.so.3").unwrap();
        // SAFETY: dlopen with a valid name; the library stays loaded for the test's life.
        let ssl = unsafe { libc::dlopen(libssl.as_ptr(), libc::RTLD_NOW) };
        assert!(!ssl.is_null(), "libssl.so.3 not installed");
        let cases: [(*mut c_void, &[&str]); 2] = [
            (libc::RTLD_DEFAULT, &["getenv", "secure_getenv"]),
            (ssl, &["SSL_write", "SSL_write_ex", "SSL_free", "SSL_clear"]),
        ];
        for (handle, names) in cases {
            let c_names: Vec<CString> = names.iter().map(|n| CString::new(*n).unwrap()).collect();
            let (path, _) = loaded(handle, &c_names[0]);
            let found = offsets_of(&path, names).unwrap();
            for ((name, c_name), offset) in names.iter().zip(&c_names).zip(found) {
                let (_, mapped) = loaded(handle, c_name);
                let listed = readelf_offset(&path, nm_address(&path, true, name));
                assert_eq!(offset, Some(listed), "{name} in {}", path.display());
                assert_eq!(offset, Some(mapped), "{name} in {}", path.display());
            }
        }
        // glibc's .dynsym lists the old memcpy@GLIBC_2.2.5 before the default
        // memcpy@@GLIBC_2.14 (an IFUNC: the loader's address is the implementation it picked,
        // so only nm and readelf tell where the symbol is).
        let libc = host_libc();
        let memcpy = readelf_offset(&libc, nm_address(&libc, true, "memcpy"));
        assert_eq!(offsets_of(&libc, &["memcpy"]).unwrap(), vec![Some(memcpy)]);
    }

    fn host_libc() -> PathBuf {
        let getenv = CString::new("getenv").unwrap();
        loaded(libc::RTLD_DEFAULT, &getenv).0
    }

    /// A small xorshift generator: the same inputs on every run.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn truncated_garbage_and_oversized_files_are_errors_not_panics() {
        let names = ["getenv", "secure_getenv"];
        let mut data = std::fs::read(host_libc()).unwrap();
        let len = data.len();
        // The section headers are at the end: any cut loses them.
        for cut in [
            0,
            3,
            4,
            5,
            16,
            63,
            64,
            65,
            500,
            4096,
            len / 3,
            len / 2,
            len - 64,
            len - 1,
        ] {
            assert!(
                function_offsets(&data[..cut], &names).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(function_offsets(b"", &names), Err(ElfError::NotElf));
        assert_eq!(
            function_offsets(b"#!/bin/sh\n", &names),
            Err(ElfError::NotElf)
        );
        assert_eq!(
            function_offsets(b"\x7fELF\x07", &names),
            Err(ElfError::NotElf)
        );

        let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let mut garbage = vec![0u8; 64 + (rng.next() % 4096) as usize];
            garbage.iter_mut().for_each(|b| *b = rng.next() as u8);
            garbage[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1 + (rng.next() % 2) as u8, 1]);
            let _ = function_offsets(&garbage, &names);
        }
        // Bytes of the real file changed where the headers and tables are: whatever comes
        // out, nothing panics.
        let header_end = 4096.min(len);
        for _ in 0..300 {
            let at = if rng.next().is_multiple_of(2) {
                (rng.next() as usize) % header_end
            } else {
                len - 1 - (rng.next() as usize) % 8192.min(len)
            };
            let was = data[at];
            data[at] = rng.next() as u8;
            let _ = function_offsets(&data, &names);
            data[at] = was;
        }

        let big = tempfile::tempfile().unwrap();
        big.set_len(MAX_LIBRARY_BYTES + 1).unwrap();
        assert_eq!(read_library(&big), Err(ElfError::TooLarge));
    }

    /// Builds `source` into a shared library `dir/name` with `cc` and extra arguments.
    fn shared_library(dir: &Path, name: &str, source: &str, args: &[&str]) -> PathBuf {
        let src = dir.join(format!("{name}.c"));
        std::fs::write(&src, source).unwrap();
        let lib = dir.join(name);
        tool(
            Command::new("cc")
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(&lib)
                .arg(&src)
                .args(args),
        );
        lib
    }

    /// Adds a `.gnu_debuglink` section naming `target` (objcopy --add-gnu-debuglink would open
    /// and read it).
    fn add_debuglink(lib: &Path, target: &str) {
        let mut section = target.as_bytes().to_vec();
        section.push(0);
        section.resize(section.len().next_multiple_of(4), 0);
        section.extend_from_slice(&[0; 4]);
        let file = lib.with_extension("debuglink");
        std::fs::write(&file, section).unwrap();
        tool(
            Command::new("objcopy")
                .arg(format!("--add-section=.gnu_debuglink={}", file.display()))
                .arg(lib),
        );
    }

    #[test]
    fn a_debuglink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("debug.fifo");
        let c_fifo = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        // A debug file that does define getenv, named relative to the library as usual.
        std::fs::copy(host_libc(), dir.path().join("libc.debug")).unwrap();
        let source = "int SSL_write(void) { return 1; }\n";
        let to_fifo = shared_library(dir.path(), "libssl.so.3", source, &[]);
        add_debuglink(&to_fifo, fifo.to_str().unwrap());
        let to_file = shared_library(dir.path(), "libc.so.6", source, &[]);
        add_debuglink(&to_file, "libc.debug");

        for lib in [to_fifo, to_file] {
            let (tx, rx) = mpsc::channel();
            let path = lib.clone();
            // Opening the FIFO would block forever: fail instead of hanging.
            std::thread::spawn(move || {
                let _ = tx.send(offsets_of(&path, &["getenv", "SSL_write"]));
            });
            let found = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{} hangs", lib.display()))
                .unwrap();
            let own = readelf_offset(&lib, nm_address(&lib, true, "SSL_write"));
            assert_eq!(found, vec![None, Some(own)], "{}", lib.display());
        }
    }

    #[test]
    fn the_default_version_wins_and_the_symtab_is_searched_when_dynsym_lacks_a_function() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("versions.map");
        std::fs::write(
            &script,
            "V1 { global: getenv; local: *; };\nV2 { global: getenv; } V1;\n",
        )
        .unwrap();
        let source = r#"
            int getenv_v1(void) { return 1; }
            int getenv_v2(void) { return 2; }
            __asm__(".symver getenv_v1,getenv@V1");
            __asm__(".symver getenv_v2,getenv@@V2");
            __attribute__((visibility("hidden"))) int SSL_clear(void) { return 3; }
            int (*keep)(void) = SSL_clear;
        "#;
        let script_arg = format!("-Wl,--version-script={}", script.display());
        let lib = shared_library(dir.path(), "libversions.so", source, &[&script_arg]);
        let names = ["getenv", "SSL_clear"];
        let found = offsets_of(&lib, &names).unwrap();
        let v2 = readelf_offset(&lib, nm_address(&lib, false, "getenv_v2"));
        let v1 = readelf_offset(&lib, nm_address(&lib, false, "getenv_v1"));
        assert_ne!(v1, v2);
        assert_eq!(found[0], Some(v2), "not the default version");
        let hidden = readelf_offset(&lib, nm_address(&lib, false, "SSL_clear"));
        assert_eq!(found[1], Some(hidden), "not found in .symtab");

        // Stripped, the hidden function is gone; the exported one is still found.
        tool(Command::new("objcopy").arg("--strip-all").arg(&lib));
        assert_eq!(offsets_of(&lib, &names).unwrap(), vec![Some(v2), None]);
    }

    #[test]
    fn versioned_names_split_at_the_first_at_sign() {
        assert_eq!(split_version(b"getenv"), (&b"getenv"[..], None));
        assert_eq!(
            split_version(b"getenv@@GLIBC_2.2.5"),
            (&b"getenv"[..], Some(&b"@GLIBC_2.2.5"[..]))
        );
        assert_eq!(
            split_version(b"memcpy@GLIBC_2.2.5"),
            (&b"memcpy"[..], Some(&b"GLIBC_2.2.5"[..]))
        );
    }
}
