//! Builds the kernel programs (crate keytrail-ebpf) with nightly and bpf-linker, as aya-template
//! does, so `include_bytes_aligned!` in src/probes.rs can embed the object.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    if which("bpf-linker").is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH; run `cargo xtask setup` (it builds bpf-linker against \
             nightly's LLVM) or use `cargo xtask build`"
        ));
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "keytrail-ebpf")
        .ok_or_else(|| anyhow!("keytrail-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
