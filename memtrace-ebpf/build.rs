use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker` binary: rebuild when it
/// changes (the aya template's approach; artifact dependencies are not usable yet).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
