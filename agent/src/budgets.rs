//! Per-workload record budgets, as the kernel enforces them (one token bucket per cgroup and
//! record family, see `within_budget` in ebpf/src/probes.rs): a workload over its budget loses
//! its own records, never another's. This reads the kernel's buckets once per stats interval and
//! turns what changed into totals for `keytrail.agent.stats` and one WARN record
//! (`keytrail.workload.over_budget`) per workload and family that lost records since the last
//! look, naming the workload.

use std::{collections::HashMap, time::SystemTime};

use keytrail_common::{Budget, BudgetKey, record_family};

use crate::{
    record::{Record, Severity, names},
    workload::{CgroupPaths, Workload, identity_of},
};

/// Totals over every workload, for the stats record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BudgetTotals {
    /// Records lost to budgets, per family, ever.
    pub dropped: [u64; record_family::COUNT],
    /// Workloads that lost records since the agent started.
    pub workloads_over: u64,
}

/// What was reported last for each bucket.
#[derive(Default)]
pub struct BudgetReports {
    reported: HashMap<BudgetKey, u64>,
    /// Totals of buckets the kernel no longer keeps (evicted or their cgroup gone).
    retired: [u64; record_family::COUNT],
    totals: BudgetTotals,
}

/// Buckets remembered at most (the kernel map's size).
const MAX_REPORTED: usize = 16_384;

impl BudgetReports {
    /// Compares the kernel's buckets with what was reported: returns one WARN record per
    /// workload and family that lost records since, and updates the totals.
    pub fn update(
        &mut self,
        buckets: &[(BudgetKey, Budget)],
        cgroups: &mut CgroupPaths,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        let mut dropped = self.retired;
        let mut seen = HashMap::with_capacity(buckets.len());
        for (key, b) in buckets {
            let family = (key.family as usize).min(record_family::COUNT - 1);
            dropped[family] += b.dropped;
            seen.insert(*key, b.dropped);
            let before = self.reported.get(key).copied().unwrap_or(0);
            if b.dropped > before {
                if before == 0 {
                    self.totals.workloads_over += 1;
                }
                out.push(over_budget_record(key, b, b.dropped - before, cgroups));
            }
        }
        // Buckets gone from the kernel keep counting in the totals.
        for (key, n) in &self.reported {
            if !seen.contains_key(key) {
                let family = (key.family as usize).min(record_family::COUNT - 1);
                self.retired[family] += n;
                dropped[family] += n;
            }
        }
        if seen.len() > MAX_REPORTED {
            seen.retain(|_, n| *n > 0);
        }
        self.reported = seen;
        self.totals.dropped = dropped;
        out
    }

    pub fn totals(&self) -> BudgetTotals {
        self.totals
    }
}

/// `keytrail.workload.over_budget`: a workload lost `lost` records of one family to its
/// budget since the last report.
fn over_budget_record(key: &BudgetKey, b: &Budget, lost: u64, cgroups: &mut CgroupPaths) -> Record {
    let mut r = Record::new(names::WORKLOAD_OVER_BUDGET, SystemTime::now());
    r.severity = Severity::Warn;
    let family = record_family::NAMES
        .get(key.family as usize)
        .copied()
        .unwrap_or("unknown");
    let path = cgroups.resolve(key.cgroup_id, 0);
    let identity = path.as_deref().map(identity_of);
    let workload = Workload::of(identity.as_deref(), None, "");
    r.set("keytrail.budget.family", family)
        .set("keytrail.budget.dropped", lost)
        .set("keytrail.budget.dropped_total", b.dropped)
        .set("keytrail.budget.sent_total", b.sent)
        .set("keytrail.cgroup.id", key.cgroup_id)
        .set_opt("keytrail.cgroup.path", path)
        .set("keytrail.workload.kind", workload.kind)
        .set("keytrail.workload.name", workload.name);
    for (attr, value) in identity.iter().flat_map(|i| i.attributes()) {
        r.set(attr.key, value);
    }
    crate::k8s::enrich(&mut r, identity.as_deref());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64, family: u32) -> BudgetKey {
        BudgetKey {
            cgroup_id,
            family,
            _reserved: 0,
        }
    }

    fn bucket(sent: u64, dropped: u64) -> Budget {
        Budget {
            tokens_milli: 0,
            last_ns: 0,
            sent,
            dropped,
        }
    }

    #[test]
    fn reports_what_changed_and_keeps_totals() {
        let mut cgroups = CgroupPaths::with_mount(None);
        let mut r = BudgetReports::default();
        let quiet = (key(1, record_family::FILES), bucket(10, 0));
        let noisy = (key(2, record_family::FILES), bucket(2000, 500));
        let records = r.update(&[quiet, noisy], &mut cgroups);
        assert_eq!(records.len(), 1);
        let rec = &records[0];
        assert_eq!(rec.severity, Severity::Warn);
        assert_eq!(rec.name, names::WORKLOAD_OVER_BUDGET);
        assert_eq!(r.totals().dropped[record_family::FILES as usize], 500);
        assert_eq!(r.totals().workloads_over, 1);
        // Nothing new: nothing reported.
        assert!(r.update(&[quiet, noisy], &mut cgroups).is_empty());
        // More lost: reported again with the difference; then the bucket is evicted and its
        // count stays in the totals.
        let noisier = (key(2, record_family::FILES), bucket(2000, 800));
        assert_eq!(r.update(&[quiet, noisier], &mut cgroups).len(), 1);
        assert!(r.update(&[quiet], &mut cgroups).is_empty());
        assert_eq!(r.totals().dropped[record_family::FILES as usize], 800);
        assert_eq!(r.totals().workloads_over, 1);
    }
}
