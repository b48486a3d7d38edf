//! Tokens recognised by their shape: vendor prefixes (GitHub, GitLab, Slack, Stripe, Vault,
//! npm, PyPI, OpenAI, Anthropic), AWS access key ids, GCP API keys and Azure client secrets.
//! The public id of a prefixed token is its type (the prefix), never any part of the body.

use super::{Credential, Ctx, Kind, Lifetime, jwt};

/// What a token's shape says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenMatch {
    pub kind: Kind,
    pub id: Option<&'static str>,
    pub lifetime: Lifetime,
}

/// Prefixed tokens: prefix, kind, id (type), lifetime, body charset, minimum body length.
struct Prefix {
    prefix: &'static str,
    kind: Kind,
    id: Option<&'static str>,
    lifetime: Lifetime,
    charset: fn(u8) -> bool,
    min_body: usize,
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn word_dash(b: u8) -> bool {
    word(b) || b == b'-'
}
fn word_dash_dot(b: u8) -> bool {
    word_dash(b) || b == b'.'
}
fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn alnum_dash(b: u8) -> bool {
    alnum(b) || b == b'-'
}

const fn p(
    prefix: &'static str,
    kind: Kind,
    id: Option<&'static str>,
    lifetime: Lifetime,
    charset: fn(u8) -> bool,
    min_body: usize,
) -> Prefix {
    Prefix {
        prefix,
        kind,
        id,
        lifetime,
        charset,
        min_body,
    }
}

use Kind as K;
use Lifetime::{ShortLived as Short, Static, Unknown};

/// Longer prefixes first where one is a prefix of another (xoxe.xoxb- before xoxb-,
/// sk-ant- before sk-).
#[rustfmt::skip]
const PREFIXES: &[Prefix] = &[
    p("github_pat_", K::GithubToken, Some("github_pat"), Static, word, 20),
    p("ghp_", K::GithubToken, Some("ghp"), Static, alnum, 20),
    p("gho_", K::GithubToken, Some("gho"), Static, alnum, 20),
    p("ghu_", K::GithubToken, Some("ghu"), Short, alnum, 20),
    p("ghs_", K::GithubToken, Some("ghs"), Short, alnum, 20),
    p("ghr_", K::GithubToken, Some("ghr"), Static, alnum, 20),
    p("glpat-", K::GitlabToken, Some("glpat"), Static, word_dash_dot, 20),
    p("gldt-", K::GitlabToken, Some("gldt"), Static, word_dash_dot, 20),
    p("glrt-", K::GitlabToken, Some("glrt"), Static, word_dash_dot, 20),
    p("glcbt-", K::GitlabToken, Some("glcbt"), Short, word_dash_dot, 20),
    p("xoxe.xoxb-", K::SlackToken, Some("xoxe.xoxb"), Short, alnum_dash, 20),
    p("xoxe.xoxp-", K::SlackToken, Some("xoxe.xoxp"), Short, alnum_dash, 20),
    p("xoxb-", K::SlackToken, Some("xoxb"), Static, alnum_dash, 20),
    p("xoxp-", K::SlackToken, Some("xoxp"), Static, alnum_dash, 20),
    p("xapp-", K::SlackToken, Some("xapp"), Static, alnum_dash, 20),
    p("sk_live_", K::StripeKey, Some("sk_live"), Static, alnum, 20),
    p("rk_live_", K::StripeKey, Some("rk_live"), Static, alnum, 20),
    p("sk_test_", K::StripeKey, Some("sk_test"), Static, alnum, 20),
    p("rk_test_", K::StripeKey, Some("rk_test"), Static, alnum, 20),
    p("hvs.", K::VaultToken, Some("hvs"), Unknown, word_dash, 20),
    p("hvb.", K::VaultToken, Some("hvb"), Unknown, word_dash, 20),
    p("pypi-AgEIcHlwaS5vcmc", K::PypiToken, None, Static, word_dash, 16),
    p("sk-ant-api03-", K::AnthropicKey, None, Static, word_dash, 20),
    p("sk-ant-admin01-", K::AnthropicKey, None, Static, word_dash, 20),
    p("sk-proj-", K::OpenaiKey, None, Static, word_dash, 20),
    p("sk-svcacct-", K::OpenaiKey, None, Static, word_dash, 20),
    p("sk-admin-", K::OpenaiKey, None, Static, word_dash, 20),
];

/// Heads of the token shapes above, for the kernel's value-prefix filter.
pub(super) fn prefixes() -> impl Iterator<Item = &'static str> {
    PREFIXES
        .iter()
        .map(|p| p.prefix)
        .chain(["sk-", "npm_", "AIza", "AKIA", "ASIA"])
}

/// The kind of a token by its shape alone, `None` when it has no known shape.
pub(super) fn detect(token: &str) -> Option<TokenMatch> {
    let t = token.trim();
    let b = t.as_bytes();
    let m = |kind, id, lifetime| Some(TokenMatch { kind, id, lifetime });
    for pr in PREFIXES {
        if let Some(body) = t.strip_prefix(pr.prefix) {
            if body.len() >= pr.min_body && body.bytes().all(pr.charset) {
                return m(pr.kind, pr.id, pr.lifetime);
            }
            // A prefix that matched with a bad body is no other kind either.
            return None;
        }
    }
    if let Some(rest) = t.strip_prefix("sk-")
        && rest.contains("T3BlbkFJ")
        && rest.len() >= 40
        && rest.bytes().all(word_dash)
    {
        return m(K::OpenaiKey, None, Static);
    }
    if let Some(body) = t.strip_prefix("npm_")
        && body.len() == 36
        && body.bytes().all(alnum)
    {
        return m(K::NpmToken, None, Static);
    }
    if let Some(body) = t.strip_prefix("AIza")
        && body.len() == 35
        && body.bytes().all(word_dash)
    {
        return m(K::GcpApiKey, None, Static);
    }
    if is_aws_key_id(t) {
        return if t.starts_with("ASIA") {
            m(K::AwsSessionCredentials, None, Short)
        } else {
            m(K::AwsAccessKey, None, Static)
        };
    }
    // Legacy Vault tokens: s. / b. + 24 alphanumerics.
    if let Some(body) = t.strip_prefix("s.").or_else(|| t.strip_prefix("b."))
        && body.len() == 24
        && body.bytes().all(alnum)
    {
        let id = if b[0] == b's' { "s" } else { "b" };
        return m(K::VaultToken, Some(id), Unknown);
    }
    if is_azure_client_secret(b) {
        return m(K::AzureClientSecret, None, Static);
    }
    None
}

/// `AKIA` or `ASIA` + 16 characters of [A-Z2-7].
pub(super) fn is_aws_key_id(t: &str) -> bool {
    (t.starts_with("AKIA") || t.starts_with("ASIA"))
        && t.len() == 20
        && t.bytes()
            .skip(4)
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
}

/// 3 characters + a digit + `Q~` + 31 to 34 characters (Entra ID client secrets).
fn is_azure_client_secret(b: &[u8]) -> bool {
    let ch = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'~' | b'.' | b'-');
    (37..=40).contains(&b.len())
        && b[..3].iter().all(|&c| ch(c))
        && b[3].is_ascii_digit()
        && &b[4..6] == b"Q~"
        && b[6..].iter().all(|&c| ch(c))
}

/// A token as a credential: a JWT by its claims, else by its shape. The fingerprint is of the
/// token trimmed (for an AWS key id, of the id: see `Ctx::aws_key_id`).
pub(super) fn credential(cx: &Ctx<'_>, token: &str) -> Option<Credential> {
    let t = token.trim();
    if let Some(c) = jwt::classify(cx, t, None) {
        return Some(c);
    }
    let m = detect(t)?;
    if matches!(m.kind, K::AwsAccessKey | K::AwsSessionCredentials) {
        return Some(cx.aws_key_id(t));
    }
    let c = cx.cred(m.kind, m.lifetime, t);
    Some(match m.id {
        Some(id) => c.with_id(id),
        None => c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::tests::fake;

    fn kind(t: &str) -> Option<(Kind, Option<&'static str>, Lifetime)> {
        detect(t).map(|m| (m.kind, m.id, m.lifetime))
    }

    #[test]
    fn every_prefix_kind() {
        for pr in PREFIXES {
            let body = fake(
                pr.prefix.len() as u64,
                40,
                "abcdefghijklmnopqrstuvwxyz0123456789",
            );
            let t = format!("{}{body}", pr.prefix);
            assert_eq!(
                kind(&t),
                Some((pr.kind, pr.id, pr.lifetime)),
                "{}",
                pr.prefix
            );
            // Too short a body is nothing.
            assert_eq!(kind(&format!("{}abc", pr.prefix)), None, "{}", pr.prefix);
        }
    }

    #[test]
    fn table_lifetimes() {
        let body = fake(
            1,
            36,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        );
        let lt = |p: &str| kind(&format!("{p}{body}")).map(|k| k.2);
        assert_eq!(lt("ghp_"), Some(Static));
        assert_eq!(lt("github_pat_"), Some(Static));
        assert_eq!(lt("ghs_"), Some(Short));
        assert_eq!(lt("ghu_"), Some(Short));
        assert_eq!(lt("gho_"), Some(Static));
        assert_eq!(lt("ghr_"), Some(Static));
        assert_eq!(lt("glcbt-"), Some(Short));
        assert_eq!(lt("glpat-"), Some(Static));
        assert_eq!(lt("xoxe.xoxb-"), Some(Short));
        assert_eq!(lt("xoxb-"), Some(Static));
        assert_eq!(lt("hvs."), Some(Unknown));
        assert_eq!(
            kind(&format!("npm_{body}")),
            Some((K::NpmToken, None, Static))
        );
    }

    #[test]
    fn shapes_without_prefix_table() {
        let b32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id = format!("AKIA{}", fake(2, 16, b32));
        assert_eq!(kind(&id), Some((K::AwsAccessKey, None, Static)));
        let id = format!("ASIA{}", fake(3, 16, b32));
        assert_eq!(kind(&id), Some((K::AwsSessionCredentials, None, Short)));
        assert_eq!(kind("AKIA0000000000000000"), None);
        let g = format!(
            "AIza{}",
            fake(4, 35, "abcdefghijklmnopqrstuvwxyz0123456789_-")
        );
        assert_eq!(kind(&g), Some((K::GcpApiKey, None, Static)));
        let az = format!(
            "{}7Q~{}",
            fake(5, 3, "abcdef"),
            fake(6, 34, "abcdefghijklmnopqrstuvwxyz0123456789_~.-")
        );
        assert_eq!(kind(&az), Some((K::AzureClientSecret, None, Static)));
        let legacy = format!("s.{}", fake(7, 24, "abcdefghijklmnopqrstuvwxyzABC0123"));
        assert_eq!(kind(&legacy), Some((K::VaultToken, Some("s"), Unknown)));
        let openai = format!(
            "sk-{}T3BlbkFJ{}",
            fake(8, 20, "abcdefghijklmnopqrstuvwxyz"),
            fake(9, 20, "abcdefghijklmnopqrstuvwxyz")
        );
        assert_eq!(kind(&openai), Some((K::OpenaiKey, None, Static)));
    }

    #[test]
    fn non_tokens() {
        for t in [
            "",
            "hello",
            "ghp_",
            "ghp_short",
            "sk-",
            "s.abc",
            "AKIA",
            "npm_tooshort",
            "password123",
            "ghp_contains space and more text here",
            "\u{e9}\u{e9}\u{e9}\u{e9}Q~\u{e9}",
        ] {
            assert_eq!(kind(t), None, "{t:?}");
        }
    }
}
