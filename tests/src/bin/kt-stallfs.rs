//! A stalled filesystem for the end-to-end scenarios: `kt-stallfs MOUNTPOINT` mounts a FUSE
//! filesystem whose root holds any file name asked for (a regular file of 32 bytes). Reading
//! a file whose name starts with `stall` waits until `release` is read on stdin; every other
//! request is answered at once (a waiting read is answered from its own thread). Prints
//! `mounted` when ready; unmounts and exits on `exit` or at the end of stdin.

use std::{
    ffi::OsStr,
    io::{BufRead as _, Write as _},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, SystemTime},
};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyEntry, Request,
};

const CONTENT: &[u8] = b"a stalled file, never a secret\n";
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

/// Whether stalled reads may finish.
type Gate = Arc<(Mutex<bool>, Condvar)>;

struct StallFs {
    /// Names by inode (inode = index + 2).
    names: Vec<String>,
    gate: Gate,
}

fn attr(ino: u64, kind: FileType) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino,
        size: if kind == FileType::RegularFile {
            CONTENT.len() as u64
        } else {
            0
        },
        blocks: 1,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm: if kind == FileType::RegularFile {
            0o444
        } else {
            0o555
        },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for StallFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent != ROOT {
            return reply.error(libc::ENOENT);
        }
        let name = name.to_string_lossy().into_owned();
        let index = match self.names.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                self.names.push(name);
                self.names.len() - 1
            }
        };
        reply.entry(&TTL, &attr(index as u64 + 2, FileType::RegularFile), 0);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        if ino == ROOT {
            reply.attr(&TTL, &attr(ROOT, FileType::Directory));
        } else if self.names.len() as u64 + 2 > ino {
            reply.attr(&TTL, &attr(ino, FileType::RegularFile));
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(name) = ino.checked_sub(2).and_then(|i| self.names.get(i as usize)) else {
            return reply.error(libc::ENOENT);
        };
        let start = (offset.max(0) as usize).min(CONTENT.len());
        let end = (start + size as usize).min(CONTENT.len());
        if !name.starts_with("stall") {
            return reply.data(&CONTENT[start..end]);
        }
        let gate = Arc::clone(&self.gate);
        std::thread::spawn(move || {
            let (released, cv) = &*gate;
            let mut released = released.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            reply.data(&CONTENT[start..end]);
        });
    }
}

fn main() {
    let mountpoint = std::env::args()
        .nth(1)
        .expect("usage: kt-stallfs MOUNTPOINT");
    let gate: Gate = Arc::default();
    let fs = StallFs {
        names: Vec::new(),
        gate: Arc::clone(&gate),
    };
    let options = [
        MountOption::FSName("kt-stallfs".into()),
        MountOption::AllowOther,
    ];
    let session = fuser::spawn_mount2(fs, &mountpoint, &options).expect("mounting");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "mounted");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("release") => {
                let (released, cv) = &*gate;
                *released.lock().unwrap() = true;
                cv.notify_all();
                let _ = writeln!(out, "released");
                let _ = out.flush();
            }
            Ok("exit") | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Release anything still waiting so the unmount does not hang on it.
    let (released, cv) = &*gate;
    *released.lock().unwrap() = true;
    cv.notify_all();
    drop(session);
}
