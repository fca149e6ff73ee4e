//! Shared plumbing for reading TOML files: errors that name file, line and
//! key, span-to-line mapping, and the value parsers every config layer uses.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::DeTable;

/// One problem in one config file, pointing at the line and key to fix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, or 0 when the problem is about the file as a whole.
    pub line: usize,
    /// Dotted key path of the offending value ("service.www.pools.old").
    pub key: String,
    /// What is wrong, in lowercase prose.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// How an unknown key's message starts ([`Source::unknown_keys`]).
const UNKNOWN_KEY: &str = "unknown key";

impl ConfigError {
    /// Whether this reports an unknown key of the table at key path
    /// `table`. Such a key is most often a misspelling: what its table then
    /// lacks (a required key, a setting a combination check needs) follows
    /// from it and is not reported again.
    pub fn is_unknown_key_in(&self, table: &str) -> bool {
        self.message.starts_with(UNKNOWN_KEY)
            && self.key.rsplit_once('.').is_some_and(|(t, _)| t == table)
    }
}

/// A list of config errors, shown one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The text of a file being read, for turning byte spans into line numbers.
pub struct Source {
    /// Where the text came from.
    pub path: PathBuf,
    /// The whole file.
    pub text: String,
}

impl Source {
    /// Reads a file; an unreadable file, or one that is not a regular
    /// file, is an error that names it.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        match read_regular(path) {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(e) => Err(ConfigError {
                file: path.to_path_buf(),
                line: 0,
                key: String::new(),
                message: format!("cannot read file: {e}"),
            }),
        }
    }

    /// 1-based line number of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error at the start of `span`.
    pub fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// An error at a given line.
    pub fn error_at_line(&self, line: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Parses the whole file as TOML into `T`; syntax errors, unknown keys
    /// and wrong types come back with their line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let line = e.span().map(|s| self.line_of(s.start)).unwrap_or(0);
            ConfigError {
                file: self.path.clone(),
                line,
                key: String::new(),
                message: e.message().trim().to_string(),
            }
        })
    }

    /// The file as a table whose keys keep their spans, for finding keys
    /// that no spec reads ([`Source::unknown_keys`]). None on a syntax error,
    /// which [`Source::parse`] reports.
    pub fn keys(&self) -> Option<DeTable<'_>> {
        DeTable::parse(&self.text).ok().map(Spanned::into_inner)
    }

    /// One error for each key of `table` that is not in `known`, at the
    /// key's line; `prefix` is the table's key path ("" at the top). The
    /// caller goes on validating: an unknown key hides no other mistake.
    pub fn unknown_keys(
        &self,
        table: &DeTable<'_>,
        prefix: &str,
        known: &[&str],
        errs: &mut Vec<ConfigError>,
    ) {
        for k in table.keys() {
            let name = k.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let expected = known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errs.push(self.error(
                k.span(),
                &join_key(prefix, name),
                format!("{UNKNOWN_KEY}, expected one of {expected}"),
            ));
        }
    }

    /// Parses a duration: humantime text ("30s", "2h 30m") or a bare
    /// integer of seconds (`ttl = 30`, as BIND and Knot users write it).
    pub fn duration(
        &self,
        value: &Spanned<DurationSpec>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        value
            .get_ref()
            .to_duration()
            .map_err(|m| self.error(value.span(), key, m))
    }

    /// Parses a duration used as a DNS TTL: whole seconds, at most 2^31-1.
    pub fn ttl(&self, value: &Spanned<DurationSpec>, key: &str) -> Result<u32, ConfigError> {
        let d = self.duration(value, key)?;
        if d.subsec_nanos() != 0 {
            return Err(self.error(value.span(), key, "a TTL must be whole seconds"));
        }
        u32::try_from(d.as_secs())
            .ok()
            .filter(|&s| s <= MAX_TTL)
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    key,
                    format!("TTL {} is longer than the DNS maximum", value.get_ref()),
                )
            })
    }
}

/// `prefix.name`, or `name` at the top level.
pub fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A table of `table` by key, if it is one.
pub fn sub_table<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a DeTable<'i>> {
    table.get(key)?.get_ref().as_table()
}

/// The keys a struct with derived `Deserialize` reads: the field list the
/// derive hands to `deserialize_struct`. Keeps the list of known keys in
/// one place, the spec type itself.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only records the field list it is asked for.
    struct Fields(&'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field list recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut f = Fields(&[]);
    let _ = T::deserialize(&mut f);
    f.0
}

/// Reads a regular file as UTF-8 text. Anything else (a FIFO, a device, a
/// directory, a socket) is refused without waiting on it: the type is
/// checked (following symlinks) before opening, the open does not block
/// (`O_NONBLOCK`, which a regular file ignores), and the opened file is
/// checked again in case the path was swapped meanwhile.
pub fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    require_regular(&std::fs::metadata(path)?)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    require_regular(&file.metadata()?)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Writes `bytes` to `path`, readable by its owner only (mode 0600):
/// a temporary file beside it, fsynced, renamed over it, the directory
/// fsynced. For secrets (the control token, the DNS cookie secret's local
/// copy); a leftover temporary file from a crash is replaced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn require_regular(meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("it is {kind}, not a regular file"),
    ))
}

/// A duration as written in a config file: humantime text or a bare
/// integer of seconds. Validated by [`DurationSpec::to_duration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationSpec {
    /// "30s", "5m", "2h 30m".
    Text(String),
    /// `30`: seconds.
    Seconds(i64),
}

impl DurationSpec {
    /// The duration, or what is wrong with it (lowercase prose).
    pub fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationSpec::Text(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                format!(
                    "invalid duration {s:?}: {e} (write it like \"30s\", \"5m\", \"2h 30m\" or 30 for seconds)"
                )
            }),
            DurationSpec::Seconds(n) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| format!("invalid duration {n}: a duration cannot be negative")),
        }
    }
}

impl fmt::Display for DurationSpec {
    /// As written: text quoted, seconds bare.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationSpec::Text(s) => write!(f, "{s:?}"),
            DurationSpec::Seconds(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"30s\" or \"2h 30m\", or whole seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationSpec, E> {
                Ok(DurationSpec::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationSpec, E> {
                Ok(DurationSpec::Seconds(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationSpec, E> {
                i64::try_from(v)
                    .map(DurationSpec::Seconds)
                    .map_err(|_| E::custom(format!("{v} seconds is too long")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Largest TTL RFC 2181 allows (2^31 - 1 seconds).
pub const MAX_TTL: u32 = i32::MAX as u32;

/// The effective uid of this process, from `/proc/self/status` (std has no
/// safe call for it, and this crate forbids `unsafe`). None where there is
/// no procfs; the owner check is then skipped.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_count_from_one() {
        let s = Source {
            path: "x.toml".into(),
            text: "a\nb\nc".into(),
        };
        assert_eq!(s.line_of(0), 1);
        assert_eq!(s.line_of(2), 2);
        assert_eq!(s.line_of(4), 3);
        assert_eq!(s.line_of(99), 3);
    }

    #[test]
    fn error_display_names_file_line_key() {
        let e = ConfigError {
            file: "zones/a.toml".into(),
            line: 7,
            key: "service.www.ttl".into(),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "zones/a.toml:7: service.www.ttl: bad");
    }
}
