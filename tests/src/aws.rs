//! Static AWS key pairs planted in shared credentials files, and a process that reads one and
//! sends it (SigV4) to a local TLS server.

use std::path::PathBuf;

use crate::{
    ALNUM, CgroupGuard, random, run_in_cgroup,
    servers::{SIGV4_CLIENT, TlsServer},
};

/// Key pairs in `<dir>/homeN/.aws/credentials` under one fresh directory; removed on drop.
pub struct KeyFiles {
    dir: tempfile::TempDir,
    pub keys: Vec<AwsKey>,
}

/// One planted key pair: its file, public key id and secret.
pub struct AwsKey {
    pub path: PathBuf,
    pub id: String,
    pub secret: String,
}

impl KeyFiles {
    pub fn plant(n: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kt-keys-")
            .tempdir()
            .expect("tempdir");
        let keys = (0..n)
            .map(|i| {
                let home = dir.path().join(format!("home{i}")).join(".aws");
                std::fs::create_dir_all(&home).expect("creating the key's home");
                let id = format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
                let secret = random(ALNUM, 40);
                let path = home.join("credentials");
                std::fs::write(
                    &path,
                    format!(
                        "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"
                    ),
                )
                .expect("writing the key file");
                AwsKey { path, id, secret }
            })
            .collect();
        Self { dir, keys }
    }

    /// A config watching only these files (other scenarios' agents run at the same time and
    /// must not read them: a reader is one more workload holding the key), then `rest`.
    pub fn config(&self, rest: &str) -> String {
        format!(
            "watch:\n  paths: [\"{}/**/credentials\"]\n{rest}",
            self.dir.path().display()
        )
    }
}

impl AwsKey {
    /// Runs, in `cgroup`, a python process that reads this key file and then sends a
    /// SigV4-signed request to `server` (SNI `s3.example.test`); returns its pid.
    pub fn sign_and_send(&self, cgroup: &CgroupGuard, server: &TlsServer) -> u32 {
        let (pid, out) = run_in_cgroup(
            cgroup,
            "python3",
            &[
                "-c",
                SIGV4_CLIENT,
                &server.port.to_string(),
                self.path.to_str().expect("UTF-8 path"),
            ],
            &[("PATH", "/usr/local/bin:/usr/bin:/bin")],
        );
        assert!(out.status.success(), "python: {out:?}");
        pid
    }
}
