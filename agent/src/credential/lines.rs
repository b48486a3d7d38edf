//! Small line- and token-oriented credential files: `.netrc`, `.pgpass`, `.git-credentials`,
//! `.npmrc`, `.pypirc` and `.vault-token`. One credential per entry with a secret; the
//! fingerprint is of the password alone, so a netrc entry and the Basic auth header built
//! from it match. A login that is itself a token is that token (see `userinfo`).

use base64::Engine as _;
use ini::{Ini, ParseOption};

use super::{Credential, Ctx, Kind, Lifetime, MAX_CREDENTIALS, Skip, b64, dburl, tokens, userinfo};

/// Whether text looks like a netrc file (sniffing without a path hint).
pub(super) fn looks_like_netrc(text: &str) -> bool {
    let mut words = netrc_words(text).map(|(w, _)| w);
    matches!(words.next().as_deref(), Some("machine" | "default"))
        && netrc_words(text).any(|(w, _)| w == "password")
}

/// Whitespace-separated netrc words with their 1-based line; `"..."` quoting with `\`
/// escapes as curl reads it.
fn netrc_words(text: &str) -> impl Iterator<Item = (String, usize)> + '_ {
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    std::iter::from_fn(move || {
        while let Some(&c) = chars.peek() {
            if c == '\n' {
                line += 1;
            }
            if !c.is_whitespace() {
                break;
            }
            chars.next();
        }
        let start_line = line;
        let mut word = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(e) = chars.next() {
                            word.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                o => o,
                            });
                        }
                    }
                    '\n' => {
                        line += 1;
                        word.push(c);
                    }
                    c => word.push(c),
                }
            }
            return Some((word, start_line));
        }
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            word.push(c);
            chars.next();
        }
        (!word.is_empty()).then_some((word, start_line))
    })
}

/// `machine M login L password P` entries (and `default`). `macdef` bodies are skipped.
pub(super) fn netrc(cx: &Ctx<'_>, text: &str) -> Vec<Credential> {
    struct Entry {
        machine: String,
        login: Option<String>,
        password: Option<String>,
        line: usize,
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut words = netrc_words(text);
    // A macro body runs to the first empty line: words before that line are skipped.
    let mut macdef_until = 0usize;
    let blank_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    while let Some((w, line)) = words.next() {
        if line < macdef_until {
            continue;
        }
        match w.as_str() {
            "machine" => {
                let machine = words.next().map(|(m, _)| m).unwrap_or_default();
                entries.push(Entry {
                    machine,
                    login: None,
                    password: None,
                    line,
                });
            }
            "default" => entries.push(Entry {
                machine: "default".into(),
                login: None,
                password: None,
                line,
            }),
            "login" | "password" | "account" => {
                let value = words.next().map(|(v, _)| v);
                if let Some(e) = entries.last_mut() {
                    match w.as_str() {
                        "login" => e.login = value,
                        "password" => e.password = value,
                        _ => {}
                    }
                }
            }
            "macdef" => {
                words.next();
                let next_blank = blank_lines.partition_point(|&b| b <= line);
                macdef_until = blank_lines.get(next_blank).copied().unwrap_or(usize::MAX);
            }
            _ => {}
        }
    }
    entries
        .into_iter()
        .flat_map(|e| {
            userinfo::credentials(
                cx,
                e.login.as_deref().unwrap_or(""),
                e.password.as_deref().unwrap_or("").as_bytes(),
                |secret| cx.cred(Kind::Netrc, Lifetime::Static, secret),
                |login| {
                    Some(match login {
                        Some(l) => format!("{} {l}", e.machine),
                        None => e.machine.clone(),
                    })
                },
            )
            .into_iter()
            .map(move |c| c.at(format!("line {}", e.line)))
        })
        .take(MAX_CREDENTIALS)
        .collect()
}

/// Splits a pgpass line on unescaped `:` and unescapes `\:` and `\\`.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(e) = chars.next()
                    && let Some(f) = fields.last_mut()
                {
                    f.push(e);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

/// `host:port:database:user:password` lines.
pub(super) fn pgpass(cx: &Ctx<'_>, text: &str) -> Vec<Credential> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|(i, l)| {
            let f = pgpass_fields(l.trim_end_matches('\r'));
            let [host, _port, _db, user, password] = f.as_slice() else {
                return None;
            };
            let creds = userinfo::credentials(
                cx,
                user,
                password.as_bytes(),
                |secret| cx.cred(Kind::Pgpass, Lifetime::Static, secret),
                |user| {
                    Some(match user {
                        Some(u) => format!("{host} {u}"),
                        None => host.clone(),
                    })
                },
            );
            Some(
                creds
                    .into_iter()
                    .map(move |c| c.at(format!("line {}", i + 1))),
            )
        })
        .flatten()
        .take(MAX_CREDENTIALS)
        .collect()
}

/// `https://user:token@host` lines (and `https://token@host`, a token as the user name). The
/// lifetime of a password is that of the token when its kind is known (a `ghs_` installation
/// token is short-lived), else static.
pub(super) fn git_credentials(cx: &Ctx<'_>, text: &str) -> Vec<Credential> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let u = dburl::parse(l)?;
            let host = u.host.rsplit('@').next().unwrap_or(&u.host).to_string();
            let creds = userinfo::credentials(
                cx,
                &u.user,
                u.password.as_deref().unwrap_or_default(),
                |secret| {
                    let lifetime = std::str::from_utf8(secret)
                        .ok()
                        .and_then(|p| tokens::credential(cx, p))
                        .map_or(Lifetime::Static, |c| c.lifetime);
                    cx.cred(Kind::GitCredentials, lifetime, secret)
                },
                |user| {
                    Some(match user {
                        Some(user) => format!("{host} {user}"),
                        None => host.clone(),
                    })
                },
            );
            Some(
                creds
                    .into_iter()
                    .map(move |c| c.at(format!("line {}", i + 1))),
            )
        })
        .flatten()
        .take(MAX_CREDENTIALS)
        .collect()
}

/// Whether every entry line is a URL with a password or a secret-like user name (sniffing).
pub(super) fn looks_like_git_credentials(text: &str) -> bool {
    let mut entries = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    entries.peek().is_some()
        && entries.all(|l| {
            dburl::parse(l)
                .is_some_and(|u| u.password.is_some() || userinfo::is_secret_like(&u.user))
        })
}

/// `.npmrc`: `//registry/:_authToken=...`, `_auth=base64(user:password)`,
/// `//registry/:_password=base64(password)`. Values that reference env vars (`${NPM_TOKEN}`)
/// hold no secret.
pub(super) fn npmrc(cx: &Ctx<'_>, text: &str) -> Vec<Credential> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if out.len() >= MAX_CREDENTIALS {
            break;
        }
        let l = l.trim();
        if l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        if value.is_empty() || value.contains("${") {
            continue;
        }
        let (scope, name) = match key.rsplit_once(':') {
            Some((scope, name)) => (scope.trim_start_matches('/').trim_end_matches('/'), name),
            None => ("", key),
        };
        let npm = |secret: &[u8]| cx.cred(Kind::NpmToken, Lifetime::Static, secret);
        let creds: Vec<Credential> = match name {
            "_authToken" => vec![npm(value.as_bytes())],
            // user:password; the user name may be the token itself.
            "_auth" => match b64::STANDARD.decode(value) {
                Ok(d) => match d.iter().position(|&b| b == b':') {
                    Some(p) => userinfo::credentials(
                        cx,
                        &String::from_utf8_lossy(&d[..p]),
                        &d[p + 1..],
                        npm,
                        |_| None,
                    ),
                    None => continue,
                },
                Err(_) => continue,
            },
            "_password" => match b64::STANDARD.decode(value) {
                Ok(d) => vec![npm(&d)],
                Err(_) => continue,
            },
            _ => continue,
        };
        let location = if scope.is_empty() {
            format!("line {}", i + 1)
        } else {
            format!("line {} {scope}", i + 1)
        };
        out.extend(creds.into_iter().map(|c| c.at(location.clone())));
    }
    out.truncate(MAX_CREDENTIALS);
    out
}

/// `.pypirc` (INI): a password per index section; `__token__` users hold API tokens.
pub(super) fn pypirc(cx: &Ctx<'_>, text: &str) -> Result<Vec<Credential>, Skip> {
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        // `index-servers =` lists the sections on indented lines.
        enabled_indented_mutiline_value: true,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_str_opt(text, opt)
        .map_err(|_| Skip::Malformed(".pypirc is not valid INI"))?;
    let mut out = Vec::new();
    for (section, props) in ini.iter() {
        let Some(password) = props
            .get("password")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let mut c = cx.cred(Kind::PypiToken, Lifetime::Static, password);
        if let Some(s) = section {
            c = c.at(format!("section {s}"));
        }
        out.push(c);
    }
    Ok(out)
}

/// `~/.vault-token`: one token; Vault holds its TTL.
pub(super) fn vault_token(cx: &Ctx<'_>, text: &str) -> Vec<Credential> {
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Vec::new();
    }
    let id = tokens::detect(t)
        .filter(|m| m.kind == Kind::VaultToken)
        .and_then(|m| m.id);
    let c = cx.cred(Kind::VaultToken, Lifetime::Unknown, t);
    vec![match id {
        Some(id) => c.with_id(id),
        None => c,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_words_quote_and_lines() {
        let w: Vec<_> = netrc_words("machine a\n  login \"x y\\\"z\"\npassword p").collect();
        assert_eq!(
            w,
            [
                ("machine".to_string(), 1),
                ("a".to_string(), 1),
                ("login".to_string(), 2),
                ("x y\"z".to_string(), 2),
                ("password".to_string(), 3),
                ("p".to_string(), 3),
            ]
        );
        assert_eq!(netrc_words("\"unterminated").count(), 1);
        assert_eq!(netrc_words("").count(), 0);
    }

    #[test]
    fn pgpass_escapes() {
        assert_eq!(
            pgpass_fields("h:5432:*:u:a\\:b:c"),
            ["h", "5432", "*", "u", "a:b:c"]
        );
        assert_eq!(pgpass_fields("h:1:d:u"), ["h", "1", "d", "u"]);
        assert_eq!(pgpass_fields("trailing\\"), ["trailing"]);
    }
}
