//! Finds the compiled XDP object so `src/dataplane/loader.rs` can embed it and `mgm` ships as
//! one self-contained binary.
//!
//! `cargo xtask build` compiles `mgm-ebpf` first (nightly, bpf-linker) and passes the object's
//! path in `MGM_EBPF_OBJECT`. Plain `cargo build`/`cargo test` on this crate still work without
//! the BPF toolchain: the binary is then built without an object (`mgm_ebpf_missing`) and
//! `mgm run` refuses to start with a message saying how to build it properly.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mgm_ebpf_missing)");
    println!("cargo::rerun-if-env-changed=MGM_EBPF_OBJECT");
    let object = env::var_os("MGM_EBPF_OBJECT").map(PathBuf::from);
    match object {
        Some(path) if path.is_file() => {
            println!("cargo::rerun-if-changed={}", path.display());
            println!("cargo::rustc-env=MGM_EBPF_OBJECT={}", path.display());
        }
        Some(path) => panic!(
            "MGM_EBPF_OBJECT={} does not exist; run `cargo xtask build`",
            path.display()
        ),
        None => println!("cargo::rustc-cfg=mgm_ebpf_missing"),
    }
}
