//! `keytrail report`: the migration worklist read from the inventory.
//!
//! One row per credential (static ones only by default): what it is, how old, who owns the
//! workloads that hold or use it, where it goes, the strongest evidence of a use and how many
//! workloads share it. Static credentials come first, then the most shared, then the most
//! recently seen. Formats: `table` (80 columns), `json`, `csv` and `markdown`.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::Write as _,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    cli::ReportArgs,
    inventory::{CredentialSummary, Inventory, InventoryError},
};

/// Widest table line.
const WIDTH: usize = 80;
/// Width of the label column of the table's detail lines (`  destinations `).
const LABEL: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("cannot write the report to standard output")]
    Write(#[source] std::io::Error),
}

/// What the exit code should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// `--fail-on static` and at least one static credential is listed.
    StaticInUse,
}

/// Prints the report on standard output; with `--fail-on static`, also says on standard error
/// how many static credentials are in use.
pub fn run(args: &ReportArgs) -> Result<Outcome, ReportError> {
    let report = render(args, SystemTime::now())?;
    let mut out = std::io::stdout().lock();
    match out
        .write_all(report.text.as_bytes())
        .and_then(|()| out.flush())
    {
        Ok(()) => {}
        // `keytrail report | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(ReportError::Write(e)),
    }
    if report.outcome == Outcome::StaticInUse {
        eprintln!(
            "keytrail: {} in use",
            plural(report.statics, "static credential")
        );
    }
    Ok(report.outcome)
}

/// A rendered report.
struct Rendered {
    text: String,
    outcome: Outcome,
    /// Static credentials listed.
    statics: usize,
}

fn render(args: &ReportArgs, now: SystemTime) -> Result<Rendered, ReportError> {
    let inventory = Inventory::open_read_only(&args.state)?;
    let all = inventory.credentials()?;
    let recorded = all.len();
    let only_static = args.only != "all";
    let mut rows: Vec<Row> = all
        .into_iter()
        .map(|c| Row::new(c, now))
        .filter(|r| !only_static || r.is_static())
        .collect();
    rows.sort_by(|a, b| {
        b.is_static()
            .cmp(&a.is_static())
            .then(b.shared_by().cmp(&a.shared_by()))
            .then(b.last_seen.cmp(&a.last_seen))
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    let report = Report {
        rows,
        recorded,
        only_static,
        path: inventory.path().to_string(),
    };
    let text = match args.format.as_str() {
        "json" => report.json(),
        "csv" => report.csv(),
        "markdown" => report.markdown(),
        _ => report.table(),
    };
    let statics = report.statics();
    let outcome = if args.fail_on.as_deref() == Some("static") && statics > 0 {
        Outcome::StaticInUse
    } else {
        Outcome::Clean
    };
    Ok(Rendered {
        text,
        outcome,
        statics,
    })
}

/// One credential of the report.
#[derive(Debug)]
struct Row {
    fingerprint: String,
    kind: String,
    id: Option<String>,
    lifetime: String,
    age_s: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
    owners: Vec<String>,
    workloads: Vec<String>,
    destinations: Vec<String>,
    /// `wire`, `process`, `workload`, or `none` when never seen going anywhere.
    evidence: String,
    uses: u64,
    namespaces: Vec<String>,
}

impl Row {
    fn new(c: CredentialSummary, now: SystemTime) -> Self {
        let known = now.duration_since(c.first_seen).map_or(0, |d| d.as_secs());
        Self {
            fingerprint: c.fingerprint,
            kind: c.kind.unwrap_or_else(|| "unknown".into()),
            id: c.id,
            lifetime: c.lifetime.unwrap_or_else(|| "unknown".into()),
            age_s: known.max(c.age_s.unwrap_or(0)),
            first_seen: c.first_seen,
            last_seen: c.last_seen,
            owners: c.owners,
            workloads: c.workloads,
            destinations: c.destinations,
            evidence: c.evidence.unwrap_or_else(|| "none".into()),
            uses: c.uses,
            namespaces: c.namespaces,
        }
    }

    fn is_static(&self) -> bool {
        self.lifetime == "static"
    }

    fn shared_by(&self) -> usize {
        self.workloads.len()
    }

    /// The id, or the start of the fingerprint when the credential has none.
    fn label(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => self.fingerprint.chars().take(12).collect(),
        }
    }
}

/// The JSON form of a row.
#[derive(Serialize)]
struct JsonRow<'a> {
    fingerprint: &'a str,
    kind: &'a str,
    id: Option<&'a str>,
    lifetime: &'a str,
    age_s: u64,
    first_seen: String,
    last_seen: String,
    owners: &'a [String],
    workloads: &'a [String],
    destinations: &'a [String],
    evidence: &'a str,
    uses: u64,
    shared_by: usize,
    namespaces: &'a [String],
}

struct Report {
    rows: Vec<Row>,
    /// Credentials in the inventory, listed or not.
    recorded: usize,
    only_static: bool,
    path: String,
}

impl Report {
    fn statics(&self) -> usize {
        self.rows.iter().filter(|r| r.is_static()).count()
    }

    /// Distinct workloads holding or using a listed static credential.
    fn static_workloads(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.is_static())
            .flat_map(|r| r.workloads.iter())
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn summary(&self) -> String {
        let statics = format!(
            "{} in use by {}",
            plural(self.statics(), "static credential"),
            plural(self.static_workloads(), "workload")
        );
        if self.only_static {
            statics
        } else {
            format!(
                "{} listed; {statics}",
                plural(self.rows.len(), "credential")
            )
        }
    }

    /// Why there are no rows.
    fn nothing(&self) -> String {
        if self.recorded == 0 {
            "no credentials recorded yet".to_string()
        } else {
            format!(
                "no static credentials recorded ({} not static: --only all lists them)",
                plural(self.recorded, "credential")
            )
        }
    }

    fn title(&self) -> &'static str {
        if self.only_static {
            "static credentials in use"
        } else {
            "credentials in use"
        }
    }

    fn table(&self) -> String {
        let mut out = String::new();
        line(
            &mut out,
            &format!(
                "keytrail: {} (inventory {})",
                self.title(),
                clean(&self.path)
            ),
        );
        out.push('\n');
        if self.rows.is_empty() {
            line(&mut out, &self.nothing());
            return out;
        }
        for r in &self.rows {
            let tail = format!(
                "  {}  age {}  shared by {}  evidence {}",
                clean(&r.lifetime),
                age(r.age_s),
                r.shared_by(),
                clean(&r.evidence)
            );
            let room = WIDTH.saturating_sub(width(&tail)).max(16);
            let head = fit(&format!("{} {}", clean(&r.kind), clean(&r.label())), room);
            line(&mut out, &format!("{head:<room$}{tail}"));
            detail(
                &mut out,
                "fingerprint",
                std::slice::from_ref(&r.fingerprint),
            );
            detail(&mut out, "workloads", &r.workloads);
            if r.destinations.is_empty() {
                detail(&mut out, "destinations", &["none seen".to_string()]);
            } else {
                detail(&mut out, "destinations", &r.destinations);
            }
            if !r.owners.is_empty() {
                detail(&mut out, "owners", &r.owners);
            }
            if !r.namespaces.is_empty() {
                detail(&mut out, "namespaces", &r.namespaces);
            }
            detail(
                &mut out,
                "seen",
                &[format!(
                    "{} .. {}, {}",
                    rfc3339(r.first_seen),
                    rfc3339(r.last_seen),
                    plural_u64(r.uses, "use")
                )],
            );
            out.push('\n');
        }
        line(&mut out, &self.summary());
        out
    }

    fn json(&self) -> String {
        let rows: Vec<JsonRow<'_>> = self
            .rows
            .iter()
            .map(|r| JsonRow {
                fingerprint: &r.fingerprint,
                kind: &r.kind,
                id: r.id.as_deref(),
                lifetime: &r.lifetime,
                age_s: r.age_s,
                first_seen: rfc3339(r.first_seen),
                last_seen: rfc3339(r.last_seen),
                owners: &r.owners,
                workloads: &r.workloads,
                destinations: &r.destinations,
                evidence: &r.evidence,
                uses: r.uses,
                shared_by: r.shared_by(),
                namespaces: &r.namespaces,
            })
            .collect();
        let mut out = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_string());
        out.push('\n');
        out
    }

    fn csv(&self) -> String {
        const HEADER: [&str; 14] = [
            "fingerprint",
            "kind",
            "id",
            "lifetime",
            "age_s",
            "first_seen",
            "last_seen",
            "owners",
            "workloads",
            "destinations",
            "evidence",
            "uses",
            "shared_by",
            "namespaces",
        ];
        let mut out = HEADER.join(",");
        out.push('\n');
        for r in &self.rows {
            let fields = [
                r.fingerprint.clone(),
                r.kind.clone(),
                r.id.clone().unwrap_or_default(),
                r.lifetime.clone(),
                r.age_s.to_string(),
                rfc3339(r.first_seen),
                rfc3339(r.last_seen),
                r.owners.join(";"),
                r.workloads.join(";"),
                r.destinations.join(";"),
                r.evidence.clone(),
                r.uses.to_string(),
                r.shared_by().to_string(),
                r.namespaces.join(";"),
            ];
            let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&quoted.join(","));
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("# keytrail: {}\n\n", self.title());
        if self.rows.is_empty() {
            let mut nothing = self.nothing();
            if let Some(first) = nothing.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            let _ = writeln!(out, "{}.", md(&nothing));
            return out;
        }
        out.push_str(
            "| Kind | Id | Lifetime | Age | Shared by | Evidence | Workloads | Destinations \
             | Owners | Uses | Last seen | Fingerprint |\n",
        );
        out.push_str("|---|---|---|---:|---:|---|---|---|---|---:|---|---|\n");
        for r in &self.rows {
            let cells = [
                md(&r.kind),
                md(r.id.as_deref().unwrap_or("")),
                md(&r.lifetime),
                age(r.age_s),
                r.shared_by().to_string(),
                md(&r.evidence),
                md(&r.workloads.join(", ")),
                md(&r.destinations.join(", ")),
                md(&r.owners.join(", ")),
                r.uses.to_string(),
                rfc3339(r.last_seen),
                md(&r.fingerprint),
            ];
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(out, "\n{}.", md(&self.summary()));
        out
    }
}

/// Appends one table line, cut to the table's width.
fn line(out: &mut String, text: &str) {
    out.push_str(&fit(text, WIDTH));
    out.push('\n');
}

/// Appends an indented `label  value, value, ...` line; values that do not fit are counted.
fn detail(out: &mut String, label: &str, items: &[String]) {
    let items: Vec<String> = items.iter().map(|i| clean(i)).collect();
    let text = format!(
        "  {label:<w$}{}",
        fit_list(&items, WIDTH - LABEL),
        w = LABEL - 2
    );
    line(out, &text);
}

/// Characters shown (one column each: control characters are replaced by [`clean`]).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `max` characters, the last one `…` when cut.
fn fit(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// As many items as fit in `max`, joined with `, `, then `+N more` for the rest.
fn fit_list(items: &[String], max: usize) -> String {
    let more = |n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!(", +{n} more")
        }
    };
    let mut shown = String::new();
    for (i, item) in items.iter().enumerate() {
        let candidate = if i == 0 {
            item.clone()
        } else {
            format!("{shown}, {item}")
        };
        if width(&candidate) + width(&more(items.len() - i - 1)) > max {
            if i == 0 {
                let rest = more(items.len() - 1);
                return format!("{}{rest}", fit(item, max.saturating_sub(width(&rest))));
            }
            return format!("{shown}{}", more(items.len() - i));
        }
        shown = candidate;
    }
    shown
}

/// Control characters (which could drive the terminal) shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A Markdown table cell: punctuation that Markdown or HTML would interpret is escaped,
/// line breaks and other control characters become spaces.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push(' ');
            continue;
        }
        if "\\`*_[]<>|#!~&".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', ';', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `40s`, `12m`, `5h`, `3d`: the largest whole unit.
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn rfc3339(t: SystemTime) -> String {
    // Times before the epoch (a broken clock) show as the epoch.
    let t = t.max(SystemTime::UNIX_EPOCH);
    let t = t.min(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn plural(n: usize, what: &str) -> String {
    plural_u64(n as u64, what)
}

fn plural_u64(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Arc};

    use super::*;
    use crate::{
        inventory::tests::{FP, FP2, access, t, use_of},
        record::{Record, names},
    };

    const FP3: &str = "kt1:00000000000000000000000000000003";

    fn args(
        state: &std::path::Path,
        format: &str,
        only: &str,
        fail_on: Option<&str>,
    ) -> ReportArgs {
        ReportArgs {
            state: state.to_path_buf(),
            format: format.to_string(),
            only: only.to_string(),
            fail_on: fail_on.map(str::to_string),
        }
    }

    /// An inventory with a static credential shared by three workloads (two uses), a
    /// short-lived one, and a static one with long names and no id that was only read.
    fn inventory() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keytrail.db");
        let mut inv = Inventory::open(&path).unwrap();
        let long_workload = format!("pod/{}", "very-long-namespace-name/".repeat(3) + "job");
        let mut no_id = (*access(
            50,
            &long_workload,
            FP3,
            "static",
            "file",
            Some("batch"),
            Some(&"owner-with-a-really-long-name,and-comma".repeat(2)),
        ))
        .clone();
        no_id.attrs.retain(|(k, _)| k != "keytrail.credential.id");
        let mut records = vec![
            access(
                0,
                "pod/payments/api",
                FP,
                "static",
                "file",
                Some("payments"),
                Some("team-a"),
            ),
            access(
                0,
                "container/worker",
                FP,
                "static",
                "env",
                None,
                Some("team \"b\""),
            ),
            use_of(
                "pod/payments/api",
                FP,
                "sts.example.test",
                443,
                "process",
                2,
                0,
                10,
            ),
            use_of("pod/other/job", FP, "2001:db8::1", 443, "wire", 3, 0, 10),
            access(0, "container/worker", FP2, "short_lived", "env", None, None),
            Arc::new(no_id),
        ];
        for i in 0..40 {
            records.push(use_of(
                &long_workload,
                FP3,
                &format!("destination-number-{i}.some-rather-long-domain.example.test"),
                443,
                "workload",
                1,
                50,
                60,
            ));
        }
        inv.apply(&records).unwrap();
        assert_eq!(inv.skipped(), 0);
        (dir, path)
    }

    fn now() -> SystemTime {
        t(3 * 86_400)
    }

    fn text(path: &std::path::Path, format: &str, only: &str) -> String {
        render(&args(path, format, only, None), now()).unwrap().text
    }

    #[test]
    fn table_lines_fit_80_columns() {
        let (_dir, path) = inventory();
        for only in ["static", "all"] {
            let out = text(&path, "table", only);
            for l in out.lines() {
                assert!(width(l) <= WIDTH, "{} chars: {l}", width(l));
            }
            assert!(out.contains('…'), "{out}");
            assert!(out.contains("more"), "{out}");
        }
        let out = text(&path, "table", "static");
        assert!(!out.contains("short_lived"));
        let first = out.lines().nth(2).unwrap();
        assert!(
            first.starts_with("aws_access_key AKIAEXAMPLEEXAMPLE00"),
            "{first}"
        );
        assert!(
            first.ends_with("static  age 3d  shared by 3  evidence wire"),
            "{first}"
        );
        assert!(
            out.contains("  destinations [2001:db8::1]:443, sts.example.test:443\n"),
            "{out}"
        );
        assert!(out.contains("  workloads    container/worker, pod/other/job, pod/payments/api\n"));
        assert!(out.contains("aws_access_key kt1:00000000"), "{out}");
        assert!(
            out.trim_end()
                .ends_with("2 static credentials in use by 4 workloads"),
            "{out}"
        );
        let all = text(&path, "table", "all");
        assert!(all.contains("short_lived"));
        assert!(all.contains("  destinations none seen\n"));
        assert!(
            all.trim_end()
                .ends_with("3 credentials listed; 2 static credentials in use by 4 workloads")
        );
    }

    #[test]
    fn json_has_every_key() {
        let (_dir, path) = inventory();
        let out = text(&path, "json", "all");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for key in [
            "fingerprint",
            "kind",
            "id",
            "lifetime",
            "age_s",
            "first_seen",
            "last_seen",
            "owners",
            "workloads",
            "destinations",
            "evidence",
            "uses",
            "shared_by",
            "namespaces",
        ] {
            assert!(rows.iter().all(|r| r.get(key).is_some()), "{key}");
        }
        let first = &rows[0];
        assert_eq!(first["fingerprint"], FP);
        assert_eq!(first["shared_by"], 3);
        assert_eq!(first["uses"], 5);
        assert_eq!(first["evidence"], "wire");
        assert_eq!(first["age_s"], 3 * 86_400);
        assert_eq!(first["first_seen"], "2027-01-15T08:00:00Z");
        assert_eq!(first["owners"], serde_json::json!(["team \"b\"", "team-a"]));
        assert_eq!(first["namespaces"], serde_json::json!(["payments"]));
        assert_eq!(rows[1]["fingerprint"], FP3);
        assert!(rows[1]["id"].is_null());
        assert_eq!(rows[2]["lifetime"], "short_lived");
        assert_eq!(rows[2]["evidence"], "none");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let (_dir, path) = inventory();
        let out = text(&path, "csv", "static");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "fingerprint,kind,id,lifetime,age_s,first_seen,last_seen,owners,workloads,\
             destinations,evidence,uses,shared_by,namespaces"
        );
        assert!(lines[1].starts_with(&format!(
            "{FP},aws_access_key,AKIAEXAMPLEEXAMPLE00,static,259200,2027-01-15T08:00:00Z,"
        )));
        assert!(
            lines[1].contains(",\"team \"\"b\"\";team-a\","),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains(",\"[2001:db8::1]:443;sts.example.test:443\",wire,5,3,payments"));
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a;b"), "\"a;b\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn markdown_is_a_table() {
        let (_dir, path) = inventory();
        let out = text(&path, "markdown", "static");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# keytrail: static credentials in use");
        assert!(lines[2].starts_with("| Kind | Id | Lifetime |"));
        let columns = lines[2].matches(" | ").count();
        assert!(lines[3].starts_with("|---|"));
        assert_eq!(lines[3].matches('|').count(), columns + 2);
        assert!(
            lines[4].starts_with(
                "| aws\\_access\\_key | AKIAEXAMPLEEXAMPLE00 | static | 3d | 3 | wire |"
            )
        );
        assert_eq!(lines[5].matches(" | ").count(), columns);
        assert_eq!(lines[6], "");
        assert_eq!(lines[7], "2 static credentials in use by 4 workloads.");
        assert_eq!(md("a|b<c>\nd"), "a\\|b\\<c\\> d");
    }

    #[test]
    fn only_static_leaves_out_short_lived_credentials() {
        let (_dir, path) = inventory();
        for format in ["table", "json", "csv", "markdown"] {
            assert!(!text(&path, format, "static").contains(FP2), "{format}");
            assert!(text(&path, format, "all").contains(FP2), "{format}");
        }
    }

    #[test]
    fn fail_on_static_reports_static_credentials_in_use() {
        let (_dir, path) = inventory();
        let r = render(&args(&path, "table", "static", Some("static")), now()).unwrap();
        assert_eq!((r.outcome, r.statics), (Outcome::StaticInUse, 2));
        let r = render(&args(&path, "table", "static", None), now()).unwrap();
        assert_eq!(r.outcome, Outcome::Clean);

        let dir = tempfile::tempdir().unwrap();
        let only_short = dir.path().join("keytrail.db");
        let mut inv = Inventory::open(&only_short).unwrap();
        inv.apply(&[access(
            0,
            "container/worker",
            FP2,
            "short_lived",
            "env",
            None,
            None,
        )])
        .unwrap();
        for only in ["static", "all"] {
            let r = render(&args(&only_short, "table", only, Some("static")), now()).unwrap();
            assert_eq!(r.outcome, Outcome::Clean);
        }
        let out = text(&only_short, "table", "static");
        assert!(
            out.contains("no static credentials recorded (1 credential not static"),
            "{out}"
        );
    }

    #[test]
    fn an_empty_inventory_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keytrail.db");
        let mut inv = Inventory::open(&path).unwrap();
        inv.apply(&[Arc::new(Record::new(names::AGENT_STATS, t(0)))])
            .unwrap();
        assert!(text(&path, "table", "static").contains("no credentials recorded yet"));
        assert_eq!(text(&path, "json", "static"), "[]\n");
        assert_eq!(text(&path, "csv", "static").lines().count(), 1);
        assert!(text(&path, "markdown", "all").contains("No credentials recorded yet."));
    }

    #[test]
    fn a_missing_inventory_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing-here.db");
        let err = run(&args(&path, "table", "static", None)).err().unwrap();
        let shown = path.display();
        assert_eq!(
            err.to_string(),
            format!(
                "no inventory at {shown}: run `keytrail agent --state {shown}` first, or pass \
                 the agent's --state"
            )
        );
        assert!(!path.exists());
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(40), "40s");
        assert_eq!(age(12 * 60 + 5), "12m");
        assert_eq!(age(5 * 3600 + 59), "5h");
        assert_eq!(age(3 * 86_400 + 7200), "3d");
    }

    #[test]
    fn lists_cut_to_the_width() {
        let items: Vec<String> = ["alpha", "beta", "gamma", "delta"]
            .map(String::from)
            .to_vec();
        assert_eq!(fit_list(&items, 80), "alpha, beta, gamma, delta");
        assert_eq!(fit_list(&items, 19), "alpha, +3 more");
        assert_eq!(fit_list(&items, 20), "alpha, beta, +2 more");
        assert_eq!(fit_list(&items, 25), "alpha, beta, +2 more");
        let long = vec!["x".repeat(100)];
        assert_eq!(width(&fit_list(&long, 30)), 30);
        assert!(fit_list(&long, 30).ends_with('…'));
        let long = vec!["x".repeat(100), "y".into()];
        let cut = fit_list(&long, 30);
        assert_eq!(width(&cut), 30);
        assert!(cut.ends_with("…, +1 more"), "{cut}");
        assert_eq!(clean("a\x1b[31mb"), "a?[31mb");
    }
}
