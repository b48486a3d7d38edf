//! JSON Web Tokens: the shape check (three base64url parts, JSON header and claims) and the
//! rules on claims that tell a Kubernetes service account token (legacy or bound), an AWS or
//! Azure federated token, a JWT-SVID and a plain JWT apart. The signature is never checked
//! (nothing here trusts a claim for access; it only describes the token).

use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{Credential, Ctx, Kind, Lifetime, b64, unix_time};

/// Longer strings are not treated as tokens (real ones are a few KiB at most).
const MAX_TOKEN: usize = 64 * 1024;

/// Audiences of the AWS STS web identity and EKS pod identity tokens.
const AWS_AUDIENCES: &[&str] = &["sts.amazonaws.com", "pods.eks.amazonaws.com"];
/// Audience of Azure workload identity federated tokens.
const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";
const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
const LEGACY_PREFIX: &str = "kubernetes.io/serviceaccount/";

/// The decoded claims of a token that has the JWT shape.
pub(super) struct Claims(Map<String, Value>);

/// Decodes the claims of `token` if it has the JWS compact shape: `eyJ...` header, claims
/// and signature parts in base64url, header and claims JSON objects.
pub(super) fn parse(token: &str) -> Option<Claims> {
    let t = token.trim();
    if t.len() > MAX_TOKEN || !t.starts_with("eyJ") {
        return None;
    }
    let mut parts = t.split('.');
    let (header, claims, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || header.is_empty() || claims.is_empty() {
        return None;
    }
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    };
    if !(b64url(header) && b64url(claims) && b64url(sig)) {
        return None;
    }
    let object = |part: &str| -> Option<Map<String, Value>> {
        let bytes = b64::URL_SAFE.decode(part.trim_end_matches('=')).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    };
    object(header)?;
    object(claims).map(Claims)
}

impl Claims {
    fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn time(&self, key: &str) -> Option<SystemTime> {
        numeric_time(self.0.get(key)?)
    }

    fn audiences(&self) -> Vec<&str> {
        match self.0.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The nested `kubernetes.io` claim of a bound service account token.
    fn kubernetes(&self) -> Option<&Map<String, Value>> {
        self.0.get("kubernetes.io").and_then(Value::as_object)
    }

    /// Flat `kubernetes.io/serviceaccount/...` claims of a legacy (Secret-based) token.
    fn is_legacy_k8s(&self) -> bool {
        self.str("iss") == Some(LEGACY_ISSUER)
            || self.0.keys().any(|k| k.starts_with(LEGACY_PREFIX))
    }
}

/// A NumericDate: seconds since the epoch, possibly fractional. Out-of-range values are None.
fn numeric_time(v: &Value) -> Option<SystemTime> {
    let secs = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?,
        _ => return None,
    };
    unix_time(secs)
}

/// A JWT as a credential, or `None` if `token` is not a JWT. `forced` is the kind an env hint
/// decided (AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE).
pub(super) fn classify(cx: &Ctx<'_>, token: &str, forced: Option<Kind>) -> Option<Credential> {
    let token = token.trim();
    let claims = parse(token)?;
    let iat = claims.time("iat").or_else(|| claims.time("nbf"));
    let exp = claims.time("exp");
    let sub = claims.str("sub").map(str::to_string);
    let aud = claims.audiences();

    let (kind, id, lifetime) = if let Some(kind) = forced {
        (kind, sub, Lifetime::ShortLived)
    } else if aud.iter().any(|a| AWS_AUDIENCES.contains(a)) {
        (Kind::AwsWebIdentityToken, sub, Lifetime::ShortLived)
    } else if aud.contains(&AZURE_AUDIENCE) {
        (Kind::AzureFederatedToken, sub, Lifetime::ShortLived)
    } else if claims.is_legacy_k8s() {
        let flat = |k: &str| claims.str(&format!("{LEGACY_PREFIX}{k}"));
        let id = match (flat("namespace"), flat("service-account.name")) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            _ => sub,
        };
        (Kind::K8sSaTokenLegacy, id, cx.window(iat, exp))
    } else if let Some(k8s) = claims.kubernetes() {
        let ns = k8s.get("namespace").and_then(Value::as_str);
        let sa = k8s
            .get("serviceaccount")
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str);
        let id = match (ns, sa) {
            (Some(ns), Some(sa)) => Some(format!("system:serviceaccount:{ns}:{sa}")),
            _ => sub,
        };
        // The TRAP: the API server may set exp a year out for a kubelet-rotated token; a pod
        // binding or warnafter means the kubelet refreshes it, so it is short-lived.
        let rotated = k8s.contains_key("pod") || k8s.contains_key("warnafter");
        let lifetime = if rotated {
            Lifetime::ShortLived
        } else {
            cx.window(iat, exp)
        };
        (Kind::K8sSaTokenBound, id, lifetime)
    } else if sub.as_deref().is_some_and(|s| s.starts_with("spiffe://")) {
        (Kind::SpiffeSvid, sub, Lifetime::ShortLived)
    } else {
        let id = match (claims.str("iss"), sub.as_deref()) {
            (Some(iss), Some(sub)) => Some(format!("{iss} {sub}")),
            (Some(one), None) | (None, Some(one)) => Some(one.to_string()),
            (None, None) => None,
        };
        (Kind::Jwt, id, cx.window(iat, exp))
    };
    Some(
        cx.cred(kind, lifetime, token)
            .with_opt_id(id)
            .times(iat, exp),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credential::tests::{classifier, jwt, now};

    fn class(token: &str) -> Credential {
        classify(&classifier().ctx(now()), token, None).expect("a JWT")
    }

    fn secs(t: SystemTime) -> i64 {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn generic_with_and_without_exp() {
        let n = secs(now());
        let short = class(&jwt(
            json!({"iss": "https://idp.example", "sub": "svc", "iat": n, "exp": n + 600}),
        ));
        assert_eq!(
            (short.kind, short.lifetime),
            (Kind::Jwt, Lifetime::ShortLived)
        );
        assert_eq!(short.id.as_deref(), Some("https://idp.example svc"));
        assert_eq!(short.expires_at, unix_time(n + 600));
        assert_eq!(short.issued_at, unix_time(n));

        let long = class(&jwt(
            json!({"iss": "i", "sub": "s", "iat": n, "exp": n + 90 * 86400}),
        ));
        assert_eq!(long.lifetime, Lifetime::Static);

        let none = class(&jwt(json!({"iss": "i", "sub": "s"})));
        assert_eq!(none.lifetime, Lifetime::Static);
        assert_eq!(none.expires_at, None);

        // Issued long ago, expiring soon: the span from issue decides.
        let old = class(&jwt(
            json!({"sub": "s", "iat": n - 400 * 86400, "exp": n + 60}),
        ));
        assert_eq!(old.lifetime, Lifetime::Static);
        // No iat: the span from now decides.
        let soon = class(&jwt(json!({"sub": "s", "exp": n + 60})));
        assert_eq!(soon.lifetime, Lifetime::ShortLived);
    }

    #[test]
    fn kubernetes_bound_trap_and_legacy() {
        let n = secs(now());
        let bound = class(&jwt(json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:shop:cart",
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "iat": n, "nbf": n, "exp": n + 365 * 86400,
            "kubernetes.io": {
                "namespace": "shop",
                "pod": {"name": "cart-1", "uid": "u1"},
                "serviceaccount": {"name": "cart", "uid": "u2"},
                "warnafter": n + 3607
            }
        })));
        assert_eq!(
            (bound.kind, bound.lifetime),
            (Kind::K8sSaTokenBound, Lifetime::ShortLived)
        );
        assert_eq!(bound.id.as_deref(), Some("system:serviceaccount:shop:cart"));
        assert_eq!(bound.expires_at, unix_time(n + 365 * 86400));

        // Bound to a Secret, no pod/warnafter: the window decides.
        let secret_bound = class(&jwt(json!({
            "iat": n, "exp": n + 365 * 86400,
            "kubernetes.io": {"namespace": "a", "secret": {"name": "s"}, "serviceaccount": {"name": "b"}}
        })));
        assert_eq!(secret_bound.kind, Kind::K8sSaTokenBound);
        assert_eq!(secret_bound.lifetime, Lifetime::Static);

        let legacy = class(&jwt(json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "kube-system",
            "kubernetes.io/serviceaccount/secret.name": "deployer-token-abcde",
            "kubernetes.io/serviceaccount/service-account.name": "deployer",
            "kubernetes.io/serviceaccount/service-account.uid": "u3",
            "sub": "system:serviceaccount:kube-system:deployer"
        })));
        assert_eq!(
            (legacy.kind, legacy.lifetime),
            (Kind::K8sSaTokenLegacy, Lifetime::Static)
        );
        assert_eq!(legacy.id.as_deref(), Some("kube-system/deployer"));
    }

    #[test]
    fn federated_and_spiffe() {
        let n = secs(now());
        let eks = class(&jwt(json!({
            "aud": ["sts.amazonaws.com"], "sub": "system:serviceaccount:a:b",
            "iat": n, "exp": n + 86400,
            "kubernetes.io": {"namespace": "a", "pod": {"name": "p"}, "serviceaccount": {"name": "b"}}
        })));
        assert_eq!(
            (eks.kind, eks.lifetime),
            (Kind::AwsWebIdentityToken, Lifetime::ShortLived)
        );
        assert_eq!(eks.id.as_deref(), Some("system:serviceaccount:a:b"));

        let plain =
            jwt(json!({"aud": "x", "sub": "system:serviceaccount:a:b", "exp": n + 86400 * 30}));
        let cx = classifier();
        let azure = classify(&cx.ctx(now()), &plain, Some(Kind::AzureFederatedToken)).unwrap();
        assert_eq!(
            (azure.kind, azure.lifetime),
            (Kind::AzureFederatedToken, Lifetime::ShortLived)
        );

        let svid = class(&jwt(
            json!({"sub": "spiffe://example.org/ns/a/sa/b", "aud": ["x"], "exp": n + 300}),
        ));
        assert_eq!(
            (svid.kind, svid.lifetime),
            (Kind::SpiffeSvid, Lifetime::ShortLived)
        );
        assert_eq!(svid.id.as_deref(), Some("spiffe://example.org/ns/a/sa/b"));
    }

    #[test]
    fn not_jwts() {
        let cx = classifier();
        let c = cx.ctx(now());
        for t in [
            "",
            "eyJ",
            "eyJ.eyJ.",
            "eyJhbGciOiJub25lIn0",
            "eyJhbGciOiJub25lIn0.!!!.sig",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig.extra",
            // header decodes to a JSON string, not an object
            "eyJhIn0x.eyJzdWIiOiJ4In0.sig",
            "notajwt.notajwt.notajwt",
        ] {
            assert!(classify(&c, t, None).is_none(), "{t:?}");
        }
        // Out-of-range times are dropped, not a panic.
        let weird = class(&jwt(json!({"exp": 1e300, "iat": -5, "nbf": "x", "aud": 7})));
        assert_eq!(weird.expires_at, None);
        assert_eq!(weird.issued_at, None);
    }
}
