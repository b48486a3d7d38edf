use super::*;

const ID: &str = "4c7ad2e5d52f4b0a8f3e1c6a9b2d7e0f1a3c5e7b9d0f2a4c6e8b1d3f5a7c9e0b";
const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "5759a1ae-36ca-48a8-b20a-b0b5c8a90fb8";
const UID_: &str = "5759a1ae_36ca_48a8_b20a_b0b5c8a90fb8";

/// `expected` with the claim of `outer` added before the kind and name.
fn claimed(mut expected: Vec<String>, outer: &str) -> Vec<String> {
    let at = expected.len() - 1;
    expected.insert(at, format!("keytrail.workload.claimed_inside={outer}"));
    expected
}

/// The attributes of a path, as `key=value` strings, plus kind and name.
fn attrs(path: &str) -> Vec<String> {
    let id = parse(path);
    let mut out: Vec<String> = id
        .attributes()
        .map(|(a, v)| format!("{}={v}", a.key))
        .collect();
    match id.named() {
        Some((kind, name)) => out.push(format!("{}: {name}", kind.as_str())),
        None => out.push("process".into()),
    }
    out
}

fn container(runtime: &str, qos: Option<&str>) -> Vec<String> {
    let mut v = vec![format!("container.id={ID}")];
    if !runtime.is_empty() {
        v.push(format!("container.runtime={runtime}"));
    }
    match qos {
        Some(q) => {
            v.push(format!("k8s.pod.uid={UID}"));
            v.push(format!("keytrail.k8s.qos_class={q}"));
            v.push(format!("pod: pod/{UID}"));
        }
        None => v.push(format!("container: {runtime}/4c7ad2e5d52f")),
    }
    v
}

#[test]
fn containerd_systemd_driver_every_qos_class() {
    for (qos, slices) in [
        (
            "burstable",
            format!("kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
        ),
        (
            "besteffort",
            format!("kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"),
        ),
        ("guaranteed", format!("kubepods-pod{UID_}.slice")),
    ] {
        let path = format!("/kubepods.slice/{slices}/cri-containerd-{ID}.scope");
        assert_eq!(attrs(&path), container("containerd", Some(qos)), "{path}");
    }
}

#[test]
fn containerd_cgroupfs_driver_every_qos_class() {
    // The cgroupfs driver names the container by bare id: the runtime is unknown.
    for (qos, level) in [
        ("burstable", "burstable/"),
        ("besteffort", "besteffort/"),
        ("guaranteed", ""),
    ] {
        let path = format!("/kubepods/{level}pod{UID}/{ID}");
        assert_eq!(attrs(&path), container("", Some(qos)), "{path}");
    }
}

#[test]
fn nested_and_prefixed_kubernetes_trees_match_by_component() {
    let want = container("containerd", Some("besteffort"));
    for path in [
        // kind / k3s: containerd's own unit holds the pods.
        format!(
            "/system.slice/containerd.service/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ),
        // runc's "slice:prefix:id" left as a directory name (cgroupfs containerd).
        format!(
            "/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"
        ),
        // A test's prefix.
        format!(
            "/kt-test-x-1-2/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ),
    ] {
        assert_eq!(attrs(&path), want, "{path}");
    }
    // kind: kubelet --cgroup-root=/kubelet, inside the node's Docker container: named inside
    // that container, so claimed by it.
    let path = format!(
        "/docker/{ID2}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
         kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(
        attrs(&path),
        claimed(want.clone(), &format!("docker/{}", &ID2[..12]))
    );
    // Sub-cgroups of a container belong to it.
    let path = format!("/kubepods/besteffort/pod{UID}/{ID}/sub/deeper");
    assert_eq!(attrs(&path)[0], format!("container.id={ID}"));
    // Inside a cgroup namespace only the container's own component is left.
    assert_eq!(
        attrs(&format!("/../cri-containerd-{ID}.scope")),
        container("containerd", None)
    );
}

#[test]
fn static_pod_uids_and_pod_level_cgroups() {
    let hash = "187bff14cccb94f179e943eacce55bb3";
    let id = parse(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/crio-{ID}.scope"
    ));
    assert_eq!(id.pod.as_ref().map(|p| p.uid.as_str()), Some(hash));
    // A process in the pod's own cgroup (no container yet).
    let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
    assert_eq!(
        attrs(&path),
        [
            format!("k8s.pod.uid={UID}"),
            "keytrail.k8s.qos_class=guaranteed".into(),
            format!("pod: pod/{UID}"),
        ]
    );
}

#[test]
fn cri_o_and_its_conmon() {
    let pod =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
    assert_eq!(
        attrs(&format!("{pod}/crio-{ID}.scope")),
        container("cri-o", Some("burstable"))
    );
    // cgroupfs: CRI-O keeps its prefix.
    assert_eq!(
        attrs(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
        container("cri-o", Some("burstable"))
    );
    // conmon belongs to the pod but is not the container.
    let conmon = format!("{pod}/crio-conmon-{ID}.scope");
    assert_eq!(
        attrs(&conmon),
        [
            format!("k8s.pod.uid={UID}"),
            "keytrail.k8s.qos_class=burstable".into(),
            format!("keytrail.systemd.unit=crio-conmon-{ID}.scope"),
            format!("pod: pod/{UID}"),
        ]
    );
}

#[test]
fn docker_both_drivers() {
    assert_eq!(
        attrs(&format!("/system.slice/docker-{ID}.scope")),
        container("docker", None)
    );
    assert_eq!(attrs(&format!("/docker/{ID}")), container("docker", None));
    // Docker in Docker: the innermost container, claimed inside the outer one.
    assert_eq!(
        attrs(&format!("/docker/{ID2}/docker/{ID}")),
        claimed(container("docker", None), &format!("docker/{}", &ID2[..12]))
    );
    // dockershim under the kubelet.
    assert_eq!(
        attrs(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"
        )),
        container("docker", Some("burstable"))
    );
    // Not container ids.
    for path in [
        "/docker/abc".to_string(),
        format!("/docker/{}", ID.to_uppercase()),
        format!("/system.slice/docker-{}.scope", &ID[1..]),
        format!("/system.slice/docker-{ID}0.scope"),
        format!("/{ID}"),
    ] {
        assert_eq!(parse(&path).container, None, "{path}");
    }
}

#[test]
fn podman_rootful_rootless_and_conmon() {
    let want = container("podman", None);
    for path in [
        format!("/machine.slice/libpod-{ID}.scope"),
        format!("/machine.slice/libpod-{ID}.scope/container"),
        format!("/libpod_parent/libpod-{ID}"),
    ] {
        assert_eq!(attrs(&path), want, "{path}");
    }
    // Rootless: named by the user's own Podman, claimed inside the user's slice.
    assert_eq!(
        attrs(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
        )),
        claimed(want.clone(), "user-1000.slice")
    );
    assert_eq!(
        attrs(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
        [
            format!("keytrail.systemd.unit=libpod-conmon-{ID}.scope"),
            format!("systemd_unit: libpod-conmon-{ID}.scope"),
        ]
    );
}

#[test]
fn systemd_units_sessions_and_cron() {
    let unit = |u: &str| {
        vec![
            format!("keytrail.systemd.unit={u}"),
            format!("systemd_unit: {u}"),
        ]
    };
    assert_eq!(attrs("/system.slice/nginx.service"), unit("nginx.service"));
    assert_eq!(
        attrs("/system.slice/system-getty.slice/getty@tty1.service"),
        unit("getty@tty1.service")
    );
    assert_eq!(attrs("/system.slice/cron.service"), unit("cron.service"));
    assert_eq!(attrs("/init.scope"), unit("init.scope"));
    assert_eq!(
        attrs("/system.slice/run-r0a1b2c3d4.scope"),
        unit("run-r0a1b2c3d4.scope")
    );
    assert_eq!(
        attrs("/system.slice/mnt-share.mount"),
        unit("mnt-share.mount")
    );
    // The user's own service manager and what it starts.
    assert_eq!(
        attrs("/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service"),
        unit("syncthing.service")
    );
    assert_eq!(
        attrs("/user.slice/user-1000.slice/session-3.scope"),
        [
            "keytrail.systemd.unit=session-3.scope".to_string(),
            "keytrail.user_session=session-3".into(),
            "systemd_unit: uid 1000 session-3".into(),
        ]
    );
    let s = parse("/user.slice/user-0.slice/session-c2.scope");
    assert_eq!(s.named(), Some((Kind::SystemdUnit, "uid 0 session-c2")));
    // Without its user slice the uid is unknown.
    assert_eq!(
        parse("/session-7.scope").named(),
        Some((Kind::SystemdUnit, "session-7"))
    );
    // A unit inside a container is the container's.
    let id = parse(&format!(
        "/system.slice/docker-{ID}.scope/system.slice/nginx.service"
    ));
    assert_eq!(id.named(), Some((Kind::Container, "docker/4c7ad2e5d52f")));
    assert_eq!(id.unit.as_deref(), Some("nginx.service"));
}

#[test]
fn plain_paths_name_no_workload() {
    for path in [
        "",
        "/",
        "/kt-test",
        "/user.slice",
        "/user.slice/user-1000.slice",
        "/system.slice",
        "/.service",
        "/kubepods",
        "/kubepods/burstable",
        "/kubepods/burstable/podzz",
        "/kubepods.slice/kubepods-burstable.slice",
        "/kubepods.slice/kubepods-weird-pod1.slice",
        "/pod5759a1ae-36ca-48a8-b20a-b0b5c8a90fb8",
    ] {
        let id = parse(path);
        assert_eq!(id, CgroupIdentity::default(), "{path}");
        assert_eq!(id.attributes().count(), 0, "{path}");
    }
}

#[test]
fn what_lies_above_a_boundary_is_forgotten() {
    // containerd.service above the pods is not the pod's unit.
    let id = parse(&format!(
        "/system.slice/containerd.service/kubepods/pod{UID}/{ID}"
    ));
    assert_eq!(id.unit, None);
    assert_eq!(id.named(), Some((Kind::Pod, format!("pod/{UID}").as_str())));
    // A kind node's own container is not the pod's container.
    let id = parse(&format!("/docker/{ID}/kubepods/pod{UID}"));
    assert_eq!(id.container, None);
    assert!(id.pod.is_some());
    // A session above a container.
    let id = parse(&format!(
        "/user.slice/user-1000.slice/session-3.scope/libpod-{ID}.scope"
    ));
    assert_eq!(id.session, None);
    assert_eq!(id.named().map(|(k, _)| k), Some(Kind::Container));
}

#[test]
fn target_keys_drop_the_keytrail_namespace() {
    for a in [
        CONTAINER_ID,
        CONTAINER_RUNTIME,
        POD_UID,
        QOS_CLASS,
        SYSTEMD_UNIT,
        USER_SESSION,
    ] {
        let bare = a.key.strip_prefix("keytrail.").unwrap_or(a.key);
        assert_eq!(a.target_key, format!("keytrail.target.{bare}"));
    }
}

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Realistic components, near misses and garbage.
fn random_component(rng: &mut Rng) -> String {
    let pieces: [&str; 40] = [
        "kubepods",
        "kubepods.slice",
        "kubepods-burstable.slice",
        "kubepods-besteffort.slice",
        "burstable",
        "besteffort",
        "kubepods-pod5759a1ae_36ca.slice",
        "kubepods-burstable-pod_.slice",
        "kubepods-burstable-pod-.slice",
        "kubepods--.slice",
        "kubepods-.slice",
        "pod",
        "pod-",
        "pod_",
        "cri-containerd-",
        "crio-",
        "crio-conmon-",
        "docker",
        "docker-",
        "libpod-",
        "libpod-conmon-",
        ".scope",
        ".slice",
        ".service",
        "session-",
        "user-",
        "user-99999999999.slice",
        "system.slice",
        "x.service",
        "session-3.scope",
        "..",
        ".",
        "",
        ":",
        "::",
        "ü",
        "🦀",
        "\u{0}",
        "\u{202e}",
        "a\\x2db",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(4) + 1 {
        match rng.below(6) {
            0 => s.push_str(ID),
            1 => s.push_str(&ID[..rng.below(ID.len() + 1)]),
            2 => s.push_str(UID_),
            3 => s.extend(
                (0..rng.below(12)).filter_map(|_| char::from_u32(rng.next() as u32 % 0x3000)),
            ),
            _ => s.push_str(pieces[rng.below(pieces.len())]),
        }
    }
    s
}

#[test]
fn thousands_of_odd_paths_never_panic_and_keep_the_invariants() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut named = 0;
    for i in 0..5000 {
        let depth = rng.below(12);
        let mut path: String = (0..depth)
            .map(|_| format!("/{}", random_component(&mut rng)))
            .collect();
        if i % 500 == 0 {
            // Very long: many components, and one huge one.
            path = format!("{path}{}", "/a".repeat(20_000));
            path.push_str(&format!("/{}.service", "b".repeat(70_000)));
        }
        let id = parse(&path);
        if let Some(c) = &id.container {
            assert!(is_container_id(&c.id), "{path:?}");
        }
        if let Some(p) = &id.pod {
            assert!(!p.uid.contains('_') && !p.uid.is_empty(), "{path:?}");
        }
        if let Some((kind, name)) = id.named() {
            named += 1;
            assert!(!name.is_empty(), "{path:?}");
            assert_ne!(kind, Kind::Process, "{path:?}");
            let expected = if id.pod.is_some() {
                Kind::Pod
            } else if id.container.is_some() {
                Kind::Container
            } else {
                Kind::SystemdUnit
            };
            assert_eq!(kind, expected, "{path:?}");
        } else {
            assert!(id.attributes().next().is_none(), "{path:?}");
        }
        // Deterministic, and the cache agrees with the parser.
        assert_eq!(parse(&path), id);
        assert_eq!(*super::super::identity_of(&path), id);
    }
    // The generator reaches the interesting cases too.
    assert!(named > 100, "only {named} named");
}

#[test]
fn a_pod_named_inside_another_workload_is_claimed_by_it() {
    let outer_uid_ = "11111111_2222_3333_4444_555555555555";
    let outer = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{outer_uid_}.slice/\
         cri-containerd-{ID2}.scope"
    );
    let victim = format!("kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope");
    // A container with a delegated cgroup subtree names a cgroup after another pod.
    let id = parse(&format!("{outer}/{victim}"));
    assert_eq!(id.pod.as_ref().unwrap().uid, UID);
    assert_eq!(
        id.claimed_inside.as_deref(),
        Some("pod/11111111-2222-3333-4444-555555555555")
    );
    // The same below a user's slice (user@.service delegates to its user).
    let id = parse(&format!(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods.slice/{victim}"
    ));
    assert_eq!(id.claimed_inside.as_deref(), Some("user-1000.slice"));
    // What the node's runtime named at the top is never claimed; nor is a unit inside a
    // container (systemd in a container), which names no pod or container.
    for path in [
        outer.clone(),
        format!("/kt-test-x/{victim}"),
        format!("/system.slice/containerd.service/{victim}"),
        format!("/system.slice/docker-{ID}.scope/nginx.service"),
        "/user.slice/user-1000.slice/session-3.scope".to_string(),
    ] {
        assert_eq!(parse(&path).claimed_inside, None, "{path}");
    }
}
