//! Build script: stamps the git commit into `dnsshift --version`, and writes
//! the man pages and shell completions that `cargo deb` packages.
//!
//! The command line is defined once, in `src/cli/args.rs`; this script
//! compiles that file as a module (with the one type it needs from the config) so the
//! generated pages cannot drift from the binary's real options.
//!
//! Output: `<target>/<profile>/dnsshift-generated/{man,completions}/` (man
//! pages gzipped), the
//! place cargo-deb's `target/release/...` assets point at (cargo-deb maps that
//! prefix to the real target directory; a build script only knows its own
//! `OUT_DIR`, three levels below the profile directory).

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use clap::CommandFactory;
use clap_complete::Shell;

#[path = "src/config/log_format.rs"]
mod log_format;
/// Where `src/cli/args.rs` finds the type, as in the crate.
mod config {
    pub use super::log_format::LogFormat;
}
#[allow(dead_code)] // only the clap definitions are used here
#[path = "src/cli/args.rs"]
mod cli;

/// Directory under the profile directory that the packaging assets name.
const GENERATED: &str = "dnsshift-generated";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cli/args.rs");
    println!("cargo:rerun-if-changed=src/config/log_format.rs");

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let commit = git_commit(&manifest).unwrap_or_else(|| "unknown".into());
    let version = format!("{} (commit {commit})", std::env::var("CARGO_PKG_VERSION")?);
    println!("cargo:rustc-env=DNSSHIFT_VERSION={version}");
    // The same commit for `dnsshift_build_info`.
    println!("cargo:rustc-env=DNSSHIFT_COMMIT={commit}");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // OUT_DIR is <profile dir>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .ok_or("OUT_DIR is not <profile>/build/<pkg>/out")?;
    let generated = profile_dir.join(GENERATED);
    // Start clean so a removed subcommand leaves no stale page behind.
    match std::fs::remove_dir_all(&generated) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let man = generated.join("man");
    let completions = generated.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    // A build script's own statics live as long as the process.
    let version: &'static str = Box::leak(version.into_boxed_str());
    let cmd = cli::Args::command().version(version);
    // One page per command and subcommand: dnsshift.1, dnsshift-status.1,
    // dnsshift-endpoint-disable.1, ...
    clap_mangen::generate_to(cmd.clone(), &man)?;
    gzip_all(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "dnsshift", &completions)?;
    }
    Ok(())
}

/// Replaces every file in `dir` by its gzipped copy (`x.1` -> `x.1.gz`), as
/// Debian policy wants man pages (cargo-deb compresses only assets outside
/// the target directory). No timestamp in the header: reproducible.
fn gzip_all(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let data = std::fs::read(&path)?;
        let mut gz_name = path.clone().into_os_string();
        gz_name.push(".gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz_name)?,
            flate2::Compression::best(),
        );
        std::io::Write::write_all(&mut enc, &data)?;
        enc.finish()?;
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// The short hash of HEAD, or None outside a git checkout (a source tarball)
/// or without git. Asks cargo to rerun when HEAD or the branch moves.
fn git_commit(repo: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Process::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // HEAD names the branch; the branch's ref (loose or packed) names the
    // commit. In a worktree these live in different directories: ask git.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &name]) {
            // A ref not written yet (still packed) appears in its directory.
            let p = repo.join(p);
            let watched = if p.exists() {
                Some(p.as_path())
            } else {
                p.parent()
            };
            if let Some(w) = watched.filter(|w| w.exists()) {
                println!("cargo:rerun-if-changed={}", w.display());
            }
        }
    }
    Some(commit)
}
