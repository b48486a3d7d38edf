//! The agent never keeps running blind: a stage that stops before shutdown (here the pipeline,
//! made to panic by a fault switch that only debug builds have) is logged by name, and the agent
//! exits non-zero so its supervisor (the DaemonSet, systemd) restarts it.

use std::ffi::OsStr;

use keytrail_tests::{Agent, CgroupGuard, run_in_cgroup};

#[test]
fn a_pipeline_that_panics_makes_the_agent_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("kt-fault-exec");
    std::fs::copy("/bin/true", &fault).unwrap();
    let agent = Agent::start_with_env(
        None,
        &[("KEYTRAIL_TEST_PANIC_ON_EXEC", OsStr::new("kt-fault-exec"))],
        &[],
    );
    let cgroup = CgroupGuard::new("fault");
    let (_, out) = run_in_cgroup(&cgroup, fault.to_str().unwrap(), &[], &[]);
    assert!(out.status.success(), "{out:?}");
    let run = agent.wait_exit();
    assert_eq!(run.exit_code, Some(1), "agent log:\n{}", run.stderr);
    assert!(
        run.stderr.contains(
            "the pipeline stage stopped (it panicked); exiting so the agent is restarted"
        ),
        "agent log:\n{}",
        run.stderr
    );
}
