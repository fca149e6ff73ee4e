//! The log output format, apart from the config code so that `build.rs` can
//! include it along with the command-line definitions (`src/cli/args.rs`).

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}
