//! User name and password pairs (HTTP Basic auth, netrc, pgpass, git-credentials, Docker
//! `auth`, database URLs, npm `_auth`): which of the two is the secret, and what goes into the
//! id.
//!
//! A user name is normally public and part of the id (`machine login`, `host user`). But tokens
//! and API keys are often sent as the user name, with a placeholder or an empty password
//! (`<token>:x-oauth-basic`, `<key>:X`, `<token>:`). Such a user name is the credential: it is
//! classified as what it is (a `ghp_` token is a static github_token with the fingerprint the
//! same token has in a file, a variable or a Bearer header), it never goes into an id, and the
//! placeholder password is no credential. When the password beside a secret user name is a
//! secret too, both are reported.

use super::{Credential, Ctx, jwt, tokens};

/// A user name of no known token shape is a secret when it is at least this long...
const MIN_LEN: usize = 20;
/// ...holds a run of at least this many letters and digits (between `-`, `_`, `.`, ...) that
/// mixes at least two of lower case, upper case and digits...
const MIN_RUN: usize = 16;
/// ...and has at least this Shannon entropy, in bits per character. Random hexadecimal text of
/// 20 characters stays above it (random base62 text has about 4); text of a few repeated
/// characters falls below.
const MIN_ENTROPY: f64 = 2.5;
/// Characters of token alphabets besides letters and digits (base64, base64url, ...). Any other
/// (`@`, `:`, a space) makes a name: e-mail addresses, Kubernetes users, distinguished names.
const TOKEN_PUNCT: &[u8] = b"-_.~+/=";

/// Whether a user name looks like a credential rather than a name: a token of a known shape
/// (every prefix of the credential table, AWS key ids, GCP API keys, legacy Vault tokens, a
/// JWT), or random-looking text: at least 20 characters of a token alphabet (letters, digits,
/// `-_.~+/=`) with a run of at least 16 letters and digits that mixes two of lower case, upper
/// case and digits, and at least 2.5 bits of entropy per character.
///
/// Ordinary user names (`postgres`, `deploy-bot`, `alice@example.com`, `git`, `oauth2`,
/// `x-access-token`, `AWS`, `__token__`, UUIDs such as a client id) are not: they are short,
/// hold `@` or `:`, or are words and numbers joined by separators. A single run of 16 or more
/// letters and digits that mixes case or digits (`ReportingServiceUser2023`) counts as a
/// secret: a name taken for a secret is left out of the id, a secret taken for a name would be
/// exported.
pub(super) fn is_secret_like(user: &str) -> bool {
    let u = user.trim();
    tokens::detect(u).is_some() || jwt::parse(u).is_some() || is_random_looking(u)
}

/// [`is_secret_like`] of a password; non-UTF-8 bytes are no placeholder, so they are.
fn is_secret_like_bytes(password: &[u8]) -> bool {
    std::str::from_utf8(password).map_or(true, is_secret_like)
}

fn is_random_looking(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= MIN_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || TOKEN_PUNCT.contains(c))
        && s.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|run| run.len() >= MIN_RUN && classes(run) >= 2)
        && entropy(b) >= MIN_ENTROPY
}

/// How many of lower case letters, upper case letters and digits occur.
fn classes(run: &str) -> usize {
    [
        run.bytes().any(|c| c.is_ascii_lowercase()),
        run.bytes().any(|c| c.is_ascii_uppercase()),
        run.bytes().any(|c| c.is_ascii_digit()),
    ]
    .into_iter()
    .filter(|&x| x)
    .count()
}

/// Shannon entropy of the byte distribution, in bits per byte.
fn entropy(b: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for &c in b {
        counts[usize::from(c)] += 1;
    }
    let n = b.len() as f64;
    counts
        .iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The credential of a user name that is a secret: a token of known shape as it is anywhere
/// else, else what `secret` makes of it (the format's kind, no id).
pub(super) fn user_credential(
    cx: &Ctx<'_>,
    user: &str,
    secret: impl Fn(&[u8]) -> Credential,
) -> Credential {
    tokens::credential(cx, user).unwrap_or_else(|| secret(user.trim().as_bytes()))
}

/// The credentials of one user:password entry.
///
/// `password` is the secret beside the user name (a password, or a token that replaces it),
/// empty when the entry has none. `secret` makes the format's credential of a secret of no
/// known token shape (its kind and lifetime, no id). `id` makes the entry's id: with
/// `Some(user)` for a public user name, with `None` for the id without any user name (the
/// machine, host or registry; `None` when the format has no such part).
///
/// - A public user name: the password's credential, with the user name in the id; nothing
///   without a password.
/// - A secret user name ([`is_secret_like`]): its own credential, and the password's only when
///   the password is secret-like too (else it is a placeholder such as `x-oauth-basic` or `X`,
///   which would give every such entry the same fingerprint); no id holds the user name.
///
/// A credential that names itself (a token's type, a JWT's subject, an AWS key id) keeps its
/// own id; the others take the entry's.
pub(super) fn credentials(
    cx: &Ctx<'_>,
    user: &str,
    password: &[u8],
    secret: impl Fn(&[u8]) -> Credential,
    id: impl Fn(Option<&str>) -> Option<String>,
) -> Vec<Credential> {
    let named = |c: Credential, id: Option<String>| {
        if c.id.is_some() { c } else { c.with_opt_id(id) }
    };
    if is_secret_like(user) {
        let mut out = vec![named(user_credential(cx, user, &secret), id(None))];
        if !password.is_empty() && is_secret_like_bytes(password) {
            out.push(named(secret(password), id(None)));
        }
        return out;
    }
    if password.is_empty() {
        return Vec::new();
    }
    let public = Some(user).filter(|u| !u.trim().is_empty());
    vec![named(secret(password), id(public))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::tests::{ALNUM, fake, jwt};

    #[test]
    fn ordinary_user_names_are_not_secret_like() {
        for name in [
            "",
            "postgres",
            "deploy-bot",
            "alice@example.com",
            "git",
            "oauth2",
            "x-access-token",
            "AWS",
            "__token__",
            "_json_key",
            "oauth2accesstoken",
            "x-token-auth",
            "gitlab-ci-token",
            "kubernetes-admin",
            "svc_payments_readonly",
            "deploy-bot-production-01",
            "jenkins-worker-node-0042",
            "ci@demo.iam.gserviceaccount.com",
            "build-bot-42@project-123456.iam.gserviceaccount.com",
            "system:serviceaccount:kube-system:builder",
            "CN=svc-backup,OU=Service Accounts,DC=corp,DC=example,DC=com",
            "00000000-0000-0000-0000-000000000000",
            "3f2b8c1e-9a7d-4e6f-b5c4-0d1e2f3a4b5c",
            "123456789012345678901234",
            "averyveryverylongusernamewithoutdigits",
            "x-oauth-basic",
            "X",
        ] {
            assert!(!is_secret_like(name), "{name:?}");
        }
    }

    #[test]
    fn tokens_and_random_keys_are_secret_like() {
        let body = fake(70, 36, ALNUM);
        for prefix in [
            "ghp_",
            "github_pat_",
            "gho_",
            "ghs_",
            "glpat-",
            "xoxb-",
            "sk_live_",
            "hvs.",
            "sk-proj-",
        ] {
            assert!(is_secret_like(&format!("{prefix}{body}")), "{prefix}");
        }
        assert!(is_secret_like(&format!("npm_{body}")));
        assert!(is_secret_like(&format!(
            "AKIA{}",
            fake(71, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        )));
        assert!(is_secret_like(&jwt(serde_json::json!({"sub": "x"}))));
        // Keys of no known shape: base62, lower-case hex, base64 with punctuation.
        assert!(is_secret_like(&fake(72, 20, ALNUM)));
        assert!(is_secret_like(&fake(73, 32, "0123456789abcdef")));
        assert!(is_secret_like(&fake(74, 40, "0123456789ABCDEF")));
        assert!(is_secret_like(&format!(
            "{}/{}+{}=",
            fake(75, 18, ALNUM),
            fake(76, 12, ALNUM),
            fake(77, 8, ALNUM)
        )));
        assert!(is_secret_like(&format!("  {}\n", fake(78, 24, ALNUM))));
    }

    #[test]
    fn the_bounds() {
        // 19 characters are too few; 20 are enough.
        let key = fake(79, 20, ALNUM);
        assert!(is_secret_like(&key));
        assert!(!is_secret_like(&key[..19]));
        // A run shorter than 16 between separators is a name part.
        let split = format!("{}-{}", &key[..15], fake(80, 15, ALNUM));
        assert!(!is_secret_like(&split));
        // One class only (all lower case, all digits) is not enough.
        assert!(!is_secret_like(&fake(81, 30, "abcdefghijklmnopqrstuvwxyz")));
        assert!(!is_secret_like(&fake(82, 30, "0123456789")));
        // Few distinct characters: low entropy.
        assert!(!is_secret_like("aaaaaaaaaaaaaaaaaaaaaaaaaaaaab1"));
        assert!(entropy(b"ab") == 1.0 && entropy(b"aaaa") == 0.0);
    }
}
