//! The `[cookies]` table: where the DNS cookie secret (and the previous one,
//! during a rotation) is read from ([`crate::dns::cookie`] uses them).

use std::path::Path;
use std::time::Duration;

use crate::dns::cookie::{MAX_AGE_SECS, SECRET_LEN};

/// Default `[cookies] rotate`: a new secret every day.
pub const DEFAULT_ROTATE: Duration = Duration::from_secs(24 * 3600);
/// Shortest `[cookies] rotate`: the lifetime of a server cookie. A cookie
/// is accepted under the current secret and the previous one, so with
/// rotations at least this far apart it stays valid until it expires.
pub const MIN_ROTATE: Duration = Duration::from_secs(MAX_AGE_SECS as u64);

/// Reads a secret file: 16 bytes as 32 hex digits (surrounding whitespace
/// ignored), readable by its owner only, like the control token. Errors
/// say what is wrong and how to fix it.
pub fn read_secret(path: &Path) -> Result<[u8; SECRET_LEN], String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o} but must be readable by its owner only: run `chmod 600 {shown}`"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    parse_hex(text.trim()).ok_or_else(|| {
        format!(
            "{shown} must hold 16 bytes as 32 hex digits (make one with `openssl rand -hex 16`)"
        )
    })
}

/// 32 hex digits as 16 bytes.
pub fn parse_hex(text: &str) -> Option<[u8; SECRET_LEN]> {
    if text.len() != 2 * SECRET_LEN || !text.is_ascii() {
        return None;
    }
    let mut out = [0; SECRET_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_secrets() {
        assert_eq!(
            parse_hex("000102030405060708090a0b0c0d0eFF"),
            Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255])
        );
        assert_eq!(parse_hex("00"), None);
        assert_eq!(parse_hex("+0102030405060708090a0b0c0d0e0f"), None);
        assert_eq!(parse_hex("zz0102030405060708090a0b0c0d0e0f"), None);
    }
}
