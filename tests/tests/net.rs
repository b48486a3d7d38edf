//! Outbound connections: destination, TLS SNI/ALPN/version and the client's process and cgroup,
//! from real clients (openssl, curl, python) against a real local TLS server, over IPv4 and
//! IPv6; credentials in request heads, over TLS (SSL_write) and plaintext (first payload
//! packet), fingerprinted like the same secret in an environment. Never a value in any output.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, accesses_in, assert_no_leak, random, run_in_cgroup,
};
use serde_json::Value;

const CONNECTIONS_ON: &str = "output:\n  connections: true\n";

/// `openssl s_server` on `addr` with a fresh self-signed certificate; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(host: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=api.example.test",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl req");
        assert!(status.success());
        let port = free_port(host);
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("{}:{port}", bracket(host)))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let addr: SocketAddr = format!("{}:{port}", bracket(host)).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn free_port(host: &str) -> u16 {
    TcpListener::bind(format!("{}:0", bracket(host)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
fn a_refused_connection_is_reported_as_failed() {
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
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
}
