//! Which environment variable names are secret-like (CREDENTIALS.md): an exact list, then a
//! pattern on the `_`-separated words of the name, case-insensitive, with exclusions. Also which
//! names hold the path of a credential file (KUBECONFIG, `*_TOKEN_FILE` ...). The lists come from
//! the config (`env:`); the defaults are CREDENTIALS.md's.

/// Names that are secret-like whatever their words.
pub const DEFAULT_SECRET_NAMES: &[&str] = &[
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
pub const DEFAULT_SECRET_WORDS: &[&str] = &[
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

/// ... unless it also has one of these (`*_KEY_ID`, `*_PUBLIC_KEY`, ...). `file` is special: as
/// the last word after a secret-like stem it makes a file-naming variable (`*_TOKEN_FILE`).
pub const DEFAULT_EXCEPT_WORDS: &[&str] = &["public", "id", "file", "path", "version", "name"];

/// Variables whose value is the path of a credential file.
pub const DEFAULT_FILE_NAMES: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "KUBECONFIG",
    "PGPASSFILE",
    "NETRC",
];

/// Names that look secret-like by their words but hold no secret: the shell's working
/// directories (`pwd` is a password word), the ssh-agent socket (`auth`).
pub const DEFAULT_PLAIN_NAMES: &[&str] = &["PWD", "OLDPWD", "SSH_AUTH_SOCK"];

/// The word that, last, turns a secret-like name into a file-naming one.
pub const FILE_WORD: &str = "file";

/// The name lists, uppercase for names and lowercase for words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvNameRules {
    pub secret_names: Vec<String>,
    pub secret_words: Vec<String>,
    pub except_words: Vec<String>,
    pub file_names: Vec<String>,
    pub plain_names: Vec<String>,
}

impl Default for EnvNameRules {
    fn default() -> Self {
        Self::new(
            DEFAULT_SECRET_NAMES,
            DEFAULT_SECRET_WORDS,
            DEFAULT_EXCEPT_WORDS,
            DEFAULT_FILE_NAMES,
        )
        .with_plain_names(DEFAULT_PLAIN_NAMES)
    }
}

impl EnvNameRules {
    pub fn new<S: AsRef<str>>(
        secret_names: &[S],
        secret_words: &[S],
        except_words: &[S],
        file_names: &[S],
    ) -> Self {
        let upper = |l: &[S]| l.iter().map(|s| s.as_ref().to_ascii_uppercase()).collect();
        let lower = |l: &[S]| l.iter().map(|s| s.as_ref().to_ascii_lowercase()).collect();
        Self {
            secret_names: upper(secret_names),
            secret_words: lower(secret_words),
            except_words: lower(except_words),
            file_names: upper(file_names),
            plain_names: Vec::new(),
        }
    }

    /// The same rules with these names never secret-like.
    pub fn with_plain_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.plain_names = names
            .iter()
            .map(|s| s.as_ref().to_ascii_uppercase())
            .collect();
        self
    }

    /// Whether a variable of this name holds a secret.
    pub fn is_secret_like(&self, name: &str) -> bool {
        if self.is_plain(name) {
            return false;
        }
        if self.is_exact(name) {
            return true;
        }
        let has =
            |list: &[String]| words(name).any(|w| list.iter().any(|l| l.eq_ignore_ascii_case(w)));
        has(&self.secret_words) && !has(&self.except_words)
    }

    /// Whether a variable of this name holds the path of a credential file: a listed name, or
    /// `<secret-like stem>_FILE`.
    pub fn names_file(&self, name: &str) -> bool {
        if self.file_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return true;
        }
        let Some(stem) = name
            .rsplit_once('_')
            .filter(|(_, last)| last.eq_ignore_ascii_case(FILE_WORD))
            .map(|(stem, _)| stem)
        else {
            return false;
        };
        !stem.is_empty() && self.is_secret_like(stem)
    }

    /// Whether the name is listed as holding no secret.
    pub fn is_plain(&self, name: &str) -> bool {
        self.plain_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    fn is_exact(&self, name: &str) -> bool {
        self.secret_names
            .iter()
            .any(|e| e.eq_ignore_ascii_case(name))
    }
}

fn words(name: &str) -> impl Iterator<Item = &str> {
    name.split('_').filter(|w| !w.is_empty())
}

/// Whether an environment variable of this name holds a secret, by the default lists.
pub fn is_secret_like_env_name(name: &str) -> bool {
    static DEFAULT: std::sync::OnceLock<EnvNameRules> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(EnvNameRules::default)
        .is_secret_like(name)
}

#[cfg(test)]
mod tests {
    use super::is_secret_like_env_name as secret_like;

    #[test]
    fn exact_names() {
        for n in super::DEFAULT_SECRET_NAMES {
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
    fn file_naming_names() {
        let r = super::EnvNameRules::default();
        for n in [
            "KUBECONFIG",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "DB_PASSWORD_FILE",
            "api_key_file",
        ] {
            assert!(r.names_file(n), "{n}");
        }
        for n in [
            "FILE",
            "_FILE",
            "LOG_FILE",
            "SSH_PUBLIC_KEY_FILE",
            "TOKEN_FILE_MODE",
        ] {
            assert!(!r.names_file(n), "{n}");
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
            "PWD",
            "OLDPWD",
            "SSH_AUTH_SOCK",
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
