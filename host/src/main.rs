//! The `flowrun` binary: everything is in the library; see `flowrun::cli`.

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(flowrun::cli::main());
}
