//! Links the `skiff-runtime` binary as a non-PIE executable. It is started once per container
//! operation, and most of its start-up went to page faults from applying tens of thousands of
//! load-time relocations (vtables and other pointers in `.data.rel.ro`) of a position-independent
//! executable. A fixed-address executable has them resolved at link time. No crate does this;
//! cargo has no per-package linker flags other than a build script.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
