//! The `dnsshift` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = dnsshift::cli::Args::parse();
    dnsshift::cli::main(args)
}
