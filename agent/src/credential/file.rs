//! File content -> format: size, emptiness and binary checks, then the format from the path
//! hint and the env var that named the file, else from the content (PEM, JSON `type`,
//! kubeconfig, JWT, AWS INI, netrc, KEY=VALUE), and a last scan for tokens of known shape.

use serde_json::Value;

use super::{
    Credential, Ctx, Kind, Lifetime, MAX_CREDENTIALS, MAX_FILE_BYTES, Skip, aws, docker, dotenv,
    gcp, jwt, kubeconfig, lines, pem, tokens,
};

/// The bytes looked at for NULs to call a file binary.
const BINARY_SNIFF: usize = 8 * 1024;

/// File formats known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Pgpass,
    Netrc,
    GitCredentials,
    Aws,
    VaultToken,
    Npmrc,
    Pypirc,
    Dotenv,
    Kubeconfig,
}

fn named_format(path: &str, env_hint: Option<&str>) -> Option<Named> {
    match env_hint {
        Some("PGPASSFILE") => return Some(Named::Pgpass),
        Some("NETRC") => return Some(Named::Netrc),
        Some("AWS_SHARED_CREDENTIALS_FILE" | "AWS_CONFIG_FILE") => return Some(Named::Aws),
        Some("KUBECONFIG") => return Some(Named::Kubeconfig),
        _ => {}
    }
    let mut parts = path.rsplit('/');
    let base = parts.next().unwrap_or(path);
    let parent = parts.next().unwrap_or("");
    Some(match base {
        ".pgpass" => Named::Pgpass,
        ".netrc" | "_netrc" => Named::Netrc,
        ".git-credentials" => Named::GitCredentials,
        "credentials" if parent == "git" => Named::GitCredentials,
        "credentials" | "config" if parent == ".aws" => Named::Aws,
        ".vault-token" => Named::VaultToken,
        ".npmrc" => Named::Npmrc,
        ".pypirc" => Named::Pypirc,
        "config" if parent == ".kube" => Named::Kubeconfig,
        b if b == ".env" || b.starts_with(".env.") || b.ends_with(".env") => Named::Dotenv,
        _ => return None,
    })
}

pub(super) fn classify(
    cx: &Ctx<'_>,
    content: &[u8],
    path: &str,
    env_hint: Option<&str>,
) -> Result<Vec<Credential>, Skip> {
    if content.len() > MAX_FILE_BYTES {
        return Err(Skip::TooLarge);
    }
    if content.iter().all(u8::is_ascii_whitespace) {
        return Err(Skip::Empty);
    }
    let has_nul = content[..content.len().min(BINARY_SNIFF)].contains(&0);
    let text = match std::str::from_utf8(content) {
        Ok(t) if !has_nul => t,
        utf8 => {
            if let Some(creds) = pem::classify_binary(cx, content, path) {
                return Ok(creds);
            }
            // PEM with stray non-UTF-8 bytes outside its blocks (Latin-1 comments, bag
            // attributes): the blocks themselves are ASCII.
            if !has_nul {
                let lossy = String::from_utf8_lossy(content);
                if lossy.contains("-----BEGIN ") {
                    return pem::classify(cx, &lossy, path);
                }
            }
            return Err(if has_nul || utf8.is_ok() {
                Skip::Binary
            } else {
                Skip::NotUtf8
            });
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut creds = classify_text(cx, text, path, env_hint)?;
    creds.truncate(MAX_CREDENTIALS);
    Ok(creds)
}

fn classify_text(
    cx: &Ctx<'_>,
    text: &str,
    path: &str,
    env_hint: Option<&str>,
) -> Result<Vec<Credential>, Skip> {
    let trimmed = text.trim();

    // Federated token files: the env var that named the file decides the kind.
    let forced = match env_hint {
        Some("AWS_WEB_IDENTITY_TOKEN_FILE") => Some(Kind::AwsWebIdentityToken),
        Some("AZURE_FEDERATED_TOKEN_FILE") => Some(Kind::AzureFederatedToken),
        _ => None,
    };
    if let Some(kind) = forced {
        if let Some(c) = jwt::classify(cx, trimmed, Some(kind)) {
            return Ok(vec![c]);
        }
        if !trimmed.contains(char::is_whitespace) {
            return Ok(vec![cx.cred(kind, Lifetime::ShortLived, trimmed)]);
        }
    }

    match named_format(path, env_hint) {
        Some(Named::Pgpass) => return Ok(lines::pgpass(cx, text)),
        Some(Named::Netrc) => return Ok(lines::netrc(cx, text)),
        Some(Named::GitCredentials) => return Ok(lines::git_credentials(cx, text)),
        Some(Named::Aws) => return aws::classify(cx, text),
        Some(Named::VaultToken) => return Ok(lines::vault_token(cx, text)),
        Some(Named::Npmrc) => return Ok(lines::npmrc(cx, text)),
        Some(Named::Pypirc) => return lines::pypirc(cx, text),
        Some(Named::Dotenv) => {
            if let Some(assignments) = dotenv::parse(text) {
                return Ok(dotenv::classify(cx, &assignments));
            }
        }
        Some(Named::Kubeconfig) if !trimmed.starts_with("-----BEGIN ") => {
            return kubeconfig::classify(cx, text);
        }
        _ => {}
    }

    // JSON first: it may carry PEM in a string (a service account key).
    if trimmed.starts_with('{') {
        return json(cx, text, path);
    }
    if text.contains("-----BEGIN ") {
        return pem::classify(cx, text, path);
    }
    if kubeconfig::looks_like(text) {
        return kubeconfig::classify(cx, text);
    }
    if !trimmed.contains(char::is_whitespace) {
        return single_value(cx, trimmed, path);
    }
    if aws::looks_like(text) {
        return aws::classify(cx, text);
    }
    if lines::looks_like_netrc(text) {
        return Ok(lines::netrc(cx, text));
    }
    if lines::looks_like_git_credentials(text) {
        return Ok(lines::git_credentials(cx, text));
    }
    if let Some(assignments) = dotenv::parse(text)
        && !assignments.is_empty()
    {
        return Ok(dotenv::classify(cx, &assignments));
    }
    scan(cx, text)
}

fn json(cx: &Ctx<'_>, text: &str, path: &str) -> Result<Vec<Credential>, Skip> {
    let obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return Err(Skip::Unrecognised),
        Err(_) => return Err(Skip::Malformed("JSON does not parse")),
    };
    if gcp::looks_like(&obj) {
        return gcp::classify(cx, &obj);
    }
    if obj.get("kind").and_then(Value::as_str) == Some("Config") && obj.contains_key("users") {
        return kubeconfig::classify(cx, text);
    }
    if docker::looks_like(&obj, path) {
        return Ok(docker::classify(cx, &obj));
    }
    if obj.contains_key("type") {
        return Err(Skip::Unrecognised);
    }
    scan(cx, text)
}

/// A file holding one value (Kubernetes and Docker secret mounts, token files): a JWT or a
/// token of known shape; else a secret only when the file's name is secret-like
/// (`db_password`, `api-key`, `token`).
fn single_value(cx: &Ctx<'_>, value: &str, path: &str) -> Result<Vec<Credential>, Skip> {
    if let Some(c) = tokens::credential(cx, value) {
        return Ok(vec![c]);
    }
    if let super::dburl::DbUrl::Credentials(creds) = super::dburl::classify(cx, value) {
        return Ok(creds);
    }
    let base = path.rsplit('/').next().unwrap_or(path);
    let as_env_name: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if cx.c.env_names.is_secret_like(&as_env_name) {
        return Ok(vec![cx.cred(Kind::GenericSecret, Lifetime::Unknown, value)]);
    }
    Err(Skip::Unrecognised)
}

/// Tokens of known shape anywhere in the text (config files of any format).
fn scan(cx: &Ctx<'_>, text: &str) -> Result<Vec<Credential>, Skip> {
    let mut out: Vec<Credential> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~')));
        for w in words {
            let w = w.trim_end_matches('.');
            if w.len() < 16 {
                continue;
            }
            if let Some(c) = tokens::credential(cx, w)
                && !out.iter().any(|o| o.fingerprint == c.fingerprint)
            {
                out.push(c.at(format!("line {}", i + 1)));
                if out.len() >= MAX_CREDENTIALS {
                    return Ok(out);
                }
            }
        }
    }
    if out.is_empty() {
        Err(Skip::Unrecognised)
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(named_format("/root/.pgpass", None), Some(Named::Pgpass));
        assert_eq!(
            named_format("/x/creds", Some("PGPASSFILE")),
            Some(Named::Pgpass)
        );
        assert_eq!(
            named_format("/home/a/.aws/credentials", None),
            Some(Named::Aws)
        );
        assert_eq!(named_format("/home/a/.aws/config", None), Some(Named::Aws));
        assert_eq!(
            named_format("/home/a/.config/git/credentials", None),
            Some(Named::GitCredentials)
        );
        assert_eq!(
            named_format("/srv/app/.env.production", None),
            Some(Named::Dotenv)
        );
        assert_eq!(named_format("/srv/app/prod.env", None), Some(Named::Dotenv));
        assert_eq!(
            named_format("/home/a/.kube/config", None),
            Some(Named::Kubeconfig)
        );
        assert_eq!(named_format("/home/a/.ssh/config", None), None);
        assert_eq!(named_format("credentials", None), None);
        assert_eq!(named_format("", None), None);
    }
}
