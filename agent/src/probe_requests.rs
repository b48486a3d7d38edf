//! What the pipeline and the agent's timers ask of the probes, which the main task owns:
//! uprobes for newly found libraries, and the kernel filter's run-time entries (homes, paths
//! named by environments, files known to hold credentials, Secret volumes).

use std::{sync::atomic::Ordering, time::Duration};

use crate::{
    files::HomeEntries,
    inspect::Inspector,
    libc::{Library, Resolution},
    probes::Probes,
    stats::AgentCounters,
    watch,
};

/// What the pipeline asks of the probes, which the main task owns.
pub(crate) enum ProbeRequest {
    /// Attach the getenv or SSL_write uprobe to a newly found library whose symbols were read
    /// (or count and report one that could not be read).
    AttachLibrary(Resolution),
    /// Stop copying a connection's payload (its handshake was found).
    ForgetConnection(u64),
    /// Drop an exited process's getenv de-duplication keys.
    ForgetGetenv(Vec<u64>),
    /// Add and remove exact paths named by environment variables in the kernel prefilter.
    ExactPaths {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Check every open against a file found to hold credentials (inode, device), after
    /// emptying the kernel's set when `reset`.
    KnowFile { ino: u64, dev: u64, reset: bool },
    /// Watch below homes found at run time, and stop watching below those gone.
    Homes {
        add: Vec<HomeEntries>,
        remove: Vec<HomeEntries>,
    },
}

impl ProbeRequest {
    pub(crate) fn apply(self, probes: &mut Probes) {
        match self {
            ProbeRequest::AttachLibrary(lib) => attach_library(probes, lib),
            ProbeRequest::ForgetConnection(cookie) => probes.forget_connection(cookie),
            ProbeRequest::ForgetGetenv(keys) => probes.forget_getenv(&keys),
            ProbeRequest::ExactPaths { add, remove } => {
                for path in &remove {
                    if let Err(error) = probes.remove_exact(path) {
                        tracing::warn!(%error, "could not remove a path named by an environment variable from the kernel filter");
                    }
                }
                for path in &add {
                    if let Err(error) = probes.add_exact(path) {
                        tracing::warn!(%error, "could not add a path named by an environment variable to the kernel filter");
                    }
                }
            }
            ProbeRequest::Homes { add, remove } => watch_homes(probes, &add, &remove),
            ProbeRequest::KnowFile { ino, dev, reset } => {
                if let Err(error) = probes.know_file(ino, dev, reset) {
                    tracing::warn!(%error, "could not add a credential file to the kernel's known files");
                }
            }
        }
    }
}

/// Adds and removes the kernel entries of homes.
pub(crate) fn watch_homes(probes: &mut Probes, add: &[HomeEntries], remove: &[HomeEntries]) {
    for (home, entries) in remove {
        if let Err(error) = probes.remove_home(home, entries) {
            tracing::warn!(%error, "could not remove a home's entries from the kernel filter");
        }
    }
    for (home, entries) in add {
        if let Err(error) = probes.add_home(home, entries) {
            tracing::warn!(%error, "could not add a home's entries to the kernel filter");
        }
    }
}

/// Publishes the exec and exit records the kernel lost, for the pipeline to repair its process
/// table.
pub(crate) fn note_lifecycle_losses(probes: &Probes, counters: &AgentCounters) {
    let lost: u64 = probes
        .counters()
        .iter()
        .filter(|(id, _)| {
            matches!(
                id,
                keytrail_common::ProbeId::ProcExec | keytrail_common::ProbeId::ProcExit
            )
        })
        .map(|(_, c)| c.dropped)
        .sum();
    counters.lifecycle_lost.store(lost, Ordering::Relaxed);
}

/// How often the kernel filter follows the Secret volumes of the node's pods.
pub(crate) const SECRET_VOLUME_SYNC: Duration = Duration::from_secs(1);

/// The mount points of the node's Secret and projected volumes in the kernel filter: files
/// there are credentials for their pod even when no watch glob names them.
#[derive(Default)]
pub(crate) struct SecretVolumes {
    generation: Option<u64>,
    watched: std::collections::BTreeSet<String>,
}

impl SecretVolumes {
    /// Follows the pod index: new mount points in, gone ones out.
    pub(crate) fn sync(&mut self, probes: &mut Probes) {
        let Some((generation, mounts)) = crate::k8s::secret_mounts() else {
            return;
        };
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        for gone in self.watched.difference(&mounts) {
            let _ = probes.remove_dynamic_prefix(&format!("{gone}/"));
        }
        for new in mounts.difference(&self.watched) {
            if let Err(error) = probes.add_dynamic_prefix(&format!("{new}/")) {
                tracing::warn!(%error, "could not add a Secret volume to the kernel filter");
            }
        }
        self.watched = mounts;
    }
}

/// The homes every node has: /root, the directories under /home, and the host's passwd (read
/// through PID 1's root, so a containerised agent sees the host's).
pub(crate) fn host_homes(inspector: &mut Inspector) -> Vec<String> {
    let mut homes = vec!["/root".to_string()];
    homes.extend(watch::host_homes());
    if let Ok(passwd) = inspector.read_workload_file(1, 0, PASSWD, PASSWD_CAP) {
        homes.extend(crate::homes::passwd_homes(&String::from_utf8_lossy(
            &passwd,
        )));
    }
    homes
}

/// Where a workload lists its users and their homes, and how much of it is read.
pub(crate) const PASSWD: &str = "/etc/passwd";
pub(crate) const PASSWD_CAP: u64 = 256 * 1024;

fn probe_of(library: Library) -> &'static str {
    match library {
        Library::Libc => "getenv",
        Library::Libssl => "SSL_write",
    }
}

/// Attaches to a library at the offsets read from it: only kernel calls, nothing that reads
/// the workload's file.
pub(crate) fn attach_library(probes: &mut Probes, resolution: Resolution) {
    let lib = match resolution {
        Ok(lib) => lib,
        Err(skipped) => {
            probes.count_unreadable(skipped.library);
            tracing::warn!(
                library = %skipped.found_at,
                reason = %skipped.reason,
                probe = probe_of(skipped.library),
                "uprobe not attached to this library: its symbols could not be read"
            );
            return;
        }
    };
    let probe = probe_of(lib.library);
    let result = match lib.library {
        Library::Libc => probes.attach_getenv(&lib),
        Library::Libssl => probes.attach_tls_write(&lib),
    };
    match result {
        Ok(n) => tracing::info!(library = %lib.found_at, symbols = n, probe, "uprobe attached"),
        Err(error) => {
            tracing::warn!(library = %lib.found_at, %error, probe, "uprobe not attached to this library")
        }
    }
}
