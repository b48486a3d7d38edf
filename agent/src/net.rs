//! Outbound connections -> `keytrail.connection` records (debug, off by default) and wire
//! credentials -> `keytrail.credential.access` records with `source=wire`.
//!
//! A connection is known from its connect (process, cgroup, destination), keyed by the socket
//! cookie. Its first payload packets name it (TLS ClientHello: SNI, ALPN, version; plaintext
//! HTTP: Host) and may carry credentials (plaintext HTTP headers). A ClientHello split across
//! packets is reassembled from the packets the kernel copies. The first SSL_write of a TLS
//! connection carries its request head: it is linked to the connection the same thread opened
//! last (OpenSSL clients connect, handshake and write on one thread; the SSL object does not
//! name its socket without reading OpenSSL's internals).

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

use keytrail_common::{
    CONN_SIGNATURE_MAX, ConnFold, ConnFoldKey, NetConnect, NetPayload, NetState, PAYLOAD_CAP,
    TlsWrite, conn_state, family, path_hash,
};

use crate::{
    credential::{Classifier, Credential},
    files::{CgroupFilter, FirstSeen, Opener, set_credential, set_process},
    procs::ProcInfo,
    record::{Record, names},
    wire::{ClientHello, HttpHead, Payload, classify_payload},
};

/// Connections tracked at most. An unnamed connection leaves at its close; a named one (its
/// first payload gave the destination) gets no close record from the kernel and stays only for
/// its SSL_write to be linked: the least recently used go first (counted).
const MAX_CONNECTIONS: usize = 65_536;
/// Threads whose last connection is remembered, at most.
const MAX_THREADS: usize = 65_536;
/// Bytes kept to reassemble a ClientHello split across packets.
const MAX_REASSEMBLY: usize = 4 * PAYLOAD_CAP;

/// Counters of this stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// ClientHellos and HTTP request heads parsed.
    pub tls_hellos: AtomicU64,
    pub http_heads: AtomicU64,
    /// Payloads that were none of the known kinds, and ClientHellos that never completed.
    pub unparsed: AtomicU64,
    /// Payload or SSL_write records for a connection the agent never saw connect.
    pub unmatched: AtomicU64,
    /// Connections forgotten to make room for newer ones before their close was seen.
    pub evicted: AtomicU64,
    /// Repeats of a named connection the kernel folded (counted, not sent), credited as uses.
    pub folded: AtomicU64,
    /// Connect records of repeats the kernel held past their first seconds without payload,
    /// taken and handled by the agent.
    pub held_taken: AtomicU64,
}

/// What the pipeline should do after a network event.
#[derive(Debug, Default)]
pub struct NetOutcome {
    pub records: Vec<Record>,
    /// The connection's record, once per connection: when its destination is named by its
    /// first payload, else at close. Correlation uses it; it is written only when
    /// `output.connections` is on.
    pub connection: Option<Record>,
    /// The kernel may stop copying this connection's payload.
    pub forget_cookie: Option<u64>,
    /// How the kernel can recognise (and only count) repeats of this connection: same process,
    /// same destination, the same name at the same place in the first payload.
    pub fold: Option<(ConnFoldKey, ConnFold)>,
}

struct Conn {
    header: keytrail_common::EventHeader,
    /// Process and destination, as the kernel keys its folds.
    fold_key: ConnFoldKey,
    /// The first payload packet as captured, where a fold signature must be found.
    first_packet: Vec<u8>,
    time: SystemTime,
    proc: ProcInfo,
    cgroup_path: Option<String>,
    peer: IpAddr,
    port: u16,
    outcome: Option<&'static str>,
    tls: Option<ClientHello>,
    http_host: Option<String>,
    /// Bytes of a ClientHello that continues in the next packet.
    partial: Vec<u8>,
    /// The preamble before TLS, when there was one (`postgres_ssl_request`, `http_connect`).
    preamble: Option<&'static str>,
    reported: bool,
}

impl Conn {
    /// The destination's name: SNI, else the HTTP Host, else the address.
    fn server_address(&self) -> String {
        self.tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .or_else(|| self.http_host.as_deref().map(host_without_port))
            .unwrap_or_else(|| self.peer.to_string())
    }
}

/// `host:port` -> `host`; `[v6]:port` -> `v6`; a bare IPv6 address stays whole.
fn host_without_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match host.split_once(':') {
        Some((h, p)) if !p.contains(':') => {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h.to_string()
            } else {
                host.to_string()
            }
        }
        _ => host.to_string(),
    }
}

pub struct NetAccess {
    classifier: Classifier,
    cgroups: CgroupFilter,
    conns: lru::LruCache<u64, Conn>,
    /// pid_tgid -> cookie and time (CLOCK_BOOTTIME ns) of the thread's latest connect seen.
    last_by_thread: lru::LruCache<u64, (u64, u64)>,
    /// Process and destination -> cookie of the connection whose name the kernel folds
    /// repeats of: a TLS write on a folded repeat belongs to it.
    named: lru::LruCache<ConnFoldKey, u64>,
}

impl NetAccess {
    pub fn new(classifier: Classifier, cgroups: CgroupFilter) -> Self {
        Self {
            classifier,
            cgroups,
            conns: lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_CONNECTIONS).expect("a nonzero bound"),
            ),
            last_by_thread: lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_THREADS).expect("a nonzero bound"),
            ),
            named: lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_CONNECTIONS).expect("a nonzero bound"),
            ),
        }
    }

    pub fn on_connect(
        &mut self,
        ev: &NetConnect,
        who: &Opener<'_>,
        time: SystemTime,
        counters: &NetCounters,
    ) {
        if !self.cgroups.allows(who.cgroup_path) {
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let h = &ev.header;
        self.last_by_thread.put(
            ((h.pid as u64) << 32) | h.tid as u64,
            (ev.cookie, h.time_ns),
        );
        self.conns.put(
            ev.cookie,
            Conn {
                header: *h,
                fold_key: ConnFoldKey {
                    cgroup_id: h.cgroup_id,
                    tgid: h.pid,
                    family: ev.family,
                    port: ev.port,
                    addr: ev.addr,
                },
                first_packet: Vec::new(),
                time,
                proc: who.proc.clone(),
                cgroup_path: who.cgroup_path.map(str::to_string),
                peer: peer_address(ev),
                port: ev.port,
                outcome: None,
                tls: None,
                http_host: None,
                partial: Vec::new(),
                preamble: None,
                reported: false,
            },
        );
    }

    pub fn on_state(&mut self, ev: &NetState, counters: &NetCounters) -> NetOutcome {
        let mut out = NetOutcome::default();
        let Some(conn) = self.conns.get_mut(&ev.cookie) else {
            return out;
        };
        match ev.state {
            conn_state::FAILED | conn_state::CLOSED => {
                conn.outcome = Some(if ev.state == conn_state::FAILED {
                    "failed"
                } else {
                    "established"
                });
                if let Some(conn) = self.conns.pop(&ev.cookie) {
                    // A ClientHello still waiting for its end never got it.
                    if !conn.partial.is_empty() {
                        counters.unparsed.fetch_add(1, Ordering::Relaxed);
                    }
                    if !conn.reported {
                        out.connection = Some(connection_record(&conn));
                        // Named by its address only: repeats that close without payload fold.
                        if ev.state == conn_state::CLOSED && conn.first_packet.is_empty() {
                            out.fold = Some((conn.fold_key, signature(ev.header.time_ns, 0, &[])));
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }

    pub fn on_payload(
        &mut self,
        ev: &NetPayload,
        first_seen: &mut FirstSeen,
        counters: &NetCounters,
    ) -> NetOutcome {
        let mut out = NetOutcome::default();
        let Some(conn) = self.conns.get_mut(&ev.cookie) else {
            counters.unmatched.fetch_add(1, Ordering::Relaxed);
            return out;
        };
        // A client sends payload only on an established connection.
        conn.outcome = Some("established");
        let captured = (ev.captured as usize).min(ev.data.len());
        if ev.packet == 0 {
            conn.first_packet = ev.data[..captured].to_vec();
        }
        let mut bytes = std::mem::take(&mut conn.partial);
        bytes.extend_from_slice(&ev.data[..captured]);
        let now = SystemTime::now();
        let mut creds: Vec<Credential> = Vec::new();
        let mut method = None;
        match classify_payload(&bytes, &self.classifier, now) {
            Payload::TlsClientHello(hello) => {
                counters.tls_hellos.fetch_add(1, Ordering::Relaxed);
                conn.tls = Some(hello);
                out.forget_cookie = Some(ev.cookie);
            }
            Payload::TlsIncomplete { partial, .. } => {
                if bytes.len() < MAX_REASSEMBLY && (ev.captured as usize) == ev.len as usize {
                    conn.partial = bytes;
                } else {
                    // Cut by the capture: what could be read is all there will be.
                    conn.tls = partial;
                    counters.unparsed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Payload::HttpRequest(head) => {
                counters.http_heads.fetch_add(1, Ordering::Relaxed);
                conn.http_host = head.host.clone();
                method = Some(head.method.clone());
                creds = head.credentials;
                out.forget_cookie = Some(ev.cookie);
            }
            Payload::HttpConnect(head) => {
                conn.preamble = Some("http_connect");
                conn.http_host = head.host.clone();
                method = Some(head.method.clone());
                creds = head.credentials;
            }
            Payload::PostgresSslRequest => conn.preamble = Some("postgres_ssl_request"),
            Payload::TextCommand => conn.preamble = Some("text_command"),
            Payload::Unknown => {
                counters.unparsed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some(conn) = self.conns.peek(&ev.cookie) else {
            return out;
        };
        for c in &creds {
            out.records.push(wire_record(
                conn,
                c,
                "http",
                method.as_deref(),
                first_seen,
                now,
            ));
        }
        if (conn.tls.is_some() || conn.http_host.is_some()) && !conn.reported {
            out.connection = Some(connection_record(conn));
            out.fold = fold_signature(conn, ev.header.time_ns);
            if let Some((key, _)) = &out.fold {
                self.named.put(*key, ev.cookie);
            }
            if let Some(c) = self.conns.get_mut(&ev.cookie) {
                c.reported = true;
            }
        }
        out
    }

    /// The first plaintext an SSL object wrote: a request head with credentials, linked to the
    /// connection its thread opened last.
    pub fn on_tls_write(
        &mut self,
        ev: &TlsWrite,
        first_seen: &mut FirstSeen,
        counters: &NetCounters,
    ) -> NetOutcome {
        let mut out = NetOutcome::default();
        let h = &ev.header;
        let thread = ((h.pid as u64) << 32) | h.tid as u64;
        // The thread's last connection: the latest of the one the agent saw and the one whose
        // record the kernel held (which, folded, counts as the connection it repeats).
        let seen = self.last_by_thread.get(&thread).copied();
        let cookie = match seen {
            Some((c, t)) if ev.conn_cookie == 0 || t >= ev.conn_time_ns => Some(c),
            _ if ev.conn_cookie == 0 => None,
            _ if self.conns.contains(&ev.conn_cookie) => Some(ev.conn_cookie),
            _ => self.named.peek(&ev.conn).copied(),
        };
        let Some(conn) = cookie.and_then(|c| self.conns.peek(&c)) else {
            counters.unmatched.fetch_add(1, Ordering::Relaxed);
            return out;
        };
        let captured = (ev.captured as usize).min(ev.data.len());
        let now = SystemTime::now();
        let head: HttpHead = match classify_payload(&ev.data[..captured], &self.classifier, now) {
            Payload::HttpRequest(head) => head,
            _ => return out,
        };
        counters.http_heads.fetch_add(1, Ordering::Relaxed);
        for c in &head.credentials {
            let mut r = wire_record(conn, c, "tls", Some(&head.method), first_seen, now);
            r.set("keytrail.wire.link", "thread_last_connect");
            if let Some(host) = &head.host {
                r.set("http.request.header.host", host.clone());
            }
            out.records.push(r);
        }
        out
    }
}

/// The signature of a connection named by the SNI of its ClientHello: where the name sits in
/// the first packet, and the hash of its first bytes. None when the name is not in the first
/// packet (a ClientHello split across packets) or appears more than once, and for plain HTTP:
/// its first payload is where its credentials are, which a repeat may change.
fn fold_signature(conn: &Conn, now_ns: u64) -> Option<(ConnFoldKey, ConnFold)> {
    let name = conn.tls.as_ref().and_then(|t| t.sni.clone())?;
    let name = name.as_bytes();
    let packet = &conn.first_packet;
    if name.is_empty() || name.len() > packet.len() {
        return None;
    }
    let mut at = packet
        .windows(name.len())
        .enumerate()
        .filter(|(_, w)| *w == name);
    let (offset, _) = at.next()?;
    if at.next().is_some() {
        return None;
    }
    let len = name.len().min(CONN_SIGNATURE_MAX);
    let offset = u16::try_from(offset).ok()?;
    Some((
        conn.fold_key,
        signature(
            now_ns,
            offset,
            &packet[offset as usize..offset as usize + len],
        ),
    ))
}

fn signature(now_ns: u64, offset: u16, bytes: &[u8]) -> ConnFold {
    ConnFold {
        confirmed_ns: now_ns,
        offset,
        len: bytes.len() as u16,
        hash: path_hash(bytes),
    }
}

/// The connection's record: destination, TLS and HTTP names, outcome.
fn connection_record(conn: &Conn) -> Record {
    let mut r = Record::new(names::CONNECTION, conn.time);
    set_conn_process(&mut r, conn);
    r.set("network.transport", "tcp")
        .set("network.peer.address", conn.peer.to_string())
        .set("server.port", conn.port as u64)
        .set("server.address", conn.server_address())
        .set(
            "keytrail.connection.outcome",
            conn.outcome.unwrap_or("unknown"),
        )
        .set_opt("keytrail.connection.preamble", conn.preamble);
    if let Some(t) = &conn.tls {
        r.set_opt("tls.client.server_name", t.sni.clone())
            .set("tls.protocol.version", t.version);
        if !t.alpn.is_empty() {
            r.set("tls.next_protocol", t.alpn.join(","));
        }
    }
    r.set_opt("http.request.header.host", conn.http_host.clone());
    r
}

fn set_conn_process(r: &mut Record, conn: &Conn) {
    let who = Opener {
        proc: &conn.proc,
        cgroup_path: conn.cgroup_path.as_deref(),
    };
    set_process(r, &conn.header, &who);
}

/// A credential seen on the wire toward a connection's destination.
fn wire_record(
    conn: &Conn,
    c: &Credential,
    protocol: &'static str,
    method: Option<&str>,
    first_seen: &mut FirstSeen,
    now: SystemTime,
) -> Record {
    let mut r = Record::new(names::CREDENTIAL_ACCESS, now);
    r.set("keytrail.credential.source", "wire");
    set_conn_process(&mut r, conn);
    let age = first_seen.age(&c.fingerprint, now);
    set_credential(&mut r, c, Some(age));
    r.set("keytrail.wire.protocol", protocol)
        .set("server.address", conn.server_address())
        .set("server.port", conn.port as u64)
        .set("network.peer.address", conn.peer.to_string())
        .set_opt("http.request.method", method.map(str::to_string));
    r
}

fn peer_address(ev: &NetConnect) -> IpAddr {
    if ev.family == family::INET6 {
        IpAddr::from(ev.addr)
    } else {
        IpAddr::from([ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(
            host_without_port("api.example.test:8443"),
            "api.example.test"
        );
        assert_eq!(host_without_port("[::1]:443"), "::1");
        assert_eq!(host_without_port("api.example.test"), "api.example.test");
        assert_eq!(host_without_port("::1"), "::1");
    }

    #[test]
    fn peer_addresses() {
        let mut ev = NetConnect {
            header: keytrail_common::EventHeader {
                kind: 400,
                flags: 0,
                time_ns: 0,
                pid: 1,
                tid: 1,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                comm: [0; 16],
            },
            cookie: 1,
            family: family::INET,
            port: 443,
            _reserved: 0,
            addr: [0; 16],
        };
        ev.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(peer_address(&ev).to_string(), "127.0.0.1");
        ev.family = family::INET6;
        ev.addr = std::net::Ipv6Addr::LOCALHOST.octets();
        assert_eq!(peer_address(&ev).to_string(), "::1");
    }
}
