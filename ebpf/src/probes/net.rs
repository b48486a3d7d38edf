//! Outbound TCP connections, at the cgroup2 root so every workload on the node is covered:
//!
//! - `cgroup/connect4` and `connect6` run in the connecting process: pid, cgroup, destination
//!   and the socket cookie, which keys everything after. The socket gets AWAITING storage.
//! - `sock_ops` reports the end of the connection: failed (closed from SYN_SENT) or closed,
//!   and stops asking for state changes once nothing about the connection is awaited.
//! - `cgroup_skb/egress` looks only at sockets with AWAITING storage (a pointer test for every
//!   other packet of the node) and copies the start of their first payload packets: a TLS
//!   ClientHello, an HTTP request head, or the preamble of a protocol that upgrades to TLS
//!   later. A socket loses that storage once its ClientHello or request head is complete,
//!   after MAX_PAYLOAD_PACKETS payload packets, when the agent says it has what it needs
//!   (FORGET_PAYLOAD), or when it closes.
//! - A uprobe on OpenSSL's SSL_write/SSL_write_ex copies the first plaintext buffer of each SSL
//!   object (the request head that carries credentials); later writes cost a lookup.
//!
//! No write or sendmsg syscall is hooked: that would tax every write on the node.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, BPF_TCP_SYN_SENT,
        bpf_sock,
    },
    btf_maps::SkStorage,
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{btf_map, cgroup_skb, cgroup_sock_addr, map, sock_ops, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{ProbeContext, SkBuffContext, SockAddrContext, SockOpsContext},
};
use keytrail_common::{
    CONN_SIGNATURE_MAX, ConnFold, ConnFoldKey, ENV_HASH_INIT, EventKind, MAX_PAYLOAD_PACKETS,
    NetConnect, NetPayload, NetState, PAYLOAD_CAP, ProbeId, TlsWrite, conn_state, family,
    path_hash_step, record_family,
};

use super::{
    EVENTS, ProbeError, ProbeResult, atomic_add, config, count_dropped, count_folded, count_seen,
    fill_header, output_prefix, submit_flags, within_budget,
};

/// Per-CPU room to build a payload record (egress, softirq) and a TLS write record (uprobe,
/// process context) before each is sent with only the bytes it captured.
#[map]
static PAYLOAD_RECORD: PerCpuArray<NetPayload> = PerCpuArray::with_max_entries(1, 0);
#[map]
static TLS_RECORD: PerCpuArray<TlsWrite> = PerCpuArray::with_max_entries(1, 0);

/// Threads whose last held connection is remembered, at most.
const MAX_THREADS: u32 = 65_536;
/// Connections the agent has seen enough of, not yet told to their egress program.
const MAX_FORGET: u32 = 4_096;
/// SSL objects whose first write was already copied.
const MAX_SSL_SEEN: u32 = 65_536;
const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u8 = 6;
const PAYLOAD_MASK: usize = PAYLOAD_CAP - 1;

/// On each socket whose first payload is still awaited: the payload packets seen so far.
/// Socket storage lives and dies with its socket, so no table fills up under a flood of
/// connections, and the egress program pays a pointer test, not a cookie and a hash lookup,
/// for the packets of every other socket of the node.
#[btf_map]
static AWAITING: SkStorage<Awaiting> = SkStorage::new();

#[repr(C)]
#[derive(Clone, Copy)]
struct Awaiting {
    packets: u32,
    _reserved: u32,
}

/// Socket cookies of connections whose handshake the agent completed from several packets:
/// their next packet ends the wait.
#[map]
static FORGET_PAYLOAD: LruHashMap<u64, u8> = LruHashMap::with_max_entries(MAX_FORGET, 0);

/// The AWAITING storage of `sk` (created when `create`), or null.
#[inline(always)]
fn awaiting(sk: *mut bpf_sock, create: bool) -> *mut Awaiting {
    if sk.is_null() {
        return core::ptr::null_mut();
    }
    let flags = if create {
        BPF_SK_STORAGE_GET_F_CREATE as u64
    } else {
        0
    };
    // SAFETY: `sk` is a socket pointer the kernel gave this program (checked non-null); the
    // map argument is this program's socket storage map.
    unsafe {
        generated::bpf_sk_storage_get(
            core::ptr::from_ref(&AWAITING).cast_mut().cast(),
            sk.cast(),
            core::ptr::null_mut(),
            flags,
        )
    }
    .cast()
}

/// Ends the wait for `sk`'s payload.
#[inline(always)]
fn stop_awaiting(sk: *mut bpf_sock) {
    if !sk.is_null() {
        // SAFETY: as in `awaiting`.
        unsafe {
            generated::bpf_sk_storage_delete(
                core::ptr::from_ref(&AWAITING).cast_mut().cast(),
                sk.cast(),
            );
        }
    }
}

/// Socket cookie -> the connect record of a connection that may repeat one the agent named,
/// held until its first payload or its end decides whether it is sent or folded. Not an LRU:
/// a full map makes new connections go out at once instead of pushing held ones out unsent;
/// the agent takes entries held for long (a connection silent for seconds) and reports them.
#[map]
static PENDING_CONNS: HashMap<u64, NetConnect> = HashMap::with_max_entries(MAX_PENDING, 0);

/// Connect records held at once, at most.
const MAX_PENDING: u32 = 16_384;

/// Process and destination -> the agent's signature of the name a repeat must carry, and the
/// repeats folded (see `ConnFold`).
#[map]
static CONN_FOLDS: LruHashMap<ConnFoldKey, ConnFold> =
    LruHashMap::with_max_entries(MAX_CONN_FOLDS, 0);

/// Process and destination -> connections folded, ever (the agent credits the difference).
#[map]
static CONN_FOLD_COUNTS: LruHashMap<ConnFoldKey, u64> =
    LruHashMap::with_max_entries(MAX_CONN_FOLDS, 0);

/// Processes x destinations with a fold signature, at most.
const MAX_CONN_FOLDS: u32 = 16_384;

/// Thread (pid_tgid) -> the last connection it opened whose connect record was held: the agent
/// may never see that connection (folded), yet an SSL_write on that thread is most likely for
/// it (OpenSSL does not tell which socket an SSL object writes to).
#[map]
static THREAD_LAST_CONN: LruHashMap<u64, ThreadConn> = LruHashMap::with_max_entries(MAX_THREADS, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct ThreadConn {
    cookie: u64,
    time_ns: u64,
    key: ConnFoldKey,
}

/// Per-CPU room for the payload bytes a signature compares.
#[map]
static SIGNATURE_SCRATCH: PerCpuArray<[u8; CONN_SIGNATURE_MAX]> =
    PerCpuArray::with_max_entries(1, 0);

/// (SSL object, tgid) whose first SSL_write was copied; removed at SSL_free/SSL_clear, so an
/// object allocated at the same address for the next connection is copied again.
#[map]
static SSL_SEEN: LruHashMap<SslKey, u8> = LruHashMap::with_max_entries(MAX_SSL_SEEN, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    ssl: u64,
    tgid: u64,
}

/// Per-CPU room for a length that must reach the verifier as an unknown bounded value (a
/// volatile round trip keeps the compiler from folding the bound away).
#[map]
static NET_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[cgroup_sock_addr(connect4)]
pub fn net_connect4(ctx: SockAddrContext) -> i32 {
    let _ = on_connect(&ctx, family::INET);
    1 // always allow: keytrail observes, never enforces
}

#[cgroup_sock_addr(connect6)]
pub fn net_connect6(ctx: SockAddrContext) -> i32 {
    let _ = on_connect(&ctx, family::INET6);
    1
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, fam: u16) -> ProbeResult {
    // SAFETY: the context pointer is the kernel's bpf_sock_addr for this program.
    let sa = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config().ok_or(ProbeError)?;
    if cfg.agent_tgid == (pid_tgid >> 32) as u32 {
        return Ok(());
    }
    // SAFETY: a sock_addr context is a valid argument of this helper.
    let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.as_ptr()) };
    count_seen(ProbeId::NetConnect);
    // SAFETY: a plain-data record, all zeroes valid; every field is set below.
    let mut ev: NetConnect = unsafe { core::mem::zeroed() };
    fill_header(&mut ev.header, EventKind::NetConnect as u32, pid_tgid);
    ev.cookie = cookie;
    ev.family = fam;
    // user_port holds the port in network byte order in its low 16 bits.
    ev.port = u16::from_be(sa.user_port as u16);
    ev.addr = destination(sa, fam);
    // Toward a destination the agent named for this process, the record waits for the first
    // payload or the end of the connection to say whether it repeats that one (then it is
    // only counted) or is news (then it is sent). Anything else, or no room, goes out now.
    let key = fold_key(&ev);
    let held = fresh_signature(&key).is_some()
        && PENDING_CONNS.insert(cookie, ev, BPF_NOEXIST.into()).is_ok();
    if held {
        let time_ns = ev.header.time_ns;
        let last = ThreadConn {
            cookie,
            time_ns,
            key,
        };
        let _ = THREAD_LAST_CONN.insert(pid_tgid, last, 0);
    } else if !send_connect(&ev) {
        return Ok(());
    }
    // SAFETY: reading the socket pointer of this context.
    let sk = unsafe { sa.__bindgen_anon_1.sk };
    let _ = awaiting(sk, true);
    Ok(())
}

/// Takes the held connect record of `cookie`, if the agent has not taken it first.
#[inline(always)]
fn take_pending(cookie: u64) -> Option<NetConnect> {
    // SAFETY: a plain-data value copied out of a successful lookup.
    let held = *unsafe { PENDING_CONNS.get(cookie) }?;
    PENDING_CONNS.remove(cookie).ok().map(|_| held)
}

/// Sends a held connect record, within its cgroup's budget. False when it was not sent.
#[inline(always)]
fn send_connect(ev: &NetConnect) -> bool {
    let Some(cfg) = config() else { return false };
    if !within_budget(
        cfg,
        record_family::NET,
        ev.header.cgroup_id,
        ProbeId::NetConnect,
    ) {
        return false;
    }
    if EVENTS.output::<NetConnect>(ev, submit_flags()).is_err() {
        count_dropped(ProbeId::NetConnect);
        return false;
    }
    true
}

/// The fold key of a held connect: its process and destination.
#[inline(always)]
fn fold_key(ev: &NetConnect) -> ConnFoldKey {
    ConnFoldKey {
        cgroup_id: ev.header.cgroup_id,
        tgid: ev.header.pid,
        family: ev.family,
        port: ev.port,
        addr: ev.addr,
    }
}

/// The agent's signature for this connection's process and destination, while it is fresh.
#[inline(always)]
fn fresh_signature(key: &ConnFoldKey) -> Option<ConnFold> {
    let cfg = config()?;
    // SAFETY: a plain-data value copied out of a successful lookup.
    let f = *unsafe { CONN_FOLDS.get(key) }?;
    // SAFETY: helper without preconditions.
    let now = unsafe { generated::bpf_ktime_get_boot_ns() };
    (now.wrapping_sub(f.confirmed_ns) < cfg.fold_window_ns).then_some(f)
}

/// One more connection folded under `key`.
#[inline(always)]
fn count_fold(key: &ConnFoldKey) {
    match CONN_FOLD_COUNTS.get_ptr_mut(key) {
        Some(n) => atomic_add(n, 1),
        None => {
            let _ = CONN_FOLD_COUNTS.insert(key, 1, 0);
        }
    }
}

/// True when a connection that closed without payload repeats one the agent named that way
/// (by address): then it is only counted.
#[inline(always)]
fn fold_nameless(ev: &NetConnect) -> bool {
    let key = fold_key(ev);
    match fresh_signature(&key) {
        Some(f) if f.len == 0 => {
            count_fold(&key);
            true
        }
        _ => false,
    }
}

/// True when the first payload of a connection names what the agent's signature for its
/// process and destination names (the same bytes at the same offset): then the connection is
/// only counted.
#[inline(always)]
fn fold_payload(ctx: &SkBuffContext, offset: usize, avail: usize, ev: &NetConnect) -> bool {
    let key = fold_key(ev);
    let Some(f) = fresh_signature(&key) else {
        return false;
    };
    let (at, len, hash) = (f.offset as usize, f.len as usize, f.hash);
    if len == 0 || at + len > avail {
        return false;
    }
    let Some(buf) = SIGNATURE_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let n = ((len - 1) & (CONN_SIGNATURE_MAX - 1)) + 1;
    // SAFETY: loads 1..=CONN_SIGNATURE_MAX bytes into this CPU's scratch buffer of that size.
    let rc = unsafe {
        generated::bpf_skb_load_bytes(ctx.as_ptr(), (offset + at) as u32, buf.cast(), n as u32)
    };
    if rc != 0 {
        return false;
    }
    let mut h = ENV_HASH_INIT;
    for i in 0..CONN_SIGNATURE_MAX {
        if i >= n {
            break;
        }
        // SAFETY: i < CONN_SIGNATURE_MAX, inside the scratch buffer.
        h = path_hash_step(h, unsafe { (*buf)[i] });
    }
    if h != hash {
        return false;
    }
    count_fold(&key);
    true
}

/// The destination address bytes (network order), IPv4 in the first four.
#[inline(always)]
fn destination(sa: &aya_ebpf::bindings::bpf_sock_addr, fam: u16) -> [u8; 16] {
    let mut addr = [0u8; 16];
    if fam == family::INET {
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        // Word by word: the context only allows 4-byte loads of these fields.
        for i in 0..4 {
            addr[i * 4..i * 4 + 4].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
        }
    }
    addr
}

#[sock_ops]
pub fn net_state(ctx: SockOpsContext) -> u32 {
    let _ = on_sock_op(&ctx);
    1
}

#[inline(always)]
fn on_sock_op(ctx: &SockOpsContext) -> ProbeResult {
    let op = ctx.op();
    // Only the connect (to ask for state changes) and the close matter: an established
    // connection is known from its close, or from its first payload, so no record is spent on it.
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_STATE_CB {
        return Ok(());
    }
    // SAFETY: reading the socket pointer of this context (null-checked where used).
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    let awaited = !awaiting(sk, false).is_null();
    let (state, cookie) = match op {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // Ask for state changes of the connections the connect hook saw, so a failed
            // connect and the end of each connection are known.
            if awaited {
                let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG;
                let _ = ctx.set_cb_flags(flags as i32);
            }
            return Ok(());
        }
        _ => {
            if ctx.arg(1) != BPF_TCP_CLOSE {
                // Once its first payload named the connection, its end tells nothing new:
                // stop paying for its state changes.
                if !awaited {
                    let flags = ctx.cb_flags() & !BPF_SOCK_OPS_STATE_CB_FLAG;
                    let _ = ctx.set_cb_flags(flags as i32);
                }
                return Ok(());
            }
            if awaited {
                stop_awaiting(sk);
            }
            // SAFETY: a sock_ops context is a valid argument of this helper.
            let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.as_ptr()) };
            let state = if ctx.arg(0) == BPF_TCP_SYN_SENT {
                conn_state::FAILED
            } else if awaited {
                conn_state::CLOSED
            } else {
                // Its first payload already named the connection: the close tells nothing
                // new, so no record is spent on it.
                count_folded(ProbeId::NetState);
                return Ok(());
            };
            // A connection that never sent payload: its held connect record goes first,
            // unless it repeats one the agent named by address (a failure is always sent).
            if let Some(held) = take_pending(cookie) {
                if state == conn_state::CLOSED && fold_nameless(&held) {
                    count_folded(ProbeId::NetState);
                    return Ok(());
                }
                if !send_connect(&held) {
                    return Ok(());
                }
            }
            (state, cookie)
        }
    };
    count_seen(ProbeId::NetState);
    let Some(mut entry) = EVENTS.reserve::<NetState>(0) else {
        count_dropped(ProbeId::NetState);
        return Err(ProbeError);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved, writable NetState.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::NetState as u32, 0);
        (*ev).cookie = cookie;
        (*ev).state = state;
        (*ev)._reserved = 0;
    }
    entry.submit(submit_flags());
    Ok(())
}

#[cgroup_skb(egress)]
pub fn net_payload(ctx: SkBuffContext) -> i32 {
    let _ = on_egress(&ctx);
    1 // always let the packet go
}

#[inline(always)]
fn on_egress(ctx: &SkBuffContext) -> ProbeResult {
    // SAFETY: reading the socket pointer of this packet (null-checked in `awaiting`).
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    let packets = awaiting(sk, false);
    if packets.is_null() {
        return Ok(());
    }
    // SAFETY: an skb context is a valid argument of this helper.
    let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: plain map lookup of a u64 key.
    if unsafe { FORGET_PAYLOAD.get(cookie) }.is_some() {
        let _ = FORGET_PAYLOAD.remove(cookie);
        stop_awaiting(sk);
        return Ok(());
    }
    let offset = payload_offset(ctx).ok_or(ProbeError)?;
    let len = ctx.len() as usize;
    if len <= offset {
        return Ok(()); // SYN, ACK: no payload
    }
    let avail = len - offset;
    // SAFETY: non-null storage of this socket.
    let packet = unsafe { (*packets).packets };
    // The first payload decides about the held connect record: a repeat of a connection the
    // agent named is only counted; anything else is sent, connect record first.
    if let Some(held) = take_pending(cookie) {
        if packet == 0 && fold_payload(ctx, offset, avail, &held) {
            stop_awaiting(sk);
            count_folded(ProbeId::NetPayload);
            return Ok(());
        }
        if !send_connect(&held) {
            stop_awaiting(sk);
            return Ok(());
        }
    }
    count_seen(ProbeId::NetPayload);
    let ev = PAYLOAD_RECORD.get_ptr_mut(0).ok_or(ProbeError)?;
    let n = bounded_len(avail);
    // SAFETY: `ev` is this CPU's scratch record; the load length is within 1..=PAYLOAD_CAP
    // (bounded_len) and the payload holds at least that many bytes.
    let loaded = unsafe {
        fill_header(&mut (*ev).header, EventKind::NetPayload as u32, 0);
        (*ev).cookie = cookie;
        (*ev).packet = packet;
        (*ev).len = avail as u32;
        (*ev)._reserved = 0;
        let rc = generated::bpf_skb_load_bytes(
            ctx.as_ptr(),
            offset as u32,
            (*ev).data.as_mut_ptr().cast(),
            n as u32,
        );
        (*ev).captured = if rc == 0 { n as u32 } else { 0 };
        rc == 0
    };
    // SAFETY: as above; the first 5 bytes were loaded when `loaded`.
    let (head, record_len) = unsafe {
        let d = &(*ev).data;
        (
            [d[0], d[1], d[2], d[3]],
            ((d[3] as usize) << 8) | d[4] as usize,
        )
    };
    let captured = if loaded { n } else { 0 };
    output_prefix(
        ev,
        core::mem::offset_of!(NetPayload, data) + captured,
        ProbeId::NetPayload,
    );
    // Done with this connection once its ClientHello is complete or it sent an HTTP request
    // head, or after enough packets. CONNECT and other preambles wait for what follows.
    let done = packet + 1 >= MAX_PAYLOAD_PACKETS
        || (loaded && head[0] == 0x16 && avail >= 5 + record_len)
        || (loaded && is_http_method(&head));
    if done {
        stop_awaiting(sk);
    } else {
        // SAFETY: this socket's storage; only its packets (sent in order) update it.
        unsafe { (*packets).packets = packet + 1 };
    }
    Ok(())
}

/// The first four bytes of an HTTP request other than CONNECT.
#[inline(always)]
fn is_http_method(head: &[u8; 4]) -> bool {
    matches!(
        head,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI"
    )
}

/// Where the TCP payload starts in the packet (cgroup_skb data starts at the IP header), or
/// None for anything but TCP over IPv4/IPv6 without extension headers.
#[inline(always)]
fn payload_offset(ctx: &SkBuffContext) -> Option<usize> {
    let ver_ihl: u8 = ctx.load(0).ok()?;
    let ip_len = match ver_ihl >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            if proto != IPPROTO_TCP {
                return None;
            }
            ((ver_ihl & 0x0f) as usize) * 4
        }
        6 => {
            let next: u8 = ctx.load(6).ok()?;
            if next != IPPROTO_TCP {
                return None;
            }
            40
        }
        _ => return None,
    };
    let data_off: u8 = ctx.load(ip_len + 12).ok()?;
    Some(ip_len + ((data_off >> 4) as usize) * 4)
}

/// `min(avail, PAYLOAD_CAP)` in a form the verifier can bound to 1..=PAYLOAD_CAP.
#[inline(always)]
fn bounded_len(avail: usize) -> usize {
    if avail >= PAYLOAD_CAP {
        return PAYLOAD_CAP;
    }
    let Some(slot) = NET_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU slot of this map; the volatile round trip hides `avail < PAYLOAD_CAP`
    // from the compiler, so the mask below survives and bounds the value for the verifier.
    let v = unsafe {
        core::ptr::write_volatile(slot, avail as u64);
        core::ptr::read_volatile(slot)
    };
    ((v as usize).wrapping_sub(1) & PAYLOAD_MASK) + 1
}

/// SSL_write(ssl, buf, num) and SSL_write_ex(ssl, buf, num, written): the agent attaches this
/// to both symbols of every libssl it finds.
#[uprobe]
pub fn tls_write(ctx: ProbeContext) -> u32 {
    let _ = on_ssl_write(&ctx);
    0
}

#[inline(always)]
fn on_ssl_write(ctx: &ProbeContext) -> ProbeResult {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = pid_tgid >> 32;
    if config().is_some_and(|c| c.agent_tgid == tgid as u32) {
        return Ok(());
    }
    let ssl: u64 = ctx.arg(0).ok_or(ProbeError)?;
    let buf: u64 = ctx.arg(1).ok_or(ProbeError)?;
    let num: u64 = ctx.arg(2).ok_or(ProbeError)?;
    let num = num & 0xffff_ffff;
    if ssl == 0 || buf == 0 || num == 0 {
        return Ok(());
    }
    let key = SslKey { ssl, tgid };
    // SAFETY: plain map lookup.
    if unsafe { SSL_SEEN.get(key) }.is_some() {
        return Ok(());
    }
    let _ = SSL_SEEN.insert(key, 1, 0);
    count_seen(ProbeId::TlsWrite);
    let ev = TLS_RECORD.get_ptr_mut(0).ok_or(ProbeError)?;
    // SAFETY: helpers without preconditions.
    let cgroup_id = unsafe { generated::bpf_get_current_cgroup_id() };
    if let Some(cfg) = config()
        && !within_budget(cfg, record_family::NET, cgroup_id, ProbeId::TlsWrite)
    {
        return Ok(());
    }
    let n = bounded_len(num as usize);
    // SAFETY: `ev` is this CPU's scratch record; the read is bounded to 1..=PAYLOAD_CAP.
    let captured = unsafe {
        fill_header(&mut (*ev).header, EventKind::TlsWrite as u32, pid_tgid);
        (*ev).ssl = ssl;
        (*ev).len = num as u32;
        match THREAD_LAST_CONN.get(pid_tgid) {
            Some(last) => {
                (*ev).conn_cookie = last.cookie;
                (*ev).conn_time_ns = last.time_ns;
                (*ev).conn = last.key;
            }
            None => {
                (*ev).conn_cookie = 0;
                (*ev).conn_time_ns = 0;
                (*ev).conn = ConnFoldKey::default();
            }
        }
        let rc = generated::bpf_probe_read_user(
            (*ev).data.as_mut_ptr().cast(),
            n as u32,
            buf as *const core::ffi::c_void,
        );
        (*ev).captured = if rc == 0 { n as u32 } else { 0 };
        if rc == 0 { n } else { 0 }
    };
    output_prefix(
        ev,
        core::mem::offset_of!(TlsWrite, data) + captured,
        ProbeId::TlsWrite,
    );
    Ok(())
}

/// SSL_free(ssl) and SSL_clear(ssl): the object's next write belongs to a new connection.
#[uprobe]
pub fn tls_free(ctx: ProbeContext) -> u32 {
    let tgid = bpf_get_current_pid_tgid() >> 32;
    if let Some(ssl) = ctx.arg::<u64>(0) {
        let _ = SSL_SEEN.remove(SslKey { ssl, tgid });
    }
    0
}
