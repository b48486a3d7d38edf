//! Tests across formats: a corpus built at run time from obviously fake values (nothing
//! secret-looking is written in the source), with the expected kind, lifetime and id of every
//! item; the leak guard over every output; fingerprint equality across forms (file, env
//! value, header); and garbage that must give a reason, not a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use pkcs8::der::{Decode as _, Encode as _};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData as _, SanType};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::*;

// ---------------------------------------------------------------------------------------
// Test utilities, shared with the unit tests of the other files.

pub(crate) const NOW_SECS: i64 = 1_760_000_000;
pub(crate) const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS as u64)
}

pub(crate) fn classifier() -> Classifier {
    Classifier::new(
        b"unit-test-fingerprint-key",
        Duration::from_secs(DAY as u64),
    )
}

/// Deterministic pseudo-random text (xorshift64*): fake values made at run time.
pub(crate) fn fake(seed: u64, len: usize, alphabet: &str) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            chars[(r >> 33) as usize % chars.len()]
        })
        .collect()
}

/// The one credential of a value or header that must hold exactly one.
pub(crate) trait Only {
    fn only(self) -> Credential;
}

impl Only for Vec<Credential> {
    fn only(self) -> Credential {
        assert_eq!(self.len(), 1, "want exactly one credential: {self:?}");
        self.into_iter().next().unwrap()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64std(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A JWT with the given claims and a fake signature.
pub(crate) fn jwt(claims: serde_json::Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let body = claims.to_string();
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(body.as_bytes()),
        b64url(fake(body.len() as u64 + 77, 48, ALNUM).as_bytes())
    )
}

fn ssh_string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn ed25519_blob(public: &[u8; 32]) -> Vec<u8> {
    let mut blob = ssh_string(b"ssh-ed25519");
    blob.extend(ssh_string(public));
    blob
}

/// An `openssh-key-v1` structure with a fake ed25519 public key.
pub(crate) fn fake_openssh(public: &[u8; 32], private_filler: &[u8]) -> Vec<u8> {
    let mut v = b"openssh-key-v1\0".to_vec();
    v.extend(ssh_string(b"none"));
    v.extend(ssh_string(b"none"));
    v.extend(ssh_string(b""));
    v.extend(1u32.to_be_bytes());
    v.extend(ssh_string(&ed25519_blob(public)));
    v.extend(ssh_string(private_filler));
    v
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64std(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The base64 body of a PEM text without whitespace (what the leak guard looks for).
fn pem_body(pem_text: &str) -> String {
    pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

fn sha256_id(der: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(der)))
}

fn ssh_id(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// A self-signed test certificate (ECDSA P-256) valid from a minute before `now()`.
struct TestCert {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    key: KeyPair,
}

fn test_cert(cn: &str, validity: i64, uri: Option<&str>) -> TestCert {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Example, Org");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let start = time::OffsetDateTime::from_unix_timestamp(NOW_SECS - 60).unwrap();
    params.not_before = start;
    params.not_after = start + time::Duration::seconds(validity);
    params.serial_number = Some(vec![0x00, 0x8a, 0x01, 0x02].into());
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key,
    }
}

impl TestCert {
    fn spki_id(&self) -> String {
        sha256_id(&self.key.subject_public_key_info())
    }
}

/// Minimal DER writer for hand-built structures (independent of the code under test).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut c = bytes.to_vec();
    if c[0] & 0x80 != 0 {
        c.insert(0, 0);
    }
    tlv(0x02, &c)
}

/// A structurally valid (not mathematically valid) PKCS#1 RSA private key, and the
/// SubjectPublicKeyInfo DER it implies, both written by hand.
fn fake_rsa() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let n: Vec<u8> = fake(41, 128, ALNUM).bytes().map(|b| b | 0x80).collect();
    let e = vec![0x01, 0x00, 0x01];
    let other: Vec<u8> = fake(42, 64, ALNUM).into_bytes();
    let mut seq = der_uint(&[0]);
    for part in [&n, &e, &other, &other, &other, &other, &other, &other] {
        seq.extend(der_uint(part));
    }
    let pkcs1 = tlv(0x30, &seq);
    let mut public = der_uint(&n);
    public.extend(der_uint(&e));
    let rsa_public = tlv(0x30, &public);
    let alg = tlv(
        0x30,
        &[
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
            ][..],
            &[0x05, 0x00],
        ]
        .concat(),
    );
    let mut bits = vec![0u8];
    bits.extend(&rsa_public);
    let spki = tlv(0x30, &[alg.clone(), tlv(0x03, &bits)].concat());
    let pkcs8 = tlv(0x30, &[der_uint(&[0]), alg, tlv(0x04, &pkcs1)].concat());
    let mut ssh_blob = ssh_string(b"ssh-rsa");
    ssh_blob.extend(ssh_string(&e));
    ssh_blob.extend(ssh_string(&[&[0u8][..], &n].concat()));
    (pkcs1, pkcs8, spki, ssh_blob)
}

/// The SEC1 form of a PKCS#8 EC key (rcgen writes PKCS#8), with the curve added.
fn sec1_of(pkcs8_pem: &str) -> Vec<u8> {
    let der = pem::blocks(pkcs8_pem).remove(0).der.unwrap();
    let info = pkcs8::PrivateKeyInfoRef::from_der(&der).unwrap();
    let inner = sec1::EcPrivateKey::from_der(info.private_key.as_bytes()).unwrap();
    let curve: pkcs8::ObjectIdentifier = info.algorithm.parameters.unwrap().decode_as().unwrap();
    sec1::EcPrivateKey {
        private_key: inner.private_key,
        parameters: Some(sec1::EcParameters::NamedCurve(curve)),
        public_key: inner.public_key,
    }
    .to_der()
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// The corpus.

enum Input {
    File {
        path: String,
        hint: Option<&'static str>,
        content: Vec<u8>,
    },
    Value {
        name: Option<String>,
        value: String,
    },
    Header {
        name: String,
        value: String,
    },
    Env(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    kind: Kind,
    lifetime: Lifetime,
    id: Option<String>,
}

fn e(kind: Kind, lifetime: Lifetime, id: Option<&str>) -> Expect {
    Expect {
        kind,
        lifetime,
        id: id.map(str::to_string),
    }
}

struct Case {
    label: String,
    input: Input,
    /// Secret material that must never show in any output.
    secrets: Vec<String>,
    expect: Vec<Expect>,
}

fn file(label: &str, path: &str, content: impl Into<Vec<u8>>) -> Case {
    Case {
        label: label.to_string(),
        input: Input::File {
            path: path.to_string(),
            hint: None,
            content: content.into(),
        },
        secrets: Vec::new(),
        expect: Vec::new(),
    }
}

fn value(label: &str, name: Option<&str>, v: &str) -> Case {
    Case {
        label: label.to_string(),
        input: Input::Value {
            name: name.map(str::to_string),
            value: v.to_string(),
        },
        secrets: Vec::new(),
        expect: Vec::new(),
    }
}

fn header(label: &str, name: &str, v: &str) -> Case {
    Case {
        label: label.to_string(),
        input: Input::Header {
            name: name.to_string(),
            value: v.to_string(),
        },
        secrets: Vec::new(),
        expect: Vec::new(),
    }
}

impl Case {
    fn hint(mut self, h: &'static str) -> Self {
        if let Input::File { hint, .. } = &mut self.input {
            *hint = Some(h);
        }
        self
    }
    fn secret(mut self, s: impl Into<String>) -> Self {
        self.secrets.push(s.into());
        self
    }
    fn expect(mut self, x: Expect) -> Self {
        self.expect.push(x);
        self
    }
}

fn run(c: &Classifier, input: &Input) -> Result<Vec<Credential>, Skip> {
    match input {
        Input::File {
            path,
            hint,
            content,
        } => c.classify_file(content, path, *hint, now()),
        Input::Value { name, value } => Ok(c.classify_value(value, name.as_deref(), now())),
        Input::Header { name, value } => Ok(c.classify_header(name, value, now())),
        Input::Env(vars) => {
            Ok(c.classify_env(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())), now()))
        }
    }
}

/// Tokens of every prefix kind: (prefix, expected kind, lifetime, id).
fn prefixed_tokens() -> Vec<(String, String, Kind, Lifetime, Option<&'static str>)> {
    use Kind as K;
    use Lifetime::{ShortLived as S, Static as T, Unknown as U};
    let rows: [(&str, Kind, Lifetime, Option<&'static str>); 27] = [
        ("ghp_", K::GithubToken, T, Some("ghp")),
        ("github_pat_", K::GithubToken, T, Some("github_pat")),
        ("gho_", K::GithubToken, T, Some("gho")),
        ("ghu_", K::GithubToken, S, Some("ghu")),
        ("ghs_", K::GithubToken, S, Some("ghs")),
        ("ghr_", K::GithubToken, T, Some("ghr")),
        ("glpat-", K::GitlabToken, T, Some("glpat")),
        ("gldt-", K::GitlabToken, T, Some("gldt")),
        ("glrt-", K::GitlabToken, T, Some("glrt")),
        ("glcbt-", K::GitlabToken, S, Some("glcbt")),
        ("xoxb-", K::SlackToken, T, Some("xoxb")),
        ("xoxp-", K::SlackToken, T, Some("xoxp")),
        ("xapp-", K::SlackToken, T, Some("xapp")),
        ("xoxe.xoxb-", K::SlackToken, S, Some("xoxe.xoxb")),
        ("xoxe.xoxp-", K::SlackToken, S, Some("xoxe.xoxp")),
        ("sk_live_", K::StripeKey, T, Some("sk_live")),
        ("rk_live_", K::StripeKey, T, Some("rk_live")),
        ("sk_test_", K::StripeKey, T, Some("sk_test")),
        ("rk_test_", K::StripeKey, T, Some("rk_test")),
        ("hvs.", K::VaultToken, U, Some("hvs")),
        ("hvb.", K::VaultToken, U, Some("hvb")),
        ("pypi-AgEIcHlwaS5vcmc", K::PypiToken, T, None),
        ("sk-proj-", K::OpenaiKey, T, None),
        ("sk-svcacct-", K::OpenaiKey, T, None),
        ("sk-admin-", K::OpenaiKey, T, None),
        ("sk-ant-api03-", K::AnthropicKey, T, None),
        ("sk-ant-admin01-", K::AnthropicKey, T, None),
    ];
    let mut out: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, (p, k, l, id))| {
            let body = fake(1000 + i as u64, 40, ALNUM);
            (format!("{p}{body}"), body, *k, *l, *id)
        })
        .collect();
    let npm = fake(2000, 36, ALNUM);
    out.push((format!("npm_{npm}"), npm, K::NpmToken, T, None));
    let gcp = fake(2001, 35, ALNUM);
    out.push((format!("AIza{gcp}"), gcp, K::GcpApiKey, T, None));
    let legacy = fake(2002, 24, ALNUM);
    out.push((format!("s.{legacy}"), legacy, K::VaultToken, U, Some("s")));
    let (a, b) = (fake(2003, 20, ALNUM), fake(2004, 20, ALNUM));
    out.push((
        format!("sk-{a}T3BlbkFJ{b}"),
        format!("{a}T3BlbkFJ{b}"),
        K::OpenaiKey,
        T,
        None,
    ));
    let az = fake(2005, 34, ALNUM);
    out.push((format!("abc8Q~{az}"), az, K::AzureClientSecret, T, None));
    out
}

fn corpus() -> Vec<Case> {
    use Kind as K;
    use Lifetime::{ShortLived as Short, Static, Unknown};
    let mut cases = Vec::new();

    // AWS shared credentials: two profiles, one with a session token.
    let akia = format!("AKIA{}", fake(1, 16, B32));
    let asia = format!("ASIA{}", fake(2, 16, B32));
    let (s1, s2, tok) = (fake(3, 40, ALNUM), fake(4, 40, ALNUM), fake(5, 300, ALNUM));
    let aws = format!(
        "# comment\n[default]\naws_access_key_id = {akia}\naws_secret_access_key = {s1}\n\
         region = eu-west-1\n\n[temp]\n  # indented comment\naws_access_key_id={asia}\n\
         aws_secret_access_key={s2}\naws_session_token={tok}\n\n[profile ro]\nregion=us-east-1\n"
    );
    cases.push(
        file("aws credentials", "/home/dev/.aws/credentials", aws.clone())
            .secret(&s1)
            .secret(&s2)
            .secret(&tok)
            .expect(e(K::AwsAccessKey, Static, Some(&akia)))
            .expect(e(K::AwsSessionCredentials, Short, Some(&asia))),
    );
    cases.push(
        file("aws credentials sniffed", "/tmp/creds.ini", aws)
            .secret(&s1)
            .expect(e(K::AwsAccessKey, Static, Some(&akia)))
            .expect(e(K::AwsSessionCredentials, Short, Some(&asia))),
    );

    // GCP.
    let sa_key = test_cert("unused", DAY, None);
    let kid = fake(6, 40, "0123456789abcdef");
    let sa = json!({
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": kid,
        "private_key": sa_key.key_pem,
        "client_email": "ci@demo.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token"
    });
    cases.push(
        file("gcp service account", "/secrets/sa.json", sa.to_string())
            .secret(pem_body(&sa_key.key_pem))
            .expect(e(
                K::GcpServiceAccountKey,
                Static,
                Some(&format!("ci@demo.iam.gserviceaccount.com/{kid}")),
            )),
    );
    let audience =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q";
    let ext = json!({
        "type": "external_account",
        "audience": audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"file": "/var/run/secrets/tokens/gcp-ksa/token"}
    });
    cases.push(
        file(
            "gcp external account",
            "/etc/gcp/cred.json",
            ext.to_string(),
        )
        .expect(e(K::GcpExternalAccount, Short, Some(audience))),
    );
    let refresh = fake(7, 60, ALNUM);
    cases.push(
        file(
            "gcloud user credentials",
            "/root/.config/gcloud/application_default_credentials.json",
            json!({"type": "authorized_user", "client_id": "c", "client_secret": "d", "refresh_token": refresh}).to_string(),
        )
        .secret(&refresh)
        .expect(e(K::GenericSecret, Unknown, None)),
    );

    // Kubeconfig with every user form.
    let kc_cert = test_cert("admin", HOUR, None);
    let n = NOW_SECS;
    let bound = jwt(json!({
        "aud": ["https://kubernetes.default.svc"], "iat": n, "exp": n + 365 * DAY,
        "iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ci:deployer",
        "kubernetes.io": {"namespace": "ci", "pod": {"name": "p", "uid": "u"},
                          "serviceaccount": {"name": "deployer", "uid": "v"}, "warnafter": n + 3607}
    }));
    let kc_password = fake(8, 24, ALNUM);
    let opaque = fake(9, 40, ALNUM);
    let lower_digits = "abcdefghijklmnopqrstuvwxyz0123456789";
    let bootstrap = format!(
        "{}.{}",
        fake(64, 6, lower_digits),
        fake(65, 16, lower_digits)
    );
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://k8s.example.com:6443\n    certificate-authority-data: {ca}\n\
         - name: dev\n  cluster:\n    server: https://dev.example.com\n\
         contexts:\n- name: prod-admin\n  context: {{cluster: prod, user: admin}}\n- name: dev-ci\n  context: {{cluster: dev, user: ci}}\n\
         - name: dev-basic\n  context: {{cluster: dev, user: basic}}\n- name: prod-eks\n  context: {{cluster: prod, user: eks}}\n\
         current-context: prod-admin\nusers:\n\
         - name: admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n\
         - name: ci\n  user:\n    token: {bound}\n\
         - name: basic\n  user:\n    username: bob\n    password: \"{kc_password}\"\n\
         - name: eks\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token, --cluster-name, prod]\n\
         - name: opaque\n  user:\n    token: {opaque}\n\
         - name: bootstrap\n  user:\n    token: {bootstrap}\n\
         - name: gke\n  user:\n    auth-provider:\n      name: gcp\n",
        ca = b64std(kc_cert.cert_pem.as_bytes()),
        cert = b64std(kc_cert.cert_pem.as_bytes()),
        key = b64std(kc_cert.key_pem.as_bytes()),
    );
    cases.push(
        file("kubeconfig", "/home/dev/.kube/config", kubeconfig.clone())
            .secret(pem_body(&kc_cert.key_pem))
            .secret(b64std(kc_cert.key_pem.as_bytes()))
            .secret(&bound)
            .secret(&kc_password)
            .secret(&opaque)
            .secret(&bootstrap)
            .expect(e(
                K::Kubeconfig,
                Short,
                Some("https://k8s.example.com:6443 admin"),
            ))
            .expect(e(K::Kubeconfig, Short, Some("https://dev.example.com ci")))
            .expect(e(
                K::Kubeconfig,
                Static,
                Some("https://dev.example.com basic"),
            ))
            .expect(e(
                K::Kubeconfig,
                Short,
                Some("https://k8s.example.com:6443 eks"),
            ))
            .expect(e(K::Kubeconfig, Static, Some("opaque")))
            .expect(e(K::Kubeconfig, Unknown, Some("bootstrap")))
            .expect(e(K::Kubeconfig, Short, Some("gke"))),
    );
    cases.push(
        file("kubeconfig sniffed", "/tmp/admin.conf", kubeconfig)
            .secret(&kc_password)
            .expect(e(
                K::Kubeconfig,
                Short,
                Some("https://k8s.example.com:6443 admin"),
            ))
            .expect(e(K::Kubeconfig, Short, Some("https://dev.example.com ci")))
            .expect(e(
                K::Kubeconfig,
                Static,
                Some("https://dev.example.com basic"),
            ))
            .expect(e(
                K::Kubeconfig,
                Short,
                Some("https://k8s.example.com:6443 eks"),
            ))
            .expect(e(K::Kubeconfig, Static, Some("opaque")))
            .expect(e(K::Kubeconfig, Unknown, Some("bootstrap")))
            .expect(e(K::Kubeconfig, Short, Some("gke"))),
    );

    // Certificates and keys.
    let long = test_cert("api.example.com", 2 * 365 * DAY, None);
    let cert_id = "subject=CN=api.example.com,O=Example\\, Org serial=8a0102";
    cases.push(
        file(
            "long cert + key",
            "/etc/ssl/private/api.pem",
            format!("{}{}", long.cert_pem, long.key_pem),
        )
        .secret(pem_body(&long.key_pem))
        .expect(e(K::X509Certificate, Static, Some(cert_id)))
        .expect(e(K::X509PrivateKey, Static, Some(&long.spki_id()))),
    );
    let short = test_cert("short.example.com", HOUR, None);
    cases.push(
        file(
            "key + short cert",
            "/run/certs/tls.pem",
            format!("{}{}", short.key_pem, short.cert_pem),
        )
        .secret(pem_body(&short.key_pem))
        .expect(e(K::X509PrivateKey, Short, Some(&short.spki_id())))
        .expect(e(
            K::X509Certificate,
            Short,
            Some("subject=CN=short.example.com,O=Example\\, Org serial=8a0102"),
        )),
    );
    let svid = test_cert(
        "svid",
        365 * DAY,
        Some("spiffe://example.org/ns/shop/sa/cart"),
    );
    cases.push(
        file(
            "spiffe svid",
            "/run/spire/svid.pem",
            format!("{}{}", svid.cert_pem, svid.key_pem),
        )
        .secret(pem_body(&svid.key_pem))
        .expect(e(
            K::SpiffeSvid,
            Short,
            Some("spiffe://example.org/ns/shop/sa/cart"),
        ))
        .expect(e(K::X509PrivateKey, Short, Some(&svid.spki_id()))),
    );
    cases.push(
        file("pkcs8 key alone", "/srv/key.pem", long.key_pem.clone())
            .secret(pem_body(&long.key_pem))
            .expect(e(K::X509PrivateKey, Static, Some(&long.spki_id()))),
    );
    cases.push(
        file("der cert", "/etc/x/cert.der", long.cert_der.clone()).expect(e(
            K::X509Certificate,
            Static,
            Some(cert_id),
        )),
    );
    let sec1 = pem("EC PRIVATE KEY", &sec1_of(&long.key_pem));
    cases.push(
        file("sec1 key", "/srv/ec.key", sec1.clone())
            .secret(pem_body(&sec1))
            .expect(e(K::X509PrivateKey, Static, Some(&long.spki_id()))),
    );
    let (pkcs1, pkcs8_rsa, rsa_spki, rsa_blob) = fake_rsa();
    let rsa_pem = pem("RSA PRIVATE KEY", &pkcs1);
    cases.push(
        file("rsa pkcs1 key", "/srv/rsa.key", rsa_pem.clone())
            .secret(pem_body(&rsa_pem))
            .expect(e(K::X509PrivateKey, Static, Some(&sha256_id(&rsa_spki)))),
    );
    let rsa8_pem = pem("PRIVATE KEY", &pkcs8_rsa);
    cases.push(
        file("rsa pkcs8 key", "/srv/rsa8.key", rsa8_pem.clone())
            .secret(pem_body(&rsa8_pem))
            .expect(e(K::X509PrivateKey, Static, Some(&sha256_id(&rsa_spki)))),
    );
    cases.push(
        file(
            "rsa key in ~/.ssh",
            "/home/dev/.ssh/id_rsa",
            rsa_pem.clone(),
        )
        .secret(pem_body(&rsa_pem))
        .expect(e(K::SshPrivateKey, Static, Some(&ssh_id(&rsa_blob)))),
    );
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_pem = ed.serialize_pem();
    cases.push(
        file("ed25519 pkcs8 v2", "/srv/ed.pem", ed_pem.clone())
            .secret(pem_body(&ed_pem))
            .expect(e(
                K::X509PrivateKey,
                Static,
                Some(&sha256_id(&ed.subject_public_key_info())),
            )),
    );
    let mut ec_blob = ssh_string(b"ecdsa-sha2-nistp256");
    ec_blob.extend(ssh_string(b"nistp256"));
    ec_blob.extend(ssh_string(long.key.der_bytes()));
    cases.push(
        file("ec key in ~/.ssh", "/root/.ssh/id_ecdsa", sec1.clone())
            .secret(pem_body(&sec1))
            .expect(e(K::SshPrivateKey, Static, Some(&ssh_id(&ec_blob)))),
    );
    let enc = pem("ENCRYPTED PRIVATE KEY", fake(10, 300, ALNUM).as_bytes());
    cases.push(
        file("encrypted pkcs8", "/srv/enc.key", enc.clone())
            .secret(pem_body(&enc))
            .expect(e(K::X509PrivateKey, Static, None)),
    );
    let legacy_enc = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\n{}\n-----END RSA PRIVATE KEY-----\n",
        b64std(fake(11, 120, ALNUM).as_bytes())
    );
    cases.push(
        file("legacy encrypted rsa", "/srv/old.key", legacy_enc.clone())
            .secret(
                pem_body(&legacy_enc)
                    .replace("Proc-Type: 4,ENCRYPTEDDEK-Info: AES-128-CBC,00FF", ""),
            )
            .expect(e(K::X509PrivateKey, Static, None)),
    );
    let ed_pub: [u8; 32] = Sha256::digest(b"fake public key").into();
    let openssh = pem(
        "OPENSSH PRIVATE KEY",
        &fake_openssh(&ed_pub, fake(12, 64, ALNUM).as_bytes()),
    );
    let openssh_id = ssh_id(&ed25519_blob(&ed_pub));
    cases.push(
        file("openssh key", "/home/dev/.ssh/id_ed25519", openssh.clone())
            .secret(pem_body(&openssh))
            .expect(e(K::SshPrivateKey, Static, Some(&openssh_id))),
    );
    cases.push(
        file("openssh key anywhere", "/backup/deploy_key", openssh).expect(e(
            K::SshPrivateKey,
            Static,
            Some(&openssh_id),
        )),
    );
    cases.push(file(
        "public key only",
        "/srv/pub.pem",
        long.key.public_key_pem(),
    ));
    let mut pfx = vec![
        0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
        0x01, 0x07, 0x01, 0xa0, 0x80, 0x00,
    ];
    pfx.extend(fake(13, 200, ALNUM).bytes());
    cases.push(file("pkcs12", "/certs/client.p12", pfx).expect(e(
        K::X509PrivateKey,
        Unknown,
        None,
    )));

    // JWT files.
    cases.push(
        file(
            "projected sa token",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            bound.clone(),
        )
        .secret(&bound)
        .expect(e(
            K::K8sSaTokenBound,
            Short,
            Some("system:serviceaccount:ci:deployer"),
        )),
    );
    let legacy = jwt(json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "kube-system",
        "kubernetes.io/serviceaccount/secret.name": "builder-token-x1",
        "kubernetes.io/serviceaccount/service-account.name": "builder",
        "kubernetes.io/serviceaccount/service-account.uid": "u",
        "sub": "system:serviceaccount:kube-system:builder"
    }));
    cases.push(
        file(
            "legacy sa token",
            "/var/run/secrets/legacy/token",
            format!("{legacy}\n"),
        )
        .secret(&legacy)
        .expect(e(K::K8sSaTokenLegacy, Static, Some("kube-system/builder"))),
    );
    let web = jwt(
        json!({"aud": ["sts.amazonaws.com"], "sub": "system:serviceaccount:a:b", "iat": n, "exp": n + DAY}),
    );
    cases.push(
        file(
            "eks web identity",
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            web.clone(),
        )
        .hint("AWS_WEB_IDENTITY_TOKEN_FILE")
        .secret(&web)
        .expect(e(
            K::AwsWebIdentityToken,
            Short,
            Some("system:serviceaccount:a:b"),
        )),
    );
    let az = jwt(
        json!({"aud": ["api://AzureADTokenExchange"], "sub": "system:serviceaccount:x:y", "iat": n, "exp": n + HOUR}),
    );
    cases.push(
        file(
            "azure federated",
            "/var/run/secrets/azure/tokens/azure-identity-token",
            az.clone(),
        )
        .hint("AZURE_FEDERATED_TOKEN_FILE")
        .secret(&az)
        .expect(e(
            K::AzureFederatedToken,
            Short,
            Some("system:serviceaccount:x:y"),
        )),
    );
    let plain =
        jwt(json!({"iss": "https://idp.example", "sub": "robot", "iat": n, "exp": n + 2 * DAY}));
    cases.push(
        file("plain jwt hinted azure", "/tmp/t", plain.clone())
            .hint("AZURE_FEDERATED_TOKEN_FILE")
            .secret(&plain)
            .expect(e(K::AzureFederatedToken, Short, Some("robot"))),
    );
    cases.push(
        file("plain jwt", "/tmp/t", plain.clone())
            .secret(&plain)
            .expect(e(K::Jwt, Static, Some("https://idp.example robot"))),
    );
    let no_exp = jwt(json!({"iss": "https://idp.example", "sub": "forever"}));
    cases.push(
        file("jwt without exp", "/tmp/t2", no_exp.clone())
            .secret(&no_exp)
            .expect(e(K::Jwt, Static, Some("https://idp.example forever"))),
    );
    let svid_jwt =
        jwt(json!({"sub": "spiffe://example.org/w", "aud": ["db"], "iat": n, "exp": n + 300}));
    cases.push(
        file("jwt svid", "/run/spire/jwt", svid_jwt.clone())
            .secret(&svid_jwt)
            .expect(e(K::SpiffeSvid, Short, Some("spiffe://example.org/w"))),
    );

    // Docker.
    let docker_pw = fake(14, 30, ALNUM);
    let identity = fake(15, 80, ALNUM);
    let docker = json!({
        "auths": {
            "registry.example.com": {"auth": b64std(format!("ci-bot:{docker_pw}").as_bytes())},
            "https://index.docker.io/v1/": {"auth": b64std(b"00000000-0000-0000-0000-000000000000:"), "identitytoken": identity},
            "ghcr.io": {}
        },
        "credHelpers": {"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"}
    });
    cases.push(
        file(
            "docker config",
            "/home/dev/.docker/config.json",
            docker.to_string(),
        )
        .secret(&docker_pw)
        .secret(&identity)
        .secret(b64std(format!("ci-bot:{docker_pw}").as_bytes()))
        .expect(e(
            K::DockerAuth,
            Static,
            Some("index.docker.io 00000000-0000-0000-0000-000000000000"),
        ))
        .expect(e(
            K::DockerAuth,
            Static,
            Some("registry.example.com ci-bot"),
        )),
    );
    cases.push(file(
        "docker creds store only",
        "/home/dev/.docker/config.json",
        json!({"credsStore": "desktop", "auths": {"registry.example.com": {}}}).to_string(),
    ));
    cases.push(file(
        "docker creds store, no auths",
        "/home/dev/.docker/config.json",
        json!({"credsStore": "osxkeychain"}).to_string(),
    ));

    // Line files.
    let (pg1, pg2) = (fake(16, 20, ALNUM), fake(17, 20, ALNUM));
    cases.push(
        file(
            "pgpass",
            "/home/dev/.pgpass",
            format!("# host:port:db:user:password\ndb.internal:5432:shop:app:{pg1}\n*:*:*:report:{pg2}\\:x\n\nbad line\n"),
        )
        .secret(&pg1)
        .secret(&pg2)
        .expect(e(K::Pgpass, Static, Some("db.internal app")))
        .expect(e(K::Pgpass, Static, Some("* report"))),
    );
    let (nr1, nr2) = (fake(18, 20, ALNUM), fake(19, 20, ALNUM));
    let netrc = format!(
        "machine api.example.com\n  login bot\n  password {nr1}\nmachine nopass.example.com login x\n\
         macdef init\ncd /pub\npassword notreal\n\ndefault login anon password {nr2}\n"
    );
    cases.push(
        file("netrc", "/home/dev/.netrc", netrc.clone())
            .secret(&nr1)
            .secret(&nr2)
            .expect(e(K::Netrc, Static, Some("api.example.com bot")))
            .expect(e(K::Netrc, Static, Some("default anon"))),
    );
    cases.push(
        file("netrc sniffed", "/tmp/n", netrc)
            .expect(e(K::Netrc, Static, Some("api.example.com bot")))
            .expect(e(K::Netrc, Static, Some("default anon"))),
    );
    let ghs = format!("ghs_{}", fake(20, 36, ALNUM));
    let gitpw = fake(21, 20, ALNUM);
    let gitcreds = format!(
        "https://x-access-token:{ghs}@github.com\nhttps://alice:{gitpw}@git.example.com/team\n"
    );
    cases.push(
        file(
            "git credentials",
            "/home/dev/.git-credentials",
            gitcreds.clone(),
        )
        .secret(&ghs[4..])
        .secret(&gitpw)
        .expect(e(
            K::GitCredentials,
            Short,
            Some("github.com x-access-token"),
        ))
        .expect(e(K::GitCredentials, Static, Some("git.example.com alice"))),
    );
    cases.push(
        file("git credentials sniffed", "/tmp/gc", gitcreds)
            .expect(e(
                K::GitCredentials,
                Short,
                Some("github.com x-access-token"),
            ))
            .expect(e(K::GitCredentials, Static, Some("git.example.com alice"))),
    );
    let npm = format!("npm_{}", fake(22, 36, ALNUM));
    cases.push(
        file(
            "npmrc",
            "/home/dev/.npmrc",
            format!("registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken={npm}\n//npm.pkg.github.com/:_authToken=${{GH_TOKEN}}\n"),
        )
        .secret(&npm[4..])
        .expect(e(K::NpmToken, Static, None)),
    );
    let pypi = format!("pypi-AgEIcHlwaS5vcmc{}", fake(23, 60, ALNUM));
    cases.push(
        file(
            "pypirc",
            "/home/dev/.pypirc",
            format!("[distutils]\nindex-servers =\n  pypi\n\n[pypi]\nusername = __token__\npassword = {pypi}\n"),
        )
        .secret(&pypi[20..])
        .expect(e(K::PypiToken, Static, None)),
    );
    let hvs = format!("hvs.{}", fake(24, 90, ALNUM));
    cases.push(
        file("vault token", "/root/.vault-token", hvs.clone())
            .secret(&hvs[4..])
            .expect(e(K::VaultToken, Unknown, Some("hvs"))),
    );

    // .env with mixed entries.
    let dbpw = fake(25, 20, ALNUM);
    let ghp = format!("ghp_{}", fake(26, 36, ALNUM));
    let (env_akia, env_secret) = (format!("AKIA{}", fake(27, 16, B32)), fake(28, 40, ALNUM));
    let app_pw = fake(29, 18, ALNUM);
    let azure_secret = fake(30, 40, ALNUM);
    let dotenv = format!(
        "# app\nPORT=8080\nLOG_LEVEL=debug\nexport DB_PASSWORD=\"{app_pw}\"\nFEATURE_AUTH_ENABLED=true\n\
         GITHUB_TOKEN={ghp}\nDATABASE_URL=postgres://app:{dbpw}@db.internal:5432/shop\nREDIS_URL=redis://cache:6379\n\
         AWS_ACCESS_KEY_ID={env_akia}\nAWS_SECRET_ACCESS_KEY='{env_secret}'\nAPI_URL=https://api.example.com\n\
         AZURE_CLIENT_ID=11111111-2222-3333-4444-555555555555\nAZURE_CLIENT_SECRET={azure_secret}\nSSL_KEY_FILE=/etc/key.pem\n"
    );
    cases.push(
        file(".env", "/srv/app/.env", dotenv.clone())
            .secret(&dbpw)
            .secret(&ghp[4..])
            .secret(&env_secret)
            .secret(&app_pw)
            .secret(&azure_secret)
            .expect(e(K::AwsAccessKey, Static, Some(&env_akia)))
            .expect(e(
                K::AzureClientSecret,
                Static,
                Some("11111111-2222-3333-4444-555555555555"),
            ))
            .expect(e(K::GenericSecret, Unknown, None))
            .expect(e(K::GithubToken, Static, Some("ghp")))
            .expect(e(
                K::DatabaseUrl,
                Static,
                Some("postgres://app@db.internal:5432"),
            )),
    );
    cases.push(
        file("env file sniffed", "/vault/secrets/app", dotenv)
            .expect(e(K::AwsAccessKey, Static, Some(&env_akia)))
            .expect(e(
                K::AzureClientSecret,
                Static,
                Some("11111111-2222-3333-4444-555555555555"),
            ))
            .expect(e(K::GenericSecret, Unknown, None))
            .expect(e(K::GithubToken, Static, Some("ghp")))
            .expect(e(
                K::DatabaseUrl,
                Static,
                Some("postgres://app@db.internal:5432"),
            )),
    );

    // Single-value secret mounts and token scan.
    let mounted = fake(31, 24, ALNUM);
    cases.push(
        file(
            "secret mount by name",
            "/run/secrets/db_password",
            format!("{mounted}\n"),
        )
        .secret(&mounted)
        .expect(e(K::GenericSecret, Unknown, None)),
    );
    cases.push(file(
        "namespace file",
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
        "default",
    ));
    let gho = format!("gho_{}", fake(32, 36, ALNUM));
    cases.push(
        file(
            "gh hosts",
            "/home/dev/.config/gh/hosts.yml",
            format!(
                "github.com:\n    user: dev\n    oauth_token: {gho}\n    git_protocol: https\n"
            ),
        )
        .secret(&gho[4..])
        .expect(e(K::GithubToken, Static, Some("gho"))),
    );

    // Every token prefix: as a value, in a header, in a file.
    for (i, (token, body, kind, lifetime, id)) in prefixed_tokens().into_iter().enumerate() {
        cases.push(
            value(&format!("token value {i}"), None, &token)
                .secret(&body)
                .expect(e(kind, lifetime, id)),
        );
        cases.push(
            header(
                &format!("bearer {i}"),
                "Authorization",
                &format!("Bearer {token}"),
            )
            .secret(&body)
            .expect(e(kind, lifetime, id)),
        );
        cases.push(
            file(
                &format!("token file {i}"),
                "/var/run/secrets/app/api",
                format!("{token}\n"),
            )
            .secret(&body)
            .expect(e(kind, lifetime, id)),
        );
    }

    // Env values by name.
    let id_only = format!("AKIA{}", fake(33, 16, B32));
    cases.push(
        value("env key id", Some("AWS_ACCESS_KEY_ID"), &id_only).expect(e(
            K::AwsAccessKey,
            Static,
            Some(&id_only),
        )),
    );
    let sk = fake(34, 40, ALNUM);
    cases.push(
        value("env secret key", Some("AWS_SECRET_ACCESS_KEY"), &sk)
            .secret(&sk)
            .expect(e(K::AwsAccessKey, Static, None)),
    );
    let st = fake(35, 200, ALNUM);
    cases.push(
        value("env session token", Some("AWS_SESSION_TOKEN"), &st)
            .secret(&st)
            .expect(e(K::AwsSessionCredentials, Short, None)),
    );
    let acs = fake(36, 40, ALNUM);
    cases.push(
        value("env azure secret", Some("AZURE_CLIENT_SECRET"), &acs)
            .secret(&acs)
            .expect(e(K::AzureClientSecret, Static, None)),
    );
    let upw = fake(37, 16, ALNUM);
    cases.push(
        value(
            "env database url",
            Some("DATABASE_URL"),
            &format!("mysql://root:{upw}@mysql.internal/app"),
        )
        .secret(&upw)
        .expect(e(
            K::DatabaseUrl,
            Static,
            Some("mysql://root@mysql.internal"),
        )),
    );
    cases.push(value(
        "env database url no password",
        Some("DATABASE_URL"),
        "postgres://app@db/x",
    ));
    cases.push(value(
        "env path",
        Some("GOOGLE_APPLICATION_CREDENTIALS"),
        "/secrets/sa.json",
    ));
    cases.push(value("env plain", Some("LOG_LEVEL"), "debug"));
    cases.push(value(
        "env plain long",
        Some("HOSTNAME"),
        &fake(38, 30, ALNUM),
    ));
    let opaque_gh = fake(39, 30, ALNUM);
    cases.push(
        value("env github opaque", Some("GITHUB_TOKEN"), &opaque_gh)
            .secret(&opaque_gh)
            .expect(e(K::GithubToken, Unknown, None)),
    );
    let generic = fake(40, 24, ALNUM);
    cases.push(
        value("env generic", Some("PAYMENTS_WEBHOOK_SECRET"), &generic)
            .secret(&generic)
            .expect(e(K::GenericSecret, Unknown, None)),
    );
    let env_jwt =
        jwt(json!({"iss": "https://idp.example", "sub": "svc", "iat": n, "exp": n + 600}));
    cases.push(
        value("env jwt under plain name", Some("UPSTREAM"), &env_jwt)
            .secret(&env_jwt)
            .expect(e(K::Jwt, Short, Some("https://idp.example svc"))),
    );
    let env_pem = long.key_pem.replace('\n', "\\n");
    cases.push(
        value("env pem", Some("TLS_PRIVATE_KEY"), &env_pem)
            .secret(pem_body(&long.key_pem))
            .expect(e(K::X509PrivateKey, Static, Some(&long.spki_id()))),
    );
    cases.push(
        value("env gcp json", Some("GOOGLE_CREDENTIALS"), &sa.to_string())
            .secret(pem_body(&sa_key.key_pem))
            .expect(e(
                K::GcpServiceAccountKey,
                Static,
                Some(&format!("ci@demo.iam.gserviceaccount.com/{kid}")),
            )),
    );
    let env_set = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), asia.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), s2.clone()),
        ("AWS_SESSION_TOKEN".to_string(), tok.clone()),
        (
            "AWS_CREDENTIAL_EXPIRATION".to_string(),
            "2025-10-09T10:00:00Z".to_string(),
        ),
        ("HOME".to_string(), "/root".to_string()),
    ];
    cases.push(Case {
        label: "env set".into(),
        input: Input::Env(env_set),
        secrets: vec![s2.clone(), tok.clone()],
        expect: vec![e(K::AwsSessionCredentials, Short, Some(&asia))],
    });

    // Headers.
    let basic_pw = fake(41, 20, ALNUM);
    cases.push(
        header(
            "basic",
            "authorization",
            &format!("Basic {}", b64std(format!("bot:{basic_pw}").as_bytes())),
        )
        .secret(&basic_pw)
        .expect(e(K::GenericSecret, Unknown, Some("bot"))),
    );
    let sigv4 = format!(
        "AWS4-HMAC-SHA256 Credential={akia}/20251009/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        fake(42, 64, "0123456789abcdef")
    );
    cases.push(header("sigv4", "Authorization", &sigv4).expect(e(
        K::AwsAccessKey,
        Static,
        Some(&akia),
    )));
    cases.push(
        header(
            "sigv4 session",
            "Authorization",
            &sigv4.replace(&akia, &asia),
        )
        .expect(e(K::AwsSessionCredentials, Short, Some(&asia))),
    );
    cases.push(
        header("amz security token", "X-Amz-Security-Token", &tok)
            .secret(&tok)
            .expect(e(K::AwsSessionCredentials, Short, None)),
    );
    let opaque_bearer = fake(43, 40, ALNUM);
    cases.push(
        header(
            "opaque bearer",
            "Authorization",
            &format!("Bearer {opaque_bearer}"),
        )
        .secret(&opaque_bearer)
        .expect(e(K::GenericSecret, Unknown, None)),
    );
    let vault_legacy = fake(44, 30, ALNUM);
    cases.push(
        header("vault header", "X-Vault-Token", &vault_legacy)
            .secret(&vault_legacy)
            .expect(e(K::VaultToken, Unknown, None)),
    );
    let apikey = fake(45, 32, ALNUM);
    cases.push(
        header("x-api-key", "x-api-key", &apikey)
            .secret(&apikey)
            .expect(e(K::GenericSecret, Unknown, None)),
    );
    cases.push(header("accept", "Accept", "application/json"));
    cases.push(header(
        "cookie",
        "Cookie",
        &format!("session={}", fake(46, 30, ALNUM)),
    ));
    cases.push(header("csrf", "X-CSRF-Token", &fake(47, 30, ALNUM)));

    // A user name that is itself the credential (tokens and API keys sent as the user name
    // with a placeholder or empty password, or next to a real password): classified as what
    // it is, never part of an id; a placeholder password is no credential.
    let user_ghp = format!("ghp_{}", fake(60, 36, ALNUM));
    let user_key = fake(61, 32, ALNUM);
    let user_pw = fake(62, 24, ALNUM);
    let user_glpat = format!("glpat-{}", fake(63, 20, ALNUM));
    let userpass = |u: &str, p: &str| b64std(format!("{u}:{p}").as_bytes());
    cases.push(
        header(
            "basic: token user, x-oauth-basic",
            "Authorization",
            &format!("Basic {}", userpass(&user_ghp, "x-oauth-basic")),
        )
        .secret(&user_ghp[4..])
        .expect(e(K::GithubToken, Static, Some("ghp"))),
    );
    cases.push(
        header(
            "basic: key user, X",
            "Authorization",
            &format!("Basic {}", userpass(&user_key, "X")),
        )
        .secret(&user_key)
        .expect(e(K::GenericSecret, Unknown, None)),
    );
    cases.push(
        header(
            "basic: token user, empty password",
            "Proxy-Authorization",
            &format!("Basic {}", userpass(&user_ghp, "")),
        )
        .secret(&user_ghp[4..])
        .expect(e(K::GithubToken, Static, Some("ghp"))),
    );
    cases.push(
        header(
            "basic: token user and a password",
            "Authorization",
            &format!("Basic {}", userpass(&user_ghp, &user_pw)),
        )
        .secret(&user_ghp[4..])
        .secret(&user_pw)
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::GenericSecret, Unknown, None)),
    );
    cases.push(
        file(
            "netrc: token logins",
            "/home/dev/.netrc",
            format!(
                "machine github.com login {user_ghp} password x-oauth-basic\n\
                 machine api.example.com\n  login {user_key}\n  password {user_pw}\n\
                 machine gitlab.example.com login {user_glpat}\n"
            ),
        )
        .secret(&user_ghp[4..])
        .secret(&user_key)
        .secret(&user_pw)
        .secret(&user_glpat[6..])
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::Netrc, Static, Some("api.example.com")))
        .expect(e(K::Netrc, Static, Some("api.example.com")))
        .expect(e(K::GitlabToken, Static, Some("glpat"))),
    );
    let token_gitcreds = format!(
        "https://{user_ghp}:x-oauth-basic@github.com\nhttps://{user_ghp}@github.com/org\n\
         https://{user_key}@git.example.com\n"
    );
    cases.push(
        file(
            "git credentials: token users",
            "/home/dev/.git-credentials",
            token_gitcreds.clone(),
        )
        .secret(&user_ghp[4..])
        .secret(&user_key)
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::GitCredentials, Static, Some("git.example.com"))),
    );
    cases.push(
        file(
            "git credentials: token users sniffed",
            "/tmp/gc2",
            token_gitcreds,
        )
        .secret(&user_ghp[4..])
        .secret(&user_key)
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::GitCredentials, Static, Some("git.example.com"))),
    );
    cases.push(
        file(
            "pgpass: token users",
            "/home/dev/.pgpass",
            format!("db.internal:5432:*:{user_key}:x\n*:*:*:{user_glpat}:{user_pw}\n"),
        )
        .secret(&user_key)
        .secret(&user_glpat[6..])
        .secret(&user_pw)
        .expect(e(K::Pgpass, Static, Some("db.internal")))
        .expect(e(K::GitlabToken, Static, Some("glpat")))
        .expect(e(K::Pgpass, Static, Some("*"))),
    );
    cases.push(
        file(
            "docker: token users",
            "/home/dev/.docker/config.json",
            json!({"auths": {
                "ghcr.io": {"auth": userpass(&user_ghp, "")},
                "registry.example.com": {"auth": userpass(&user_key, "x")}
            }})
            .to_string(),
        )
        .secret(&user_ghp[4..])
        .secret(&user_key)
        .secret(userpass(&user_ghp, ""))
        .secret(userpass(&user_key, "x"))
        .expect(e(K::GithubToken, Static, Some("ghp")))
        .expect(e(K::DockerAuth, Static, Some("registry.example.com"))),
    );
    cases.push(
        value(
            "database url: key user",
            Some("DATABASE_URL"),
            &format!("postgres://{user_key}@db.internal:5432/app"),
        )
        .secret(&user_key)
        .expect(e(
            K::DatabaseUrl,
            Static,
            Some("postgres://db.internal:5432"),
        )),
    );
    cases.push(
        value(
            "database url: key user, x",
            Some("DATABASE_URL"),
            &format!("postgresql://{user_key}:x@db.internal/app"),
        )
        .secret(&user_key)
        .expect(e(K::DatabaseUrl, Static, Some("postgresql://db.internal"))),
    );
    cases.push(Case {
        label: "database url: token user and a password".into(),
        input: Input::Env(vec![(
            "DATABASE_URL".to_string(),
            format!("postgres://{user_ghp}:{user_pw}@db.internal/app"),
        )]),
        secrets: vec![user_ghp[4..].to_string(), user_pw.clone()],
        expect: vec![
            e(K::GithubToken, Static, Some("ghp")),
            e(K::DatabaseUrl, Static, Some("postgres://db.internal")),
        ],
    });
    cases
}

// ---------------------------------------------------------------------------------------
// Tests over the corpus.

#[test]
fn corpus_kinds_lifetimes_and_ids() {
    let c = classifier();
    let mut failures = Vec::new();
    for case in corpus() {
        let got: Vec<Expect> = match run(&c, &case.input) {
            Ok(creds) => creds
                .iter()
                .map(|c| Expect {
                    kind: c.kind,
                    lifetime: c.lifetime,
                    id: c.id.clone(),
                })
                .collect(),
            Err(skip) => {
                if !case.expect.is_empty() {
                    failures.push(format!("{}: skipped: {skip}", case.label));
                }
                continue;
            }
        };
        if got != case.expect {
            failures.push(format!(
                "{}:\n   got {got:?}\n  want {:?}",
                case.label, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_covers_every_kind() {
    let c = classifier();
    let mut seen: Vec<Kind> = Vec::new();
    for case in corpus() {
        if let Ok(creds) = run(&c, &case.input) {
            seen.extend(creds.iter().map(|c| c.kind));
        }
    }
    let missing: Vec<_> = Kind::ALL
        .iter()
        .filter(|k| **k != Kind::Unknown && !seen.contains(k))
        .collect();
    assert!(missing.is_empty(), "kinds never produced: {missing:?}");
}

/// No output (JSON, Debug, Display, skip reason) holds any 8 characters of a secret.
#[test]
fn leak_guard() {
    let c = classifier();
    let mut checked = 0;
    for case in corpus() {
        let outputs: Vec<String> = match run(&c, &case.input) {
            Ok(creds) => creds
                .iter()
                .flat_map(|cred| {
                    [
                        serde_json::to_string(cred).unwrap(),
                        format!("{cred:?}"),
                        format!("{cred}"),
                    ]
                })
                .collect(),
            Err(skip) => vec![skip.to_string(), format!("{skip:?}")],
        };
        for secret in &case.secrets {
            let chars: Vec<char> = secret.chars().collect();
            assert!(
                chars.len() >= 8,
                "{}: secret too short to guard",
                case.label
            );
            for w in chars.windows(8) {
                let w: String = w.iter().collect();
                for out in &outputs {
                    assert!(
                        !out.contains(&w),
                        "{}: output holds {w:?} of a secret: {out}",
                        case.label
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
}

#[test]
fn fingerprints_have_the_format_and_depend_on_the_key() {
    let a = classifier();
    let b = Classifier::new(b"another-key", Duration::from_secs(DAY as u64));
    for case in corpus() {
        let (Ok(x), Ok(y)) = (run(&a, &case.input), run(&b, &case.input)) else {
            continue;
        };
        for (x, y) in x.iter().zip(&y) {
            let hex_part = x.fingerprint.strip_prefix("kt1:").unwrap();
            assert_eq!(hex_part.len(), 32, "{}", case.label);
            assert!(
                hex_part
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_ne!(x.fingerprint, y.fingerprint, "{}", case.label);
        }
    }
}

#[test]
fn json_output_shape() {
    let c = classifier();
    let token = jwt(json!({"iss": "i", "sub": "s", "iat": NOW_SECS, "exp": NOW_SECS + 60}));
    let cred = c.classify_value(&token, Some("TOKEN"), now()).only();
    let v: serde_json::Value = serde_json::to_value(&cred).unwrap();
    assert_eq!(v["kind"], "jwt");
    assert_eq!(v["lifetime"], "short_lived");
    assert_eq!(v["id"], "i s");
    assert_eq!(v["issued_at"], "2025-10-09T08:53:20Z");
    assert_eq!(v["expires_at"], "2025-10-09T08:54:20Z");
    assert_eq!(v["location"], "env TOKEN");
    let bare = c
        .classify_value(&fake(1, 30, ALNUM), Some("X_SECRET"), now())
        .only();
    let v = serde_json::to_value(&bare).unwrap();
    assert!(v.get("expires_at").is_none() && v.get("id").is_none());
    for k in Kind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
    assert_eq!(Lifetime::ShortLived.as_str(), "short_lived");
    assert!(!format!("{c:?}").contains("unit-test"));
}

// ---------------------------------------------------------------------------------------
// The same secret seen in different forms has the same fingerprint.

fn one_file(c: &Classifier, path: &str, content: &str) -> Credential {
    let mut v = c
        .classify_file(content.as_bytes(), path, None, now())
        .unwrap();
    assert_eq!(v.len(), 1, "{path}: {v:?}");
    v.remove(0)
}

#[test]
fn netrc_password_matches_basic_auth_header() {
    let c = classifier();
    let pw = fake(50, 20, ALNUM);
    let netrc = one_file(
        &c,
        "/root/.netrc",
        &format!("machine h.example login u password {pw}\n"),
    );
    let basic = c
        .classify_header(
            "Authorization",
            &format!("Basic {}", b64std(format!("u:{pw}").as_bytes())),
            now(),
        )
        .only();
    assert_eq!(netrc.fingerprint, basic.fingerprint);
    let pg = one_file(&c, "/root/.pgpass", &format!("h:5432:*:u:{pw}\n"));
    assert_eq!(pg.fingerprint, basic.fingerprint);
    let url = c
        .classify_value(
            &format!("postgres://u:{pw}@h/db"),
            Some("DATABASE_URL"),
            now(),
        )
        .only();
    assert_eq!(url.fingerprint, basic.fingerprint);
    let docker = one_file(
        &c,
        "/root/.docker/config.json",
        &json!({"auths": {"h": {"auth": b64std(format!("u:{pw}").as_bytes())}}}).to_string(),
    );
    assert_eq!(docker.fingerprint, basic.fingerprint);
    let git = one_file(&c, "/root/.git-credentials", &format!("https://u:{pw}@h\n"));
    assert_eq!(git.fingerprint, basic.fingerprint);
}

/// A token sent as the user name has the fingerprint of the same token anywhere else, and
/// its kind, in every user:password form; no id holds it.
#[test]
fn token_user_name_matches_the_token_elsewhere() {
    let c = classifier();
    let ghp = format!("ghp_{}", fake(55, 36, ALNUM));
    let key = fake(56, 32, ALNUM);
    for token in [&ghp, &key] {
        let bearer = c
            .classify_header("Authorization", &format!("Bearer {token}"), now())
            .only();
        assert_eq!(bearer.fingerprint, c.fingerprint(token.as_bytes()));
        let basic = |u: &str| format!("Basic {}", b64std(u.as_bytes()));
        let forms: Vec<(&str, Credential)> = vec![
            (
                "basic x-oauth-basic",
                c.classify_header(
                    "Authorization",
                    &basic(&format!("{token}:x-oauth-basic")),
                    now(),
                )
                .only(),
            ),
            (
                "basic X",
                c.classify_header("Authorization", &basic(&format!("{token}:X")), now())
                    .only(),
            ),
            (
                "basic empty",
                c.classify_header("Authorization", &basic(&format!("{token}:")), now())
                    .only(),
            ),
            (
                "netrc",
                one_file(
                    &c,
                    "/root/.netrc",
                    &format!("machine h login {token} password x-oauth-basic\n"),
                ),
            ),
            (
                "git-credentials with placeholder",
                one_file(
                    &c,
                    "/root/.git-credentials",
                    &format!("https://{token}:x-oauth-basic@h\n"),
                ),
            ),
            (
                "git-credentials without password",
                one_file(
                    &c,
                    "/root/.git-credentials",
                    &format!("https://{token}@h\n"),
                ),
            ),
            (
                "pgpass",
                one_file(&c, "/root/.pgpass", &format!("h:5432:*:{token}:x\n")),
            ),
            (
                "docker token:",
                one_file(
                    &c,
                    "/root/.docker/config.json",
                    &json!({"auths": {"h": {"auth": b64std(format!("{token}:").as_bytes())}}})
                        .to_string(),
                ),
            ),
            (
                "docker token:x",
                one_file(
                    &c,
                    "/root/.docker/config.json",
                    &json!({"auths": {"h": {"auth": b64std(format!("{token}:x").as_bytes())}}})
                        .to_string(),
                ),
            ),
            (
                "database url",
                c.classify_value(&format!("postgres://{token}@h/db"), None, now())
                    .only(),
            ),
            (
                "database url with placeholder",
                c.classify_value(&format!("mysql://{token}:x@h/db"), Some("DB_URL"), now())
                    .only(),
            ),
        ];
        for (form, cred) in forms {
            assert_eq!(cred.fingerprint, bearer.fingerprint, "{form}");
            if token == &ghp {
                assert_eq!(
                    (cred.kind, cred.lifetime, cred.id.as_deref()),
                    (Kind::GithubToken, Lifetime::Static, Some("ghp")),
                    "{form}"
                );
            }
            let shown = format!("{cred} {}", serde_json::to_string(&cred).unwrap());
            assert!(!shown.contains(&token[4..12]), "{form}: {shown}");
        }
    }
}

#[test]
fn bearer_token_matches_file_and_env() {
    let c = classifier();
    for token in [
        format!("ghp_{}", fake(51, 36, ALNUM)),
        jwt(json!({"sub": "x", "exp": NOW_SECS + 60})),
        fake(52, 40, ALNUM),
    ] {
        let file = one_file(&c, "/run/secrets/api-token", &format!("  {token}\n"));
        let hdr = c
            .classify_header("authorization", &format!("Bearer  {token} "), now())
            .only();
        let env = c
            .classify_value(&format!("{token}\n"), Some("API_TOKEN"), now())
            .only();
        assert_eq!(file.fingerprint, hdr.fingerprint);
        assert_eq!(file.fingerprint, env.fingerprint);
        assert_eq!(file.fingerprint, c.fingerprint(token.as_bytes()));
    }
}

#[test]
fn aws_secret_matches_across_file_env_and_pairs() {
    let c = classifier();
    let akia = format!("AKIA{}", fake(53, 16, B32));
    let secret = fake(54, 40, ALNUM);
    let file = one_file(
        &c,
        "/root/.aws/credentials",
        &format!("[default]\naws_access_key_id={akia}\naws_secret_access_key={secret}\n"),
    );
    let env = c
        .classify_value(&secret, Some("AWS_SECRET_ACCESS_KEY"), now())
        .only();
    assert_eq!(file.fingerprint, env.fingerprint);
    let pair = c.classify_env(
        [
            ("AWS_ACCESS_KEY_ID", akia.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
        now(),
    );
    assert_eq!(pair.len(), 1);
    assert_eq!(pair[0].fingerprint, file.fingerprint);
    assert_eq!(pair[0].id.as_deref(), Some(akia.as_str()));
    // A signed request shows the key id only: matched by id, never by fingerprint.
    let sig = c
        .classify_header(
            "Authorization",
            &format!("AWS4-HMAC-SHA256 Credential={akia}/20251009/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00"),
            now(),
        )
        .only();
    assert_eq!(sig.id, file.id);
    assert_eq!(
        sig.fingerprint,
        c.fingerprint(format!("aws-key-id:{akia}").as_bytes())
    );
    let id_env = c
        .classify_value(&akia, Some("AWS_ACCESS_KEY_ID"), now())
        .only();
    assert_eq!(id_env.fingerprint, sig.fingerprint);
}

#[test]
fn private_key_matches_across_pem_kubeconfig_and_gcp_json() {
    let c = classifier();
    let t = test_cert("k", DAY * 30, None);
    let pem_file = one_file(&c, "/srv/k.pem", &t.key_pem);
    let kc = format!(
        "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    client-key-data: {}\n",
        b64std(t.key_pem.as_bytes())
    );
    let kube = one_file(&c, "/root/.kube/config", &kc);
    assert_eq!(pem_file.fingerprint, kube.fingerprint);
    assert_eq!(kube.lifetime, Lifetime::Static);
    let sa = json!({"type": "service_account", "private_key": t.key_pem, "client_email": "a@b"});
    let gcp = one_file(&c, "/x.json", &sa.to_string());
    assert_eq!(pem_file.fingerprint, gcp.fingerprint);
    // Whitespace and line wrapping do not matter.
    let rewrapped = t.key_pem.replace('\n', "\n\n  ");
    assert_eq!(
        one_file(&c, "/srv/k2.pem", &rewrapped).fingerprint,
        pem_file.fingerprint
    );
    // The certificate of the key has the key's id in common with it (by public key).
    let both = c
        .classify_file(
            format!("{}{}", t.cert_pem, t.key_pem).as_bytes(),
            "/a.pem",
            None,
            now(),
        )
        .unwrap();
    assert_eq!(both[1].id.as_deref(), Some(t.spki_id().as_str()));
    assert_eq!(both[1].expires_at, both[0].expires_at);
}

#[test]
fn kubeconfig_token_equals_the_same_token_elsewhere() {
    let c = classifier();
    let token = jwt(
        json!({"sub": "system:serviceaccount:a:b", "exp": NOW_SECS + 365 * DAY,
        "kubernetes.io": {"namespace": "a", "serviceaccount": {"name": "b"}, "pod": {"name": "p"}}}),
    );
    let kc = format!("kind: Config\nusers:\n- name: u\n  user:\n    token: {token}\n");
    let kube = one_file(&c, "/tmp/kc", &kc);
    let hdr = c
        .classify_header("Authorization", &format!("Bearer {token}"), now())
        .only();
    assert_eq!(kube.fingerprint, hdr.fingerprint);
    assert_eq!(hdr.kind, Kind::K8sSaTokenBound);
    assert_eq!(
        (kube.kind, kube.lifetime),
        (Kind::Kubeconfig, Lifetime::ShortLived)
    );
}

// ---------------------------------------------------------------------------------------
// Garbage: a reason or nothing, never a panic.

#[test]
fn garbage_inputs() {
    let c = classifier();
    let f = |bytes: &[u8], path: &str| c.classify_file(bytes, path, None, now());

    assert_eq!(f(b"", "/x"), Err(Skip::Empty));
    assert_eq!(f(b" \n\t\n", "/x"), Err(Skip::Empty));
    assert_eq!(f(&vec![b'a'; 2 << 20], "/x"), Err(Skip::TooLarge));
    assert_eq!(f(&[0x41, 0x00, 0x42, 0xff, 0x10], "/x"), Err(Skip::Binary));
    assert_eq!(f(&[0xff, 0xfe, 0x41, 0x42], "/x"), Err(Skip::NotUtf8));
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(f(&random, "/x").is_err());
    assert!(f(&random, "/home/u/.ssh/id_rsa").is_err());

    let t = test_cert("g", DAY, None);
    let truncated = &t.key_pem[..t.key_pem.len() / 2];
    assert_eq!(
        f(truncated.as_bytes(), "/k.pem"),
        Err(Skip::Malformed("PEM block truncated or not base64"))
    );
    let bad_b64 = "-----BEGIN PRIVATE KEY-----\n!!!not base64***\n-----END PRIVATE KEY-----\n";
    assert!(matches!(
        f(bad_b64.as_bytes(), "/k.pem"),
        Err(Skip::Malformed(_))
    ));
    let bad_cert = pem("CERTIFICATE", b"not a certificate");
    assert_eq!(
        f(bad_cert.as_bytes(), "/c.pem"),
        Err(Skip::Malformed("certificate does not parse"))
    );
    // Stray non-UTF-8 bytes around PEM blocks.
    let mut latin1 = b"friendlyName: caf\xe9\n".to_vec();
    latin1.extend_from_slice(t.cert_pem.as_bytes());
    assert_eq!(f(&latin1, "/c.pem").unwrap()[0].kind, Kind::X509Certificate);
    // A good block next to a bad one still gives the good one.
    let mixed = format!("{bad_b64}{}", t.cert_pem);
    assert_eq!(f(mixed.as_bytes(), "/m.pem").unwrap().len(), 1);

    // JWT-looking values with invalid parts are not JWTs.
    for bad in [
        "eyJhbGciOiJIUzI1NiJ9.@@@.sig",
        "eyJ!!!.eyJ!!!.x",
        "eyJhbGciOiJIUzI1NiJ9..sig",
    ] {
        assert_eq!(
            f(bad.as_bytes(), "/tmp/t"),
            Err(Skip::Unrecognised),
            "{bad}"
        );
        assert!(c.classify_value(bad, None, now()).is_empty());
        let h = c.classify_header("Authorization", &format!("Bearer {bad}"), now());
        assert_eq!(h.only().kind, Kind::GenericSecret);
    }

    // Deep nesting.
    let deep_json = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert!(f(deep_json.as_bytes(), "/x.json").is_err());
    let deep_array = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    assert!(f(deep_array.as_bytes(), "/x").is_err());
    let deep_yaml = format!(
        "kind: Config\nusers: {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    assert!(f(deep_yaml.as_bytes(), "/root/.kube/config").is_err());
    let deep_yaml2 = format!(
        "kind: Config\nusers:\n{}",
        (0..2000)
            .map(|i| format!("{}- \n", " ".repeat(i)))
            .collect::<String>()
    );
    let _ = f(deep_yaml2.as_bytes(), "/tmp/kc");

    // Malformed structured files.
    assert!(matches!(
        f(b"{\"type\": ", "/x.json"),
        Err(Skip::Malformed(_))
    ));
    assert!(f(b"[default\naws_access_key_id=x", "/root/.aws/credentials").is_err());
    assert_eq!(
        f(b"{\"type\": \"service_account\"}", "/x.json"),
        Err(Skip::Malformed("service account JSON without private_key"))
    );
    assert!(f(b"kind: Config\nusers: [", "/tmp/kc").is_err());
    let docker_bad = json!({"auths": {"h": {"auth": "%%%"}}}).to_string();
    assert_eq!(
        f(docker_bad.as_bytes(), "/root/.docker/config.json"),
        Ok(vec![])
    );

    // Huge single line.
    let huge = "x".repeat(900_000);
    assert_eq!(f(huge.as_bytes(), "/x"), Err(Skip::Unrecognised));
    assert_eq!(c.classify_value(&huge, Some("SECRET"), now()).len(), 1);
    assert!(c.classify_value(&huge, None, now()).is_empty());

    // Headers.
    for (n, v) in [
        ("Authorization", "Basic %%%"),
        ("Authorization", "Basic "),
        ("Authorization", "Bearer"),
        ("Authorization", "AWS4-HMAC-SHA256 nothing"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=/x"),
        ("Authorization", "Digest username=x"),
        ("", ""),
    ] {
        assert!(c.classify_header(n, v, now()).is_empty(), "{n}: {v}");
    }
}

/// Every prefix and a sample of byte flips of every corpus file: no panic.
#[test]
fn truncations_and_flips_never_panic() {
    let c = classifier();
    for case in corpus() {
        let Input::File {
            path,
            hint,
            content,
        } = &case.input
        else {
            continue;
        };
        let step = (content.len() / 64).max(1);
        for cut in (0..content.len()).step_by(step) {
            let _ = c.classify_file(&content[..cut], path, *hint, now());
            let mut flipped = content.clone();
            flipped[cut] ^= 0x55;
            let _ = c.classify_file(&flipped, path, *hint, now());
            let _ = c.classify_file(&flipped, "", None, now());
        }
    }
}

/// Values that give two credentials each (a URL with a token user and a password) do not take
/// an environment past the cap.
#[test]
fn two_credentials_per_value_stay_within_the_cap() {
    let c = classifier();
    // One credential first, so that pairs end one past the cap.
    let one = ("API_TOKEN".to_string(), fake(4999, 30, ALNUM));
    let vars: Vec<(String, String)> = std::iter::once(one)
        .chain((0..MAX_CREDENTIALS as u64).map(|i| {
            let url = format!(
                "postgres://ghp_{}:{}@db.internal/app",
                fake(i, 36, ALNUM),
                fake(i + 5000, 24, ALNUM)
            );
            (format!("DB_{i}_URL"), url)
        }))
        .collect();
    let creds = c.classify_env(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())), now());
    assert_eq!(creds.len(), MAX_CREDENTIALS);
}

/// Adversarial inputs of the maximum size (deep nesting, endless blocks, repeated prefixes)
/// are classified to completion without a panic. (How fast is for benchmarks, not tests.)
#[test]
fn large_adversarial_inputs_complete() {
    let c = classifier();
    let fill = |unit: &str| unit.repeat(MAX_FILE_BYTES / unit.len());
    let inputs: Vec<(&str, String)> = vec![
        ("/x.pem", fill("-----BEGIN A-----\n")),
        ("/x.pem", fill("-----BEGIN PRIVATE KEY-----\nAAAA\n")),
        ("/x.pem", format!("-----BEGIN X-----\n{}", fill("AAAA"))),
        ("/root/.netrc", fill("macdef m\n\n")),
        ("/root/.netrc", fill("machine m login l password p\n")),
        ("/srv/.env", format!("A=\"{}", fill("x\n"))),
        ("/srv/.env", fill("A=b\n")),
        ("/root/.pgpass", fill("h:1:d:u:p\n")),
        ("/root/.git-credentials", fill("https://u:p@h\n")),
        (
            "/tmp/scan",
            fill("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln "),
        ),
        (
            "/tmp/scan",
            fill("ghp_0123456789abcdefghij0123456789abcdef "),
        ),
        (
            "/root/.aws/credentials",
            fill("[p]\naws_secret_access_key=x\n"),
        ),
        (
            "/root/.kube/config",
            format!(
                "kind: Config\nusers:\n{}",
                fill("- name: u\n  user: {token: t}\n")
            ),
        ),
        (
            "/root/.kube/config",
            format!(
                "kind: Config\nusers:\n{}",
                (0..1000)
                    .map(|i| format!("{}- a:\n", " ".repeat(i)))
                    .collect::<String>()
            ),
        ),
        (
            "/root/.kube/config",
            format!("kind: Config\nusers: {}", fill("[")),
        ),
        ("/x.json", fill("[")),
        ("/x.json", format!("{{\"a\":{}", fill("{\"a\":"))),
        ("/x", fill("a")),
    ];
    for (path, text) in inputs {
        let bytes = &text.as_bytes()[..text.len().min(MAX_FILE_BYTES)];
        let found = c.classify_file(bytes, path, None, now());
        // Bounded output whatever the input.
        if let Ok(creds) = found {
            assert!(creds.len() <= crate::credential::MAX_CREDENTIALS, "{path}");
        }
    }
}
