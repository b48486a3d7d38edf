//! Credential classification (CREDENTIALS.md): from the content of a credential file, an
//! environment value or a request header to a kind, a public identifier, a lifetime class and
//! a keyed fingerprint.
//!
//! Pure: no I/O. The caller passes the bytes, a path as a hint and the current time. Nothing
//! here keeps or returns secret material: a [`Credential`] holds public fields and a
//! fingerprint only, and a [`Skip`] reason names no content. Parsers never panic, whatever
//! the input.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Serialize, Serializer};

mod aws;
mod dburl;
mod docker;
mod dotenv;
pub mod envname;
mod file;
mod fingerprint;
mod gcp;
mod header;
mod jwt;
mod keys;
mod kubeconfig;
mod lines;
mod pem;
mod ssh;
mod tokens;
mod userinfo;
mod value;

#[cfg(test)]
mod tests;

pub use envname::{EnvNameRules, FILE_WORD, is_secret_like_env_name};

/// Files larger than this are not classified (the caller caps its reads too).
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// At most this many credentials are reported for one file (or one environment).
pub const MAX_CREDENTIALS: usize = 1000;

/// The kind of a credential, one per row of the table in CREDENTIALS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    AwsAccessKey,
    AwsSessionCredentials,
    AwsWebIdentityToken,
    GcpServiceAccountKey,
    GcpExternalAccount,
    GcpApiKey,
    AzureClientSecret,
    AzureFederatedToken,
    K8sSaTokenLegacy,
    K8sSaTokenBound,
    Kubeconfig,
    X509PrivateKey,
    X509Certificate,
    SpiffeSvid,
    SshPrivateKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    VaultToken,
    NpmToken,
    PypiToken,
    OpenaiKey,
    AnthropicKey,
    DockerAuth,
    DatabaseUrl,
    Pgpass,
    Netrc,
    GitCredentials,
    Jwt,
    GenericSecret,
    Unknown,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 32] = [
        Kind::AwsAccessKey,
        Kind::AwsSessionCredentials,
        Kind::AwsWebIdentityToken,
        Kind::GcpServiceAccountKey,
        Kind::GcpExternalAccount,
        Kind::GcpApiKey,
        Kind::AzureClientSecret,
        Kind::AzureFederatedToken,
        Kind::K8sSaTokenLegacy,
        Kind::K8sSaTokenBound,
        Kind::Kubeconfig,
        Kind::X509PrivateKey,
        Kind::X509Certificate,
        Kind::SpiffeSvid,
        Kind::SshPrivateKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::SlackToken,
        Kind::StripeKey,
        Kind::VaultToken,
        Kind::NpmToken,
        Kind::PypiToken,
        Kind::OpenaiKey,
        Kind::AnthropicKey,
        Kind::DockerAuth,
        Kind::DatabaseUrl,
        Kind::Pgpass,
        Kind::Netrc,
        Kind::GitCredentials,
        Kind::Jwt,
        Kind::GenericSecret,
        Kind::Unknown,
    ];

    /// The name used in records, as in CREDENTIALS.md.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::AwsAccessKey => "aws_access_key",
            Kind::AwsSessionCredentials => "aws_session_credentials",
            Kind::AwsWebIdentityToken => "aws_web_identity_token",
            Kind::GcpServiceAccountKey => "gcp_service_account_key",
            Kind::GcpExternalAccount => "gcp_external_account",
            Kind::GcpApiKey => "gcp_api_key",
            Kind::AzureClientSecret => "azure_client_secret",
            Kind::AzureFederatedToken => "azure_federated_token",
            Kind::K8sSaTokenLegacy => "k8s_sa_token_legacy",
            Kind::K8sSaTokenBound => "k8s_sa_token_bound",
            Kind::Kubeconfig => "kubeconfig",
            Kind::X509PrivateKey => "x509_private_key",
            Kind::X509Certificate => "x509_certificate",
            Kind::SpiffeSvid => "spiffe_svid",
            Kind::SshPrivateKey => "ssh_private_key",
            Kind::GithubToken => "github_token",
            Kind::GitlabToken => "gitlab_token",
            Kind::SlackToken => "slack_token",
            Kind::StripeKey => "stripe_key",
            Kind::VaultToken => "vault_token",
            Kind::NpmToken => "npm_token",
            Kind::PypiToken => "pypi_token",
            Kind::OpenaiKey => "openai_key",
            Kind::AnthropicKey => "anthropic_key",
            Kind::DockerAuth => "docker_auth",
            Kind::DatabaseUrl => "database_url",
            Kind::Pgpass => "pgpass",
            Kind::Netrc => "netrc",
            Kind::GitCredentials => "git_credentials",
            Kind::Jwt => "jwt",
            Kind::GenericSecret => "generic_secret",
            Kind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How long a credential lives, relative to the short-lived threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifetime {
    /// No expiry, or an expiry further from issue than the threshold.
    Static,
    /// Expires within the threshold of issue, or minted by a system that rotates it.
    ShortLived,
    /// The credential carries no lifetime (the issuer holds it, or it is encrypted).
    Unknown,
}

impl Lifetime {
    pub fn as_str(&self) -> &'static str {
        match self {
            Lifetime::Static => "static",
            Lifetime::ShortLived => "short_lived",
            Lifetime::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Lifetime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One credential found in a file, a value or a header. Holds no secret material: only the
/// kind, public fields and the keyed fingerprint of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credential {
    pub kind: Kind,
    /// Public identifier per the table (a key id, an account, a subject); never secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub lifetime: Lifetime,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_time"
    )]
    pub expires_at: Option<SystemTime>,
    /// `iat` of a token or `notBefore` of a certificate, when known.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_time"
    )]
    pub issued_at: Option<SystemTime>,
    /// `kt1:` + 32 lowercase hex characters of HMAC-SHA256(key, normalised secret).
    pub fingerprint: String,
    /// Where in the file or request it was found: `profile default`, `users[1] admin`,
    /// `line 3`, `auths registry.example.com`, `header authorization`, `env NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

fn serialize_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        // Times are clamped to 1970..=9999 where they are made (`unix_time`), so this formats.
        Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
        None => s.serialize_none(),
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind, self.lifetime, self.fingerprint)?;
        if let Some(id) = &self.id {
            write!(f, " id={id}")?;
        }
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        Ok(())
    }
}

impl Credential {
    fn new(kind: Kind, lifetime: Lifetime, fingerprint: String) -> Self {
        Self {
            kind,
            id: None,
            lifetime,
            expires_at: None,
            issued_at: None,
            fingerprint,
            location: None,
        }
    }

    fn with_id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        self.id = (!id.is_empty()).then_some(id);
        self
    }

    fn with_opt_id(mut self, id: Option<String>) -> Self {
        self.id = id.filter(|i| !i.is_empty());
        self
    }

    fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    fn times(mut self, issued: Option<SystemTime>, expires: Option<SystemTime>) -> Self {
        self.issued_at = issued;
        self.expires_at = expires;
        self
    }
}

/// Why a file gave no credential. The text names the reason, never the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("empty")]
    Empty,
    #[error("larger than 1 MiB")]
    TooLarge,
    #[error("binary content of no known credential format")]
    Binary,
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("no known credential format")]
    Unrecognised,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// How the values of known credential kinds start (token prefixes, JWTs, database URL schemes,
/// PEM): a variable whose value starts so is worth classifying whatever its name. A superset;
/// classification decides.
pub fn value_prefixes() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = tokens::prefixes()
        .chain(dburl::DB_SCHEMES.iter().copied())
        .chain(["eyJ", "-----BEGIN "])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Classifies credentials with one fingerprint key and one short-lived threshold.
#[derive(Clone)]
pub struct Classifier {
    key: Vec<u8>,
    threshold: Duration,
    env_names: std::sync::Arc<EnvNameRules>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("key", &"<redacted>")
            .field("short_lived_threshold", &self.threshold)
            .finish()
    }
}

impl Classifier {
    pub fn new(fingerprint_key: &[u8], short_lived_threshold: Duration) -> Self {
        Self {
            key: fingerprint_key.to_vec(),
            threshold: short_lived_threshold,
            env_names: std::sync::Arc::new(EnvNameRules::default()),
        }
    }

    /// The same classifier with these secret-like name lists (from the config).
    pub fn with_env_names(mut self, rules: EnvNameRules) -> Self {
        self.env_names = std::sync::Arc::new(rules);
        self
    }

    /// The secret-like name lists in use.
    pub fn env_names(&self) -> &EnvNameRules {
        &self.env_names
    }

    /// All credentials in a file's content.
    ///
    /// `path` is a hint only (`.pgpass`, `.netrc`, `credentials` under `.aws`,
    /// `.git-credentials`, `config.json` under `.docker`, `.env*`, `.vault-token`, `.npmrc`,
    /// `.pypirc`, `~/.ssh/...`); self-describing formats (PEM, JSON with `type`, kubeconfig,
    /// JWT, DER) are recognised without it. `env_hint` is the env var that named the file, if
    /// any (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AZURE_FEDERATED_TOKEN_FILE`, `KUBECONFIG`,
    /// `PGPASSFILE`, ...) and may decide the kind. `Ok(vec![])` means a known format that
    /// holds no secret (a Docker config with `credsStore` only, a public key).
    pub fn classify_file(
        &self,
        content: &[u8],
        path: &str,
        env_hint: Option<&str>,
        now: SystemTime,
    ) -> Result<Vec<Credential>, Skip> {
        file::classify(&self.ctx(now), content, path, env_hint)
    }

    /// A bare value: an env var value (with its name) or a header value. Empty when it is
    /// not a credential: a name that is not secret-like and a value of no known pattern, or a
    /// value that holds no secret (a database URL without a password, a file path). Two when
    /// a URL's user name is a token and its password a secret too.
    pub fn classify_value(
        &self,
        value: &str,
        env_name: Option<&str>,
        now: SystemTime,
    ) -> Vec<Credential> {
        let cx = self.ctx(now);
        value::classify(&cx, value, env_name)
            .into_iter()
            .map(|c| match env_name {
                Some(n) => c.at(format!("env {n}")),
                None => c,
            })
            .collect()
    }

    /// A whole environment (name, value pairs, as in /proc/PID/environ): every credential,
    /// with the pairs that belong together merged: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
    /// (+ AWS_SESSION_TOKEN, AWS_CREDENTIAL_EXPIRATION) give one credential with the key id
    /// as id and the fingerprint of the secret; AZURE_CLIENT_ID names AZURE_CLIENT_SECRET.
    pub fn classify_env<'a>(
        &self,
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: SystemTime,
    ) -> Vec<Credential> {
        let entries: Vec<value::Entry<'a>> = vars
            .into_iter()
            .map(|(name, value)| value::Entry {
                name,
                value,
                line: None,
            })
            .collect();
        value::classify_set(&self.ctx(now), &entries)
    }

    /// An HTTP request header: `Authorization` (Bearer, Basic, token, AWS SigV4/SigV2),
    /// `x-api-key`, `private-token`, `x-vault-token`, `x-amz-security-token` and other
    /// secret-like names, or any header whose value has a known token pattern. Empty when the
    /// header holds no credential; two when a Basic user name is a token and the password a
    /// secret too.
    pub fn classify_header(&self, name: &str, value: &str, now: SystemTime) -> Vec<Credential> {
        header::classify(&self.ctx(now), name, value)
    }

    /// `kt1:` + the first 32 hex characters of HMAC-SHA256(key, secret).
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        fingerprint::fingerprint(&self.key, secret)
    }

    /// The short-lived threshold this classifier was made with.
    pub fn short_lived_threshold(&self) -> Duration {
        self.threshold
    }

    fn ctx(&self, now: SystemTime) -> Ctx<'_> {
        Ctx { c: self, now }
    }
}

/// What every parser needs: the classifier (key, threshold) and the current time.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    c: &'a Classifier,
    now: SystemTime,
}

impl Ctx<'_> {
    fn fp(&self, secret: impl AsRef<[u8]>) -> String {
        self.c.fingerprint(secret.as_ref())
    }

    /// A credential with a fingerprint of `secret`.
    fn cred(&self, kind: Kind, lifetime: Lifetime, secret: impl AsRef<[u8]>) -> Credential {
        Credential::new(kind, lifetime, self.fp(secret))
    }

    /// Lifetime from a validity window: no expiry is static; else the span from issue (or
    /// from now when the issue time is unknown) to expiry against the threshold.
    fn window(&self, issued: Option<SystemTime>, expires: Option<SystemTime>) -> Lifetime {
        let Some(expires) = expires else {
            return Lifetime::Static;
        };
        match expires.duration_since(issued.unwrap_or(self.now)) {
            Ok(span) if span > self.c.threshold => Lifetime::Static,
            _ => Lifetime::ShortLived,
        }
    }

    /// An AWS access key id seen without its secret (env AWS_ACCESS_KEY_ID, a SigV4 header, a
    /// key id in a config file). The id is public, so the fingerprint is of the id, prefixed so
    /// it can never equal the fingerprint of a secret; such uses are matched to the key pair
    /// by id (the agent matches aws_access_key and aws_session_credentials by id).
    fn aws_key_id(&self, key_id: &str) -> Credential {
        let (kind, lifetime) = if key_id.starts_with("ASIA") {
            (Kind::AwsSessionCredentials, Lifetime::ShortLived)
        } else {
            (Kind::AwsAccessKey, Lifetime::Static)
        };
        self.cred(kind, lifetime, format!("aws-key-id:{key_id}"))
            .with_id(key_id)
    }
}

/// Seconds since the epoch -> time, for the range that RFC 3339 can show (1970..=9999).
fn unix_time(secs: i64) -> Option<SystemTime> {
    const MAX: i64 = 253_402_300_799;
    if !(0..=MAX).contains(&secs) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Base64 engines that accept input with or without padding (files differ).
mod b64 {
    use base64::{
        alphabet,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };

    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);

    /// Standard alphabet, padding optional.
    pub(super) const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    /// URL-safe alphabet, padding optional (JWT parts).
    pub(super) const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

    /// Decodes standard base64, ignoring ASCII whitespace (PEM bodies, wrapped fields).
    pub(super) fn decode_ws(text: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        STANDARD.decode(compact).ok()
    }
}
