//! Ring buffer decoding: raw kernel records -> typed events, and the task that drains the ring
//! buffer through tokio's `AsyncFd` (woken by epoll, never polling in a loop).

use std::{
    mem::size_of,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::maps::{MapData, RingBuf};
use keytrail_common::{
    CgroupChange, EnvVar, EventHeader, EventKind, FileOpen, NetConnect, NetPayload, NetState,
    ProcExec, ProcExit, TlsWrite,
};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tokio_util::sync::CancellationToken;

/// How often the ring buffer is drained when the kernel has not woken the reader.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// A decoded kernel record.
#[derive(Clone, Debug)]
pub enum KernelEvent {
    FileOpen(Box<FileOpen>),
    ProcExec(Box<ProcExec>),
    ProcExit(ProcExit),
    CgroupChange(Box<CgroupChange>),
    /// Holds a secret value: decoded, classified and dropped, never logged.
    EnvVar(Box<EnvVar>),
    NetConnect(NetConnect),
    NetState(NetState),
    /// May hold secrets (a request head): parsed and dropped, never logged.
    NetPayload(Box<NetPayload>),
    /// Holds plaintext (a request head): parsed and dropped, never logged.
    TlsWrite(Box<TlsWrite>),
}

impl KernelEvent {
    pub fn header(&self) -> &EventHeader {
        match self {
            KernelEvent::FileOpen(e) => &e.header,
            KernelEvent::ProcExec(e) => &e.header,
            KernelEvent::ProcExit(e) => &e.header,
            KernelEvent::CgroupChange(e) => &e.header,
            KernelEvent::EnvVar(e) => &e.header,
            KernelEvent::NetConnect(e) => &e.header,
            KernelEvent::NetState(e) => &e.header,
            KernelEvent::NetPayload(e) => &e.header,
            KernelEvent::TlsWrite(e) => &e.header,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    TooShort { len: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("record of kind {kind:?} has {len} bytes, expected {expected}")]
    BadLength {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    let kind_id = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
    let kind = EventKind::from_u32(kind_id).ok_or(DecodeError::UnknownKind { kind: kind_id })?;
    Ok(match kind {
        EventKind::FileOpen => KernelEvent::FileOpen(Box::new(read_tail::<FileOpen>(
            kind,
            bytes,
            std::mem::offset_of!(FileOpen, path),
        )?)),
        EventKind::ProcExec => KernelEvent::ProcExec(Box::new(read::<ProcExec>(kind, bytes)?)),
        EventKind::ProcExit => KernelEvent::ProcExit(read::<ProcExit>(kind, bytes)?),
        EventKind::CgroupChange => {
            KernelEvent::CgroupChange(Box::new(read::<CgroupChange>(kind, bytes)?))
        }
        EventKind::EnvVar => KernelEvent::EnvVar(Box::new(read_tail::<EnvVar>(
            kind,
            bytes,
            std::mem::offset_of!(EnvVar, data),
        )?)),
        EventKind::NetConnect => KernelEvent::NetConnect(read::<NetConnect>(kind, bytes)?),
        EventKind::NetState => KernelEvent::NetState(read::<NetState>(kind, bytes)?),
        EventKind::NetPayload => KernelEvent::NetPayload(Box::new(read_tail::<NetPayload>(
            kind,
            bytes,
            std::mem::offset_of!(NetPayload, data),
        )?)),
        EventKind::TlsWrite => KernelEvent::TlsWrite(Box::new(read_tail::<TlsWrite>(
            kind,
            bytes,
            std::mem::offset_of!(TlsWrite, data),
        )?)),
    })
}

/// Reads a `T` from the start of `bytes`. Only for the plain-data record types of
/// keytrail-common, whose every bit pattern is valid.
fn read<T: Copy>(kind: EventKind, bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::BadLength {
            kind,
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    // SAFETY: length checked above; T is a repr(C) plain-data type (integers and byte arrays),
    // so any bytes are a valid T; read_unaligned because the slice has no alignment promise.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Reads a record whose last field (a path, a value, a payload) the kernel sends only as far as
/// it is used: at least `fixed` bytes, at most `size_of::<T>()`; the rest is zero. The length
/// fields inside the record are checked by the stages that read them, against the buffer.
fn read_tail<T: Copy>(kind: EventKind, bytes: &[u8], fixed: usize) -> Result<T, DecodeError> {
    if bytes.len() < fixed {
        return Err(DecodeError::BadLength {
            kind,
            len: bytes.len(),
            expected: fixed,
        });
    }
    let n = bytes.len().min(size_of::<T>());
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: T is a repr(C) plain-data type (integers and byte arrays): all zeroes is a valid
    // T, and so is any byte pattern copied over its first `n` bytes (n <= size_of::<T>()).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), value.as_mut_ptr().cast::<u8>(), n);
        Ok(value.assume_init())
    }
}

/// Bytes of a fixed buffer up to `len`, as text (paths are bytes; invalid UTF-8 is replaced).
pub fn text(buf: &[u8], len: u32) -> String {
    let len = (len as usize).min(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// `comm` up to its NUL.
pub fn comm(header: &EventHeader) -> String {
    let end = header.comm.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&header.comm[..end]).into_owned()
}

/// Counters of the decoding stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct DecodeCounters {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
}

/// The kernel's two rings: the lifecycle one (exec, exit, cgroups) and the one for every other
/// record.
pub struct Rings {
    pub events: RingBuf<MapData>,
    pub lifecycle: RingBuf<MapData>,
}

/// Drains both ring buffers into `tx` until `shutdown`, then drains what is left once more.
/// Each batch takes everything pending in both and orders it by time, so a process's exec
/// comes before its opens though they travel apart.
pub async fn read_rings(
    rings: Rings,
    tx: mpsc::Sender<KernelEvent>,
    counters: Arc<DecodeCounters>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let interest = tokio::io::Interest::READABLE;
    // SAFETY: each ring buffer owns its map fd and keeps it open and unchanged until dropped,
    // which happens only after its AsyncFd is gone.
    let mut events = unsafe { AsyncFd::register_with_interest(rings.events, interest) }?;
    // SAFETY: as above.
    let mut lifecycle = unsafe { AsyncFd::register_with_interest(rings.lifecycle, interest) }?;
    // The kernel wakes the reader only when much is pending (a wakeup per record would cost
    // every traced process microseconds); the rest is collected at this pace.
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = poll.tick() => {}
            guard = events.readable_mut() => guard?.clear_ready(),
            guard = lifecycle.readable_mut() => guard?.clear_ready(),
        }
        let batch = drain_both(lifecycle.get_mut(), events.get_mut(), &counters);
        for event in batch {
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
    // Events submitted before shutdown are still delivered.
    for event in drain_both(lifecycle.get_mut(), events.get_mut(), &counters) {
        if tx.send(event).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Everything pending in both rings, in time order (lifecycle records first at equal times).
fn drain_both(
    lifecycle: &mut RingBuf<MapData>,
    events: &mut RingBuf<MapData>,
    counters: &DecodeCounters,
) -> Vec<KernelEvent> {
    let mut batch = drain(lifecycle, counters);
    let lifecycle_only = batch.len();
    batch.extend(drain(events, counters));
    if lifecycle_only > 0 && lifecycle_only < batch.len() {
        batch.sort_by_key(|e| e.header().time_ns);
    }
    batch
}

/// Takes everything currently in the ring (bounded by the ring's size).
fn drain(ring: &mut RingBuf<MapData>, counters: &DecodeCounters) -> Vec<KernelEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        counters.received.fetch_add(1, Ordering::Relaxed);
        match decode(&item) {
            Ok(event) => out.push(event),
            Err(e) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "skipping malformed kernel record");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytrail_common::PATH_CAP;

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            flags: 0,
            time_ns: 7,
            pid: 10,
            tid: 11,
            uid: 1000,
            gid: 1000,
            cgroup_id: 99,
            comm: *b"cat\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a padding-free repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn file_open_round_trip() {
        let mut path = [0u8; PATH_CAP];
        path[..5].copy_from_slice(b"/a.pm");
        let ev = FileOpen {
            header: header(EventKind::FileOpen),
            ret: -2,
            open_flags: 0,
            base_ino: 0,
            file_ino: 0,
            dirfd: -100,
            syscall: 1,
            mnt_ns: 4026531841,
            base_dev: 0,
            file_dev: 0,
            matched: 4,
            pid_ns: 0,
            path_len: 5,
            path,
        };
        let KernelEvent::FileOpen(back) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(back.ret, -2);
        assert_eq!(text(&back.path, back.path_len), "/a.pm");
        assert_eq!(comm(&back.header), "cat");
        assert_eq!(back.header.cgroup_id, 99);
        assert_eq!(back.mnt_ns, 4026531841);
    }

    #[test]
    fn records_with_a_variable_tail_decode_from_their_used_bytes() {
        let mut path = [0u8; PATH_CAP];
        path[..6].copy_from_slice(b"/k.pem");
        let ev = FileOpen {
            header: header(EventKind::FileOpen),
            ret: 3,
            open_flags: 0,
            base_ino: 0,
            file_ino: 9,
            dirfd: -100,
            syscall: 1,
            mnt_ns: 1,
            base_dev: 0,
            file_dev: 2,
            matched: 1,
            pid_ns: 0,
            path_len: 6,
            path,
        };
        // What the kernel sends: the fixed part and the path's bytes with its NUL.
        let used = std::mem::offset_of!(FileOpen, path) + 7;
        let KernelEvent::FileOpen(back) = decode(&bytes_of(&ev)[..used]).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(text(&back.path, back.path_len), "/k.pem");
        assert_eq!(back.file_ino, 9);
        // Shorter than the fixed part: an error, not a panic.
        assert!(matches!(
            decode(&bytes_of(&ev)[..used - 10]),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn cgroup_change_round_trip() {
        let mut path = [0u8; PATH_CAP];
        path[..4].copy_from_slice(b"/job");
        let ev = CgroupChange {
            header: header(EventKind::CgroupChange),
            cgroup_id: 1234,
            op: keytrail_common::cgroup_op::MKDIR,
            path_len: 4,
            path,
        };
        let KernelEvent::CgroupChange(back) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(back.cgroup_id, 1234);
        assert_eq!(text(&back.path, back.path_len), "/job");
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        assert_eq!(
            decode(&[1, 2, 3]).unwrap_err(),
            DecodeError::TooShort { len: 3 }
        );
        let mut b = bytes_of(&header(EventKind::ProcExit));
        b[0] = 0xff;
        assert!(matches!(decode(&b), Err(DecodeError::UnknownKind { .. })));
        let b = bytes_of(&header(EventKind::FileOpen));
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
        assert_eq!(text(&[b'a', 0xff], 2), "a\u{fffd}");
        assert_eq!(text(b"a", 50), "a");
    }
}
