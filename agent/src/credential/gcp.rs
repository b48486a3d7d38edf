//! Google Cloud credential JSON (`"type"`): service account keys (static; id
//! `client_email/private_key_id`; fingerprint of the private key's DER), external accounts
//! (workload identity federation) and impersonated service accounts (short-lived; they mint
//! tokens), and gcloud user credentials (`authorized_user`, a refresh token).

use serde_json::{Map, Value};

use super::{Credential, Ctx, Kind, Lifetime, Skip, pem};

/// Whether a JSON object is a GCP credential file.
pub(super) fn looks_like(obj: &Map<String, Value>) -> bool {
    matches!(
        obj.get("type").and_then(Value::as_str),
        Some(
            "service_account"
                | "external_account"
                | "impersonated_service_account"
                | "authorized_user"
        )
    )
}

pub(super) fn classify(cx: &Ctx<'_>, obj: &Map<String, Value>) -> Result<Vec<Credential>, Skip> {
    let s = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let c = match s("type") {
        Some("service_account") => {
            let key = s("private_key")
                .ok_or(Skip::Malformed("service account JSON without private_key"))?;
            let id = match (s("client_email"), s("private_key_id")) {
                (Some(email), Some(kid)) => Some(format!("{email}/{kid}")),
                (Some(one), None) | (None, Some(one)) => Some(one.to_string()),
                (None, None) => None,
            };
            // The key's DER, so the same key in a PEM file has the same fingerprint.
            let secret = pem::first_private_key_der(key).unwrap_or_else(|| key.as_bytes().to_vec());
            cx.cred(Kind::GcpServiceAccountKey, Lifetime::Static, secret)
                .with_opt_id(id)
        }
        Some("external_account") => {
            // No secret in the file: it says where to get a subject token and how to trade it.
            // Fingerprint of the whole (canonically ordered) configuration.
            let canonical = Value::Object(obj.clone()).to_string();
            cx.cred(Kind::GcpExternalAccount, Lifetime::ShortLived, canonical)
                .with_opt_id(s("audience").map(str::to_string))
        }
        Some("impersonated_service_account") => {
            let source = obj.get("source_credentials").and_then(Value::as_object);
            let refresh = source
                .and_then(|o| o.get("refresh_token"))
                .and_then(Value::as_str);
            let secret = match refresh {
                Some(r) => r.trim().to_string(),
                None => Value::Object(obj.clone()).to_string(),
            };
            // .../serviceAccounts/NAME@PROJECT.iam.gserviceaccount.com:generateAccessToken
            let target = s("service_account_impersonation_url")
                .and_then(|u| u.rsplit('/').next())
                .map(|t| t.split(':').next().unwrap_or(t).to_string());
            cx.cred(Kind::GcpExternalAccount, Lifetime::ShortLived, secret)
                .with_opt_id(target)
        }
        Some("authorized_user") => {
            let refresh = s("refresh_token").ok_or(Skip::Malformed(
                "authorized_user JSON without refresh_token",
            ))?;
            cx.cred(Kind::GenericSecret, Lifetime::Unknown, refresh)
        }
        _ => return Err(Skip::Unrecognised),
    };
    Ok(vec![c])
}
