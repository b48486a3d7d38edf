//! Which environment variable names are secret-like (CREDENTIALS.md): an exact list, then a
//! pattern on the `_`-separated words of the name, case-insensitive, with exclusions.

/// Names that are secret-like whatever their words.
const EXACT: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_PASSWORD",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITLAB_TOKEN",
    "VAULT_TOKEN",
    "DATABASE_URL",
    "NPM_TOKEN",
    "PYPI_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "SLACK_BOT_TOKEN",
    "STRIPE_SECRET_KEY",
];

/// A name with one of these words is secret-like (`api_key` and `private_key` are covered by
/// `key`).
const SECRET_WORDS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "passwd",
    "pword",
    "pwd",
    "secret",
    "token",
];

/// ... unless it also has one of these (`*_KEY_ID`, `*_TOKEN_FILE`, `*_PUBLIC_KEY`, ...).
const EXCLUDING_WORDS: &[&str] = &["public", "id", "file", "path", "version", "name"];

/// Whether an environment variable of this name holds a secret (CREDENTIALS.md).
pub fn is_secret_like_env_name(name: &str) -> bool {
    if EXACT.iter().any(|e| e.eq_ignore_ascii_case(name)) {
        return true;
    }
    let words = || name.split('_').filter(|w| !w.is_empty());
    let has = |list: &[&str]| words().any(|w| list.iter().any(|l| l.eq_ignore_ascii_case(w)));
    has(SECRET_WORDS) && !has(EXCLUDING_WORDS)
}

#[cfg(test)]
mod tests {
    use super::is_secret_like_env_name as secret_like;

    #[test]
    fn exact_names() {
        for n in super::EXACT {
            assert!(secret_like(n), "{n}");
            assert!(secret_like(&n.to_ascii_lowercase()), "{n}");
        }
        // Exact beats the exclusions (AWS_ACCESS_KEY_ID has the word id).
        assert!(secret_like("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn word_patterns() {
        for n in [
            "DB_PASSWORD",
            "MY_API_KEY",
            "SERVICE_APIKEY",
            "REDIS_AUTH",
            "APP_CREDENTIALS",
            "SMTP_PASSWD",
            "X_PWD",
            "SIGNING_SECRET",
            "ci_job_token",
            "PRIVATE_KEY",
            "Token",
        ] {
            assert!(secret_like(n), "{n}");
        }
    }

    #[test]
    fn exclusions_and_plain_names() {
        for n in [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "SSH_PUBLIC_KEY",
            "GPG_KEY_ID",
            "SECRET_PATH",
            "TOKEN_VERSION",
            "KEY_NAME",
            "PATH",
            "HOME",
            "TOKENIZER_THREADS",
            "KEYBOARD",
            "MONKEY",
            "AUTHOR",
            "",
            "_",
        ] {
            assert!(!secret_like(n), "{n}");
        }
    }
}
