//! Secrets in environment variables: captured in the kernel at exec (even for a process that
//! exits at once), read with getenv (C and node, host libc and a private libc copy in a mount
//! namespace), and files named by variables (KUBECONFIG) watched for their workload. Never a
//! value in any output.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Workload, accesses_in, assert_no_leak, random, run_in_cgroup,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");
/// The getenv probe is off by default (its cost is per call, node-wide).
const GETENV_ON: &str = "env:\n  getenv_probe: true\n";

/// A C program that answers each stdin line NAME with `ok set` or `ok unset` from getenv(NAME).
const GETENV_READER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "exit") == 0) break;
        printf("ok %s\n", getenv(line) ? "set" : "unset");
    }
    return 0;
}
"#;

/// Compiles the getenv reader into `dir`.
fn build_getenv_reader(dir: &Path) -> PathBuf {
    let src = dir.join("getenv-reader.c");
    let exe = dir.join("getenv-reader");
    std::fs::write(&src, GETENV_READER).unwrap();
    let status = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed");
    exe
}

fn aws_pair() -> (String, String) {
    (
        format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        random(ALNUM, 40),
    )
}

/// The plain variables every process has.
const PLAIN: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "xterm"),
];

fn with_plain<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    PLAIN.iter().copied().chain(extra.iter().copied()).collect()
}

fn source_of<'a>(events: &'a [Value], cgroup: &CgroupGuard, source: &str) -> Vec<&'a Value> {
    accesses_in(events, cgroup)
        .into_iter()
        .filter(|e| e["keytrail.credential.source"] == source)
        .collect()
}

#[test]
fn exec_environment_of_a_process_that_exits_at_once() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("env-exec");
    let (key_id, secret) = aws_pair();
    let ghs = format!("ghs_{}", random(ALNUM, 36));
    let db_password = random(ALNUM, 24);
    let db_url = format!("postgres://app:{db_password}@db.internal:5432/shop");

    // First a process with only plain variables, then one with secrets, in the same cgroup.
    let (plain_pid, _) = run_in_cgroup(&cgroup, "/bin/true", &[], PLAIN);
    let secrets = [
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("GITHUB_TOKEN", ghs.as_str()),
        ("DATABASE_URL", db_url.as_str()),
    ];
    let (pid, out) = run_in_cgroup(&cgroup, "/bin/true", &[], &with_plain(&secrets));
    assert!(out.status.success());

    agent.wait_for("the database URL from the environment", |e| {
        e["keytrail.credential.source"] == "env"
            && e["process.pid"] == pid
            && e["keytrail.credential.env_var"] == "DATABASE_URL"
    });
    let run = agent.stop();
    let env = source_of(&run.events, &cgroup, "env");
    assert!(
        env.iter().all(|e| e["process.pid"] == pid),
        "the plain process {plain_pid} was reported: {env:#?}"
    );
    let by_var = |name: &str| -> Vec<&&Value> {
        env.iter()
            .filter(|e| e["keytrail.credential.env_var"] == name)
            .collect()
    };
    // One event per credential: the AWS pair is one credential, named by its secret.
    assert_eq!(env.len(), 3, "{env:#?}");
    let aws = by_var("AWS_SECRET_ACCESS_KEY");
    assert_eq!(aws.len(), 1, "{env:#?}");
    assert_eq!(aws[0]["keytrail.credential.kind"], "aws_access_key");
    assert_eq!(aws[0]["keytrail.credential.lifetime"], "static");
    assert_eq!(aws[0]["keytrail.credential.id"], key_id.as_str());
    assert_eq!(aws[0]["severity"], "WARN");
    let exe = aws[0]["process.executable.path"].as_str().unwrap_or("");
    assert!(exe.ends_with("/true"), "{exe}");
    let gh = by_var("GITHUB_TOKEN");
    assert_eq!(gh.len(), 1, "{env:#?}");
    assert_eq!(gh[0]["keytrail.credential.kind"], "github_token");
    assert_eq!(gh[0]["keytrail.credential.lifetime"], "short_lived");
    let db = by_var("DATABASE_URL");
    assert_eq!(db.len(), 1, "{env:#?}");
    assert_eq!(db[0]["keytrail.credential.kind"], "database_url");
    assert_eq!(db[0]["keytrail.credential.lifetime"], "static");
    for e in &env {
        let fp = e["keytrail.credential.fingerprint"].as_str().unwrap();
        assert!(fp.starts_with("kt1:") && fp.len() == 36, "{fp}");
    }
    for name in ["PATH", "HOME", "LANG", "TERM", "AWS_ACCESS_KEY_ID"] {
        assert!(by_var(name).is_empty(), "{name} reported: {env:#?}");
    }

    let jsonl = agent_jsonl(&run);
    for (what, text) in [("JSON lines", jsonl.as_str()), ("agent log", &run.stderr)] {
        for s in [&secret, &ghs, &db_password] {
            assert_no_leak(what, text, s);
        }
    }
}

/// A variable whose name is longer than the kernel scans, and one whose value is longer than
/// it captures, are both reported: the long name by the secret-like words of its start (the
/// agent finds the rest), the long value classified by what was captured and marked
/// `keytrail.credential.value_truncated`. Neither value appears in any output.
#[test]
fn long_names_and_long_values_are_reported() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("env-long");
    let long_name = "DEPLOYMENT_PIPELINE_TOKEN_FOR_THE_PAYMENTS_SERVICE_IN_THE_EU_WEST_1_REGION";
    assert!(long_name.len() > 64);
    let ghp = format!("ghp_{}", random(ALNUM, 36));
    let long_value = random(ALNUM, 6000);
    let secrets = [
        (long_name, ghp.as_str()),
        ("SERVICE_API_TOKEN", long_value.as_str()),
    ];
    let (pid, out) = run_in_cgroup(&cgroup, "/bin/true", &[], &with_plain(&secrets));
    assert!(out.status.success());
    let e = agent.wait_for("the variable with a long name", |e| {
        e["keytrail.credential.source"] == "env"
            && e["process.pid"] == pid
            && e["keytrail.credential.env_var"] == long_name
    });
    assert_eq!(e["keytrail.credential.kind"], "github_token", "{e}");
    assert!(
        e.get("keytrail.credential.value_truncated").is_none(),
        "{e}"
    );
    let e = agent.wait_for("the variable with a long value", |e| {
        e["keytrail.credential.source"] == "env"
            && e["process.pid"] == pid
            && e["keytrail.credential.env_var"] == "SERVICE_API_TOKEN"
    });
    assert_eq!(e["keytrail.credential.value_truncated"], true, "{e}");
    assert!(
        e["keytrail.credential.fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("kt1:")),
        "{e}"
    );
    let run = agent.stop();
    let jsonl = agent_jsonl(&run);
    for (what, text) in [("JSON lines", jsonl.as_str()), ("agent log", &run.stderr)] {
        assert_no_leak(what, text, &ghp);
        assert_no_leak(what, text, &long_value);
    }
}

/// Everything the agent wrote to its JSON lines, as text.
fn agent_jsonl(run: &keytrail_tests::AgentRun) -> String {
    run.events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn getenv_from_c_and_node_is_reported_once_per_process_and_name() {
    let mut agent = Agent::start(Some(GETENV_ON));
    let cgroup = CgroupGuard::new("env-getenv");
    let dir = tempfile::tempdir().unwrap();
    let reader = build_getenv_reader(dir.path());
    let token = random(ALNUM, 32);

    let mut cmd = Command::new(&reader);
    cmd.env_clear().envs(with_plain(&[
        ("API_TOKEN", token.as_str()),
        ("PWD", "/srv/app"),
        ("APP_TOKEN_TTL", "3600"),
    ]));
    let mut c = Workload::start(cmd, &cgroup);
    assert_eq!(c.run("LANG"), "set");
    // Secret-like by their words, but no secret: the working directory, a number.
    assert_eq!(c.run("PWD"), "set");
    assert_eq!(c.run("APP_TOKEN_TTL"), "set");
    assert_eq!(c.run("API_TOKEN"), "set");
    assert_eq!(c.run("API_TOKEN"), "set");
    assert_eq!(c.run("MISSING_PASSWORD"), "unset");
    let c_pid = c.pid();
    agent.wait_for("getenv(API_TOKEN) from C", |e| {
        e["keytrail.credential.source"] == "getenv"
            && e["process.pid"] == c_pid
            && e["keytrail.credential.env_var"] == "API_TOKEN"
    });

    let ghs = format!("ghs_{}", random(ALNUM, 36));
    let (node_pid, out) = run_in_cgroup(
        &cgroup,
        "node",
        &["-e", "if (!process.env.GITHUB_TOKEN) process.exit(3)"],
        &with_plain(&[("GITHUB_TOKEN", ghs.as_str())]),
    );
    assert!(out.status.success(), "node: {out:?}");
    let node = agent.wait_for("process.env.GITHUB_TOKEN from node", |e| {
        e["keytrail.credential.source"] == "getenv"
            && e["process.pid"] == node_pid
            && e["keytrail.credential.env_var"] == "GITHUB_TOKEN"
    });
    assert_eq!(node["keytrail.credential.kind"], "github_token");
    assert_eq!(node["keytrail.credential.lifetime"], "short_lived");
    drop(c);

    let run = agent.stop();
    let getenv = source_of(&run.events, &cgroup, "getenv");
    let of = |pid: u32, name: &str| {
        getenv
            .iter()
            .filter(|e| e["process.pid"] == pid && e["keytrail.credential.env_var"] == name)
            .count()
    };
    assert_eq!(of(c_pid, "API_TOKEN"), 1, "{getenv:#?}");
    for plain in ["LANG", "PWD", "APP_TOKEN_TTL"] {
        assert_eq!(of(c_pid, plain), 0, "{plain}: {getenv:#?}");
    }
    // A secret-like name that is not set is still worth knowing: the program looks for it.
    assert_eq!(of(c_pid, "MISSING_PASSWORD"), 1, "{getenv:#?}");
    let c_event = getenv
        .iter()
        .find(|e| e["process.pid"] == c_pid && e["keytrail.credential.env_var"] == "API_TOKEN")
        .unwrap();
    assert_eq!(c_event["keytrail.credential.kind"], "generic_secret");
    let last_stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        last_stats["keytrail.probe.getenv_repeat.seen"].as_u64() >= Some(1),
        "the second getenv(API_TOKEN) was not counted: {last_stats}"
    );
    let text = agent_jsonl(&run);
    for s in [&token, &ghs] {
        assert_no_leak("JSON lines", &text, s);
        assert_no_leak("agent log", &run.stderr, s);
    }
}

/// The libc the test itself runs on, from its own maps.
fn host_libc() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .expect("libc.so.6 in this test's maps");
    PathBuf::from(path)
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn getenv_through_a_private_libc_copy_in_a_mount_namespace() {
    let agent = Agent::start(Some(GETENV_ON));
    let cgroup = CgroupGuard::new("env-libc-copy");
    let dir = tempfile::tempdir().unwrap();
    let reader = build_getenv_reader(dir.path());
    let libc = host_libc();
    let copy = dir.path().join("libc.so.6");
    std::fs::copy(&libc, &copy).unwrap();
    let token = random(ALNUM, 32);

    // A private mount namespace where the standard libc path is the copy (another inode):
    // the uprobe on the host's libc does not see its calls.
    let script = format!(
        "mount --bind {} {} && exec {}",
        copy.display(),
        libc.display(),
        reader.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_clear()
        .envs(with_plain(&[("SERVICE_TOKEN", token.as_str())]));
    let mut w = Workload::start(cmd, &cgroup);
    assert_eq!(w.run("LANG"), "set");
    let pid = w.pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mapped_inode: u64 = maps
        .lines()
        .find(|l| l.ends_with("/libc.so.6"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|i| i.parse().ok())
        .expect("libc in the reader's maps");
    assert_eq!(
        mapped_inode,
        inode(&copy),
        "the reader does not map the copy"
    );
    assert_ne!(mapped_inode, inode(&libc));

    // The agent attaches to the copy shortly after it sees the process; ask until it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        assert_eq!(w.run("SERVICE_TOKEN"), "set");
        std::thread::sleep(Duration::from_millis(300));
        let events = agent.events();
        if let Some(e) = events.iter().find(|e| {
            e["keytrail.credential.source"] == "getenv"
                && e["process.pid"] == pid
                && e["keytrail.credential.env_var"] == "SERVICE_TOKEN"
        }) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no getenv event through the libc copy; agent log:\n{}",
            agent.log()
        );
    };
    assert_eq!(found["keytrail.cgroup.path"], cgroup.rel_path());
    assert_eq!(found["keytrail.credential.kind"], "generic_secret");
    drop(w);
    let run = agent.stop();
    assert_no_leak("JSON lines", &agent_jsonl(&run), &token);
}

#[test]
fn a_file_named_by_kubeconfig_is_watched_for_its_workload() {
    let agent = Agent::start(None);
    let cgroup = CgroupGuard::new("env-kubeconfig");
    // Not under any default watch pattern.
    let path = "/srv/deploy/cluster-admin.yaml";
    let token = random(ALNUM, 40);
    // JSON is YAML too, and has no indentation for the workload's word-splitting to lose.
    let kubeconfig = format!(
        r#"{{"apiVersion":"v1","kind":"Config","clusters":[{{"name":"c","cluster":{{"server":"https://k8s.example:6443"}}}}],"users":[{{"name":"deployer","user":{{"token":"{token}"}}}}],"contexts":[{{"name":"x","context":{{"cluster":"c","user":"deployer"}}}}],"current-context":"x"}}"#
    );
    let mut w = Workload::spawn_with_env(WORKLOAD.as_ref(), &cgroup, &[("KUBECONFIG", path)]);
    w.run("unshare-mount");
    w.run("tmpfs /srv");
    w.run(&format!("write-text {path} {kubeconfig}"));

    // The agent adds the path when it handles the exec; open until it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        w.run(&format!("open {path}"));
        std::thread::sleep(Duration::from_millis(300));
        let events = agent.events();
        if let Some(e) = events.iter().find(|e| {
            e["file.path"] == path
                && e["process.pid"] == w.pid()
                && e["keytrail.file.open.access"] == "read"
        }) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no access to the KUBECONFIG file; agent log:\n{}",
            agent.log()
        );
    };
    assert_eq!(found["keytrail.credential.source"], "file", "{found}");
    assert_eq!(found["keytrail.credential.kind"], "kubeconfig", "{found}");
    assert_eq!(
        found["keytrail.credential.id"],
        "https://k8s.example:6443 deployer"
    );

    // Another workload opening the same path is not reported: the path is watched only for
    // the workload whose environment named it.
    let other = CgroupGuard::new("env-kubeconfig-other");
    let mut o = Workload::spawn(WORKLOAD.as_ref(), &other);
    o.run("unshare-mount");
    o.run("tmpfs /srv");
    o.run(&format!("write-text {path} {kubeconfig}"));
    o.run(&format!("open {path}"));
    w.run(&format!("open {path}"));
    drop((w, o));
    let run = agent.stop();
    assert!(accesses_in(&run.events, &other).is_empty());
    assert_no_leak("JSON lines", &agent_jsonl(&run), &token);
}

/// The first `keytrail.agent.stats` record written after every event so far whose `key`
/// satisfies `pred` (stats come every second in these scenarios).
fn stats_where(agent: &mut Agent, what: &str, key: &str, pred: impl Fn(u64) -> bool) -> Value {
    let seen = agent.events().len();
    agent.wait_until(what, |a| {
        a.events().into_iter().skip(seen).find(|e| {
            e["event.name"] == "keytrail.agent.stats" && e[key].as_u64().is_some_and(&pred)
        })
    })
}

#[test]
fn paths_named_by_environments_are_exact_bounded_and_released() {
    let config = String::from_utf8(keytrail_tests::keytrail(&["config", "default"]).stdout)
        .unwrap()
        .replace("stats_interval: 60s", "stats_interval: 1s");
    let mut agent = Agent::start(Some(&config));
    let dir = tempfile::Builder::new()
        .prefix("kt-wide-")
        .tempdir()
        .unwrap();
    let short = dir.path().to_str().unwrap().to_string();

    // A directory named as the kubeconfig: as a prefix it would pass every open below it.
    let naming = CgroupGuard::new("env-short-path");
    let (namer, _) = run_in_cgroup(&naming, "/bin/true", &[], &[("KUBECONFIG", &short)]);
    // Once the path itself is reported for that workload, the kernel entry is in place.
    keytrail_tests::retry_until("the named path's kernel entry", || {
        let (pid, _) = run_in_cgroup(&naming, "/bin/cat", &[&short], &[("KUBECONFIG", &short)]);
        agent
            .events()
            .into_iter()
            .find(|e| e["process.pid"] == pid && e["file.path"] == short.as_str())
    });
    let before = stats_where(&mut agent, "stats", "keytrail.opens.not_matched", |_| true);
    let not_matched = before["keytrail.opens.not_matched"].as_u64().unwrap();
    // Another workload opening 2,000 files below that directory costs the agent nothing.
    let other = CgroupGuard::new("env-short-other");
    let mut o = Workload::spawn(WORKLOAD.as_ref(), &other);
    assert_eq!(o.run(&format!("open-many {short}/below 2000")), "2000");
    let sentinel = dir.path().join("sentinel.pem");
    std::fs::write(&sentinel, "x").unwrap();
    o.run(&format!("open {}", sentinel.display()));
    agent.wait_for("the sentinel", |e| {
        e["file.path"] == sentinel.to_str().unwrap()
    });
    let after = stats_where(
        &mut agent,
        "stats after the opens",
        "keytrail.opens.not_matched",
        |_| true,
    );
    let grew = after["keytrail.opens.not_matched"].as_u64().unwrap() - not_matched;
    assert!(
        grew < 500,
        "{grew} opens below {short} reached userspace (namer {namer})"
    );

    // One workload naming many paths gets 16; another workload still gets its own.
    let greedy = CgroupGuard::new("env-greedy");
    for i in 0..40 {
        let path = format!("/etc/kt-greedy-{i}.yaml");
        run_in_cgroup(&greedy, "/bin/true", &[], &[("KUBECONFIG", &path)]);
    }
    let fair = CgroupGuard::new("env-fair");
    let fair_path = dir.path().join("fair/kubeconfig");
    std::fs::create_dir_all(fair_path.parent().unwrap()).unwrap();
    std::fs::write(&fair_path, "apiVersion: v1\nkind: Config\n").unwrap();
    let fair_path = fair_path.to_str().unwrap().to_string();
    keytrail_tests::retry_until("the fair workload's own path", || {
        let (pid, _) = run_in_cgroup(
            &fair,
            "/bin/cat",
            &[&fair_path],
            &[("KUBECONFIG", &fair_path)],
        );
        agent
            .events()
            .into_iter()
            .find(|e| e["process.pid"] == pid && e["file.path"] == fair_path.as_str())
    });
    let full = stats_where(
        &mut agent,
        "the refusals",
        "keytrail.env_paths.refused",
        |n| n >= 24,
    );
    let watched = full["keytrail.env_paths.watched"].as_u64().unwrap();
    // The greedy workload's paths go with its cgroup.
    drop(greedy);
    stats_where(
        &mut agent,
        "the release",
        "keytrail.env_paths.watched",
        |n| n + 16 <= watched,
    );
    drop(o);
    agent.stop();
}
