//! Shared by the tasks: paths, PATH handling, running commands, root checks.

use std::{
    env,
    ffi::{OsStr, OsString},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Path of a binary built from this workspace for the host.
pub fn binary_path(name: &str, release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join(name)
}

/// `$CARGO_HOME`, defaulting to `~/.cargo`.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// `$PATH` with `$CARGO_HOME/bin` in front, so tools installed by `cargo install`
/// (bpf-linker) are found by cargo and build scripts.
pub fn path_with_cargo_bin() -> Result<OsString> {
    let bin = cargo_home()?.join("bin");
    let mut dirs = vec![bin.clone()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path).filter(|d| *d != bin));
    }
    env::join_paths(dirs).context("a PATH entry contains ':'")
}

/// A command with `$CARGO_HOME/bin` on its PATH, run from the workspace root.
pub fn command(program: impl AsRef<OsStr>) -> Result<Command> {
    let mut cmd = Command::new(program);
    cmd.env("PATH", path_with_cargo_bin()?)
        .current_dir(workspace_root());
    Ok(cmd)
}

/// `cargo` (the rustup proxy, so `+nightly` works) with `$CARGO_HOME/bin` on PATH,
/// run from the workspace root.
pub fn cargo() -> Result<Command> {
    command("cargo")
}

/// Shell-like rendering of a command for messages.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command with inherited stdio; fails unless it exits successfully.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs a command, capturing stdout; fails (with its stderr) unless it exits successfully.
pub fn output_checked(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            display(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Finds an executable on `$PATH` (plus the sbin directories, which are often missing
/// from an unprivileged user's PATH).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `sudo`, for running a command as root; errors with what the command needs otherwise.
pub fn sudo(what: &str) -> Result<PathBuf> {
    find_in_path("sudo").with_context(|| {
        format!(
            "{what} needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN), and sudo is not \
             installed: run this command as root"
        )
    })
}
