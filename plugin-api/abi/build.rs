//! Keeps the package name that abi_stable records in every type layout at
//! `flowrun-plugin-api`, the name this crate had before the plugin API was split in three.
//!
//! abi_stable's `#[derive(StableAbi)]` stores `env!("CARGO_PKG_NAME")` in each layout, and its
//! load-time check refuses a library whose types come from a package of another name
//! ("different package"). Plugins built before the split carry `flowrun-plugin-api`; a host
//! built from this crate must accept them, and a plugin built from this crate must load into
//! an older host, so the recorded name is part of the ABI and never changes. The unit test
//! `layouts_carry_the_abi_package_name` checks that this override is in effect.
fn main() {
    println!("cargo:rustc-env=CARGO_PKG_NAME=flowrun-plugin-api");
    println!("cargo:rerun-if-changed=build.rs");
}
