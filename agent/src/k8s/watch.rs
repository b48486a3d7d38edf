//! The watcher task: list+watch of the pods on this node (`spec.nodeName=<node>`), owner
//! lookups (a ReplicaSet's Deployment, a Job's CronJob: one GET each, cached), and the index
//! updates. Failures never stop the agent: the first one is logged as one warning, later ones
//! at debug level, and the watch is retried with exponential backoff.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client,
    runtime::watcher::{self, Event},
};

use super::{
    KubernetesConfig,
    index::{K8sIndex, OwnerKeys, OwnerRef, PodInfo, controller_of, has_parent},
};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Deleted pods stay named this long: their last processes may still be reported.
const DELETE_GRACE: Duration = Duration::from_secs(30);
/// Failed owner lookups are retried after this long.
const LOOKUP_RETRY: Duration = Duration::from_secs(60);
/// Bounds the owner cache; it starts over when full.
const MAX_LOOKUPS: usize = 4096;

/// The running watcher; dropping it stops the task.
#[derive(Debug)]
pub struct K8sWatcher {
    pub index: Arc<K8sIndex>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for K8sWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the watcher when the config asks for it (`enabled`, or `auto` in a cluster) and
/// installs its index for [`super::enrich`]. None when Kubernetes is off, or when the node
/// name is unknown (logged once). Must be called inside a tokio runtime.
pub fn start(config: &KubernetesConfig) -> Option<K8sWatcher> {
    if !config.wanted(|k| std::env::var(k).ok()) {
        tracing::debug!("Kubernetes enrichment off");
        return None;
    }
    let Some(node) = std::env::var(&config.node_name_env)
        .ok()
        .filter(|n| !n.is_empty())
    else {
        tracing::warn!(
            variable = %config.node_name_env,
            "Kubernetes enrichment off: the node name variable is not set (set it from \
             spec.nodeName in the DaemonSet); workloads are named from their cgroup only"
        );
        return None;
    };
    let watcher = spawn_watcher(node, config.owner_keys());
    super::install(Arc::clone(&watcher.index));
    Some(watcher)
}

/// Spawns the watcher of the pods on `node` into a fresh index (not installed).
pub fn spawn_watcher(node: String, owner_keys: OwnerKeys) -> K8sWatcher {
    let index = Arc::new(K8sIndex::new());
    let task = tokio::spawn(run(node, owner_keys, Arc::clone(&index)));
    K8sWatcher { index, task }
}

/// Exponential backoff between `BACKOFF_MIN` and `BACKOFF_MAX`.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_MIN)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Whether the API has failed since it last answered, so only the first failure warns.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
}

impl Health {
    fn failed(&mut self, error: &dyn std::fmt::Display, retry_in: Duration) {
        if self.failing {
            tracing::debug!(%error, ?retry_in, "Kubernetes API still unavailable");
        } else {
            self.failing = true;
            tracing::warn!(
                %error,
                "Kubernetes API unavailable: workloads are named from their cgroup only until it \
                 answers (retrying with backoff up to 5 min, further failures at debug level)"
            );
        }
    }
    fn answered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("Kubernetes API available again");
        }
    }
}

async fn run(node: String, owner_keys: OwnerKeys, index: Arc<K8sIndex>) {
    let mut health = Health::default();
    let mut backoff = Backoff::new();
    // The config does not change while the agent runs, but a token file mounted late does:
    // retry the client as well.
    let client = loop {
        match client().await {
            Ok(c) => break c,
            Err(error) => {
                let d = backoff.next();
                health.failed(&error, d);
                tokio::time::sleep(d).await;
            }
        }
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = pin!(watcher::watcher(pods, config));
    let mut owners = Owners::new(client);
    let mut relist: Option<HashSet<String>> = None;
    let mut deleted: VecDeque<(Instant, String)> = VecDeque::new();
    loop {
        let next_sweep = deleted.front().map(|(t, _)| *t + DELETE_GRACE);
        let event = tokio::select! {
            event = stream.next() => event,
            _ = sleep_until(next_sweep), if next_sweep.is_some() => {
                while let Some((t, uid)) = deleted.front() {
                    if t.elapsed() < DELETE_GRACE {
                        break;
                    }
                    index.remove(uid);
                    deleted.pop_front();
                }
                continue;
            }
        };
        let event = match event {
            None => break,
            Some(Err(error)) => {
                let d = backoff.next();
                health.failed(&error, d);
                tokio::time::sleep(d).await;
                continue;
            }
            Some(Ok(event)) => {
                // `Init` comes before the list request is even made: not an answer.
                if !matches!(event, Event::Init) {
                    health.answered();
                    backoff.reset();
                }
                event
            }
        };
        match event {
            Event::Init => relist = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                if let Some(uid) = apply(&index, &mut owners, &owner_keys, &pod).await
                    && let Some(seen) = &mut relist
                {
                    seen.insert(uid);
                }
            }
            Event::InitDone => {
                if let Some(seen) = relist.take() {
                    index.retain(&seen);
                }
                tracing::info!(pods = index.len(), %node, "Kubernetes pods of this node indexed");
            }
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid {
                    deleted.push_back((Instant::now(), uid));
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

async fn client() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Client::try_from(config)
}

/// Indexes one pod, its owner resolved. Returns its uid.
async fn apply(
    index: &K8sIndex,
    owners: &mut Owners,
    owner_keys: &OwnerKeys,
    pod: &Pod,
) -> Option<String> {
    let mut info = PodInfo::from_pod(pod, owner_keys)?;
    if let Some(c) = info.controller.clone()
        && has_parent(&c.kind)
    {
        let parent = owners.parent_of(&info.namespace, &c).await;
        info.resolve_owner(parent.as_ref());
    }
    let uid = info.uid.clone();
    index.upsert(info);
    Some(uid)
}

/// (namespace, kind, name).
type ObjectKey = (String, String, String);
/// An object's controller, and when the lookup failed (retried after `LOOKUP_RETRY`).
type Lookup = (Option<OwnerRef>, Option<Instant>);

/// The owners of ReplicaSets and Jobs, looked up once each.
struct Owners {
    client: Client,
    cache: HashMap<ObjectKey, Lookup>,
    warned: bool,
}

impl Owners {
    fn new(client: Client) -> Self {
        Self {
            client,
            cache: HashMap::new(),
            warned: false,
        }
    }

    async fn parent_of(&mut self, namespace: &str, child: &OwnerRef) -> Option<OwnerRef> {
        let key = (
            namespace.to_string(),
            child.kind.clone(),
            child.name.clone(),
        );
        if let Some((parent, failed_at)) = self.cache.get(&key)
            && failed_at.is_none_or(|t| t.elapsed() < LOOKUP_RETRY)
        {
            return parent.clone();
        }
        let result = match child.kind.as_str() {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                .get(&child.name)
                .await
                .map(|o| controller_of(o.metadata.owner_references.as_ref())),
            "Job" => Api::<Job>::namespaced(self.client.clone(), namespace)
                .get(&child.name)
                .await
                .map(|o| controller_of(o.metadata.owner_references.as_ref())),
            _ => Ok(None),
        };
        let entry = match result {
            Ok(parent) => (parent, None),
            Err(error) => {
                if std::mem::replace(&mut self.warned, true) {
                    tracing::debug!(%error, kind = %child.kind, "owner lookup failed");
                } else {
                    tracing::warn!(
                        %error, kind = %child.kind,
                        "cannot read pod owners (needs get on replicasets and jobs): Deployment \
                         names come from pod-template-hash, CronJob names are not reported"
                    );
                }
                (None, Some(Instant::now()))
            }
        };
        if self.cache.len() >= MAX_LOOKUPS {
            self.cache.clear();
        }
        self.cache.insert(key, entry.clone());
        entry.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let mut b = Backoff::new();
        let seq: Vec<u64> = (0..12).map(|_| b.next().as_secs()).collect();
        assert_eq!(
            seq,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].to_vec()
        );
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
