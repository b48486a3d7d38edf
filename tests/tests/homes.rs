//! Credentials in homes wherever they are: service users (`/var/lib/jenkins`), CI jobs with a
//! per-job `HOME`, users of a container's own /etc/passwd. Files that name themselves
//! (`.aws/credentials`, `.pgpass`, `.netrc` ...) are seen under any directory; the broad
//! patterns (`~/.azure/**`, `~/.config/gcloud/**/*.json`) below every home the agent learns.

use std::path::Path;

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Workload, assert_no_leak, random, retry_until, run_in_cgroup,
    servers::TlsServer,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The read of `path` by processes of `cgroup` (every agent on the node sees every process, the
/// other tests' agents reading these files to classify them included).
fn access<'a>(events: &'a [Value], cgroup: &CgroupGuard, path: &Path) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["event.name"] == "keytrail.credential.access"
            && e["file.path"] == path.to_str().unwrap()
            && e["keytrail.file.open.access"] == "read"
            && e["keytrail.cgroup.path"] == cgroup.rel_path()
    })
}

fn all_text(events: &[Value]) -> String {
    events.iter().map(Value::to_string).collect()
}

#[test]
fn credential_files_in_service_user_homes_are_classified() {
    let mut agent = Agent::start(None);
    let root = tempfile::Builder::new()
        .prefix("kt-homes-")
        .tempdir()
        .unwrap();
    let r = root.path();
    let key_id = format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    let secrets: Vec<String> = (0..4).map(|_| random(ALNUM, 32)).collect();
    let vault = format!("hvs.{}", random(ALNUM, 40));
    let files = [
        (
            r.join("jenkins/.aws/credentials"),
            format!(
                "[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {}\n",
                secrets[0]
            ),
            "aws_access_key",
        ),
        (
            r.join("postgresql/.pgpass"),
            format!("db.example.test:5432:app:svc:{}\n", secrets[1]),
            "pgpass",
        ),
        (
            r.join("opt-app/.git-credentials"),
            format!("https://deploy:{}@git.example.test\n", secrets[2]),
            "git_credentials",
        ),
        (
            r.join("srv-vault/.vault-token"),
            vault.clone(),
            "vault_token",
        ),
        (
            r.join("ci/job-3/.netrc"),
            format!(
                "machine api.example.test login ci password {}\n",
                secrets[3]
            ),
            "netrc",
        ),
    ];
    for (path, text, _) in &files {
        write(path, text);
    }
    let cgroup = CgroupGuard::new("svc-homes");
    for (path, _, _) in &files {
        let (_, out) = run_in_cgroup(&cgroup, "/bin/cat", &[path.to_str().unwrap()], &[]);
        assert!(out.status.success());
    }
    let last = &files[files.len() - 1].0;
    agent.wait_for("the last read", |e| {
        e["file.path"] == last.to_str().unwrap() && e["keytrail.credential.kind"] == "netrc"
    });
    let run = agent.stop();
    for (path, _, kind) in &files {
        let e = access(&run.events, &cgroup, path)
            .unwrap_or_else(|| panic!("{} not reported", path.display()));
        assert_eq!(e["keytrail.credential.kind"], *kind, "{e}");
        assert_eq!(
            e["keytrail.credential.lifetime"],
            if *kind == "vault_token" {
                "unknown"
            } else {
                "static"
            },
            "{e}"
        );
        assert_eq!(e["keytrail.cgroup.path"], cgroup.rel_path(), "{e}");
    }
    let all = all_text(&run.events);
    for s in secrets.iter().chain([&vault]) {
        assert_no_leak("JSON lines", &all, s);
        assert_no_leak("agent log", &run.stderr, s);
    }
}

#[test]
fn curl_with_the_netrc_of_a_job_home_sends_that_credential() {
    let mut agent = Agent::start(None);
    let server = TlsServer::start("127.0.0.1");
    let root = tempfile::Builder::new()
        .prefix("kt-homes-")
        .tempdir()
        .unwrap();
    let home = root.path().join("ci-job-7");
    let password = random(ALNUM, 32);
    let netrc = home.join(".netrc");
    write(
        &netrc,
        &format!("machine api.example.test login deploy password {password}\n"),
    );
    let cgroup = CgroupGuard::new("netrc-job");
    let url = format!("https://api.example.test:{}/", server.port);
    let resolve = format!("api.example.test:{}:127.0.0.1", server.port);
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "curl",
        &[
            "-sk",
            "--netrc",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            &url,
        ],
        &[("HOME", home.to_str().unwrap()), ("PATH", "/usr/bin:/bin")],
    );
    assert!(out.status.success(), "curl: {out:?}");

    let file = agent.wait_for("the netrc read", |e| {
        e["process.pid"] == pid && e["file.path"] == netrc.to_str().unwrap()
    });
    assert_eq!(file["keytrail.credential.kind"], "netrc", "{file}");
    let fp = file["keytrail.credential.fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let wire_use = agent.wait_for("the use with the netrc credential", |e| {
        e["event.name"] == "keytrail.credential.use"
            && e["process.pid"] == pid
            && e["keytrail.credential.fingerprint"] == fp.as_str()
            && e["keytrail.evidence"] == "wire"
    });
    assert_eq!(wire_use["server.address"], "api.example.test", "{wire_use}");
    let run = agent.stop();
    assert_no_leak("JSON lines", &all_text(&run.events), &password);
    assert_no_leak("agent log", &run.stderr, &password);
}

/// Runs `cat PATH` (with `env`) in `cgroup` until the agent reports the read: the kernel
/// entries of a home learned at an exec join the filter a moment after it.
fn read_until_reported(
    agent: &Agent,
    cgroup: &CgroupGuard,
    path: &Path,
    env: &[(&str, &str)],
) -> Value {
    retry_until(&format!("a reported read of {}", path.display()), || {
        let (_, out) = run_in_cgroup(cgroup, "/bin/cat", &[path.to_str().unwrap()], env);
        assert!(out.status.success());
        agent.events().into_iter().find(|e| {
            e["file.path"] == path.to_str().unwrap()
                && e["keytrail.file.open.access"] == "read"
                && e["keytrail.cgroup.path"] == cgroup.rel_path()
        })
    })
}

#[test]
fn broad_patterns_apply_below_homes_named_by_home_and_by_passwd() {
    let mut agent = Agent::start(None);
    let root = tempfile::Builder::new()
        .prefix("kt-homes-")
        .tempdir()
        .unwrap();
    let r = root.path();
    let job_home = r.join("ci-job-9");
    let env = [("HOME", job_home.to_str().unwrap())];
    let direct = job_home.join(".azure/accessTokens.json");
    let deep = job_home.join(".config/gcloud/legacy_credentials/ci@example.test/adc.json");
    let not_home = r.join("elsewhere/.config/gcloud/legacy_credentials/ci@example.test/adc.json");
    for p in [&direct, &deep, &not_home] {
        write(p, "{}");
    }
    let cgroup = CgroupGuard::new("home-var");
    // A file directly in `.azure/` passes the kernel at once; the home makes it a match.
    let (pid, out) = run_in_cgroup(&cgroup, "/bin/cat", &[direct.to_str().unwrap()], &env);
    assert!(out.status.success());
    agent.wait_for("the .azure read below HOME", |e| {
        e["process.pid"] == pid && e["file.path"] == direct.to_str().unwrap()
    });
    // Deeper files need the home's own kernel entries.
    read_until_reported(&agent, &cgroup, &deep, &env);
    // The same tail below a directory that is no home is not watched.
    let sentinel = r.join("sentinel/.pgpass");
    write(&sentinel, "x");
    for p in [&not_home, &sentinel] {
        let (_, out) = run_in_cgroup(&cgroup, "/bin/cat", &[p.to_str().unwrap()], &env);
        assert!(out.status.success());
    }
    agent.wait_for("the sentinel", |e| {
        e["file.path"] == sentinel.to_str().unwrap()
    });

    // A service user of a container's own /etc/passwd.
    let svc_home = r.join("svc-home");
    let passwd = r.join("passwd");
    write(
        &passwd,
        &format!(
            "root:x:0:0:root:/root:/bin/sh\nsvc:x:990:990::{}:/bin/sh\n",
            svc_home.display()
        ),
    );
    let svc_file = svc_home.join(".azure/cliextensions/token.json");
    write(&svc_file, "{}");
    let container = CgroupGuard::new("passwd-home");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &container);
    w.run("unshare-mount");
    w.run(&format!("bind {} /etc/passwd", passwd.display()));
    // The namespace's first exec: the agent reads its passwd.
    w.run("spawn /bin/true");
    let reported = retry_until("a reported read in the passwd home", || {
        w.run(&format!("spawn /bin/cat {}", svc_file.display()));
        agent.events().into_iter().find(|e| {
            e["file.path"] == svc_file.to_str().unwrap()
                && e["keytrail.cgroup.path"] == container.rel_path()
        })
    });
    assert_eq!(
        reported["keytrail.cgroup.path"],
        container.rel_path(),
        "{reported}"
    );

    let run = agent.stop();
    assert!(
        access(&run.events, &cgroup, &not_home).is_none(),
        "a non-home was matched"
    );
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        stats["keytrail.homes.known"].as_u64().unwrap() >= 3,
        "{stats}"
    );
}
