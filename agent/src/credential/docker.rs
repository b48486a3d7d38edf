//! Docker client configs (`~/.docker/config.json`, `.dockerconfigjson` secrets, legacy
//! `.dockercfg`): one credential per registry with an inline secret (`auth` = base64
//! user:password, `identitytoken`, `registrytoken`; a user name that is itself a token is that
//! token, see `userinfo`). `credsStore` / `credHelpers` keep secrets elsewhere, so such a file
//! gives no credential.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{Credential, Ctx, Kind, Lifetime, MAX_CREDENTIALS, b64, userinfo};

/// Whether a JSON object is a Docker config: `auths`, `credsStore`, `credHelpers`, or the
/// legacy form (registry -> {auth, ...} at top level).
pub(super) fn looks_like(obj: &Map<String, Value>, path: &str) -> bool {
    let legacy = path.ends_with(".dockercfg")
        || (!obj.is_empty()
            && obj
                .values()
                .all(|v| v.as_object().is_some_and(|e| e.contains_key("auth"))));
    legacy
        || ["auths", "credsStore", "credHelpers"]
            .iter()
            .any(|k| obj.contains_key(*k))
}

/// The registry host of an `auths` key (`https://index.docker.io/v1/` -> `index.docker.io`).
fn registry_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

pub(super) fn classify(cx: &Ctx<'_>, obj: &Map<String, Value>) -> Vec<Credential> {
    let entries = match obj.get("auths").and_then(Value::as_object) {
        Some(auths) => auths,
        None if obj.contains_key("credsStore") || obj.contains_key("credHelpers") => {
            return Vec::new();
        }
        None => obj,
    };
    let mut out = Vec::new();
    for (registry, entry) in entries.iter().take(MAX_CREDENTIALS) {
        let Some(entry) = entry.as_object() else {
            continue;
        };
        let s = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let (mut user, mut password): (Option<String>, Option<Vec<u8>>) = (None, None);
        if let Some(auth) = s("auth")
            && let Ok(decoded) = b64::STANDARD.decode(auth.trim())
        {
            let mut parts = decoded.splitn(2, |&b| b == b':');
            user = parts
                .next()
                .map(|u| String::from_utf8_lossy(u).into_owned());
            password = parts.next().filter(|p| !p.is_empty()).map(<[u8]>::to_vec);
        }
        if let (Some(u), Some(p)) = (s("username"), s("password"))
            && password.is_none()
        {
            user = Some(u.to_string());
            password = Some(p.as_bytes().to_vec());
        }
        // A token from `docker login` with an identity provider replaces the password.
        let secret = s("identitytoken")
            .or_else(|| s("registrytoken"))
            .map(|t| t.trim().as_bytes().to_vec())
            .or(password)
            .unwrap_or_default();
        let host = registry_host(registry);
        let creds = userinfo::credentials(
            cx,
            user.as_deref().unwrap_or(""),
            &secret,
            |secret| cx.cred(Kind::DockerAuth, Lifetime::Static, secret),
            |user| {
                Some(match user {
                    Some(u) => format!("{host} {u}"),
                    None => host.to_string(),
                })
            },
        );
        out.extend(creds.into_iter().map(|c| c.at(format!("auths {registry}"))));
    }
    out.truncate(MAX_CREDENTIALS);
    out
}
