//! Watch rules: the configured path globs, expanded, matched exactly in userspace with globset,
//! and compiled into the kernel prefilter entries (exact basename, basename prefix, path
//! suffix, directory suffix, absolute prefix).
//!
//! `~/` patterns: a tail that names a credential file by itself (a dot-directory and a name,
//! `~/.aws/credentials`, `~/.ssh/id_*`, or a dot-file, `~/.pgpass`) matches under any
//! directory, since homes are anywhere; the others (`~/.azure/**`, `~/.ssh/*`) match below
//! /root, /home/* and every home `homes` knows, each home adding its own kernel entries.
//!
//! The kernel side must pass a superset of what the globs match (a miss there is a miss for
//! good) while passing as little else as possible (every extra open costs a trip to userspace).

use std::collections::BTreeSet;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use keytrail_common::{PREFIX_MAX, SUFFIX_MAX};

use crate::homes::Homes;

/// Longest basename the kernel filter holds (`/name` must fit its suffix keys).
const BASENAME_MAX: usize = SUFFIX_MAX - 1;

/// Always watched, whatever the config: another process reading a process's environment
/// (`/proc/PID/task/TID/environ` is the same file).
pub const PROC_ENVIRON_GLOBS: [&str; 2] = ["/proc/*/environ", "/proc/*/task/*/environ"];

/// Where a `~/` pattern that needs a home points, besides the homes found at run time.
const HOME_ROOTS: [&str; 2] = ["/root", "/home/*"];

/// One entry of the kernel prefilter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelEntry {
    /// The basename equals this (`.pgpass`). `relative_only`: only for relative opens, where the
    /// kernel cannot see the directory (`cat credentials` inside ~/.aws).
    Basename { name: String, relative_only: bool },
    /// The basename starts with this (`.env.`).
    BasenamePrefix(String),
    /// The path ends with this (`.pem`, `/.aws/credentials`).
    Suffix(String),
    /// The directory part ends with this, trailing `/` included (`/.ssh/`).
    DirSuffix(String),
    /// The absolute path starts with this (`/var/run/secrets/`).
    Prefix(String),
}

impl KernelEntry {
    /// True when the entry would pass a large share of all opens on a node.
    fn is_broad(&self) -> bool {
        match self {
            // A shallow directory (`/home/`); a literal file path is never broad.
            KernelEntry::Prefix(p) => p.ends_with('/') && p.matches('/').count() < 3,
            KernelEntry::Suffix(s) => !s.contains('/') && s.len() <= 5,
            KernelEntry::BasenamePrefix(p) => p.len() < 3,
            KernelEntry::Basename { .. } | KernelEntry::DirSuffix(_) => false,
        }
    }
}

/// The compiled watch list.
#[derive(Debug)]
pub struct WatchRules {
    /// The expanded globs, in the order of `set`'s indexes.
    pub globs: Vec<String>,
    set: GlobSet,
    /// Tails of `~/` patterns that need a home (`.azure/**`), matched below every home.
    pub home_tails: Vec<String>,
    home_set: GlobSet,
    /// Kernel prefilter entries, deduplicated.
    pub kernel: BTreeSet<KernelEntry>,
}

/// What a configured pattern expands to.
struct Expansion {
    globs: Vec<String>,
    /// For a `~/` pattern that needs a home: its tail.
    home_tail: Option<String>,
}

/// Why a pattern was refused; the config layer adds the field name.
pub type PatternError = String;

/// Checks one configured pattern without compiling the whole list.
pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    let expansion = expand_home(pattern)?;
    for glob in &expansion.globs {
        compile_glob(glob)?;
        kernel_entries(glob)?;
    }
    if let Some(tail) = &expansion.home_tail {
        compile_glob(tail)?;
    }
    Ok(())
}

impl WatchRules {
    /// Compiles the configured patterns.
    pub fn compile(patterns: &[String]) -> Result<Self, PatternError> {
        let mut globs = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut home_tails = Vec::new();
        let mut home_builder = GlobSetBuilder::new();
        let mut kernel = BTreeSet::new();
        let builtin = PROC_ENVIRON_GLOBS.map(str::to_string);
        for pattern in builtin.iter().chain(patterns) {
            let expansion = expand_home(pattern)?;
            for glob in expansion.globs {
                builder.add(compile_glob(&glob)?);
                let entries = kernel_entries(&glob)?;
                // `/home/*/.azure/**` has no selective tail: each home adds its own entries.
                if !(glob.starts_with("/home/*/") && entries.iter().any(KernelEntry::is_broad)) {
                    kernel.extend(entries);
                }
                globs.push(glob);
            }
            if let Some(tail) = expansion.home_tail {
                home_builder.add(compile_glob(&tail)?);
                home_tails.push(tail);
            }
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        let home_set = home_builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            globs,
            set,
            home_tails,
            home_set,
            kernel,
        })
    }

    /// True when the absolute path matches a watch glob.
    pub fn matches(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// True when the path lies below a known home and matches a home tail there.
    pub fn matches_in_homes(&self, path: &str, homes: &Homes) -> bool {
        !self.home_tails.is_empty()
            && homes
                .splits(path)
                .any(|(_, rel)| self.home_set.is_match(rel))
    }

    /// The directories whose whole tree is watched (`/var/run/secrets/`): what a mount
    /// namespace holds there is classified when it is first seen, so its credential files are
    /// known by identity whatever name they are later opened by.
    pub fn watched_trees(&self) -> Vec<String> {
        self.kernel
            .iter()
            .filter_map(|e| match e {
                KernelEntry::Prefix(p) if p.ends_with('/') => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The kernel entries that pass what the home tails match below `home`, besides those
    /// the static list has.
    pub fn home_entries(&self, home: &str) -> Vec<KernelEntry> {
        let mut out: Vec<KernelEntry> = self
            .home_tails
            .iter()
            .filter_map(|tail| kernel_entries(&format!("{home}/{tail}")).ok())
            .flatten()
            .filter(|e| !e.is_broad() && !self.kernel.contains(e))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The home directories under /home on this host.
pub fn host_homes() -> Vec<String> {
    let mut homes: Vec<String> = std::fs::read_dir("/home")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(|n| format!("/home/{n}")))
        .collect();
    homes.sort();
    homes
}

/// A `~/` tail that names a credential file by itself: its first component is a dot-name,
/// no component but the last has a wildcard, no `**`, and the last is literal or starts with
/// a literal (`id_*`); a lone component must be literal (`.pgpass`).
fn is_distinctive_tail(tail: &str) -> bool {
    let comps: Vec<&str> = tail.split('/').collect();
    let (first, last) = (comps[0], comps[comps.len() - 1]);
    let dot_name = first.len() > 1 && first.starts_with('.') && first != "..";
    let literal_dirs = comps[..comps.len() - 1].iter().all(|c| is_literal(c));
    let named = is_literal(last) || (comps.len() >= 2 && literal_head_of(last).is_some());
    dot_name && literal_dirs && named && !comps.contains(&"**") && !last.is_empty()
}

fn expand_home(pattern: &str) -> Result<Expansion, PatternError> {
    if let Some(rest) = pattern.strip_prefix("~/") {
        if is_distinctive_tail(rest) {
            return Ok(Expansion {
                globs: vec![format!("**/{rest}")],
                home_tail: None,
            });
        }
        Ok(Expansion {
            globs: HOME_ROOTS.iter().map(|h| format!("{h}/{rest}")).collect(),
            home_tail: Some(rest.to_string()),
        })
    } else if pattern.starts_with('/') || pattern.starts_with("**/") {
        Ok(Expansion {
            globs: vec![pattern.to_string()],
            home_tail: None,
        })
    } else {
        Err(format!(
            "`{pattern}` must be absolute, or start with `~/` or `**/`"
        ))
    }
}

fn compile_glob(glob: &str) -> Result<globset::Glob, PatternError> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("`{glob}`: {}", e.kind()))
}

fn is_literal(component: &str) -> bool {
    !component.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// Compiles one expanded glob into the kernel entries that together pass every path it matches.
pub fn kernel_entries(glob: &str) -> Result<Vec<KernelEntry>, PatternError> {
    let absolute = glob.starts_with('/');
    let comps: Vec<&str> = glob.trim_start_matches('/').split('/').collect();
    let last = *comps.last().unwrap_or(&"");
    if last.is_empty() {
        return Err(format!(
            "`{glob}` ends with `/`: name files, or use `dir/**`"
        ));
    }
    let first_wild = comps.iter().position(|c| !is_literal(c));
    let last_wild = comps.iter().rposition(|c| !is_literal(c));
    // Literal components before the first wildcard, as an absolute directory prefix.
    let literal_prefix = |upto: usize| -> String {
        let mut p = String::from("/");
        for c in &comps[..upto] {
            p.push_str(c);
            p.push('/');
        }
        p
    };
    let mut out = Vec::new();
    match (first_wild, last_wild) {
        // Fully literal absolute path.
        (None, _) => {
            push_prefix(&mut out, &format!("/{}", comps.join("/")))?;
            push_relative_basename(&mut out, last)?;
        }
        // Ends in literal components after a wildcard: the tail is enough.
        (Some(_), Some(lw)) if lw + 1 < comps.len() => {
            let tail = &comps[lw + 1..];
            if !absolute && lw == 0 && comps[0] == "**" && tail.len() == 1 {
                push_basename(&mut out, last, false)?;
            } else {
                push_suffix(&mut out, &format!("/{}", tail.join("/")))?;
                push_relative_basename(&mut out, last)?;
            }
        }
        // The last component has a wildcard.
        (Some(fw), Some(_)) => {
            let dir_literal_depth = if absolute { fw } else { 0 };
            if absolute && dir_literal_depth >= 2 {
                push_prefix(&mut out, &literal_prefix(fw))?;
            } else if last == "*" && comps.len() >= 2 && is_literal(comps[comps.len() - 2]) {
                // `<wild>/.ssh/*`: the directory's literal tail.
                let start = comps[..comps.len() - 1]
                    .iter()
                    .rposition(|c| !is_literal(c))
                    .map_or(0, |i| i + 1);
                let dir_tail = comps[start..comps.len() - 1].join("/");
                push_dir_suffix(&mut out, &format!("/{dir_tail}/"))?;
            } else if comps.len() >= 2
                && is_literal(comps[comps.len() - 2])
                && comps[comps.len() - 2].starts_with('.')
            {
                // `<wild>/.ssh/id_*`: the dot-directory is more selective than the name.
                push_dir_suffix(&mut out, &format!("/{}/", comps[comps.len() - 2]))?;
            } else if let Some(ext) = literal_tail_of(last) {
                push_suffix(&mut out, ext)?;
            } else if let Some(head) = literal_head_of(last) {
                out.push(KernelEntry::BasenamePrefix(check_len(
                    head,
                    BASENAME_MAX - 1,
                )?));
            } else if absolute && fw >= 1 {
                push_prefix(&mut out, &literal_prefix(fw))?;
            } else {
                return Err(format!(
                    "`{glob}` would match nearly every file: give it a literal directory, name, \
                     prefix or extension"
                ));
            }
        }
        (Some(_), None) => unreachable!("a first wildcard implies a last one"),
    }
    Ok(out)
}

/// Characters after the last metacharacter of a component, when there are at least two.
fn literal_tail_of(component: &str) -> Option<&str> {
    let i = component.rfind(['*', '?', ']', '}'])?;
    let tail = &component[i + 1..];
    (tail.len() >= 2).then_some(tail)
}

/// Characters before the first metacharacter of a component, when there are at least two.
fn literal_head_of(component: &str) -> Option<&str> {
    let i = component.find(['*', '?', '[', '{'])?;
    let head = &component[..i];
    (head.len() >= 2).then_some(head)
}

fn check_len(s: &str, max: usize) -> Result<String, PatternError> {
    if s.len() > max {
        Err(format!(
            "`{s}` is longer than the kernel filter's {max} bytes"
        ))
    } else {
        Ok(s.to_string())
    }
}

fn push_basename(
    out: &mut Vec<KernelEntry>,
    name: &str,
    relative_only: bool,
) -> Result<(), String> {
    out.push(KernelEntry::Basename {
        name: check_len(name, BASENAME_MAX)?,
        relative_only,
    });
    Ok(())
}

/// A file rule's name, for relative opens made from inside its directory.
fn push_relative_basename(out: &mut Vec<KernelEntry>, name: &str) -> Result<(), String> {
    push_basename(out, name, true)
}

fn push_suffix(out: &mut Vec<KernelEntry>, s: &str) -> Result<(), String> {
    out.push(KernelEntry::Suffix(check_len(s, SUFFIX_MAX)?));
    Ok(())
}

fn push_dir_suffix(out: &mut Vec<KernelEntry>, s: &str) -> Result<(), String> {
    out.push(KernelEntry::DirSuffix(check_len(s, SUFFIX_MAX)?));
    Ok(())
}

fn push_prefix(out: &mut Vec<KernelEntry>, p: &str) -> Result<(), String> {
    out.push(KernelEntry::Prefix(check_len(p, PREFIX_MAX)?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::KernelEntry::*;
    use super::*;

    fn entries(glob: &str) -> Vec<KernelEntry> {
        kernel_entries(glob).unwrap()
    }

    fn rel(name: &str) -> KernelEntry {
        Basename {
            name: name.into(),
            relative_only: true,
        }
    }

    #[test]
    fn directory_trees_become_prefixes() {
        assert_eq!(
            entries("/var/run/secrets/**"),
            [Prefix("/var/run/secrets/".into())]
        );
        assert_eq!(
            entries("/etc/kubernetes/pki/**"),
            [Prefix("/etc/kubernetes/pki/".into())]
        );
    }

    #[test]
    fn literal_paths_become_prefix_and_relative_name() {
        assert_eq!(
            entries("/root/.aws/credentials"),
            [Prefix("/root/.aws/credentials".into()), rel("credentials")]
        );
    }

    #[test]
    fn home_wildcards_use_the_literal_tail() {
        assert_eq!(
            entries("/home/*/.kube/config"),
            [Suffix("/.kube/config".into()), rel("config")]
        );
        assert_eq!(entries("/home/*/.ssh/*"), [DirSuffix("/.ssh/".into())]);
    }

    #[test]
    fn anywhere_rules() {
        assert_eq!(
            entries("**/.env"),
            [Basename {
                name: ".env".into(),
                relative_only: false
            }]
        );
        assert_eq!(entries("**/*.pem"), [Suffix(".pem".into())]);
        assert_eq!(entries("**/.env.*"), [BasenamePrefix(".env.".into())]);
    }

    #[test]
    fn too_broad_patterns_are_refused() {
        assert!(kernel_entries("**/*").is_err());
        assert!(kernel_entries("/**").is_err());
        assert!(check_pattern("relative/path").is_err());
        assert!(check_pattern("/dir/").is_err());
    }

    #[test]
    fn broad_home_patterns_watch_each_home() {
        let rules = WatchRules::compile(&["~/.azure/**".to_string()]).unwrap();
        assert!(rules.kernel.contains(&Prefix("/root/.azure/".into())));
        assert!(!rules.kernel.iter().any(|e| e.is_broad()));
        assert_eq!(
            rules.home_entries("/var/lib/jenkins"),
            [Prefix("/var/lib/jenkins/.azure/".into())]
        );
        let c = crate::homes::HomeCounters::default();
        let mut homes = Homes::new();
        homes.add_env(1, "/var/lib/jenkins", &c);
        assert!(rules.matches_in_homes("/var/lib/jenkins/.azure/a/b.json", &homes));
        assert!(!rules.matches_in_homes("/var/lib/other/.azure/a.json", &homes));
        assert!(!rules.matches("/var/lib/jenkins/.azure/a/b.json"));
    }

    #[test]
    fn distinctive_home_tails_match_anywhere() {
        let rules = WatchRules::compile(&[
            "~/.aws/credentials".to_string(),
            "~/.pgpass".to_string(),
            "~/.ssh/id_*".to_string(),
            "~/.ssh/*".to_string(),
        ])
        .unwrap();
        for yes in [
            "/var/lib/jenkins/.aws/credentials",
            "/opt/app/.pgpass",
            "/tmp/job-7/.ssh/id_ed25519",
            "/root/.ssh/known_hosts",
        ] {
            assert!(rules.matches(yes), "{yes}");
        }
        for no in ["/opt/app/.ssh/known_hosts", "/opt/app/pgpass"] {
            assert!(!rules.matches(no), "{no}");
        }
        assert_eq!(rules.home_tails, [".ssh/*"]);
        assert!(rules.kernel.contains(&Suffix("/.aws/credentials".into())));
        assert!(rules.kernel.contains(&DirSuffix("/.ssh/".into())));
        assert!(!is_distinctive_tail(".azure/**"));
        assert!(!is_distinctive_tail(".config/gcloud/**/*.json"));
        assert!(!is_distinctive_tail("plain/file"));
        assert!(is_distinctive_tail(".vault-token"));
    }

    #[test]
    fn default_list_compiles_to_selective_entries() {
        let config = crate::config::Config::embedded();
        let rules = WatchRules::compile(&config.watch.paths).unwrap();
        let broad: Vec<_> = rules.kernel.iter().filter(|e| e.is_broad()).collect();
        // Extensions such as .pem are broad by length but are what the user asked for.
        assert!(
            broad
                .iter()
                .all(|e| matches!(e, Suffix(s) if s.starts_with('.'))),
            "{broad:?}"
        );
    }

    #[test]
    fn glob_match_is_exact() {
        let config = crate::config::Config::embedded();
        let rules = WatchRules::compile(&config.watch.paths).unwrap();
        for yes in [
            "/root/.aws/credentials",
            "/home/alice/.aws/credentials",
            "/home/bob/.ssh/id_ed25519",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/srv/app/.env",
            "/srv/app/.env.production",
            "/etc/tls/server.pem",
            "/home/a/.config/gcloud/legacy_credentials/x/adc.json",
        ] {
            assert!(rules.matches(yes), "{yes}");
        }
        for no in [
            "/root/.aws/credentials.bak",
            "/home/alice/src/.git/config",
            "/home/bob/.ssh/keys/old/id_rsa",
            "/etc/passwd",
            "/srv/app/environment",
            "/srv/app/x.pem.txt",
            "/home/a/.config/other/x.json",
        ] {
            assert!(!rules.matches(no), "{no}");
        }
    }

    /// Every path the globs match must pass the kernel entries (checked with a model of the
    /// kernel filter), or the kernel would hide it.
    #[test]
    fn kernel_entries_cover_glob_matches() {
        let config = crate::config::Config::embedded();
        let rules = WatchRules::compile(&config.watch.paths).unwrap();
        let mut kernel = rules.kernel.clone();
        kernel.extend(rules.home_entries("/home/alice"));
        kernel.extend(rules.home_entries("/var/lib/jenkins"));
        for path in [
            "/root/.aws/credentials",
            "/home/alice/.aws/credentials",
            "/home/alice/.azure/msal_token_cache.json",
            "/root/.azure/x",
            "/home/bob/.ssh/id_ed25519",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/srv/app/.env",
            "/srv/app/.env.production",
            "/home/alice/.config/gcloud/application_default_credentials.json",
            "/root/.config/gcloud/legacy_credentials/a/adc.json",
            "/var/lib/jenkins/.azure/azureProfile.json",
            "/var/lib/jenkins/.config/gcloud/application_default_credentials.json",
            "/var/lib/postgresql/.pgpass",
            "/opt/app/.kube/config",
            "/srv/ci/job-1/.ssh/id_rsa",
        ] {
            assert!(
                rules.matches(path) || path.starts_with("/var/lib/jenkins/"),
                "{path}"
            );
            assert!(model_kernel_filter(&kernel, path), "{path}");
        }
        assert!(!model_kernel_filter(&kernel, "/usr/lib/libc.so.6"));
        assert!(!model_kernel_filter(&kernel, "/home/alice/src/.git/config"));
    }

    /// Userspace model of ebpf/src/probes/files.rs `prefilter`.
    fn model_kernel_filter(entries: &BTreeSet<KernelEntry>, path: &str) -> bool {
        let absolute = path.starts_with('/');
        let (dir, base) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        let virt = if absolute {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let virt_dir = if absolute {
            dir.to_string()
        } else {
            format!("/{dir}")
        };
        entries.iter().any(|e| match e {
            Basename {
                name,
                relative_only,
            } => name == base && (!relative_only || !absolute),
            BasenamePrefix(p) => base.starts_with(p.as_str()),
            Suffix(s) => virt.ends_with(s.as_str()),
            DirSuffix(s) => !dir.is_empty() && virt_dir.ends_with(s.as_str()),
            Prefix(p) => absolute && path.starts_with(p.as_str()),
        })
    }
}
