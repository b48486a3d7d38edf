//! The pods of this node as the agent needs them: pod uid -> names, owner, service account,
//! containers (by runtime id) and their volume mounts. Built from `k8s-openapi` objects by the
//! watcher task, read synchronously by the pipeline task for every record.
//!
//! Shared as `RwLock<State>` of `Arc<PodInfo>` rather than an arc-swap of the whole map: writes
//! (one pod event) replace one entry in O(1) instead of copying every pod of the node, no extra
//! dependency is needed, and readers hold the lock only for one hash lookup and an `Arc` clone,
//! never across an await or while writing attributes, so the pipeline is not held up by the
//! watcher in practice.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, RwLock},
};

use k8s_openapi::api::core::v1::{Container, Pod, Volume, VolumeMount};

use crate::{
    record::{Record, Value},
    workload::CgroupIdentity,
};

/// Attribute keys set by the enrichment.
pub mod keys {
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const NAMESPACE: &str = "k8s.namespace.name";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const SERVICE_ACCOUNT: &str = "keytrail.k8s.service_account";
    pub const OWNER: &str = "keytrail.owner";
    pub const REPLICASET: &str = "k8s.replicaset.name";
    pub const DEPLOYMENT: &str = "k8s.deployment.name";
    pub const STATEFULSET: &str = "k8s.statefulset.name";
    pub const DAEMONSET: &str = "k8s.daemonset.name";
    pub const JOB: &str = "k8s.job.name";
    pub const CRONJOB: &str = "k8s.cronjob.name";
    pub const VOLUME_NAME: &str = "keytrail.k8s.volume.name";
    pub const VOLUME_SOURCE: &str = "keytrail.k8s.volume.source";
    pub const SECRET_NAME: &str = "keytrail.k8s.secret.name";
    pub const CONFIGMAP_NAME: &str = "keytrail.k8s.configmap.name";
    pub const WORKLOAD_KIND: &str = "keytrail.workload.kind";
    pub const WORKLOAD_NAME: &str = "keytrail.workload.name";
}

/// One owner reference: `kind` as the API has it (`ReplicaSet`, `Job`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
}

/// The attribute key an owner kind is reported under; None for kinds outside the contract
/// (custom controllers, bare `Node` for static pods).
pub fn owner_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ReplicaSet" => keys::REPLICASET,
        "Deployment" => keys::DEPLOYMENT,
        "StatefulSet" => keys::STATEFULSET,
        "DaemonSet" => keys::DAEMONSET,
        "Job" => keys::JOB,
        "CronJob" => keys::CRONJOB,
        _ => return None,
    })
}

/// Whether the owner of an object of `kind` is worth a lookup: a ReplicaSet's Deployment, a
/// Job's CronJob. StatefulSets and DaemonSets own their pods directly.
pub fn has_parent(kind: &str) -> bool {
    matches!(kind, "ReplicaSet" | "Job")
}

/// The owner attributes of a pod: its controller, and that controller's own controller when
/// known (`parent`, from a lookup). Without a lookup, a ReplicaSet made by a Deployment is
/// still recognised by the `pod-template-hash` the Deployment appends to its name and labels
/// its pods with.
pub fn owner_attrs(
    direct: &OwnerRef,
    parent: Option<&OwnerRef>,
    pod_template_hash: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(k) = owner_key(&direct.kind) {
        out.push((k, direct.name.clone()));
    }
    let parent = parent.cloned().or_else(|| {
        let hash = pod_template_hash.filter(|h| !h.is_empty())?;
        let base = direct.name.strip_suffix(hash)?.strip_suffix('-')?;
        (direct.kind == "ReplicaSet" && !base.is_empty()).then(|| OwnerRef {
            kind: "Deployment".into(),
            name: base.to_string(),
        })
    });
    if let Some(p) = parent
        && has_parent(&direct.kind)
        && let Some(k) = owner_key(&p.kind)
    {
        out.push((k, p.name));
    }
    out
}

/// The controller among `refs` (the one with `controller: true`, else the first).
pub fn controller_of(
    refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> Option<OwnerRef> {
    let refs = refs?;
    let r = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())?;
    (!r.kind.is_empty() && !r.name.is_empty()).then(|| OwnerRef {
        kind: r.kind.clone(),
        name: r.name.clone(),
    })
}

/// A runtime container id without its scheme: `containerd://<id>`, `cri-o://<id>`,
/// `docker://<id>` -> `<id>`. None for an empty id (a container not started yet).
pub fn strip_container_id(raw: &str) -> Option<&str> {
    let id = raw.split_once("://").map_or(raw, |(_, id)| id).trim();
    (!id.is_empty()).then_some(id)
}

/// One source of a projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    /// A bound service account token at `path`.
    ServiceAccountToken { path: String },
    /// `items`: the file paths it projects, None for all keys of the object.
    Secret {
        name: String,
        items: Option<Vec<String>>,
    },
    ConfigMap {
        name: String,
        items: Option<Vec<String>>,
    },
    /// Downward API, cluster trust bundles, and sources not known here: their file paths.
    Other { paths: Vec<String> },
}

/// Where a volume's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    Secret {
        name: String,
    },
    ConfigMap {
        name: String,
    },
    Projected {
        sources: Vec<Projection>,
    },
    /// Any other volume type, by its `keytrail.k8s.volume.source` value (`empty_dir`, ...).
    Other(&'static str),
}

impl VolumeSource {
    fn of(v: &Volume) -> Self {
        if let Some(s) = &v.secret {
            return VolumeSource::Secret {
                name: s.secret_name.clone().unwrap_or_default(),
            };
        }
        if let Some(c) = &v.config_map {
            return VolumeSource::ConfigMap {
                name: c.name.clone(),
            };
        }
        if let Some(p) = &v.projected {
            let sources = p
                .sources
                .iter()
                .flatten()
                .map(|s| {
                    let paths = |items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>| {
                        items.map(|i| i.iter().map(|k| k.path.clone()).collect())
                    };
                    if let Some(t) = &s.service_account_token {
                        Projection::ServiceAccountToken {
                            path: t.path.clone(),
                        }
                    } else if let Some(sec) = &s.secret {
                        Projection::Secret {
                            name: sec.name.clone(),
                            items: paths(sec.items.as_ref()),
                        }
                    } else if let Some(cm) = &s.config_map {
                        Projection::ConfigMap {
                            name: cm.name.clone(),
                            items: paths(cm.items.as_ref()),
                        }
                    } else if let Some(d) = &s.downward_api {
                        Projection::Other {
                            paths: d.items.iter().flatten().map(|i| i.path.clone()).collect(),
                        }
                    } else if let Some(b) = &s.cluster_trust_bundle {
                        Projection::Other {
                            paths: vec![b.path.clone()],
                        }
                    } else {
                        Projection::Other { paths: Vec::new() }
                    }
                })
                .collect();
            return VolumeSource::Projected { sources };
        }
        VolumeSource::Other(if v.empty_dir.is_some() {
            "empty_dir"
        } else if v.host_path.is_some() {
            "host_path"
        } else if v.persistent_volume_claim.is_some() {
            "persistent_volume_claim"
        } else if v.downward_api.is_some() {
            "downward_api"
        } else if v.csi.is_some() {
            "csi"
        } else if v.ephemeral.is_some() {
            "ephemeral"
        } else if v.image.is_some() {
            "image"
        } else {
            "other"
        })
    }
}

/// What a path inside a container is, when a volume mount contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMatch {
    pub volume: String,
    /// `keytrail.k8s.volume.source`: `secret`, `configmap`, `projected`,
    /// `projected_service_account_token`, or another volume type.
    pub source: &'static str,
    pub secret: Option<String>,
    pub configmap: Option<String>,
}

impl VolumeMatch {
    fn set_on(&self, r: &mut Record) {
        r.set(keys::VOLUME_NAME, self.volume.clone())
            .set(keys::VOLUME_SOURCE, self.source)
            .set_opt(keys::SECRET_NAME, self.secret.clone())
            .set_opt(keys::CONFIGMAP_NAME, self.configmap.clone());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Normalised: no trailing `/`, `/var/run` written `/run`.
    path: String,
    volume: String,
    /// A subPath mount shows one key (or subdirectory) of the volume at `path`.
    sub_path: Option<String>,
}

/// What the agent knows about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: Option<String>,
    /// `keytrail.owner`, from the configured labels, then annotations.
    pub owner: Option<String>,
    /// The pod's controller (before any lookup of its own owner).
    pub controller: Option<OwnerRef>,
    /// `pod-template-hash` label, for Deployment names without a ReplicaSet lookup.
    pub pod_template_hash: Option<String>,
    /// Owner attributes (`k8s.replicaset.name`, `k8s.deployment.name`, ...), in that order.
    pub owners: Vec<(&'static str, String)>,
    /// Runtime container id (no scheme) -> container name.
    pub container_ids: HashMap<String, String>,
    /// Container name -> its mounts, longest path first.
    mounts: HashMap<String, Vec<Mount>>,
    volumes: HashMap<String, VolumeSource>,
}

/// Which labels and annotations name a pod's owning team.
#[derive(Debug, Clone, Default)]
pub struct OwnerKeys {
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
}

impl OwnerKeys {
    fn owner_of(
        &self,
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Option<String> {
        let first = |keys: &[String], map: Option<&BTreeMap<String, String>>| {
            let map = map?;
            keys.iter()
                .filter_map(|k| map.get(k))
                .find(|v| !v.trim().is_empty())
                .cloned()
        };
        first(&self.labels, labels).or_else(|| first(&self.annotations, annotations))
    }
}

/// `/var/run/x` and `/run/x` are the same place in nearly every image (`/var/run -> /run`).
fn normalise_dir(p: &str) -> String {
    let p = p.trim_end_matches('/');
    match p.strip_prefix("/var/run") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("/run{rest}"),
        _ => p.to_string(),
    }
}

impl PodInfo {
    /// None for a pod without uid, name or namespace (nothing to report it by).
    pub fn from_pod(pod: &Pod, owner_keys: &OwnerKeys) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|s| !s.is_empty())?;
        let name = meta.name.clone().filter(|s| !s.is_empty())?;
        let namespace = meta.namespace.clone().filter(|s| !s.is_empty())?;
        let spec = pod.spec.as_ref();
        #[allow(deprecated)] // `serviceAccount` is the old spelling, still sent by some servers.
        let service_account = spec
            .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
            .filter(|s| !s.is_empty());
        let mut container_ids = HashMap::new();
        if let Some(status) = &pod.status {
            for s in [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ]
            .into_iter()
            .flatten()
            .flatten()
            {
                if let Some(id) = s.container_id.as_deref().and_then(strip_container_id) {
                    container_ids.insert(id.to_string(), s.name.clone());
                }
            }
        }
        let mut mounts = HashMap::new();
        let mut volumes = HashMap::new();
        if let Some(spec) = spec {
            let mut add = |name: &str, vm: Option<&Vec<VolumeMount>>| {
                let mut list: Vec<Mount> = vm
                    .into_iter()
                    .flatten()
                    .filter(|m| m.mount_path.starts_with('/'))
                    .map(|m| Mount {
                        path: normalise_dir(&m.mount_path),
                        volume: m.name.clone(),
                        sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
                    })
                    .collect();
                list.sort_by_key(|m| std::cmp::Reverse(m.path.len()));
                mounts.insert(name.to_string(), list);
            };
            let containers: Vec<&Container> = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .collect();
            for c in containers {
                add(&c.name, c.volume_mounts.as_ref());
            }
            for c in spec.ephemeral_containers.iter().flatten() {
                add(&c.name, c.volume_mounts.as_ref());
            }
            for v in spec.volumes.iter().flatten() {
                volumes.insert(v.name.clone(), VolumeSource::of(v));
            }
        }
        let controller = controller_of(meta.owner_references.as_ref());
        let pod_template_hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned();
        let owners = controller
            .as_ref()
            .map(|c| owner_attrs(c, None, pod_template_hash.as_deref()))
            .unwrap_or_default();
        Some(PodInfo {
            uid,
            name,
            namespace,
            service_account,
            owner: owner_keys.owner_of(meta.labels.as_ref(), meta.annotations.as_ref()),
            controller,
            pod_template_hash,
            owners,
            container_ids,
            mounts,
            volumes,
        })
    }

    /// Sets the owner attributes from the controller and its looked-up owner.
    pub fn resolve_owner(&mut self, parent: Option<&OwnerRef>) {
        if let Some(c) = &self.controller {
            self.owners = owner_attrs(c, parent, self.pod_template_hash.as_deref());
        }
    }

    /// The mount points of the Secret and projected volumes of every container (as written in
    /// the spec, `/var/run` spelled both ways): files there are credentials whatever the
    /// watch globs say.
    pub fn secret_mount_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.mounts.values().flatten() {
            if matches!(
                self.volumes.get(&m.volume),
                Some(VolumeSource::Secret { .. } | VolumeSource::Projected { .. })
            ) {
                if let Some(rest) = m.path.strip_prefix("/run/") {
                    out.push(format!("/var/run/{rest}"));
                }
                out.push(m.path.clone());
            }
        }
        out
    }

    /// The volume of container `container_id` that holds `path` (absolute, as the container
    /// sees it): the mount with the longest mountPath containing it.
    pub fn volume_of(&self, container_id: &str, path: &str) -> Option<VolumeMatch> {
        let container = self.container_ids.get(container_id)?;
        let path = normalise_dir(path);
        let (mount, rest) = self.mounts.get(container)?.iter().find_map(|m| {
            let rest = path.strip_prefix(m.path.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, rest))
        })?;
        let source = self.volumes.get(&mount.volume);
        let mut key = volume_key(rest);
        if let Some(sub) = &mount.sub_path {
            key = if key.is_empty() {
                sub.trim_matches('/').to_string()
            } else {
                format!("{}/{key}", sub.trim_matches('/'))
            };
        }
        Some(match_volume(&mount.volume, source, &key))
    }
}

/// The key (file path within the volume) of a path below a mount point. The kubelet writes
/// atomic-writer volumes (secret, configMap, projected, downwardAPI) as `<mount>/..<timestamp>/`
/// with `..data -> ..<timestamp>` and `<key> -> ..data/<key>`: every form names the same key.
fn volume_key(rest: &str) -> String {
    let mut parts = rest.split('/').filter(|p| !p.is_empty()).peekable();
    if parts.peek().is_some_and(|p| p.starts_with("..")) {
        parts.next();
    }
    parts.collect::<Vec<_>>().join("/")
}

fn match_volume(volume: &str, source: Option<&VolumeSource>, key: &str) -> VolumeMatch {
    let mut m = VolumeMatch {
        volume: volume.to_string(),
        source: "other",
        secret: None,
        configmap: None,
    };
    match source {
        None => {}
        Some(VolumeSource::Secret { name }) => {
            m.source = "secret";
            m.secret = Some(name.clone()).filter(|n| !n.is_empty());
        }
        Some(VolumeSource::ConfigMap { name }) => {
            m.source = "configmap";
            m.configmap = Some(name.clone()).filter(|n| !n.is_empty());
        }
        Some(VolumeSource::Other(kind)) => m.source = kind,
        Some(VolumeSource::Projected { sources }) => {
            m.source = "projected";
            let listed = |items: &Option<Vec<String>>| {
                items
                    .as_ref()
                    .is_some_and(|i| i.iter().any(|p| p.trim_matches('/') == key))
            };
            let exact = sources.iter().find(|s| match s {
                Projection::ServiceAccountToken { path } => path.trim_matches('/') == key,
                Projection::Secret { items, .. } | Projection::ConfigMap { items, .. } => {
                    listed(items)
                }
                Projection::Other { paths } => paths.iter().any(|p| p.trim_matches('/') == key),
            });
            // A secret or configMap projected whole holds keys not known here: it is the
            // source only when it is the only such one.
            let whole: Vec<&Projection> = sources
                .iter()
                .filter(|s| {
                    matches!(
                        s,
                        Projection::Secret { items: None, .. }
                            | Projection::ConfigMap { items: None, .. }
                    )
                })
                .collect();
            let found = exact.or(match whole.as_slice() {
                [one] if !key.is_empty() => Some(*one),
                _ => None,
            });
            match found {
                Some(Projection::ServiceAccountToken { .. }) => {
                    m.source = "projected_service_account_token"
                }
                Some(Projection::Secret { name, .. }) => {
                    m.secret = Some(name.clone()).filter(|n| !n.is_empty())
                }
                Some(Projection::ConfigMap { name, .. }) => {
                    m.configmap = Some(name.clone()).filter(|n| !n.is_empty())
                }
                _ => {}
            }
        }
    }
    m
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Arc<PodInfo>>,
    /// Container id -> pod uid, for cgroup paths that name the container only.
    by_container: HashMap<String, String>,
}

/// The node's pods, shared between the watcher (writer) and the pipeline (reader).
#[derive(Debug, Default)]
pub struct K8sIndex {
    state: RwLock<State>,
    /// Bumped at every change, so readers can tell when to recompute what they derive.
    generation: std::sync::atomic::AtomicU64,
}

impl K8sIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The change counter (see [`K8sIndex::secret_mount_paths`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every Secret and projected volume mount point of the node's pods.
    pub fn secret_mount_paths(&self) -> BTreeSet<String> {
        self.read()
            .pods
            .values()
            .flat_map(|p| p.secret_mount_paths())
            .collect()
    }

    /// Adds or replaces a pod.
    pub fn upsert(&self, pod: PodInfo) {
        self.changed();
        let pod = Arc::new(pod);
        let mut s = self.write();
        if let Some(old) = s.pods.insert(pod.uid.clone(), Arc::clone(&pod)) {
            for id in old.container_ids.keys() {
                s.by_container.remove(id);
            }
        }
        for id in pod.container_ids.keys() {
            s.by_container.insert(id.clone(), pod.uid.clone());
        }
    }

    pub fn remove(&self, uid: &str) {
        self.changed();
        let mut s = self.write();
        if let Some(old) = s.pods.remove(uid) {
            for id in old.container_ids.keys() {
                if s.by_container.get(id).is_some_and(|u| u == uid) {
                    s.by_container.remove(id);
                }
            }
        }
    }

    /// Drops every pod whose uid is not in `keep` (after a full relist).
    pub fn retain(&self, keep: &HashSet<String>) {
        let gone: Vec<String> = self
            .read()
            .pods
            .keys()
            .filter(|u| !keep.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            self.remove(&uid);
        }
    }

    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pod a cgroup identity belongs to: by pod uid, else by container id.
    pub fn pod_of(&self, identity: &CgroupIdentity) -> Option<Arc<PodInfo>> {
        let s = self.read();
        if let Some(p) = identity.pod.as_ref().and_then(|p| s.pods.get(&p.uid)) {
            return Some(Arc::clone(p));
        }
        let uid = s.by_container.get(&identity.container.as_ref()?.id)?;
        s.pods.get(uid).cloned()
    }

    /// The volume of a pod's container that holds `path`.
    pub fn volume_of(&self, pod_uid: &str, container_id: &str, path: &str) -> Option<VolumeMatch> {
        let pod = self.read().pods.get(pod_uid).cloned()?;
        pod.volume_of(container_id, path)
    }

    /// Adds the Kubernetes attributes of the pod `identity` names to `r`, and for a record
    /// with a `file.path`, those of the volume that holds it. Names the workload
    /// `pod` `<namespace>/<pod name>`. Leaves `r` as it is for pods not (yet) known.
    pub fn enrich(&self, identity: &CgroupIdentity, r: &mut Record) {
        let Some(pod) = self.pod_of(identity) else {
            return;
        };
        replace(r, keys::WORKLOAD_KIND, "pod");
        replace(
            r,
            keys::WORKLOAD_NAME,
            format!("{}/{}", pod.namespace, pod.name),
        );
        let container_id = identity.container.as_ref().map(|c| c.id.as_str());
        r.set(keys::POD_NAME, pod.name.clone())
            .set(keys::NAMESPACE, pod.namespace.clone())
            .set_opt(
                keys::CONTAINER_NAME,
                container_id.and_then(|id| pod.container_ids.get(id).cloned()),
            )
            .set_opt(keys::SERVICE_ACCOUNT, pod.service_account.clone());
        if identity.pod.is_none() {
            r.set(crate::workload::identity::POD_UID.key, pod.uid.clone());
        }
        for (k, v) in &pod.owners {
            r.set(*k, v.clone());
        }
        r.set_opt(keys::OWNER, pod.owner.clone());
        let path = match r.get("file.path") {
            Some(Value::Str(p)) if p.starts_with('/') => Some(p.clone()),
            _ => None,
        };
        if let (Some(path), Some(id)) = (path, container_id)
            && let Some(m) = pod.volume_of(id, &path)
        {
            m.set_on(r);
        }
    }
}

/// Sets `key` in place when present (keeping its position), else adds it.
fn replace(r: &mut Record, key: &'static str, value: impl Into<Value>) {
    let value = value.into();
    match r.attrs.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => {
            r.set(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::identity_of;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SIDECAR: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const UID: &str = "6f1d3c2a-9b8e-4f7a-a1b2-c3d4e5f60718";

    fn pod_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "payments-api-7c9d8f6b5-x2x7q", "namespace": "shop", "uid": UID,
                "labels": {"app": "payments-api", "pod-template-hash": "7c9d8f6b5",
                           "app.kubernetes.io/owner": "team-label-2", "team": "payments"},
                "annotations": {"owner": "annotated"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "payments-api-7c9d8f6b5", "uid": "1", "controller": true,
                    "blockOwnerDeletion": true}]
            },
            "spec": {
                "serviceAccountName": "payments",
                "nodeName": "node-1",
                "containers": [
                    {"name": "api", "image": "x", "volumeMounts": [
                        {"name": "db-creds", "mountPath": "/var/run/secrets/app/", "readOnly": true},
                        {"name": "kube-api-access-abcde",
                         "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                        {"name": "settings", "mountPath": "/etc/app"},
                        {"name": "settings", "mountPath": "/etc/app.yaml", "subPath": "app.yaml"},
                        {"name": "bundle", "mountPath": "/etc/bundle"},
                        {"name": "scratch", "mountPath": "/tmp"}
                    ]},
                    {"name": "sidecar", "image": "y"}
                ],
                "volumes": [
                    {"name": "db-creds", "secret": {"secretName": "payments-db", "defaultMode": 420}},
                    {"name": "settings", "configMap": {"name": "payments-settings"}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "bundle", "projected": {"sources": [
                        {"secret": {"name": "tls-a", "items": [{"key": "tls.crt", "path": "a.crt"}]}},
                        {"secret": {"name": "tls-b"}}
                    ]}},
                    {"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt",
                                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                    ]}}
                ]
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "api", "containerID": format!("containerd://{ID}"), "ready": true,
                     "restartCount": 0, "image": "x", "imageID": "x"},
                    {"name": "sidecar", "containerID": format!("cri-o://{SIDECAR}"), "ready": true,
                     "restartCount": 0, "image": "y", "imageID": "y"}
                ]
            }
        })
    }

    fn keys_() -> OwnerKeys {
        OwnerKeys {
            labels: vec!["team".into(), "app.kubernetes.io/owner".into()],
            annotations: vec!["owner".into()],
        }
    }

    fn info() -> PodInfo {
        let pod: Pod = serde_json::from_value(pod_json()).unwrap();
        PodInfo::from_pod(&pod, &keys_()).unwrap()
    }

    #[test]
    fn container_id_schemes_are_stripped() {
        assert_eq!(strip_container_id(&format!("containerd://{ID}")), Some(ID));
        assert_eq!(strip_container_id(&format!("cri-o://{ID}")), Some(ID));
        assert_eq!(strip_container_id(&format!("docker://{ID}")), Some(ID));
        assert_eq!(strip_container_id(ID), Some(ID));
        assert_eq!(strip_container_id("containerd://"), None);
        assert_eq!(strip_container_id(""), None);
        let p = info();
        assert_eq!(p.container_ids.get(ID).map(String::as_str), Some("api"));
        assert_eq!(
            p.container_ids.get(SIDECAR).map(String::as_str),
            Some("sidecar")
        );
    }

    #[test]
    fn pod_fields_and_owner_label_order() {
        let p = info();
        assert_eq!(p.name, "payments-api-7c9d8f6b5-x2x7q");
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.service_account.as_deref(), Some("payments"));
        // `team` is listed first.
        assert_eq!(p.owner.as_deref(), Some("payments"));
        let only_annotation = OwnerKeys {
            labels: vec!["absent".into()],
            annotations: vec!["owner".into()],
        };
        let pod: Pod = serde_json::from_value(pod_json()).unwrap();
        let p2 = PodInfo::from_pod(&pod, &only_annotation).unwrap();
        assert_eq!(p2.owner.as_deref(), Some("annotated"));
        let p3 = PodInfo::from_pod(&pod, &OwnerKeys::default()).unwrap();
        assert_eq!(p3.owner, None);
    }

    #[test]
    fn owner_resolution() {
        let rs = OwnerRef {
            kind: "ReplicaSet".into(),
            name: "web-5d4f8b7c9".into(),
        };
        let deploy = OwnerRef {
            kind: "Deployment".into(),
            name: "web".into(),
        };
        // From the lookup.
        assert_eq!(
            owner_attrs(&rs, Some(&deploy), None),
            vec![
                (keys::REPLICASET, "web-5d4f8b7c9".to_string()),
                (keys::DEPLOYMENT, "web".to_string())
            ]
        );
        // From the pod-template-hash when the lookup failed.
        assert_eq!(
            owner_attrs(&rs, None, Some("5d4f8b7c9")),
            owner_attrs(&rs, Some(&deploy), None)
        );
        // A bare ReplicaSet.
        assert_eq!(
            owner_attrs(&rs, None, Some("other")),
            vec![(keys::REPLICASET, "web-5d4f8b7c9".to_string())]
        );
        let job = OwnerRef {
            kind: "Job".into(),
            name: "backup-29000000".into(),
        };
        let cron = OwnerRef {
            kind: "CronJob".into(),
            name: "backup".into(),
        };
        assert_eq!(
            owner_attrs(&job, Some(&cron), None),
            vec![
                (keys::JOB, "backup-29000000".to_string()),
                (keys::CRONJOB, "backup".to_string())
            ]
        );
        for (kind, key) in [
            ("StatefulSet", keys::STATEFULSET),
            ("DaemonSet", keys::DAEMONSET),
        ] {
            let o = OwnerRef {
                kind: kind.into(),
                name: "db".into(),
            };
            // Never a parent for these, even if one were passed.
            assert_eq!(
                owner_attrs(&o, Some(&deploy), None),
                vec![(key, "db".to_string())]
            );
        }
        let custom = OwnerRef {
            kind: "Rollout".into(),
            name: "x".into(),
        };
        assert!(owner_attrs(&custom, None, None).is_empty());
        // The pod's own controller: the ReplicaSet with its hash gives the Deployment.
        let p = info();
        assert_eq!(
            p.owners,
            vec![
                (keys::REPLICASET, "payments-api-7c9d8f6b5".to_string()),
                (keys::DEPLOYMENT, "payments-api".to_string())
            ]
        );
    }

    #[test]
    fn volume_paths_through_the_atomic_writer_layout() {
        let p = info();
        let secret = |path: &str| p.volume_of(ID, path);
        for path in [
            "/var/run/secrets/app/token",
            "/var/run/secrets/app/..data/token",
            "/var/run/secrets/app/..2026_05_01_10_00_00.123456789/token",
            "/run/secrets/app/token",
            "/var/run/secrets/app",
        ] {
            let m = secret(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(m.volume, "db-creds", "{path}");
            assert_eq!(m.source, "secret", "{path}");
            assert_eq!(m.secret.as_deref(), Some("payments-db"), "{path}");
        }
        // Not below the mount at a component boundary.
        assert_eq!(secret("/var/run/secrets/application/token"), None);
        assert_eq!(secret("/home/user/.aws/credentials"), None);
        // Longest mount wins over a shorter one.
        let cm = p.volume_of(ID, "/etc/app/..data/config.yaml").unwrap();
        assert_eq!(
            (cm.source, cm.configmap.as_deref()),
            ("configmap", Some("payments-settings"))
        );
        let sub = p.volume_of(ID, "/etc/app.yaml").unwrap();
        assert_eq!(sub.volume, "settings");
        let tmp = p.volume_of(ID, "/tmp/x.pem").unwrap();
        assert_eq!((tmp.source, tmp.secret), ("empty_dir", None));
        // The sidecar mounts nothing; unknown containers have no mounts.
        assert_eq!(p.volume_of(SIDECAR, "/var/run/secrets/app/token"), None);
        assert_eq!(p.volume_of("nope", "/var/run/secrets/app/token"), None);
    }

    #[test]
    fn projected_volumes_by_key() {
        let p = info();
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
        for path in [
            format!("{sa}/token"),
            format!("{sa}/..data/token"),
            format!("{sa}/..2026_01_02_03_04_05.000000001/token"),
        ] {
            let m = p.volume_of(ID, &path).unwrap();
            assert_eq!(m.volume, "kube-api-access-abcde");
            assert_eq!(m.source, "projected_service_account_token", "{path}");
        }
        let ca = p.volume_of(ID, &format!("{sa}/ca.crt")).unwrap();
        assert_eq!(
            (ca.source, ca.configmap.as_deref()),
            ("projected", Some("kube-root-ca.crt"))
        );
        let ns = p.volume_of(ID, &format!("{sa}/namespace")).unwrap();
        assert_eq!(
            (ns.source, ns.secret, ns.configmap),
            ("projected", None, None)
        );
        // Listed item, then the only whole secret for any other key.
        let a = p.volume_of(ID, "/etc/bundle/a.crt").unwrap();
        assert_eq!(a.secret.as_deref(), Some("tls-a"));
        let b = p.volume_of(ID, "/etc/bundle/..data/tls.key").unwrap();
        assert_eq!(b.secret.as_deref(), Some("tls-b"));
    }

    #[test]
    fn enrich_names_the_pod_and_its_volume() {
        let index = K8sIndex::new();
        index.upsert(info());
        let uid_ = UID.replace('-', "_");
        let identity = identity_of(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/\
             cri-containerd-{ID}.scope"
        ));
        let mut r = Record::new("keytrail.credential.access", std::time::SystemTime::now());
        r.set("file.path", "/var/run/secrets/app/token")
            .set(keys::WORKLOAD_KIND, "pod")
            .set(keys::WORKLOAD_NAME, format!("pod/{UID}"));
        index.enrich(&identity, &mut r);
        let get = |k: &str| match r.get(k) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        assert_eq!(
            get(keys::WORKLOAD_NAME).as_deref(),
            Some("shop/payments-api-7c9d8f6b5-x2x7q")
        );
        assert_eq!(
            r.attrs
                .iter()
                .filter(|(k, _)| k == keys::WORKLOAD_NAME)
                .count(),
            1
        );
        assert_eq!(get(keys::CONTAINER_NAME).as_deref(), Some("api"));
        assert_eq!(get(keys::SERVICE_ACCOUNT).as_deref(), Some("payments"));
        assert_eq!(get(keys::DEPLOYMENT).as_deref(), Some("payments-api"));
        assert_eq!(get(keys::OWNER).as_deref(), Some("payments"));
        assert_eq!(get(keys::SECRET_NAME).as_deref(), Some("payments-db"));
        assert_eq!(get(keys::VOLUME_NAME).as_deref(), Some("db-creds"));

        // By container id alone (cgroupfs layouts the path parser does not tie to a pod).
        let only_container = identity_of(&format!("/somewhere/cri-containerd-{SIDECAR}.scope"));
        let mut r2 = Record::new("keytrail.credential.access", std::time::SystemTime::now());
        index.enrich(&only_container, &mut r2);
        assert!(matches!(r2.get("k8s.pod.uid"), Some(Value::Str(u)) if u == UID));
        assert!(matches!(r2.get(keys::CONTAINER_NAME), Some(Value::Str(c)) if c == "sidecar"));

        // Unknown pods are left alone; removal forgets containers too.
        index.remove(UID);
        let mut r3 = Record::new("keytrail.credential.access", std::time::SystemTime::now());
        index.enrich(&identity, &mut r3);
        assert!(r3.attrs.is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn odd_api_data_does_not_panic() {
        for v in [
            serde_json::json!({"metadata": {}}),
            serde_json::json!({"metadata": {"uid": "u", "name": "n"}}),
            serde_json::json!({"metadata": {"uid": "u", "name": "n", "namespace": "ns",
                "ownerReferences": [{"apiVersion": "v1", "kind": "", "name": "", "uid": ""}]},
                "spec": {"containers": [{"name": "c", "volumeMounts": [
                    {"name": "missing", "mountPath": "relative"},
                    {"name": "missing", "mountPath": "/"}]}]},
                "status": {"containerStatuses": [{"name": "c", "containerID": "", "ready": false,
                    "restartCount": 0, "image": "", "imageID": ""}]}}),
        ] {
            let pod: Pod = serde_json::from_value(v).unwrap();
            if let Some(p) = PodInfo::from_pod(&pod, &keys_()) {
                assert!(p.owners.is_empty());
                assert!(p.container_ids.is_empty());
                assert_eq!(p.volume_of("", "/x"), None);
            }
        }
        assert_eq!(volume_key("/..data"), "");
        assert_eq!(volume_key(""), "");
        assert_eq!(normalise_dir("/var/runner"), "/var/runner");
        assert_eq!(normalise_dir("/var/run"), "/run");
    }
}
