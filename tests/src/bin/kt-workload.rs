//! A scriptable workload for the end-to-end scenarios. It reads one command per line on stdin,
//! performs it with plain syscalls, and answers one line on stdout (`ok ...` or `err ...`), so a
//! test controls exactly which opens happen, when, and from which process.
//!
//! Commands:
//!   unshare-mount          private mount namespace (mounts below stay inside it)
//!   tmpfs DIR              mount a tmpfs on DIR
//!   write PATH             create PATH (and its parents) with dummy content
//!   chdir DIR
//!   open PATH              open(2) through libc (glibc issues openat), then close
//!   open-nonblock PATH     the same with O_NONBLOCK (a FIFO without a writer opens at once)
//!   mkfifo PATH            create the FIFO PATH (and its parents)
//!   mknod-char PATH MAJ MIN  create the character device node PATH (and its parents)
//!   openat2 PATH           the openat2 syscall with AT_FDCWD, then close
//!   open-many DIR N        create N files DIR/plain-I.txt, then open and close each
//!   write-text PATH TEXT   create PATH (and its parents) holding TEXT (`\n` escapes allowed)
//!   symlink TARGET LINK    create the symlink LINK -> TARGET (and LINK's parents)
//!   chroot DIR             chroot(2) into DIR and chdir to /
//!   fork-open PATH         fork a child that opens PATH and exits at once; reap it
//!   fork-sleep             fork a child that sleeps until killed; answers its pid
//!   open-hold PATH         open(2) PATH and keep it open; answers the fd
//!   open-chdir PATH DIR    open(2) PATH (relative to the cwd), close it, chdir to DIR at once
//!   link TARGET LINK       create the hard link LINK -> TARGET
//!   bind SRC DST           bind-mount SRC on DST (DST is created: a directory, or a file
//!                          when SRC is one)
//!   map PATH               map PATH read-only and keep it mapped (it shows in our maps)
//!   open-repeat PATH N     open(2) and close PATH N times; answers how many succeeded
//!   open-cycle DIR N SECS  create N files DIR/f-I.pem, then open and close them in turn for
//!                          SECS seconds; answers the opens made
//!   spawn PROGRAM ARGS...  run PROGRAM to completion (a fork and an exec, in our namespaces
//!                          and cgroup); it must succeed; answers its pid
//!   exit

use std::{
    ffi::CString,
    io::{BufRead, Write},
};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let args: Vec<&str> = words.collect();
        if cmd == "exit" {
            break;
        }
        let reply = match run(cmd, &args) {
            Ok(msg) => format!("ok {msg}"),
            Err(e) => format!("err {e}"),
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or(format!("{cmd}: missing argument"))
    };
    match cmd {
        "unshare-mount" => {
            check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare")?;
            let root = c"/";
            // Keep our mounts from propagating to the host.
            check(
                unsafe {
                    libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                },
                "make-rprivate",
            )?;
            Ok(String::new())
        }
        "tmpfs" => {
            let dir = cstr(arg(0)?)?;
            check(
                unsafe {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        dir.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                },
                "mount tmpfs",
            )?;
            Ok(String::new())
        }
        "write" => {
            let path = std::path::Path::new(arg(0)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(path, b"test fixture, not a secret\n").map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        "write-text" => {
            let path = std::path::Path::new(arg(0)?);
            let text = args[1..].join(" ").replace("\\n", "\n");
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(path, text).map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        "symlink" => {
            let link = std::path::Path::new(arg(1)?);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::os::unix::fs::symlink(arg(0)?, link).map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        "chroot" => {
            let dir = cstr(arg(0)?)?;
            check(unsafe { libc::chroot(dir.as_ptr()) }, "chroot")?;
            std::env::set_current_dir("/").map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        "fork-open" => {
            let p = cstr(arg(0)?)?;
            // SAFETY: the child only calls open/close/_exit, all async-signal-safe.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe {
                    let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    libc::_exit(0);
                }
            }
            if pid < 0 {
                return Err("fork failed".into());
            }
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Ok(pid.to_string())
        }
        "fork-sleep" => {
            // SAFETY: the child only calls pause, which is async-signal-safe.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                loop {
                    unsafe { libc::pause() };
                }
            }
            if pid < 0 {
                return Err("fork failed".into());
            }
            Ok(pid.to_string())
        }
        "open-hold" => {
            let p = cstr(arg(0)?)?;
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            check(if fd >= 0 { 0 } else { -1 }, "open")?;
            Ok(fd.to_string())
        }
        "open-chdir" => {
            let fd = open_close(arg(0)?)?;
            std::env::set_current_dir(arg(1)?).map_err(|e| e.to_string())?;
            Ok(fd.to_string())
        }
        "link" => {
            let link = std::path::Path::new(arg(1)?);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::hard_link(arg(0)?, link).map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        "bind" => {
            let (src, dst) = (cstr(arg(0)?)?, arg(1)?);
            if std::path::Path::new(arg(0)?).is_file() {
                if !std::path::Path::new(dst).exists() {
                    std::fs::write(dst, b"").map_err(|e| e.to_string())?;
                }
            } else {
                std::fs::create_dir_all(dst).map_err(|e| e.to_string())?;
            }
            let dst = cstr(dst)?;
            check(
                unsafe {
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                },
                "bind mount",
            )?;
            Ok(String::new())
        }
        "map" => {
            let file = std::fs::File::open(arg(0)?).map_err(|e| e.to_string())?;
            let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
            // SAFETY: a fresh private read-only mapping of an open file; never unmapped, so it
            // stays in /proc/self/maps for as long as the workload runs.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len.max(1),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            Ok(String::new())
        }
        "spawn" => {
            let mut child = std::process::Command::new(arg(0)?)
                .args(&args[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            let pid = child.id();
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("{}: {status}", args[0]));
            }
            Ok(pid.to_string())
        }
        "open-repeat" => {
            let n: usize = arg(1)?.parse().map_err(|_| "open-repeat: bad count")?;
            let mut ok = 0;
            for _ in 0..n {
                if open_close(arg(0)?)? >= 0 {
                    ok += 1;
                }
            }
            Ok(ok.to_string())
        }
        "open-cycle" => {
            let dir = arg(0)?;
            let n: usize = arg(1)?.parse().map_err(|_| "open-cycle: bad count")?;
            let secs: u64 = arg(2)?.parse().map_err(|_| "open-cycle: bad seconds")?;
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let paths: Vec<CString> = (0..n)
                .map(|i| {
                    let p = format!("{dir}/f-{i}.pem");
                    std::fs::write(&p, b"x").map_err(|e| e.to_string())?;
                    cstr(&p)
                })
                .collect::<Result<_, _>>()?;
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            let mut opens = 0u64;
            while std::time::Instant::now() < end {
                for p in &paths {
                    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                    if fd >= 0 {
                        unsafe { libc::close(fd) };
                    }
                    opens += 1;
                }
            }
            Ok(opens.to_string())
        }
        "chdir" => std::env::set_current_dir(arg(0)?)
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "open" => Ok(open_close(arg(0)?)?.to_string()),
        "open-nonblock" => {
            let p = cstr(arg(0)?)?;
            let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;
            let fd = unsafe { libc::open(p.as_ptr(), flags) };
            Ok(finish(fd as i64).to_string())
        }
        "mkfifo" | "mknod-char" => {
            let path = std::path::Path::new(arg(0)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let p = cstr(arg(0)?)?;
            let rc = if cmd == "mkfifo" {
                unsafe { libc::mkfifo(p.as_ptr(), 0o600) }
            } else {
                let major: u32 = arg(1)?.parse().map_err(|_| "mknod-char: bad major")?;
                let minor: u32 = arg(2)?.parse().map_err(|_| "mknod-char: bad minor")?;
                let dev = libc::makedev(major, minor);
                unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, dev) }
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            Ok(String::new())
        }
        "openat2" => Ok(openat2_close(arg(0)?)?.to_string()),
        "open-many" => {
            let dir = arg(0)?;
            let n: usize = arg(1)?.parse().map_err(|_| "open-many: bad count")?;
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            for i in 0..n {
                let p = format!("{dir}/plain-{i}.txt");
                std::fs::write(&p, b"x").map_err(|e| e.to_string())?;
            }
            let mut opened = 0;
            for i in 0..n {
                if open_close(&format!("{dir}/plain-{i}.txt"))? >= 0 {
                    opened += 1;
                }
            }
            Ok(opened.to_string())
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Returns the fd (closed again) or minus the errno.
fn open_close(path: &str) -> Result<i64, String> {
    let p = cstr(path)?;
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    Ok(finish(fd as i64))
}

fn openat2_close(path: &str) -> Result<i64, String> {
    let p = cstr(path)?;
    /// struct open_how from linux/openat2.h.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: 0,
    };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    Ok(finish(fd))
}

fn finish(fd: i64) -> i64 {
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        fd
    } else {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    }
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| "path with NUL".to_string())
}

fn check(rc: i32, what: &str) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    }
}
