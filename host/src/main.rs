//! The `flowrun` binary: everything is in the library; see `flowrun::cli`.

fn main() {
    std::process::exit(flowrun::cli::main());
}
