//! Faults of a real node: the agent leaves the node as it found it.

use std::process::Command;

use keytrail_tests::keytrail_bin;

/// On a node without tracefs the agent mounts it to attach its tracepoints; at SIGTERM it
/// unmounts it again. Run in a private mount namespace where tracefs (and debugfs, which
/// automounts it) are unmounted first; the namespace's mounts are read after the agent exits.
#[test]
fn tracefs_the_agent_mounted_is_unmounted_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let script = r#"
        set -u
        umount -l /sys/kernel/debug 2>/dev/null
        umount -l /sys/kernel/tracing 2>/dev/null
        if [ -d /sys/kernel/tracing/events ] || [ -d /sys/kernel/debug/tracing/events ]; then
            echo "tracefs still mounted"; exit 3
        fi
        "$1" agent --jsonl "$2" --state "$3" 2>"$4" &
        agent=$!
        # Ready: its first stats line.
        i=0
        until grep -q keytrail.agent.stats "$2" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -gt 600 ] || ! kill -0 $agent 2>/dev/null; then echo "agent not ready"; exit 4; fi
            sleep 0.1
        done
        grep -c ' - tracefs ' /proc/self/mountinfo | sed 's/^/during: /'
        kill -TERM $agent
        wait $agent
        echo "exit: $?"
        grep -c ' - tracefs ' /proc/self/mountinfo | sed 's/^/after: /'
        true
    "#;
    let log = dir.path().join("agent.log");
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(keytrail_bin())
        .arg(&events)
        .arg(dir.path().join("state.db"))
        .arg(&log)
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
    let context = format!("stdout:\n{stdout}\nagent log:\n{agent_log}");
    assert!(out.status.success(), "{:?}\n{context}", out.status);
    assert!(stdout.contains("during: 1"), "{context}");
    assert!(stdout.contains("exit: 0"), "{context}");
    assert!(stdout.contains("after: 0"), "{context}");
    assert!(
        agent_log.contains("mounted tracefs on /sys/kernel/tracing"),
        "{context}"
    );
}
