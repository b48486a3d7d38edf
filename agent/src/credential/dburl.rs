//! URLs with credentials in their userinfo (`scheme://user:password@host/...`): database
//! URLs (postgres, mysql, mongodb, redis, amqp, ...) and the lines of git-credentials. The id
//! is `scheme://user@host`, never the password; the fingerprint is of the percent-decoded
//! password, as a client would send it. A user name that is itself a token is that token and
//! stays out of the id (`scheme://host`; see `userinfo`).

use percent_encoding::percent_decode_str;

use super::{Credential, Ctx, Kind, Lifetime, userinfo};

/// Schemes of database and message broker URLs (before any `+driver` suffix).
pub(super) const DB_SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "mongodb",
    "redis",
    "rediss",
    "amqp",
    "amqps",
    "mssql",
    "sqlserver",
    "cockroachdb",
    "clickhouse",
    "oracle",
];

/// The parts of a URL with userinfo.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct UserinfoUrl {
    pub scheme: String,
    pub user: String,
    /// Host (and port) as written.
    pub host: String,
    /// Percent-decoded; `None` when the userinfo has no `:` or an empty password.
    pub password: Option<Vec<u8>>,
}

/// Splits `scheme://user:password@host...`. Lenient: a password with unescaped `/`, `@` or
/// `#` is taken up to the last `@` before the host.
pub(super) fn parse(url: &str) -> Option<UserinfoUrl> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    // The authority ends at the first '/', '?' or '#' after the last '@' (a password may hold
    // them unescaped); a '@' in the query is not userinfo.
    let before_query = rest.split(['?']).next().unwrap_or(rest);
    let at = before_query.rfind('@')?;
    let userinfo = &rest[..at];
    let after = &rest[at + 1..];
    let host = after.split(['/', '?', '#']).next().unwrap_or(after);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let decode = |s: &str| percent_decode_str(s).collect::<Vec<u8>>();
    Some(UserinfoUrl {
        scheme: scheme.to_ascii_lowercase(),
        user: String::from_utf8_lossy(&decode(user)).into_owned(),
        host: host.to_string(),
        password: password.map(decode).filter(|p| !p.is_empty()),
    })
}

fn is_db_scheme(scheme: &str) -> bool {
    let base = scheme.split('+').next().unwrap_or(scheme);
    DB_SCHEMES.contains(&base)
}

/// What a value is as a database URL.
pub(super) enum DbUrl {
    /// Not a database URL.
    NotDb,
    /// A database URL that holds no secret (no password, and a user name that is a name).
    NoPassword,
    /// The password; or the user name when it is itself a token (`postgres://TOKEN@host`), and
    /// the password too when that is a secret as well (see `userinfo`).
    Credentials(Vec<Credential>),
}

pub(super) fn classify(cx: &Ctx<'_>, value: &str) -> DbUrl {
    let v = value.trim();
    let Some((scheme, _)) = v.split_once("://") else {
        return DbUrl::NotDb;
    };
    if !is_db_scheme(&scheme.to_ascii_lowercase()) {
        return DbUrl::NotDb;
    }
    let Some(u) = parse(v) else {
        return DbUrl::NoPassword;
    };
    let creds = userinfo::credentials(
        cx,
        &u.user,
        u.password.as_deref().unwrap_or_default(),
        |secret| cx.cred(Kind::DatabaseUrl, Lifetime::Static, secret),
        |user| {
            Some(match user {
                Some(user) => format!("{}://{user}@{}", u.scheme, u.host),
                None => format!("{}://{}", u.scheme, u.host),
            })
        },
    );
    if creds.is_empty() {
        DbUrl::NoPassword
    } else {
        DbUrl::Credentials(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_userinfo() {
        let u = parse("postgresql+psycopg2://app%40x:p%2Fw@db.internal:5432/shop?sslmode=require")
            .unwrap();
        assert_eq!(u.scheme, "postgresql+psycopg2");
        assert_eq!(u.user, "app@x");
        assert_eq!(u.host, "db.internal:5432");
        assert_eq!(u.password.as_deref(), Some(&b"p/w"[..]));

        let u = parse("mysql://root:a/b@c@h/db").unwrap();
        assert_eq!(u.host, "h");
        assert_eq!(u.password.as_deref(), Some(&b"a/b@c"[..]));

        let u = parse("redis://:onlypass@cache:6379").unwrap();
        assert_eq!(u.user, "");
        assert!(u.password.is_some());

        assert_eq!(parse("https://user@host").unwrap().password, None);
        assert_eq!(parse("https://user:@host").unwrap().password, None);
        assert!(parse("postgres://host/db").is_none());
        assert!(parse("postgres://host/db?user=a@b").is_none());
        assert!(parse("no scheme").is_none());
        assert!(parse("://x@y").is_none());
        assert!(parse("postgres://u:p@").is_none());
        assert!(parse("p://u:p%ZZ%@h").is_some());
    }
}
