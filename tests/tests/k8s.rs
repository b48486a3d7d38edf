//! Kubernetes enrichment end to end: the real agent with its real kernel probes, real
//! processes in real nested cgroups laid out as the kubelet and containerd lay them out, and a
//! real private mount namespace with the kubelet's atomic-writer layout of a Secret volume.
//!
//! Only the Kubernetes API server is recorded: a local HTTP server started by each test
//! answers with JSON as the API server sends it (`tests/fixtures/k8s/`: the PodList of the
//! node, a ReplicaSet with its Deployment owner reference) and holds the watch open without
//! events. The agent finds it through a kubeconfig the test writes, passed as `KUBECONFIG`
//! together with `NODE_NAME`, exactly as in a cluster.
//!
//! The pod fixture's uid and containerd container id are the ones of the cgroup the test
//! creates; everything is scoped to that cgroup (other agents and tests share the node).

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use keytrail_tests::{ALNUM, Agent, CgroupTree, Leaf, Workload, assert_no_leak, random};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/k8s");

/// As in `fixtures/k8s/pods.json`.
const NODE: &str = "kt-node-1";
const POD_UID: &str = "5b0a6f7e-3c1d-4e2f-9a8b-7c6d5e4f3a21";
const CONTAINER_ID: &str = "8f3c2a1b9e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b";
const REPLICASET_PATH: &str = "/apis/apps/v1/namespaces/shop/replicasets/payments-api-6d9f7c8b5d";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The recorded API server: one thread per connection, one request per connection.
struct ApiServer {
    port: u16,
    /// Request lines (`GET /api/v1/pods?... HTTP/1.1`) in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ApiServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let pods = fixture("pods.json");
        let replicaset = fixture("replicaset.json");
        let (reqs, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (reqs, stopping) = (Arc::clone(&reqs), Arc::clone(&stopping));
                        let (pods, replicaset) = (pods.clone(), replicaset.clone());
                        std::thread::spawn(move || {
                            serve(conn, &reqs, &stopping, &pods, &replicaset)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut conn: TcpStream,
    requests: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    pods: &str,
    replicaset: &str,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let request = line.trim_end().to_string();
    // Headers up to the blank line; GETs have no body.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    requests.lock().unwrap().push(request.clone());
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let respond = |conn: &mut TcpStream, status: &str, body: &str| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    };
    if path == "/api/v1/pods" && query.split('&').any(|p| p == "watch=true") {
        // A watch with nothing to report: headers, then the stream stays open.
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        let _ = conn.flush();
        let mut buf = [0u8; 64];
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        while !stop.load(Ordering::Relaxed) {
            match conn.read(&mut buf) {
                Ok(0) => return,
                _ => continue,
            }
        }
    } else if path == "/api/v1/pods" {
        respond(&mut conn, "200 OK", pods);
    } else if path == REPLICASET_PATH {
        respond(&mut conn, "200 OK", replicaset);
    } else {
        respond(
            &mut conn,
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#,
        );
    }
}

/// A kubeconfig naming `server`, as a cluster admin would hand one out.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    \
             server: {server}\ncontexts:\n- name: recorded\n  context:\n    cluster: recorded\n    \
             user: keytrail\ncurrent-context: recorded\nusers:\n- name: keytrail\n  user:\n    \
             token: recorded-api-server-token\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// The agent pointed at the recorded API server: `KUBECONFIG` and `NODE_NAME` as a DaemonSet
/// would set them, and no in-cluster variables inherited from the test's own environment.
fn k8s_agent(kubeconfig: &Path) -> Agent {
    Agent::start_with_env(
        None,
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("NODE_NAME", OsStr::new(NODE)),
        ],
        &["KUBERNETES_SERVICE_HOST"],
    )
}

/// The pod's container cgroup, as the kubelet's systemd driver and containerd name it, below
/// a fresh test cgroup: `<base>/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`.
fn pod_cgroup(label: &str) -> (CgroupTree, Leaf) {
    let mut tree = CgroupTree::new(label);
    let uid_ = POD_UID.replace('-', "_");
    let leaf = tree.leaf(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/\
         cri-containerd-{CONTAINER_ID}.scope"
    ));
    (tree, leaf)
}

fn aws_pair() -> (String, String) {
    (
        format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        random(ALNUM, 40),
    )
}

/// Lines of the agent log that mention Kubernetes.
fn kubernetes_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("kubernetes"))
        .collect()
}

#[test]
fn pod_owner_and_secret_volume_names_from_the_api() {
    let server = ApiServer::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(scratch.path(), &format!("http://127.0.0.1:{}", server.port));
    let mut agent = k8s_agent(&config);
    agent.wait_until("the pods of the node indexed", |a| {
        a.log()
            .contains("Kubernetes pods of this node indexed")
            .then_some(Value::Null)
    });
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dkt-node-1")),
        "the pod list is not scoped to the node: {requests:?}"
    );
    let (tree, cgroup) = pod_cgroup("k8s-api");

    // 1. A secret in the environment of a process exec'd in the container.
    let (key_id, secret) = aws_pair();
    let pid = cgroup.run(
        "/bin/sleep",
        &["0.3"],
        &[
            ("PATH", "/usr/bin:/bin"),
            ("AWS_ACCESS_KEY_ID", key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let e = agent.wait_for("the environment credential in the pod", |e| {
        e["event.name"] == "keytrail.credential.access"
            && e["keytrail.credential.source"] == "env"
            && e["process.pid"] == pid
            && e["keytrail.cgroup.path"] == cgroup.rel.as_str()
    });
    assert_eq!(e["keytrail.credential.id"], key_id.as_str(), "{e}");
    let expected = [
        ("keytrail.workload.kind", "pod"),
        (
            "keytrail.workload.name",
            "shop/payments-api-6d9f7c8b5d-q8v2m",
        ),
        ("k8s.pod.name", "payments-api-6d9f7c8b5d-q8v2m"),
        ("k8s.pod.uid", POD_UID),
        ("k8s.namespace.name", "shop"),
        ("k8s.container.name", "api"),
        ("container.id", CONTAINER_ID),
        ("keytrail.k8s.service_account", "payments-api"),
        ("k8s.replicaset.name", "payments-api-6d9f7c8b5d"),
        ("k8s.deployment.name", "payments-api"),
        ("keytrail.owner", "payments"),
    ];
    for (k, v) in expected {
        assert_eq!(e[k], v, "{k} in {e}");
    }
    // An environment credential is in no volume.
    assert!(e.get("keytrail.k8s.volume.name").is_none(), "{e}");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains(REPLICASET_PATH)),
        "the ReplicaSet was not looked up: {:?}",
        server.requests()
    );

    // 2. The Secret volume, laid out as the kubelet writes it: <mount>/..<timestamp>/token,
    // ..data -> ..<timestamp>, token -> ..data/token; opened through the symlinks.
    let mut w = Workload::spawn(WORKLOAD.as_ref(), tree.base());
    cgroup.adopt(w.pid());
    let mount = "/var/run/secrets/app";
    let stamp = "..2026_05_02_08_14_33.418273645";
    w.run("unshare-mount");
    // /var/run is /run here; a tmpfs there keeps the host's /run untouched.
    w.run("tmpfs /run");
    let token = random(ALNUM, 48);
    w.run(&format!("write-text {mount}/{stamp}/token {token}"));
    w.run(&format!("symlink {stamp} {mount}/..data"));
    w.run(&format!("symlink ..data/token {mount}/token"));
    w.run(&format!("open {mount}/token"));
    w.run(&format!("open {mount}/..data/token"));
    for path in [format!("{mount}/token"), format!("{mount}/..data/token")] {
        let e = agent.wait_for(&format!("the read of {path}"), |e| {
            e["event.name"] == "keytrail.credential.access"
                && e["file.path"] == path.as_str()
                && e["keytrail.file.open.access"] == "read"
                && e["process.pid"] == w.pid()
        });
        assert_eq!(e["keytrail.cgroup.path"], cgroup.rel.as_str(), "{e}");
        for (k, v) in [
            ("k8s.pod.name", "payments-api-6d9f7c8b5d-q8v2m"),
            ("k8s.container.name", "api"),
            ("keytrail.k8s.volume.name", "app-token"),
            ("keytrail.k8s.volume.source", "secret"),
            ("keytrail.k8s.secret.name", "payments-api-token"),
            ("k8s.deployment.name", "payments-api"),
        ] {
            assert_eq!(e[k], v, "{k} in {e}");
        }
    }

    // 3. A Secret volume at a mountPath no watch glob names: watched for this pod all the same
    // (the kernel filter gains the mount point when the pod is indexed).
    w.run("tmpfs /srv");
    let password = random(ALNUM, 32);
    w.run(&format!("write-text /srv/payments/db/password {password}"));
    let pid = w.pid();
    let e = keytrail_tests::retry_until("the read in the custom mountPath", || {
        w.run("open /srv/payments/db/password");
        agent.events().into_iter().find(|e| {
            e["process.pid"] == pid
                && e["file.path"] == "/srv/payments/db/password"
                && e["keytrail.file.open.access"] == "read"
        })
    });
    for (k, v) in [
        ("keytrail.k8s.volume.name", "db-creds"),
        ("keytrail.k8s.secret.name", "payments-db"),
        ("k8s.pod.name", "payments-api-6d9f7c8b5d-q8v2m"),
    ] {
        assert_eq!(e[k], v, "{k} in {e}");
    }
    drop(w);
    let run = agent.stop();
    let (events, log) = (run.events, run.stderr);
    let all: String = events.iter().map(|e| e.to_string()).collect();
    assert_no_leak("JSON lines", &all, &secret);
    assert_no_leak("agent log", &log, &secret);
    assert_no_leak("JSON lines", &all, &password);
    // The same path in a workload that is not the pod is nobody's Secret volume.
    assert!(
        events
            .iter()
            .filter(|e| e["file.path"] == "/srv/payments/db/password")
            .all(|e| e["keytrail.cgroup.path"] == cgroup.rel.as_str()),
    );
    assert!(
        kubernetes_lines(&log).iter().all(|l| !l.contains("WARN")),
        "Kubernetes warnings with a working API:\n{log}"
    );
}

#[test]
fn unreachable_api_keeps_cgroup_names_and_warns_once() {
    // A port that was just free: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(scratch.path(), &format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let mut agent = k8s_agent(&config);
    let (_tree, cgroup) = pod_cgroup("k8s-down");
    let (key_id, secret) = aws_pair();
    let pid = cgroup.run(
        "/bin/sleep",
        &["0.3"],
        &[
            ("PATH", "/usr/bin:/bin"),
            ("AWS_ACCESS_KEY_ID", key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let e = agent.wait_for("the environment credential in the pod", |e| {
        e["event.name"] == "keytrail.credential.access"
            && e["process.pid"] == pid
            && e["keytrail.cgroup.path"] == cgroup.rel.as_str()
    });
    assert_eq!(e["k8s.pod.uid"], POD_UID, "{e}");
    assert_eq!(e["container.id"], CONTAINER_ID, "{e}");
    assert_eq!(e["keytrail.workload.name"], format!("pod/{POD_UID}"), "{e}");
    for absent in ["k8s.pod.name", "k8s.namespace.name", "k8s.container.name"] {
        assert!(e.get(absent).is_none(), "{absent} in {e}");
    }
    // Several retries (1 s, 2 s, 4 s ...) happen meanwhile; only the first one warns.
    let settle = Duration::from_secs(8);
    if let Some(left) = settle.checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let dir = agent.dir.path().to_path_buf();
    let log = agent.stop().stderr;
    let lines = kubernetes_lines(&log);
    assert_eq!(
        lines.len(),
        1,
        "expected one line about Kubernetes in {}:\n{log}",
        dir.display()
    );
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    // Nor does the client library log each failed retry.
    assert!(
        !log.contains("kube_client"),
        "client retries logged:\n{log}"
    );
    assert_no_leak("agent log", &log, &secret);
}
