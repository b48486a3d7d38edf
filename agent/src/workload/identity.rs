//! What a cgroup v2 path says about its processes, without asking any API: the container
//! runtimes, the kubelet and systemd all name their cgroups after what runs in them.
//!
//! Paths are matched component by component, never by absolute prefix, so the same rules hold
//! on a node (`/kubepods.slice/...`), under a nested runtime (`/system.slice/containerd.service/
//! kubepods-...`, kind's `/kubelet.slice/kubelet-kubepods.slice/...`), inside a cgroup namespace
//! (`/../cri-containerd-<id>.scope`) and below any prefix.
//!
//! A path is read from the root down. Each recognised component sits at a level (Kubernetes
//! root < QoS < pod < container < systemd unit / session); recognising one forgets what was
//! found at its level and below, so what lies above a boundary (the `containerd.service` that
//! holds a kind node's pods, the Docker container a kind node runs in) never leaks into the
//! identity of what runs inside it.
//!
//! A pod or container found inside another container's cgroup, or inside a user's slice, was
//! named by whoever controls that cgroup: a kind node's kubelet, a user's rootless Podman, or a
//! workload with a delegated subtree pretending to be another pod. The path cannot tell them
//! apart, so such an identity is reported as claimed inside the outer one
//! (`keytrail.workload.claimed_inside`: that container's workload name, or `user-<uid>.slice`);
//! what the node's runtime or systemd named at the top is never claimed.
/// Container runtime, as in OpenTelemetry's `container.runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl Runtime {
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

/// Kubernetes QoS class of a pod: the kubelet puts Burstable and BestEffort pods under a
/// cgroup of their class and Guaranteed pods directly under the Kubernetes root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }

    fn from_level(s: &str) -> Option<Self> {
        match s {
            "burstable" => Some(QosClass::Burstable),
            "besteffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

/// `keytrail.workload.kind` values (the contract's four: a user session is a systemd scope
/// unit, named after its user and session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Container,
    SystemdUnit,
    Process,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Container => "container",
            Kind::SystemdUnit => "systemd_unit",
            Kind::Process => "process",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full 64-hex id.
    pub id: String,
    /// None when only the place says it is a container (the cgroupfs driver of containerd and
    /// dockershim name container cgroups by bare id).
    pub runtime: Option<Runtime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// With dashes, as the API server has it (the systemd driver writes `_`).
    pub uid: String,
    pub qos: QosClass,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `session-3`.
    pub name: String,
    /// From the enclosing `user-<uid>.slice`.
    pub uid: Option<u32>,
}

/// An attribute of the identity: its key on a record, and on the `keytrail.target.*` side of a
/// /proc/PID/environ read (the `keytrail.` namespace dropped, as for the other target keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub key: &'static str,
    pub target_key: &'static str,
}

pub const CONTAINER_ID: Attr = Attr {
    key: "container.id",
    target_key: "keytrail.target.container.id",
};
pub const CONTAINER_RUNTIME: Attr = Attr {
    key: "container.runtime",
    target_key: "keytrail.target.container.runtime",
};
pub const POD_UID: Attr = Attr {
    key: "k8s.pod.uid",
    target_key: "keytrail.target.k8s.pod.uid",
};
pub const QOS_CLASS: Attr = Attr {
    key: "keytrail.k8s.qos_class",
    target_key: "keytrail.target.k8s.qos_class",
};
pub const SYSTEMD_UNIT: Attr = Attr {
    key: "keytrail.systemd.unit",
    target_key: "keytrail.target.systemd.unit",
};
pub const USER_SESSION: Attr = Attr {
    key: "keytrail.user_session",
    target_key: "keytrail.target.user_session",
};
pub const CLAIMED_INSIDE: Attr = Attr {
    key: "keytrail.workload.claimed_inside",
    target_key: "keytrail.target.workload.claimed_inside",
};

/// Everything a cgroup path tells about its processes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupIdentity {
    pub pod: Option<Pod>,
    pub container: Option<Container>,
    /// The innermost systemd unit below any pod or container boundary (`nginx.service`,
    /// `session-3.scope`, a unit of a container that runs systemd).
    pub unit: Option<String>,
    pub session: Option<Session>,
    /// The outermost container (its workload name) or user slice below which this pod or
    /// container was named: an identity claimed by what controls that cgroup, unconfirmed.
    pub claimed_inside: Option<String>,
    /// Kind and name of the workload, when the path names one (else it is the process).
    workload: Option<(Kind, String)>,
}

impl CgroupIdentity {
    /// Kind and name the path gives, None when only the process can name the workload.
    pub fn named(&self) -> Option<(Kind, &str)> {
        self.workload.as_ref().map(|(k, n)| (*k, n.as_str()))
    }

    /// The known attributes, in a fixed order.
    pub fn attributes(&self) -> impl Iterator<Item = (Attr, &str)> {
        let c = self.container.as_ref();
        let p = self.pod.as_ref();
        [
            c.map(|c| (CONTAINER_ID, c.id.as_str())),
            c.and_then(|c| c.runtime)
                .map(|r| (CONTAINER_RUNTIME, r.as_str())),
            p.map(|p| (POD_UID, p.uid.as_str())),
            p.map(|p| (QOS_CLASS, p.qos.as_str())),
            self.unit.as_deref().map(|u| (SYSTEMD_UNIT, u)),
            self.session
                .as_ref()
                .map(|s| (USER_SESSION, s.name.as_str())),
            self.claimed_inside.as_deref().map(|c| (CLAIMED_INSIDE, c)),
        ]
        .into_iter()
        .flatten()
    }
}

/// What one path component is.
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    /// `kubepods` (cgroupfs) or `kubepods.slice` / `kubelet-kubepods.slice` (systemd).
    KubeRoot,
    Qos(QosClass),
    Pod(Pod),
    Container(Container),
    /// conmon, the monitor CRI-O and Podman run next to a container: not the container. Its
    /// scope (if systemd made one) is its unit.
    Monitor(Option<&'a str>),
    /// `user-<uid>.slice`.
    UserSlice(u32),
    /// `session-<id>.scope`: the session's name and scope.
    Session(&'a str, &'a str),
    Unit(&'a str),
    /// `docker`, the parent of Docker's cgroupfs container cgroups.
    DockerRoot,
    Other,
}

/// Parses a cgroup v2 path (relative to the mount, as in /proc/PID/cgroup). Total: any string
/// gives an identity, at worst an empty one. Linear in the path's length.
pub fn parse(path: &str) -> CgroupIdentity {
    let mut id = CgroupIdentity::default();
    let mut user_uid: Option<u32> = None;
    // The cgroupfs driver's components mean something only right after their parent.
    let mut prev = Part::Other;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        // kind/k3s with a cgroupfs containerd under a systemd kubelet: one component
        // `<pod slice>:<prefix>:<id>`.
        if let Some((slice, container)) = colon_form(comp) {
            note_claim(&mut id, user_uid);
            id.pod = match systemd_slice(slice) {
                Part::Pod(pod) => Some(pod),
                _ => None,
            };
            id.container = Some(container);
            id.unit = None;
            id.session = None;
            user_uid = None;
            prev = Part::Other;
            continue;
        }
        let part = classify(comp, &prev);
        if matches!(
            part,
            Part::KubeRoot | Part::Qos(_) | Part::Pod(_) | Part::Container(_)
        ) {
            note_claim(&mut id, user_uid);
        }
        match &part {
            Part::KubeRoot | Part::Qos(_) => {
                id.pod = None;
                id.container = None;
                id.unit = None;
                id.session = None;
                user_uid = None;
            }
            Part::Pod(pod) => {
                id.pod = Some(pod.clone());
                id.container = None;
                id.unit = None;
                id.session = None;
                user_uid = None;
            }
            Part::Container(c) => {
                id.container = Some(c.clone());
                id.unit = None;
                id.session = None;
                user_uid = None;
            }
            Part::Monitor(scope) => {
                id.container = None;
                id.unit = scope.map(str::to_string);
                id.session = None;
                user_uid = None;
            }
            Part::UserSlice(uid) => user_uid = Some(*uid),
            Part::Session(name, scope) => {
                id.unit = Some((*scope).to_string());
                id.session = Some(Session {
                    name: (*name).to_string(),
                    uid: user_uid,
                });
            }
            Part::Unit(unit) => {
                id.unit = Some((*unit).to_string());
                id.session = None;
            }
            Part::DockerRoot | Part::Other => {}
        }
        prev = part;
    }
    // A claim qualifies the pod or container named; with none named there is nothing to claim.
    if id.pod.is_none() && id.container.is_none() {
        id.claimed_inside = None;
    }
    id.workload = workload_name(&id);
    id
}

/// A pod or container boundary met below a container, or below a user's slice: the first such
/// outer workload is what claims every identity found further down.
fn note_claim(id: &mut CgroupIdentity, user_uid: Option<u32>) {
    if id.claimed_inside.is_some() {
        return;
    }
    if id.container.is_some() {
        id.claimed_inside = workload_name(id).map(|(_, name)| name);
    } else if let Some(uid) = user_uid {
        id.claimed_inside = Some(format!("user-{uid}.slice"));
    }
}

fn workload_name(id: &CgroupIdentity) -> Option<(Kind, String)> {
    if let Some(pod) = &id.pod {
        return Some((Kind::Pod, format!("pod/{}", pod.uid)));
    }
    if let Some(c) = &id.container {
        let runtime = c.runtime.map_or("container", Runtime::as_str);
        // Ids are validated ASCII hex, so the byte slice is a char boundary.
        return Some((Kind::Container, format!("{runtime}/{}", &c.id[..12])));
    }
    if let Some(s) = &id.session {
        let name = match s.uid {
            Some(uid) => format!("uid {uid} {}", s.name),
            None => s.name.clone(),
        };
        return Some((Kind::SystemdUnit, name));
    }
    id.unit.clone().map(|u| (Kind::SystemdUnit, u))
}

fn classify<'a>(comp: &'a str, prev: &Part<'_>) -> Part<'a> {
    if let Some(part) = runtime_scope(comp) {
        return part;
    }
    if let Some(stem) = comp.strip_suffix(".slice") {
        if let Some(uid) = stem.strip_prefix("user-").and_then(|u| u.parse().ok()) {
            return Part::UserSlice(uid);
        }
        return systemd_slice(comp);
    }
    if let Some(stem) = comp.strip_suffix(".scope")
        && let Some(session) = stem.strip_prefix("session-")
        && !session.is_empty()
        && session.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Part::Session(stem, comp);
    }
    if is_unit(comp) {
        return Part::Unit(comp);
    }
    // The cgroupfs driver: kubepods/[burstable|besteffort/]pod<uid>/<id>, docker/<id>.
    match comp {
        "kubepods" => return Part::KubeRoot,
        "docker" => return Part::DockerRoot,
        _ => {}
    }
    let pod = |qos| {
        comp.strip_prefix("pod")
            .and_then(pod_uid)
            .map_or(Part::Other, |uid| Part::Pod(Pod { uid, qos }))
    };
    let container = |runtime| {
        if is_container_id(comp) {
            Part::Container(Container {
                id: comp.to_string(),
                runtime,
            })
        } else {
            Part::Other
        }
    };
    match prev {
        Part::KubeRoot => {
            QosClass::from_level(comp).map_or_else(|| pod(QosClass::Guaranteed), Part::Qos)
        }
        Part::Qos(q) => pod(*q),
        Part::Pod(_) => container(None),
        Part::DockerRoot => container(Some(Runtime::Docker)),
        _ => Part::Other,
    }
}

/// `<prefix>-<id>[.scope]` components of the runtimes (systemd driver with `.scope`; CRI-O and
/// Podman name their cgroupfs cgroups the same way without it).
fn runtime_scope(comp: &str) -> Option<Part<'_>> {
    let scope = comp.ends_with(".scope").then_some(comp);
    let stem = comp.strip_suffix(".scope").unwrap_or(comp);
    // Longest prefixes first: `crio-conmon-` before `crio-`.
    const PREFIXES: &[(&str, Option<Runtime>)] = &[
        ("cri-containerd-", Some(Runtime::Containerd)),
        ("crio-conmon-", None),
        ("crio-", Some(Runtime::CriO)),
        ("docker-", Some(Runtime::Docker)),
        ("libpod-conmon-", None),
        ("libpod-", Some(Runtime::Podman)),
        // nerdctl's containers (containerd without Kubernetes).
        ("nerdctl-", Some(Runtime::Containerd)),
    ];
    let (rest, runtime) = PREFIXES
        .iter()
        .find_map(|(p, r)| stem.strip_prefix(p).map(|rest| (rest, *r)))?;
    if !is_container_id(rest) {
        return None;
    }
    Some(match runtime {
        Some(runtime) => Part::Container(Container {
            id: rest.to_string(),
            runtime: Some(runtime),
        }),
        None => Part::Monitor(scope),
    })
}

/// A systemd slice of the kubelet: `[<parent>-]kubepods[-<qos>][-pod<uid_>].slice`, where
/// `-` separates the levels of the slice hierarchy.
fn systemd_slice(comp: &str) -> Part<'static> {
    let Some(stem) = comp.strip_suffix(".slice") else {
        return Part::Other;
    };
    let mut tokens = stem.split('-');
    if !tokens.any(|t| t == "kubepods") {
        return Part::Other;
    }
    let rest: Vec<&str> = tokens.take(3).collect();
    let pod = |qos, token: &str| {
        token
            .strip_prefix("pod")
            .and_then(pod_uid)
            .map_or(Part::Other, |uid| Part::Pod(Pod { uid, qos }))
    };
    match rest.as_slice() {
        [] => Part::KubeRoot,
        [level] => match QosClass::from_level(level) {
            Some(q) => Part::Qos(q),
            None => pod(QosClass::Guaranteed, level),
        },
        [level, token] => match QosClass::from_level(level) {
            Some(q) => pod(q, token),
            None => Part::Other,
        },
        _ => Part::Other,
    }
}

/// `<pod slice>:<prefix>:<64 hex>`, runc's systemd cgroup path form left as a directory name.
fn colon_form(comp: &str) -> Option<(&str, Container)> {
    let mut it = comp.splitn(3, ':');
    let (slice, prefix, cid) = (it.next()?, it.next()?, it.next()?);
    if !slice.ends_with(".slice") || !is_container_id(cid) {
        return None;
    }
    let runtime = match prefix {
        "cri-containerd" | "nerdctl" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::CriO),
        "docker" => Some(Runtime::Docker),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    };
    Some((
        slice,
        Container {
            id: cid.to_string(),
            runtime,
        },
    ))
}

/// A pod uid as the kubelet writes it (a UUID, or 32 hex for static pods), with dashes.
fn pod_uid(s: &str) -> Option<String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
        && s.bytes().any(|b| b.is_ascii_hexdigit());
    ok.then(|| s.replace('_', "-"))
}

/// Container ids are 64 lowercase hex digits (Docker, containerd, CRI-O and Podman alike).
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A systemd unit that can hold processes: services, scopes, and the helpers of mounts,
/// swaps and sockets (`mount.cifs` reads its credentials file in the `.mount` unit).
fn is_unit(comp: &str) -> bool {
    [".service", ".scope", ".mount", ".swap", ".socket"]
        .iter()
        .any(|suffix| comp.strip_suffix(suffix).is_some_and(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests;
