//! Workload naming from the cgroup v2 path, end to end: processes in real nested cgroups laid
//! out the way containerd, CRI-O, Docker, Podman, the kubelet and systemd lay them out (below a
//! test prefix, which the agent ignores because it matches by component), and the identity
//! attributes the agent puts on their credential events. No Kubernetes API, no runtime: the
//! path alone names the workload.

use keytrail_tests::{ALNUM, Agent, CgroupTree, Workload, assert_no_leak, random};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// The identity keys; each case says which of them it expects, the others must be absent.
const IDENTITY_KEYS: &[&str] = &[
    "container.id",
    "container.runtime",
    "k8s.pod.uid",
    "keytrail.k8s.qos_class",
    "keytrail.systemd.unit",
    "keytrail.user_session",
    "keytrail.workload.claimed_inside",
];

fn hex(len: usize) -> String {
    random(b"0123456789abcdef", len)
}

/// A random pod uid: (with dashes, as the API server has it; with underscores, as the
/// systemd driver writes it).
fn pod_uid() -> (String, String) {
    let uid = format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12));
    let systemd = uid.replace('-', "_");
    (uid, systemd)
}

fn aws_pair() -> (String, String) {
    (
        format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        random(ALNUM, 40),
    )
}

/// Asserts the identity attributes under `prefix` (`""` or `keytrail.target.`): exactly
/// `expected`, every other identity key absent.
fn assert_identity(e: &Value, prefix: &str, expected: &[(&str, &str)]) {
    for key in IDENTITY_KEYS {
        let full = match prefix {
            "" => key.to_string(),
            p => format!("{p}{}", key.strip_prefix("keytrail.").unwrap_or(key)),
        };
        match expected.iter().find(|(k, _)| k == key) {
            Some((_, v)) => assert_eq!(e[&full], *v, "{full} in {e}"),
            None => assert!(e.get(&full).is_none(), "unexpected {full} in {e}"),
        }
    }
}

/// Execs a short-lived process with an AWS key pair in its environment inside
/// `<test prefix>/<nested>` and checks the identity of its credential event. The process
/// sleeps a little so the agent finds it in /proc when the exec event arrives.
fn env_case(label: &str, nested: &str, kind: &str, name: &str, expected: &[(&str, &str)]) {
    let mut agent = Agent::start(None);
    let mut tree = CgroupTree::new(label);
    let leaf = tree.leaf(nested);
    let (key_id, secret) = aws_pair();
    let pid = leaf.run(
        "/bin/sleep",
        &["0.3"],
        &[
            ("PATH", "/usr/bin:/bin"),
            ("AWS_ACCESS_KEY_ID", key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let e = agent.wait_for(&format!("the environment credential in {nested}"), |e| {
        e["event.name"] == "keytrail.credential.access"
            && e["keytrail.credential.source"] == "env"
            && e["process.pid"] == pid
            && e["keytrail.cgroup.path"] == leaf.rel.as_str()
    });
    assert_eq!(e["keytrail.credential.id"], key_id.as_str(), "{e}");
    assert_eq!(e["keytrail.workload.kind"], kind, "{e}");
    assert_eq!(e["keytrail.workload.name"], name, "{e}");
    assert_identity(&e, "", expected);
    let run = agent.stop();
    // Every event of this cgroup carries the same identity.
    let mine: Vec<&Value> = run
        .events
        .iter()
        .filter(|e| e["keytrail.cgroup.path"] == leaf.rel.as_str())
        .collect();
    assert!(!mine.is_empty());
    for e in mine {
        assert_eq!(e["keytrail.workload.name"], name, "{e}");
        assert_identity(e, "", expected);
    }
    let all: String = run.events.iter().map(|e| e.to_string()).collect();
    assert_no_leak("JSON lines", &all, &secret);
    assert_no_leak("agent log", &run.stderr, &secret);
}

#[test]
fn containerd_systemd_driver_burstable_pod() {
    let (uid, uid_) = pod_uid();
    let id = hex(64);
    env_case(
        "wl-containerd-sd",
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/\
             cri-containerd-{id}.scope"
        ),
        "pod",
        &format!("pod/{uid}"),
        &[
            ("container.id", &id),
            ("container.runtime", "containerd"),
            ("k8s.pod.uid", &uid),
            ("keytrail.k8s.qos_class", "burstable"),
        ],
    );
}

#[test]
fn containerd_cgroupfs_driver_guaranteed_pod() {
    let (uid, _) = pod_uid();
    let id = hex(64);
    // The cgroupfs driver names the container by bare id: the path does not say which
    // runtime, so container.runtime is absent.
    env_case(
        "wl-containerd-fs",
        &format!("kubepods/pod{uid}/{id}"),
        "pod",
        &format!("pod/{uid}"),
        &[
            ("container.id", &id),
            ("k8s.pod.uid", &uid),
            ("keytrail.k8s.qos_class", "guaranteed"),
        ],
    );
}

#[test]
fn containerd_nested_in_its_own_unit_besteffort_pod() {
    let (uid, uid_) = pod_uid();
    let id = hex(64);
    // kind / k3s style: the node's containerd.service holds the pods; it is not their unit.
    env_case(
        "wl-containerd-nested",
        &format!(
            "system.slice/containerd.service/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope"
        ),
        "pod",
        &format!("pod/{uid}"),
        &[
            ("container.id", &id),
            ("container.runtime", "containerd"),
            ("k8s.pod.uid", &uid),
            ("keytrail.k8s.qos_class", "besteffort"),
        ],
    );
}

#[test]
fn cri_o_container_and_its_conmon() {
    let (uid, uid_) = pod_uid();
    let id = hex(64);
    let pod =
        format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice");
    env_case(
        "wl-crio",
        &format!("{pod}/crio-{id}.scope"),
        "pod",
        &format!("pod/{uid}"),
        &[
            ("container.id", &id),
            ("container.runtime", "cri-o"),
            ("k8s.pod.uid", &uid),
            ("keytrail.k8s.qos_class", "besteffort"),
        ],
    );
    // conmon belongs to the pod, but it is not the container.
    let conmon = format!("crio-conmon-{id}.scope");
    env_case(
        "wl-crio-conmon",
        &format!("{pod}/{conmon}"),
        "pod",
        &format!("pod/{uid}"),
        &[
            ("k8s.pod.uid", &uid),
            ("keytrail.k8s.qos_class", "besteffort"),
            ("keytrail.systemd.unit", &conmon),
        ],
    );
}

#[test]
fn docker_systemd_driver() {
    let id = hex(64);
    env_case(
        "wl-docker-sd",
        &format!("system.slice/docker-{id}.scope"),
        "container",
        &format!("docker/{}", &id[..12]),
        &[("container.id", &id), ("container.runtime", "docker")],
    );
}

#[test]
fn docker_cgroupfs_driver() {
    let id = hex(64);
    env_case(
        "wl-docker-fs",
        &format!("docker/{id}"),
        "container",
        &format!("docker/{}", &id[..12]),
        &[("container.id", &id), ("container.runtime", "docker")],
    );
}

#[test]
fn rootless_podman_under_the_user_manager() {
    let id = hex(64);
    env_case(
        "wl-podman",
        &format!("user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope"),
        "container",
        &format!("podman/{}", &id[..12]),
        &[
            ("container.id", &id),
            ("container.runtime", "podman"),
            ("keytrail.workload.claimed_inside", "user-1000.slice"),
        ],
    );
}

/// A container with a delegated cgroup subtree creates cgroups named after another pod and
/// its container and runs a process there: the records name the pod the path claims, and say
/// which workload claimed it (the outer pod), so the claim cannot pass for the real pod.
#[test]
fn a_pod_claimed_inside_another_pods_container_says_so() {
    let (outer, outer_) = pod_uid();
    let (victim, victim_) = pod_uid();
    let (outer_id, victim_id) = (hex(64), hex(64));
    env_case(
        "wl-claimed",
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{outer_}.slice/\
             cri-containerd-{outer_id}.scope/kubepods-burstable-pod{victim_}.slice/\
             cri-containerd-{victim_id}.scope"
        ),
        "pod",
        &format!("pod/{victim}"),
        &[
            ("container.id", &victim_id),
            ("container.runtime", "containerd"),
            ("k8s.pod.uid", &victim),
            ("keytrail.k8s.qos_class", "burstable"),
            ("keytrail.workload.claimed_inside", &format!("pod/{outer}")),
        ],
    );
}

#[test]
fn systemd_service_unit() {
    env_case(
        "wl-unit",
        "system.slice/kt-demo.service",
        "systemd_unit",
        "kt-demo.service",
        &[("keytrail.systemd.unit", "kt-demo.service")],
    );
}

#[test]
fn user_session_scope() {
    env_case(
        "wl-session",
        "user.slice/user-1000.slice/session-3.scope",
        "systemd_unit",
        "uid 1000 session-3",
        &[
            ("keytrail.systemd.unit", "session-3.scope"),
            ("keytrail.user_session", "session-3"),
        ],
    );
}

#[test]
fn plain_cgroup_names_the_process() {
    env_case("wl-plain", "app/worker", "process", "sleep", &[]);
}

/// A file opened in a pod's container carries the same identity as its environment does.
#[test]
fn credential_file_opened_in_a_pod_container() {
    let mut agent = Agent::start(None);
    let (uid, uid_) = pod_uid();
    let id = hex(64);
    let mut tree = CgroupTree::new("wl-file");
    let leaf = tree.leaf(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/\
         cri-containerd-{id}.scope"
    ));
    // The workload starts in the tree's base and is moved into the container's cgroup before
    // it does anything.
    let mut w = Workload::spawn(WORKLOAD.as_ref(), tree.base());
    leaf.adopt(w.pid());
    let (key_id, secret) = aws_pair();
    w.run("unshare-mount");
    w.run("tmpfs /root");
    w.run(&format!(
        "write-text /root/.aws/credentials [default]\\naws_access_key_id = {key_id}\\n\
         aws_secret_access_key = {secret}\\n"
    ));
    w.run("open /root/.aws/credentials");

    let e = agent.wait_for("the credential file read in the container", |e| {
        e["file.path"] == "/root/.aws/credentials"
            && e["keytrail.file.open.access"] == "read"
            && e["process.pid"] == w.pid()
    });
    assert_eq!(e["keytrail.cgroup.path"], leaf.rel.as_str(), "{e}");
    assert_eq!(e["keytrail.credential.id"], key_id.as_str(), "{e}");
    assert_eq!(e["keytrail.workload.kind"], "pod", "{e}");
    assert_eq!(e["keytrail.workload.name"], format!("pod/{uid}"), "{e}");
    assert_identity(
        &e,
        "",
        &[
            ("container.id", &id),
            ("container.runtime", "containerd"),
            ("k8s.pod.uid", &uid),
            ("keytrail.k8s.qos_class", "burstable"),
        ],
    );
    drop(w);
    let run = agent.stop();
    let all: String = run.events.iter().map(|e| e.to_string()).collect();
    assert_no_leak("JSON lines", &all, &secret);
    assert_no_leak("agent log", &run.stderr, &secret);
}

/// Reading another process's environment names the target's workload under
/// `keytrail.target.*`, the reader's under the plain keys.
#[test]
fn environ_read_names_the_target_container() {
    let mut agent = Agent::start(None);
    let id = hex(64);
    let mut tree = CgroupTree::new("wl-target");
    let target_leaf = tree.leaf(&format!("system.slice/docker-{id}.scope"));
    let reader_leaf = tree.leaf("system.slice/kt-reader.service");
    let (key_id, secret) = aws_pair();
    let target = Workload::spawn_with_env(
        WORKLOAD.as_ref(),
        tree.base(),
        &[
            ("AWS_ACCESS_KEY_ID", key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    target_leaf.adopt(target.pid());
    let mut reader = Workload::spawn(WORKLOAD.as_ref(), tree.base());
    reader_leaf.adopt(reader.pid());
    let environ = format!("/proc/{}/environ", target.pid());
    reader.run(&format!("open {environ}"));

    let e = agent.wait_for("the environ read", |e| {
        e["file.path"] == environ.as_str() && e["process.pid"] == reader.pid()
    });
    assert_eq!(e["keytrail.credential.source"], "proc_environ", "{e}");
    assert_eq!(e["keytrail.cgroup.path"], reader_leaf.rel.as_str(), "{e}");
    assert_eq!(e["keytrail.workload.kind"], "systemd_unit", "{e}");
    assert_eq!(e["keytrail.workload.name"], "kt-reader.service", "{e}");
    assert_identity(&e, "", &[("keytrail.systemd.unit", "kt-reader.service")]);
    assert_eq!(
        e["keytrail.target.cgroup.path"],
        target_leaf.rel.as_str(),
        "{e}"
    );
    assert_eq!(e["keytrail.target.workload.kind"], "container", "{e}");
    assert_eq!(
        e["keytrail.target.workload.name"],
        format!("docker/{}", &id[..12]),
        "{e}"
    );
    assert_identity(
        &e,
        "keytrail.target.",
        &[("container.id", &id), ("container.runtime", "docker")],
    );
    drop(reader);
    drop(target);
    let run = agent.stop();
    let all: String = run.events.iter().map(|e| e.to_string()).collect();
    assert_no_leak("JSON lines", &all, &secret);
    assert_no_leak("agent log", &run.stderr, &secret);
}
