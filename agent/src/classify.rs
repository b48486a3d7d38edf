//! `keytrail classify FILE...`: the agent's classification, offline, for files on this host.
//! Prints one JSON line per credential (kind, id, lifetime, expiry, age, fingerprint, path and
//! where in the file), or one line saying why a file gave none. Never prints a value.

use std::{io::Write as _, time::SystemTime};

use crate::{
    agent,
    cli::ClassifyArgs,
    config::{Config, ConfigError},
    credential::Classifier,
    files::set_credential,
    inspect::{Content, classify_bytes, read_local},
    record::{Record, names},
};

/// Exit status: whether every file could be read.
pub enum Outcome {
    AllRead,
    SomeUnreadable,
}

pub fn run(args: &ClassifyArgs) -> Result<Outcome, ConfigError> {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    let classifier = match agent::classifier(&config, &args.state) {
        Ok(c) => c,
        Err(e) => {
            // An offline check should still work for a user who cannot write the state dir.
            tracing::warn!(
                error = %e,
                "using a one-off random key: these fingerprints match nothing else"
            );
            let mut key = [0u8; 32];
            let _ = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key));
            Classifier::new(&key, config.credentials.short_lived_threshold)
        }
    };
    let now = SystemTime::now();
    let mut out = std::io::stdout().lock();
    let mut outcome = Outcome::AllRead;
    for file in &args.files {
        let shown = file.display().to_string();
        let mut base = Record::new(names::CREDENTIAL_CLASSIFIED, now);
        base.set("file.path", shown.clone());
        let records = match read_local(file, config.credentials.max_file_bytes) {
            Err(e) => {
                outcome = Outcome::SomeUnreadable;
                base.set("keytrail.credential.kind", "unknown")
                    .set("keytrail.credential.unreadable", e.to_string());
                vec![base]
            }
            Ok((bytes, identity)) => {
                let age = now
                    .duration_since(identity.mtime())
                    .ok()
                    .map(|d| d.as_secs());
                match classify_bytes(&classifier, &bytes, &shown, None, now) {
                    Content::Nothing(reason) => {
                        base.set("keytrail.credential.kind", "unknown")
                            .set("keytrail.credential.unrecognised", reason);
                        vec![base]
                    }
                    Content::Credentials(creds) => creds
                        .iter()
                        .map(|c| {
                            let mut r = base.clone();
                            set_credential(&mut r, c, age);
                            r
                        })
                        .collect(),
                }
            }
        };
        for r in records {
            let _ = serde_json::to_writer(&mut out, &r);
            let _ = writeln!(out);
        }
    }
    Ok(outcome)
}
