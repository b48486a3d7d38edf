//! `.env` files (and other KEY=VALUE files such as Vault agent templates): `export` prefixes,
//! single/double quotes, multi-line double-quoted values, `#` comments. Each entry is
//! classified as an environment value with its name; non-secret entries give nothing.

use super::{Credential, Ctx, value};

/// One `NAME=value` entry with its 1-based line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Assignment<'a> {
    pub name: &'a str,
    pub value: String,
    pub line: usize,
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Parses the whole text; `None` if a non-blank, non-comment line is not an assignment.
pub(super) fn parse(text: &str) -> Option<Vec<Assignment<'_>>> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map_or(l, str::trim_start);
        let (name, rest) = l.split_once('=')?;
        let name = name.trim_end();
        if !is_name(name) {
            return None;
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let mut body = String::new();
                let mut current = rest[1..].to_string();
                loop {
                    if let Some(end) = closing_quote(&current, q) {
                        body.push_str(&current[..end]);
                        break;
                    }
                    body.push_str(&current);
                    match lines.next() {
                        Some((_, next)) => {
                            body.push('\n');
                            current = next.to_string();
                        }
                        // Unterminated: take what there is.
                        None => break,
                    }
                }
                if q == '"' { unescape(&body) } else { body }
            }
            _ => {
                // Unquoted: an inline comment starts at " #".
                let v = rest.split(" #").next().unwrap_or(rest);
                v.trim().to_string()
            }
        };
        out.push(Assignment {
            name,
            value,
            line: i + 1,
        });
    }
    Some(out)
}

/// Byte index of the closing quote in `s` (skipping `\"` inside double quotes).
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if q == '"' && !escaped => escaped = true,
            c if c == q && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// The credentials of parsed assignments.
pub(super) fn classify(cx: &Ctx<'_>, assignments: &[Assignment<'_>]) -> Vec<Credential> {
    let entries: Vec<value::Entry<'_>> = assignments
        .iter()
        .map(|a| value::Entry {
            name: a.name,
            value: &a.value,
            line: Some(a.line),
        })
        .collect();
    value::classify_set(cx, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let text =
            "# c\nexport A=1\nB = \"x\\ny\" \nC='lit\\n'\nD=plain # note\nE=\"multi\nline\"\nF=\n";
        let got: Vec<_> = parse(text)
            .unwrap()
            .into_iter()
            .map(|a| (a.name, a.value, a.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "1".to_string(), 2),
                ("B", "x\ny".to_string(), 3),
                ("C", "lit\\n".to_string(), 4),
                ("D", "plain".to_string(), 5),
                ("E", "multi\nline".to_string(), 6),
                ("F", String::new(), 8),
            ]
        );
        assert!(parse("not an assignment\n").is_none());
        assert!(parse("1BAD=x").is_none());
        assert_eq!(
            parse("A=\"unterminated\nmore").unwrap()[0].value,
            "unterminated\nmore"
        );
    }
}
