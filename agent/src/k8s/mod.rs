//! Kubernetes names for the workloads the cgroup path only identifies by uid and container id:
//! a watcher of the pods on this node (`watch`, its own tokio task) keeps an index (`index`)
//! that the pipeline reads synchronously to add pod, namespace, container, service account,
//! owner and volume attributes to every record.
//!
//! Without API access (no config, 401/403, connection refused) records keep their cgroup-only
//! names: the watcher logs one warning and retries with exponential backoff (1 s .. 5 min).
//!
//! The index is installed process-wide ([`install`]) because the records get their workload
//! attributes in `files::set_process`, which the file, environment and network stages all
//! call: a global reached from there is one line, where threading a handle would change every
//! stage. Before `install` (Kubernetes disabled, unit tests) [`enrich`] does nothing.

pub mod index;
mod watch;

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

pub use index::{K8sIndex, OwnerKeys, PodInfo, VolumeMatch, VolumeSource};
pub use watch::{spawn_watcher, start};

use crate::{record::Record, workload::CgroupIdentity};

/// `kubernetes.enabled`: `auto`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enabled {
    /// Only when running in a cluster (`KUBERNETES_SERVICE_HOST`) or given a kubeconfig
    /// (`KUBECONFIG`).
    #[default]
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for Enabled {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Enabled;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto`, `true` or `false`")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Enabled, E> {
                Ok(if v { Enabled::On } else { Enabled::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Enabled, E> {
                match v {
                    "auto" => Ok(Enabled::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The `kubernetes:` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    #[serde(default)]
    pub enabled: Enabled,
    /// The variable holding this node's name (the DaemonSet sets it from `spec.nodeName`).
    #[serde(default = "default_node_name_env")]
    pub node_name_env: String,
    /// Pod labels naming the owning team, first found wins (`keytrail.owner`).
    #[serde(default = "default_owner_labels")]
    pub owner_labels: Vec<String>,
    /// Pod annotations tried after the labels.
    #[serde(default)]
    pub owner_annotations: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: Enabled::Auto,
            node_name_env: default_node_name_env(),
            owner_labels: default_owner_labels(),
            owner_annotations: Vec::new(),
        }
    }
}

fn default_node_name_env() -> String {
    "NODE_NAME".into()
}

fn default_owner_labels() -> Vec<String> {
    ["team", "app.kubernetes.io/owner", "owner"]
        .map(String::from)
        .to_vec()
}

impl KubernetesConfig {
    /// Values that parse but make no sense: (field below `kubernetes.`, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.node_name_env.trim().is_empty() {
            return Err((
                "kubernetes.node_name_env".into(),
                "must not be empty".into(),
            ));
        }
        for (field, list) in [
            ("owner_labels", &self.owner_labels),
            ("owner_annotations", &self.owner_annotations),
        ] {
            if let Some(i) = list.iter().position(|k| k.trim().is_empty()) {
                return Err((
                    format!("kubernetes.{field}[{i}]"),
                    "must not be empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether to start the watcher, given a way to read the environment.
    pub fn wanted(&self, env: impl Fn(&str) -> Option<String>) -> bool {
        match self.enabled {
            Enabled::On => true,
            Enabled::Off => false,
            Enabled::Auto => {
                let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
                set("KUBERNETES_SERVICE_HOST") || set("KUBECONFIG")
            }
        }
    }

    pub fn owner_keys(&self) -> OwnerKeys {
        OwnerKeys {
            labels: self.owner_labels.clone(),
            annotations: self.owner_annotations.clone(),
        }
    }
}

static INDEX: OnceLock<Arc<K8sIndex>> = OnceLock::new();

/// Makes `index` the one [`enrich`] uses. Later calls are ignored (one agent per process).
pub fn install(index: Arc<K8sIndex>) {
    let _ = INDEX.set(index);
}

/// The Secret and projected volume mount points of the node's pods, with the index's change
/// counter; None without an index.
pub fn secret_mounts() -> Option<(u64, std::collections::BTreeSet<String>)> {
    INDEX
        .get()
        .map(|index| (index.generation(), index.secret_mount_paths()))
}

/// True when `path` lies in a Secret or projected volume of the container `identity` names:
/// such files are credentials whatever the watch globs say.
pub fn in_secret_volume(identity: Option<&CgroupIdentity>, path: &str) -> bool {
    let (Some(index), Some(identity)) = (INDEX.get(), identity) else {
        return false;
    };
    let (Some(pod), Some(container)) = (index.pod_of(identity), identity.container.as_ref()) else {
        return false;
    };
    pod.volume_of(&container.id, path)
        .is_some_and(|v| v.source == "secret" || v.source.starts_with("projected"))
}

/// Adds the Kubernetes attributes of `identity`'s pod to `r` (and of the volume holding its
/// `file.path`), when the index is installed and knows the pod. A no-op otherwise.
pub fn enrich(r: &mut Record, identity: Option<&CgroupIdentity>) {
    if let (Some(index), Some(identity)) = (INDEX.get(), identity) {
        index.enrich(identity, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<KubernetesConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn enabled_values() {
        assert_eq!(parse("enabled: auto").unwrap().enabled, Enabled::Auto);
        assert_eq!(parse("enabled: true").unwrap().enabled, Enabled::On);
        assert_eq!(parse("enabled: false").unwrap().enabled, Enabled::Off);
        assert!(parse("enabled: maybe").is_err());
        assert!(parse("enabeld: true").is_err());
        let c = parse("{}").unwrap();
        assert_eq!(c.node_name_env, "NODE_NAME");
        assert_eq!(c.owner_labels[0], "team");
    }

    #[test]
    fn auto_needs_a_cluster_or_a_kubeconfig() {
        let c = KubernetesConfig::default();
        assert!(!c.wanted(|_| None));
        assert!(c.wanted(|k| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.0.0.1".into())));
        assert!(c.wanted(|k| (k == "KUBECONFIG").then(|| "/k".into())));
        assert!(!c.wanted(|k| (k == "KUBECONFIG").then(String::new)));
        let off = parse("enabled: false").unwrap();
        assert!(!off.wanted(|_| Some("x".into())));
        let on = parse("enabled: true").unwrap();
        assert!(on.wanted(|_| None));
    }

    #[test]
    fn validation_names_the_field() {
        let c = parse("owner_labels: [team, '']").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "kubernetes.owner_labels[1]");
        let c = parse("node_name_env: ''").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "kubernetes.node_name_env");
        assert!(KubernetesConfig::default().validate().is_ok());
    }

    #[test]
    fn enrich_without_an_index_does_nothing() {
        let mut r = Record::new("x", std::time::SystemTime::now());
        let id = crate::workload::identity_of("/kubepods/podabc/0123");
        enrich(&mut r, Some(&id));
        assert!(r.attrs.is_empty());
    }
}
