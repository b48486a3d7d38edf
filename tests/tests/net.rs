//! Outbound connections: destination, TLS SNI/ALPN/version and the client's process and cgroup,
//! from real clients (openssl, curl, python) against a real local TLS server, over IPv4 and
//! IPv6; credentials in request heads, over TLS (SSL_write) and plaintext (first payload
//! packet), fingerprinted like the same secret in an environment. Never a value in any output.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, accesses_in, assert_no_leak, random, run_in_cgroup,
    servers::{SIGV4_CLIENT, TlsServer, bracket, free_port, self_signed},
};
use serde_json::Value;

const CONNECTIONS_ON: &str = "output:\n  connections: true\n";

fn connections_of<'a>(events: &'a [Value], cgroup: &CgroupGuard, pid: u32) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["event.name"] == "keytrail.connection"
                && e["keytrail.cgroup.path"] == cgroup.rel_path()
                && e["process.pid"] == pid
        })
        .collect()
}

fn s_client(cgroup: &CgroupGuard, host: &str, port: u16, sni: &str) -> u32 {
    let (pid, out) = run_in_cgroup(
        cgroup,
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("{}:{port}", bracket(host)),
            "-servername",
            sni,
        ],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert!(out.status.success(), "s_client: {out:?}");
    pid
}

#[test]
fn tls_sni_from_openssl_and_curl_with_a_bearer_token_on_the_wire() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("net-tls");
    let port = server.port;

    let openssl_pid = s_client(&cgroup, "127.0.0.1", port, "db.example.test");
    let token = format!("ghp_{}", random(ALNUM, 36));
    let (curl_pid, out) = run_in_cgroup(
        &cgroup,
        "curl",
        &[
            "-sk",
            "-o",
            "/dev/null",
            "--resolve",
            &format!("api.example.test:{port}:127.0.0.1"),
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("https://api.example.test:{port}/v1/items?page=2"),
        ],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert!(out.status.success(), "curl: {out:?}");
    // The same token in an environment: its fingerprint must match the wire's.
    let (env_pid, _) = run_in_cgroup(&cgroup, "/bin/true", &[], &[("GITHUB_TOKEN", &token)]);

    let wire = agent.wait_for("the bearer token on the wire", |e| {
        e["keytrail.credential.source"] == "wire" && e["process.pid"] == curl_pid
    });
    let env = agent.wait_for("the same token in an environment", |e| {
        e["keytrail.credential.source"] == "env" && e["process.pid"] == env_pid
    });
    agent.wait_for("openssl's connection", |e| {
        e["event.name"] == "keytrail.connection" && e["process.pid"] == openssl_pid
    });
    let run = agent.stop();

    assert_eq!(wire["keytrail.cgroup.path"], cgroup.rel_path());
    assert_eq!(wire["keytrail.credential.kind"], "github_token");
    assert_eq!(wire["keytrail.credential.lifetime"], "static");
    assert_eq!(wire["server.address"], "api.example.test");
    assert_eq!(wire["server.port"], port);
    assert_eq!(wire["network.peer.address"], "127.0.0.1");
    assert_eq!(wire["http.request.method"], "GET");
    assert_eq!(
        wire["keytrail.credential.fingerprint"], env["keytrail.credential.fingerprint"],
        "the wire and the environment disagree on the token's fingerprint"
    );

    let curl = connections_of(&run.events, &cgroup, curl_pid);
    assert_eq!(curl.len(), 1, "{curl:#?}");
    assert_eq!(curl[0]["tls.client.server_name"], "api.example.test");
    assert_eq!(curl[0]["tls.protocol.version"], "1.3");
    assert!(
        curl[0]["tls.next_protocol"]
            .as_str()
            .is_some_and(|a| a.contains("http/1.1")),
        "{}",
        curl[0]
    );
    assert_eq!(curl[0]["keytrail.connection.outcome"], "established");
    assert_eq!(curl[0]["network.peer.address"], "127.0.0.1");
    assert_eq!(curl[0]["server.port"], port);
    let ossl = connections_of(&run.events, &cgroup, openssl_pid);
    assert_eq!(ossl.len(), 1, "{ossl:#?}");
    assert_eq!(ossl[0]["tls.client.server_name"], "db.example.test");
    assert_eq!(ossl[0]["process.executable.name"], "openssl");

    let text: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    assert_no_leak("JSON lines", &text, &token);
    assert_no_leak("agent log", &run.stderr, &token);
    assert!(
        !text.contains("page=2"),
        "a request path reached the output"
    );
}

#[test]
fn ipv6_connection_with_sni() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let server = TlsServer::start("::1");
    let cgroup = CgroupGuard::new("net-v6");
    let pid = s_client(&cgroup, "::1", server.port, "v6.example.test");
    let c = agent.wait_for("the IPv6 connection", |e| {
        e["event.name"] == "keytrail.connection" && e["process.pid"] == pid
    });
    assert_eq!(c["network.peer.address"], "::1");
    assert_eq!(c["server.port"], server.port);
    assert_eq!(c["tls.client.server_name"], "v6.example.test");
    assert_eq!(c["server.address"], "v6.example.test");
    assert_eq!(c["keytrail.cgroup.path"], cgroup.rel_path());
}

#[test]
fn basic_auth_from_python_over_tls_and_plain_http() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("net-python");
    let password = random(ALNUM, 24);
    let script = r#"
import base64, os, socket, ssl, sys, urllib.request
port, password = int(sys.argv[1]), os.environ["SERVICE_PASSWORD"]
auth = "Basic " + base64.b64encode(("svc-reports:" + password).encode()).decode()
ctx = ssl._create_unverified_context()
req = urllib.request.Request(f"https://reports.example.test:{port}/", headers={"Authorization": auth})
# Resolve the name to loopback without touching /etc/hosts.
orig = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: orig("127.0.0.1" if host == "reports.example.test" else host, *a, **k)
urllib.request.urlopen(req, context=ctx, timeout=5).read()
# Plaintext HTTP: the request head leaves in the first payload packet.
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"GET /plain HTTP/1.1\r\nHost: plain.example.test\r\nAuthorization: {auth}\r\n\r\n".encode())
s.close()
"#;
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "python3",
        &["-c", script, &server.port.to_string()],
        &[
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("SERVICE_PASSWORD", &password),
        ],
    );
    assert!(out.status.success(), "python: {out:?}");
    let env = agent.wait_for("the password in python's environment", |e| {
        e["keytrail.credential.source"] == "env" && e["process.pid"] == pid
    });
    let tls = agent.wait_for("Basic auth over TLS", |e| {
        e["keytrail.credential.source"] == "wire"
            && e["process.pid"] == pid
            && e["keytrail.wire.protocol"] == "tls"
    });
    let plain = agent.wait_for("Basic auth in plaintext HTTP", |e| {
        e["keytrail.credential.source"] == "wire"
            && e["process.pid"] == pid
            && e["keytrail.wire.protocol"] == "http"
    });
    let run = agent.stop();
    for w in [&tls, &plain] {
        assert_eq!(w["keytrail.credential.id"], "svc-reports", "{w}");
        assert_eq!(
            w["keytrail.credential.fingerprint"], env["keytrail.credential.fingerprint"],
            "{w}"
        );
    }
    assert_eq!(tls["server.address"], "reports.example.test");
    assert_eq!(plain["server.address"], "plain.example.test");
    assert!(!accesses_in(&run.events, &cgroup).is_empty());
    let text: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    assert_no_leak("JSON lines", &text, &password);
}

#[test]
fn refused_connections_and_garbage_payloads() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("net-refused");
    let port = free_port("127.0.0.1");
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "curl",
        &["-s", "-m", "5", &format!("http://127.0.0.1:{port}/")],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert!(!out.status.success());
    let c = agent.wait_for("the refused connection", |e| {
        e["event.name"] == "keytrail.connection" && e["process.pid"] == pid
    });
    assert_eq!(c["keytrail.connection.outcome"], "failed");
    assert_eq!(c["server.port"], port);
    assert_eq!(c["network.peer.address"], "127.0.0.1");

    // Random bytes, then a TLS record header that promises more than ever comes: counted as
    // unparsed, nothing else, and the agent keeps going.
    let script = r#"
import os, socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"\x00" + os.urandom(3000))
s.close()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"\x16\x03\x01\x40\x00" + os.urandom(40))
time.sleep(0.2)
s.close()
"#;
    let (garbage_pid, out) = run_in_cgroup(
        &cgroup,
        "python3",
        &["-c", script, &server.port.to_string()],
        &[("PATH", "/usr/local/bin:/usr/bin:/bin")],
    );
    assert!(out.status.success(), "python: {out:?}");
    agent.wait_for("the garbage connections", |e| {
        e["event.name"] == "keytrail.connection" && e["process.pid"] == garbage_pid
    });
    let run = agent.stop();
    assert_eq!(run.exit_code, Some(0), "agent log:\n{}", run.stderr);
    let garbage = connections_of(&run.events, &cgroup, garbage_pid);
    assert_eq!(garbage.len(), 2, "{garbage:#?}");
    assert!(
        garbage
            .iter()
            .all(|g| g.get("tls.client.server_name").is_none())
    );
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        stats["keytrail.net.unparsed"].as_u64() >= Some(2),
        "garbage not counted: {stats}"
    );
}

/// The newest PostgreSQL server binary directory (Debian: /usr/lib/postgresql/N/bin).
fn postgres_bin_dir() -> std::path::PathBuf {
    let mut dirs: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server installed (cargo xtask setup installs it)")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL server version").1
}

/// The uid and gid of a system user.
fn user_ids(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(!pw.is_null(), "no user {name}");
    // SAFETY: non-null passwd entry from getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A PostgreSQL server with ssl=on on 127.0.0.1, run as the postgres user; stopped on drop.
struct Postgres {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Self {
        use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
        let bin = postgres_bin_dir();
        let (uid, gid) = user_ids("postgres");
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let out = Command::new(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {out:?}");
        let (key, cert) = (data.join("server.key"), data.join("server.crt"));
        self_signed(&key, &cert, "db.example.test");
        for f in [&key, &cert] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = free_port("127.0.0.1");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\n",
            dir.path().display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn psql_sni_is_found_after_the_ssl_request() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let pg = Postgres::start();
    let cgroup = CgroupGuard::new("net-psql");
    let conninfo = format!(
        "host=db.example.test hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
         sslmode=require",
        pg.port
    );
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "psql",
        &[
            &conninfo,
            "-Atc",
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ],
        &[("PATH", "/usr/bin:/bin"), ("HOME", "/root")],
    );
    assert!(out.status.success(), "psql: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t",
        "not over TLS"
    );
    let c = agent.wait_for("psql's connection", |e| {
        e["event.name"] == "keytrail.connection" && e["process.pid"] == pid
    });
    assert_eq!(
        c["keytrail.connection.preamble"], "postgres_ssl_request",
        "{c}"
    );
    assert_eq!(c["tls.client.server_name"], "db.example.test", "{c}");
    assert_eq!(c["server.port"], pg.port);
    assert_eq!(c["keytrail.cgroup.path"], cgroup.rel_path());
}

#[test]
fn aws_sigv4_key_id_is_seen_on_the_wire() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("net-sigv4");
    let key_id = format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    let secret = random(ALNUM, 40);
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "python3",
        &["-c", SIGV4_CLIENT, &server.port.to_string()],
        &[
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("AWS_ACCESS_KEY_ID", &key_id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    assert!(out.status.success(), "python: {out:?}");
    let wire = agent.wait_for("the SigV4 key id on the wire", |e| {
        e["keytrail.credential.source"] == "wire" && e["process.pid"] == pid
    });
    let env = agent.wait_for("the key pair in the environment", |e| {
        e["keytrail.credential.source"] == "env" && e["process.pid"] == pid
    });
    let run = agent.stop();
    assert_eq!(wire["keytrail.credential.id"], key_id.as_str(), "{wire}");
    assert_eq!(
        wire["keytrail.credential.id"],
        env["keytrail.credential.id"]
    );
    assert_eq!(wire["server.address"], "s3.example.test");
    let text: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    assert_no_leak("JSON lines", &text, &secret);
}

#[test]
fn each_sequential_tls_connection_has_its_first_request_inspected() {
    let agent = Agent::start(Some(CONNECTIONS_ON));
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("net-sequential");
    let tokens: Vec<String> = (0..3)
        .map(|_| format!("ghp_{}", random(ALNUM, 36)))
        .collect();
    // One process, three connections one after the other: OpenSSL frees each SSL object and
    // may allocate the next one at the same address.
    let script = r#"
import os, ssl, sys, urllib.request
port = int(sys.argv[1])
ctx = ssl._create_unverified_context()
for token in os.environ["TOKENS"].split(","):
    req = urllib.request.Request(f"https://127.0.0.1:{port}/", headers={"Authorization": "Bearer " + token})
    urllib.request.urlopen(req, context=ctx, timeout=5).read()
"#;
    let joined = tokens.join(",");
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "python3",
        &["-c", script, &server.port.to_string()],
        &[
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("TOKENS", &joined),
        ],
    );
    assert!(out.status.success(), "python: {out:?}");
    let wire_of = |events: &[Value]| -> usize {
        events
            .iter()
            .filter(|e| {
                e["keytrail.credential.source"] == "wire"
                    && e["process.pid"] == pid
                    && e["keytrail.wire.protocol"] == "tls"
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while wire_of(&agent.events()) < tokens.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} requests seen",
            wire_of(&agent.events()),
            tokens.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = agent.stop();
    let fingerprints: std::collections::BTreeSet<String> = run
        .events
        .iter()
        .filter(|e| e["keytrail.credential.source"] == "wire" && e["process.pid"] == pid)
        .filter_map(|e| {
            e["keytrail.credential.fingerprint"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        fingerprints.len(),
        tokens.len(),
        "one fingerprint per token"
    );
    let text: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    for t in &tokens {
        assert_no_leak("JSON lines", &text, t);
    }
}

/// One thread alternates between two TLS destinations and a plaintext one, then does it again
/// once the agent has named the first round (so the kernel folds the repeats it can).
const ALTERNATING_CLIENT: &str = r#"
import os, socket, ssl, sys, urllib.request
pa, pb, pp = (int(p) for p in sys.argv[1:4])
tokens = os.environ["TOKENS"].split(",")
orig = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: orig("127.0.0.1" if host.endswith(".example.test") else host, *a, **k)
ctx = ssl._create_unverified_context()
def tls(name, port, token):
    req = urllib.request.Request(f"https://{name}:{port}/", headers={"Authorization": "Bearer " + token})
    urllib.request.urlopen(req, context=ctx, timeout=5).read()
def plain(token):
    s = socket.create_connection(("127.0.0.1", pp))
    s.sendall(f"GET / HTTP/1.1\r\nHost: plain.example.test\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    s.close()
for round in range(2):
    tls("a.example.test", pa, tokens[3 * round])
    tls("b.example.test", pb, tokens[3 * round + 1])
    plain(tokens[3 * round + 2])
    if round == 0:
        sys.stdin.readline()
"#;

#[test]
fn requests_on_repeated_connections_are_tied_to_their_own_destination() {
    use std::io::Write as _;
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let (a, b) = (TlsServer::start("127.0.0.1"), TlsServer::start("127.0.0.1"));
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || plain.incoming().for_each(drop));
    let cgroup = CgroupGuard::new("net-alternating");
    let tokens: Vec<String> = (0..6)
        .map(|_| format!("ghp_{}", random(ALNUM, 36)))
        .collect();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ALTERNATING_CLIENT])
        .args([a.port, b.port, plain_port].map(|p| p.to_string()))
        .env_clear()
        .envs([
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("TOKENS", &tokens.join(",")),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    keytrail_tests::in_cgroup(&mut cmd, &cgroup);
    let mut client = cmd.spawn().unwrap();
    let pid = client.id();
    // The first round named: the repeats of the second can be folded.
    for name in ["a.example.test", "b.example.test", "plain.example.test"] {
        agent.wait_for(name, |e| {
            e["event.name"] == "keytrail.connection"
                && e["process.pid"] == pid
                && e["server.address"] == name
        });
    }
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "python: {out:?}");
    let wire = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["keytrail.credential.source"] == "wire" && e["process.pid"] == pid)
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while wire(&agent.events()).len() < tokens.len() {
        assert!(Instant::now() < deadline, "{:?}", wire(&agent.events()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = agent.stop();
    // Each destination got its own two requests: six tokens, two per name.
    let mut by_name = std::collections::BTreeMap::<String, Vec<String>>::new();
    for w in wire(&run.events) {
        by_name
            .entry(w["server.address"].as_str().unwrap().to_string())
            .or_default()
            .push(w["keytrail.credential.fingerprint"].to_string());
    }
    for name in ["a.example.test", "b.example.test", "plain.example.test"] {
        let fps = &by_name[name];
        assert_eq!(fps.len(), 2, "{name}: {by_name:?}");
        assert_ne!(fps[0], fps[1], "{name}: {by_name:?}");
    }
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        stats["keytrail.net.folded"].as_u64().unwrap() >= 2,
        "the TLS repeats were not folded: {stats}"
    );
    let text: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    for t in &tokens {
        assert_no_leak("JSON lines", &text, t);
    }
}
