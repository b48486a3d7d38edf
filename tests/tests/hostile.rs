//! A workload attacking the agent through the files it makes the agent read.

use std::{collections::HashMap, ffi::CString, os::fd::FromRawFd as _, os::fd::OwnedFd};

use keytrail_tests::{Agent, CgroupGuard, Workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// An inotify watch for IN_OPEN on a directory: counts the opens of each file in it since the
/// watch began, whoever opened it.
struct OpenWatch {
    fd: OwnedFd,
}

impl OpenWatch {
    fn new(dir: &str) -> Self {
        // SAFETY: plain syscall; the descriptor is owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            raw >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c = CString::new(dir).unwrap();
        // SAFETY: valid descriptor and C string.
        // Closes are watched too: inotify merges an event identical to the last one unread,
        // so two opens in a row would count as one.
        let mask = libc::IN_OPEN | libc::IN_CLOSE;
        let wd = unsafe { libc::inotify_add_watch(raw, c.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "watching {dir}: {}",
            std::io::Error::last_os_error()
        );
        Self { fd }
    }

    /// Opens of each file of the directory queued so far, by name.
    fn opens(&self) -> HashMap<String, usize> {
        use std::os::fd::AsRawFd as _;
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a local buffer of that size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut at = 0;
            while at + 16 <= n as usize {
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buf[at + 16..(at + 16 + len).min(n as usize)];
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                if mask & libc::IN_OPEN != 0 && !name.is_empty() {
                    *counts.entry(name).or_default() += 1;
                }
                at += 16 + len;
            }
        }
        counts
    }
}

/// A FIFO and a device node planted at watched paths are reported as not regular files, and
/// the agent never opens them: the path is resolved without opening what it names, so a
/// device's driver or a FIFO's writer never sees the agent (host root). A regular file beside
/// them is opened by the agent, which shows the watch sees the agent's opens.
#[test]
fn device_nodes_and_fifos_at_watched_paths_are_never_opened() {
    let mut agent = Agent::start(None);
    let dir = tempfile::Builder::new()
        .prefix("kt-hostile-")
        .tempdir()
        .unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (fifo, device, regular) = (path("fifo.pem"), path("null.pem"), path("plain.pem"));
    let watch = OpenWatch::new(dir.path().to_str().unwrap());
    let cgroup = CgroupGuard::new("hostile-nodes");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let pid = w.pid();
    w.run(&format!("mkfifo {fifo}"));
    // The memory devices' null (1:3): harmless if it were opened, and its opens are visible.
    w.run(&format!("mknod-char {device} 1 3"));
    // Written (one open), then read by the agent (another).
    w.run(&format!("write {regular}"));
    agent.wait_for("the regular file's classification", |e| {
        e["process.pid"] == pid
            && e["file.path"] == regular.as_str()
            && e.get("keytrail.credential.kind").is_some()
    });
    for p in [&fifo, &device] {
        let fd: i64 = w.run(&format!("open-nonblock {p}")).parse().unwrap();
        assert!(fd >= 0, "{p}: {fd}");
    }
    for p in [&fifo, &device] {
        let e = agent.wait_for(p, |e| {
            e["process.pid"] == pid
                && e["file.path"] == p.as_str()
                && e.get("keytrail.credential.unreadable").is_some()
        });
        assert_eq!(
            e["keytrail.credential.unreadable"], "not a regular file",
            "{e}"
        );
    }

    let opens = watch.opens();
    let count = |name: &str| opens.get(name).copied().unwrap_or(0);
    assert_eq!(
        count("fifo.pem"),
        1,
        "only the workload opened the FIFO: {opens:?}"
    );
    assert_eq!(
        count("null.pem"),
        1,
        "only the workload opened the device: {opens:?}"
    );
    assert!(
        count("plain.pem") >= 2,
        "the agent's read of the regular file is an open too: {opens:?}"
    );
}
