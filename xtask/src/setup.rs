//! `cargo xtask setup`: installs (or checks) everything the build and the tests need.
//!
//! - the nightly toolchain with `rust-src` and `clippy` (the kernel crate is built with
//!   `-Z build-std=core` for `bpfel-unknown-none`), and `clippy` + `rustfmt` on the
//!   toolchain in use;
//! - `bpf-linker`, built against nightly's own libLLVM so both agree on the LLVM version;
//! - a few Debian packages used by the tests and benchmarks;
//! - the `rotel` OpenTelemetry collector (a PyPI wheel carrying its binary) in a
//!   virtualenv at `target/rotel-venv`, for the OTLP end-to-end tests and benchmarks.
//!
//! Every step checks first and only installs what is missing, so running it again is fast.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util::{self, command, find_in_path, is_root, output_checked, run_checked};

/// The toolchain the kernel crate is built with.
pub const NIGHTLY: &str = "nightly";

/// Components needed on nightly: sources of `core` for `-Z build-std`, and clippy for
/// linting the kernel crate.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];

/// Components needed on the toolchain in use for `cargo xtask test`.
const ACTIVE_COMPONENTS: &[&str] = &["clippy", "rustfmt"];

/// bpf-linker release series (`cargo install --version ~0.13`).
const BPF_LINKER_SERIES: &str = "0.13";

/// Directory under `$CARGO_HOME` holding the libLLVM symlinks bpf-linker is linked
/// against (the binary keeps an rpath to `<dir>/lib`) and the build stamp.
const LLVM_PREFIX_DIR: &str = "keytrail-llvm";

/// rotel release the OTLP tests run against (`pip install rotel==...`).
pub const ROTEL_VERSION: &str = "0.0.1a15";

/// The virtualenv holding rotel, relative to the workspace root. tests/src/collector.rs looks
/// for the binary at the same place.
pub const ROTEL_VENV: &str = "target/rotel-venv";

/// Commands used by the tests and benchmarks, with the Debian package providing each.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("cc", "gcc"),
    // Crafted libraries (objcopy) and where their functions are (nm, readelf).
    ("objcopy", "binutils"),
    ("nm", "binutils"),
    ("readelf", "binutils"),
    ("mount", "util-linux"),
    ("unshare", "util-linux"),
    ("ip", "iproute2"),
    ("node", "nodejs"),
    ("python3", "python3"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("psql", "postgresql-client"),
    // The server binaries live under /usr/lib/postgresql/N/bin, off PATH.
    ("pg_ctlcluster", "postgresql"),
];

#[derive(Debug, Args)]
pub struct Options {
    /// Rebuild bpf-linker even if the installed one looks fine.
    #[arg(long)]
    pub rebuild_bpf_linker: bool,
}

pub fn run(opts: Options) -> Result<()> {
    setup(opts.rebuild_bpf_linker)
}

/// Runs the setup checks; called first by every other command.
pub fn ensure() -> Result<()> {
    setup(false)
}

fn setup(rebuild_bpf_linker: bool) -> Result<()> {
    let start = Instant::now();
    ensure_nightly()?;
    let nightly = NightlyInfo::query()?;
    ensure_components(Some(NIGHTLY), &nightly.host, NIGHTLY_COMPONENTS)?;
    ensure_components(None, &nightly.host, ACTIVE_COMPONENTS)?;
    ensure_bpf_linker(&nightly, rebuild_bpf_linker)?;
    ensure_debian_packages(DEBIAN_PACKAGES)?;
    ensure_rotel()?;
    eprintln!("setup: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn rustup() -> Result<std::process::Command> {
    if find_in_path("rustup").is_none() && !util::cargo_home()?.join("bin/rustup").exists() {
        bail!(
            "rustup not found: install it from https://rustup.rs, then run `cargo xtask setup` again"
        );
    }
    command("rustup")
}

fn ensure_nightly() -> Result<()> {
    let list = output_checked(rustup()?.args(["toolchain", "list"]))?;
    // Lines look like `nightly-x86_64-unknown-linux-gnu (active)`; dated toolchains
    // (`nightly-2026-05-19-...`) are not what `+nightly` selects.
    let prefix = format!("{NIGHTLY}-");
    let installed = list.lines().any(|line| {
        line.split_whitespace().next().is_some_and(|name| {
            name.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        })
    });
    if installed {
        eprintln!("setup: {NIGHTLY} toolchain ok");
        return Ok(());
    }
    eprintln!("setup: installing the {NIGHTLY} toolchain");
    run_checked(rustup()?.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
        .context("installing the nightly toolchain failed")?;
    eprintln!("setup: {NIGHTLY} toolchain installed");
    Ok(())
}

/// What bpf-linker has to match: `rustc +nightly -vV` and nightly's libLLVM.
struct NightlyInfo {
    /// Full `rustc +nightly -vV` output, kept as the bpf-linker build stamp.
    version_verbose: String,
    host: String,
    /// Major LLVM version, e.g. 22.
    llvm_major: u32,
    /// `<sysroot>/lib/libLLVM.so.*` (the soname bpf-linker links against).
    libllvm: PathBuf,
}

impl NightlyInfo {
    fn query() -> Result<Self> {
        let version_verbose =
            output_checked(command("rustc")?.args([&format!("+{NIGHTLY}"), "-vV"]))?;
        let field = |key: &str| {
            version_verbose
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .with_context(|| {
                    format!("`rustc +{NIGHTLY} -vV` has no `{key}` line:\n{version_verbose}")
                })
        };
        let host = field("host:")?;
        let llvm = field("LLVM version:")?;
        let llvm_major = llvm
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .with_context(|| format!("cannot parse LLVM version `{llvm}`"))?;

        let sysroot =
            output_checked(command("rustc")?.args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let mut candidates = fs::read_dir(&lib)
            .with_context(|| format!("reading {}", lib.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libLLVM.so."))
            })
            .collect::<Vec<_>>();
        let libllvm = match candidates.len() {
            1 => candidates.remove(0),
            0 => bail!(
                "no libLLVM in {}: the {NIGHTLY} toolchain looks incomplete; try \
                 `rustup toolchain uninstall {NIGHTLY}` and run setup again",
                lib.display()
            ),
            _ => bail!("several libLLVM files in {}: {candidates:?}", lib.display()),
        };
        Ok(Self {
            version_verbose,
            host,
            llvm_major,
            libllvm,
        })
    }
}

/// Adds the missing `components` to `toolchain` (`None`: the toolchain in use).
fn ensure_components(toolchain: Option<&str>, host: &str, components: &[&str]) -> Result<()> {
    let mut list = rustup()?;
    list.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let installed = output_checked(&mut list)?;
    let missing = components
        .iter()
        .copied()
        .filter(|component| {
            let with_host = format!("{component}-{host}");
            !installed
                .lines()
                .map(str::trim)
                .any(|line| line == *component || line == with_host)
        })
        .collect::<Vec<_>>();
    let name = toolchain.unwrap_or("active toolchain");
    if !missing.is_empty() {
        eprintln!("setup: adding {} to {name}", missing.join(", "));
        let mut add = rustup()?;
        add.args(["component", "add"]).args(&missing);
        if let Some(toolchain) = toolchain {
            add.args(["--toolchain", toolchain]);
        }
        run_checked(&mut add)?;
    }
    eprintln!("setup: {name}: {} ok", components.join(", "));
    Ok(())
}

fn ensure_bpf_linker(nightly: &NightlyInfo, force: bool) -> Result<()> {
    let prefix = util::cargo_home()?.join(LLVM_PREFIX_DIR);
    let stamp = prefix.join("stamp");
    let llvm_feature = format!("llvm-{}", nightly.llvm_major);

    if !force {
        match bpf_linker_state(nightly, &prefix, &stamp)? {
            LinkerState::Ok(version) => {
                eprintln!(
                    "setup: bpf-linker {version} ok (LLVM {})",
                    nightly.llvm_major
                );
                return Ok(());
            }
            LinkerState::Stale(why) => eprintln!("setup: bpf-linker must be (re)built: {why}"),
        }
    }

    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_SERIES} against {NIGHTLY}'s LLVM {} \
         (takes a couple of minutes)",
        nightly.llvm_major
    );
    let start = Instant::now();
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    // Drop links to the libLLVM of an older nightly.
    for entry in fs::read_dir(&lib)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libLLVM"))
        {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let _ = fs::remove_file(&stamp);
    let file_name = nightly
        .libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        std::os::unix::fs::symlink(&nightly.libllvm, &link).with_context(|| {
            format!(
                "linking {} to {}",
                link.display(),
                nightly.libllvm.display()
            )
        })?;
    }

    let install = |locked: bool| -> Result<()> {
        let mut cmd = util::cargo()?;
        cmd.arg(format!("+{NIGHTLY}"))
            .args(["install", "bpf-linker", "--force", "--no-default-features"])
            .args(["--version", &format!("~{BPF_LINKER_SERIES}")])
            .args(["--features", &llvm_feature])
            .env("LLVM_PREFIX", &prefix)
            // Outside the workspace, so its .cargo/config.toml does not apply.
            .current_dir(&prefix);
        if locked {
            cmd.arg("--locked");
        }
        run_checked(&mut cmd)
    };
    if let Err(err) = install(true) {
        eprintln!("setup: `cargo install --locked` failed ({err:#}); retrying without --locked");
        install(false).context("building bpf-linker failed")?;
    }

    let version = bpf_linker_version()?
        .context("bpf-linker was installed but `bpf-linker --version` does not run")?;
    fs::write(&stamp, &nightly.version_verbose)
        .with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!(
        "setup: bpf-linker {version} ok (LLVM {}, built in {:.0} s)",
        nightly.llvm_major,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

enum LinkerState {
    Ok(String),
    Stale(String),
}

fn bpf_linker_state(nightly: &NightlyInfo, prefix: &Path, stamp: &Path) -> Result<LinkerState> {
    let Some(version) = bpf_linker_version()? else {
        return Ok(LinkerState::Stale(
            "`bpf-linker --version` does not run".into(),
        ));
    };
    if !version.starts_with(&format!("{BPF_LINKER_SERIES}.")) {
        return Ok(LinkerState::Stale(format!(
            "installed version {version}, want {BPF_LINKER_SERIES}.x"
        )));
    }
    let wanted = fs::canonicalize(&nightly.libllvm)
        .with_context(|| format!("resolving {}", nightly.libllvm.display()))?;
    let lib = prefix.join("lib");
    let file_name = nightly
        .libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        if fs::canonicalize(&link).ok().as_ref() != Some(&wanted) {
            return Ok(LinkerState::Stale(format!(
                "{} does not resolve to {}",
                link.display(),
                wanted.display()
            )));
        }
    }
    match fs::read_to_string(stamp) {
        Ok(stamp_text) if stamp_text == nightly.version_verbose => Ok(LinkerState::Ok(version)),
        Ok(_) => Ok(LinkerState::Stale(format!(
            "it was built with a different {NIGHTLY}"
        ))),
        Err(_) => {
            // No stamp (installed by hand with the same recipe): accept it if the dynamic
            // loader resolves its libLLVM to this nightly's, and record that.
            if linked_libllvm()?.as_ref() == Some(&wanted) {
                fs::write(stamp, &nightly.version_verbose)
                    .with_context(|| format!("writing {}", stamp.display()))?;
                Ok(LinkerState::Ok(version))
            } else {
                Ok(LinkerState::Stale(format!(
                    "no stamp and not linked against {}",
                    wanted.display()
                )))
            }
        }
    }
}

/// `bpf-linker --version` → `Some("0.13.0")`; `None` if it is missing or does not run.
fn bpf_linker_version() -> Result<Option<String>> {
    let Ok(out) = command("bpf-linker")?
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Ok(None);
    };
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .or_else(|| Some(text.trim().to_owned())))
}

/// The libLLVM the installed bpf-linker loads, per `ldd`, canonicalized.
fn linked_libllvm() -> Result<Option<PathBuf>> {
    let bin = util::cargo_home()?.join("bin/bpf-linker");
    if find_in_path("ldd").is_none() || !bin.exists() {
        return Ok(None);
    }
    let Ok(out) = output_checked(command("ldd")?.arg(&bin)) else {
        return Ok(None);
    };
    Ok(out
        .lines()
        .filter(|line| line.contains("libLLVM"))
        .find_map(|line| line.split("=>").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|path| fs::canonicalize(path).ok()))
}

/// Makes sure each `(command, package)` command exists, installing the packages of the
/// missing ones with apt-get (one `apt-get update`, one `apt-get install`).
pub fn ensure_debian_packages(packages: &[(&str, &str)]) -> Result<()> {
    let commands = packages
        .iter()
        .map(|(cmd, _)| *cmd)
        .collect::<Vec<_>>()
        .join(", ");
    let mut missing = packages
        .iter()
        .filter(|(cmd, _)| find_in_path(cmd).is_none())
        .map(|(_, package)| *package)
        .collect::<Vec<_>>();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        eprintln!("setup: commands {commands} ok");
        return Ok(());
    }
    apt_install(&missing)?;
    if let Some((cmd, package)) = packages.iter().find(|(cmd, _)| find_in_path(cmd).is_none()) {
        bail!("`{cmd}` is still missing after installing {package}");
    }
    eprintln!("setup: commands {commands} ok");
    Ok(())
}

/// Installs Debian packages with apt-get (one `apt-get update`, one `apt-get install`), through
/// sudo when not root.
fn apt_install(missing: &[&str]) -> Result<()> {
    if find_in_path("apt-get").is_none() {
        bail!(
            "missing packages {} and apt-get is not available: install them with your \
             package manager",
            missing.join(" ")
        );
    }
    let apt = |args: &[&str]| -> Result<std::process::Command> {
        let mut cmd = if is_root() {
            command("apt-get")?
        } else {
            let sudo = util::sudo("installing Debian packages").with_context(|| {
                format!(
                    "missing packages: run `apt-get install {}` as root",
                    missing.join(" ")
                )
            })?;
            let mut cmd = command(sudo)?;
            cmd.arg("apt-get");
            cmd
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null());
        Ok(cmd)
    };
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run_checked(&mut apt(&["update"])?)?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"])?;
    install.args(missing);
    run_checked(&mut install)
}

/// The rotel collector binary (`rotel-agent`) inside the virtualenv, if installed.
pub fn rotel_binary() -> Result<PathBuf> {
    let venv = util::workspace_root().join(ROTEL_VENV);
    find_rotel(&venv).with_context(|| {
        format!(
            "rotel is not installed in {}: run `cargo xtask setup`",
            venv.display()
        )
    })
}

/// `<venv>/lib/python3.*/site-packages/rotel/rotel-agent`, if it is there.
fn find_rotel(venv: &Path) -> Option<PathBuf> {
    fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|dir| dir.join("site-packages/rotel/rotel-agent"))
        .find(|bin| bin.is_file())
}

/// Installs rotel `ROTEL_VERSION` from PyPI into `ROTEL_VENV` unless it is already there:
/// `python3 -m venv`, then the venv's pip (which honours the usual `PIP_*` settings, e.g. a
/// local wheel mirror).
fn ensure_rotel() -> Result<()> {
    let venv = util::workspace_root().join(ROTEL_VENV);
    let python = venv.join("bin/python");
    let installed = |python: &Path| -> Option<String> {
        let out = command(python)
            .ok()?
            .args([
                "-c",
                "import rotel, importlib.metadata as m; print(m.version('rotel'))",
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    if installed(&python).as_deref() == Some(ROTEL_VERSION) && find_rotel(&venv).is_some() {
        eprintln!("setup: rotel {ROTEL_VERSION} ok");
        return Ok(());
    }
    if find_in_path("python3").is_none() {
        ensure_debian_packages(&[("python3", "python3")])?;
    }
    let runs = command(&python)?
        .args(["-c", "pass"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if venv.exists() && !runs {
        // Left from another Python (or half made): start over.
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    if !python.is_file() {
        // Debian's python3 has `venv` (with ensurepip) in a package of its own.
        let has_venv = command("python3")?
            .args(["-c", "import venv, ensurepip"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_venv {
            eprintln!("setup: python3 has no venv module; installing python3-venv");
            apt_install(&["python3-venv"])?;
        }
        eprintln!("setup: creating the virtualenv {}", venv.display());
        run_checked(command("python3")?.args(["-m", "venv"]).arg(&venv))
            .context("creating the rotel virtualenv failed")?;
    }
    eprintln!(
        "setup: installing rotel {ROTEL_VERSION} into {}",
        venv.display()
    );
    run_checked(
        command(venv.join("bin/pip"))?
            .args(["install", "--quiet"])
            .arg(format!("rotel=={ROTEL_VERSION}"))
            .stdin(std::process::Stdio::null()),
    )
    .context("installing rotel from PyPI failed")?;
    let bin = rotel_binary()?;
    if installed(&python).as_deref() != Some(ROTEL_VERSION) {
        bail!("rotel {ROTEL_VERSION} was installed but `import rotel` fails");
    }
    eprintln!("setup: rotel {ROTEL_VERSION} ok ({})", bin.display());
    Ok(())
}
