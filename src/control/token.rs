//! The control token: read it, or create it (mode 0600) on first start;
//! compare it in constant time.

use std::path::Path;

/// Bytes of randomness in a generated control token.
const TOKEN_BYTES: usize = 32;

/// Reads the control token, or creates it (mode 0600) if missing. The new
/// file is written beside it and renamed into place, so a crash while it is
/// created never leaves an empty token file that would stop the next start.
/// An existing file must be a regular file of mode 0600 (no access for
/// group or others) owned by the user dnsshift runs as; otherwise this
/// refuses with the command that fixes it.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match crate::config::source::read_regular(path) {
        Ok(t) if !t.trim().is_empty() => {
            check_token_file(path)?;
            return Ok(t.trim().to_string());
        }
        Ok(_) => {
            return Err(std::io::Error::other(
                "the file is empty (remove it to have a new token generated)",
            ));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::config::source::write_private(path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// Refuses a token file that others could read or that another user owns.
fn check_token_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "the file has mode {mode:04o} but must be readable by its owner only: run `chmod 600 {}`",
            path.display()
        )));
    }
    if let Some(me) = crate::config::source::effective_uid()
        && meta.uid() != me
    {
        return Err(std::io::Error::other(format!(
            "the file is owned by uid {} but dnsshift runs as uid {me}: run `chown {me} {}` (or remove it to have a new token generated)",
            meta.uid(),
            path.display()
        )));
    }
    Ok(())
}

/// Compares without an early exit, so timing does not leak the token.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/control.token");
        let t1 = load_or_create_token(&p).unwrap();
        assert_eq!(t1.len(), TOKEN_BYTES * 2);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_token(&p).unwrap(), t1);
        assert!(!dir.path().join("sub/control.token.tmp").exists());
        // A file others can read is refused with the fix.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_token(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        // An empty file is an error, never silently replaced.
        std::fs::write(&p, "").unwrap();
        assert!(load_or_create_token(&p).is_err());
    }
}
