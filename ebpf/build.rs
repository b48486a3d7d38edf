//! The eBPF crate links with bpf-linker, a dependency cargo cannot see: rebuild when it changes.
//! (`cargo xtask setup` installs it.)
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup`"),
    }
}
