//! `Classifier::classify_file` on arbitrary content.
//!
//! The first byte picks the path hint (`PATHS[b % 11]`) and the env hint
//! (`ENV_HINTS[(b / 11) % 8]`); the rest is the file's content.

#![no_main]

use keytrail_fuzz::{check_all, classifier, now};
use libfuzzer_sys::fuzz_target;

const PATHS: [&str; 11] = [
    "/home/u/.aws/credentials",
    "/home/u/.pgpass",
    "/home/u/.netrc",
    "/home/u/.git-credentials",
    "/home/u/.docker/config.json",
    "/srv/app/.env",
    "/etc/kubeconfig",
    "/etc/tls/x.pem",
    "/home/u/.ssh/id_rsa",
    "/var/run/secrets/token",
    "/tmp/unknown.bin",
];

const ENV_HINTS: [Option<&str>; 8] = [
    None,
    Some("AWS_WEB_IDENTITY_TOKEN_FILE"),
    Some("AZURE_FEDERATED_TOKEN_FILE"),
    Some("KUBECONFIG"),
    Some("PGPASSFILE"),
    Some("NETRC"),
    Some("AWS_SHARED_CREDENTIALS_FILE"),
    Some("GOOGLE_APPLICATION_CREDENTIALS"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let selector = usize::from(selector);
    let path = PATHS[selector % PATHS.len()];
    let env_hint = ENV_HINTS[(selector / PATHS.len()) % ENV_HINTS.len()];
    match classifier().classify_file(content, path, env_hint, now()) {
        Ok(creds) => check_all(&creds),
        Err(skip) => {
            let _ = skip.to_string();
        }
    }
});
