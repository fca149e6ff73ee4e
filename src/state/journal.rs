//! The history log of the state file: every change, one JSON line each
//! (the [`Event`] JSON of `history --json`), appended beside `state.json`
//! and fsynced, never rewritten.
//!
//! ```text
//! <state_dir>/history.jsonl      the current file, appended to
//! <state_dir>/history.1.jsonl    the most recent rotated file
//! ...
//! <state_dir>/history.8.jsonl    the oldest kept ([`ROTATED_KEPT`])
//! ```
//!
//! When the current file has reached [`ROTATE_BYTES`], the next append
//! first rotates it: `history.8.jsonl` is deleted (a warning names it, how
//! many events it held and their dates), every other file moves up one
//! number, and `history.jsonl` becomes `history.1.jsonl`. At about 250
//! bytes an event, that keeps the last 150,000 events or so.
//!
//! A line that cannot be read is skipped with a warning naming the file
//! and line; a torn last line (a crash in the middle of an append) is cut
//! off with a warning before the next append, so that it never glues onto
//! the next event. Neither refuses a start.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::Event;

/// Name of the current file.
pub const HISTORY_FILE: &str = "history.jsonl";
/// Size at which the current file is rotated (4 MiB, about 16,000 events).
pub const ROTATE_BYTES: u64 = 4 << 20;
/// Rotated files kept: `history.1.jsonl` to `history.8.jsonl`.
pub const ROTATED_KEPT: usize = 8;
/// Events `history` shows without `--all`: the most recent ones (of the
/// service asked for, if one is).
pub const TAIL: usize = 1_000;
/// How far from the end the last line is looked for (an event is far
/// smaller).
const LAST_LINE_WINDOW: u64 = 64 * 1024;

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this service's (its key), else every service's.
    pub service: Option<String>,
    /// Every event kept; else the most recent [`TAIL`].
    pub all: bool,
}

impl Query {
    /// Every event kept, of every service.
    pub fn everything() -> Query {
        Query {
            service: None,
            all: true,
        }
    }
}

/// The history log in one directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The log in `dir`.
    pub fn new(dir: &Path) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
        }
    }

    /// The current file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(HISTORY_FILE)
    }

    /// The `n`th file: 0 the current, 1 the most recent rotated one.
    pub fn file(&self, n: usize) -> PathBuf {
        if n == 0 {
            self.path()
        } else {
            self.dir.join(format!("history.{n}.jsonl"))
        }
    }

    /// Appends `events` and fsyncs, rotating first if the current file is
    /// full.
    pub fn append(&self, events: &[Event]) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(256 * events.len());
        for e in events {
            serde_json::to_writer(&mut body, e).map_err(std::io::Error::other)?;
            body.push(b'\n');
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut f = self.open_append()?;
        if f.metadata()?.len() >= ROTATE_BYTES {
            drop(f);
            self.rotate()?;
            f = self.open_append()?;
        }
        f.write_all(&body)?;
        f.sync_data()
    }

    fn open_append(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.path())
    }

    /// Moves every file up one number, deleting the oldest beyond
    /// [`ROTATED_KEPT`] with a warning that says what it held.
    fn rotate(&self) -> std::io::Result<()> {
        let oldest = self.file(ROTATED_KEPT);
        if oldest.exists() {
            let (events, first, last) = summary(&oldest);
            warn!(
                path = %oldest.display(),
                events,
                first = %first,
                last = %last,
                "deleting the oldest history file (rotated out; history keeps {} files of {} MiB)",
                ROTATED_KEPT + 1,
                ROTATE_BYTES >> 20
            );
            std::fs::remove_file(&oldest)?;
        }
        for n in (0..ROTATED_KEPT).rev() {
            let from = self.file(n);
            match std::fs::rename(&from, self.file(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if let Err(e) = std::fs::File::open(&self.dir).and_then(|d| d.sync_all()) {
            warn!(dir = %self.dir.display(), error = %e, "cannot fsync the state directory");
        }
        info!(path = %self.file(1).display(), "rotated the history file");
        Ok(())
    }

    /// Replaces the whole log with `events` in one new current file
    /// (written aside, fsynced, renamed in): the migration of a format-1
    /// state, which may be repeated if it is interrupted.
    pub fn replace(&self, events: &[Event]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!("{HISTORY_FILE}.tmp"));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?,
        );
        for e in events {
            serde_json::to_writer(&mut f, e).map_err(std::io::Error::other)?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, self.path())?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all())
    }

    /// Cuts a torn last line off the current file (a crash in the middle
    /// of an append), with a warning; returns whether there was one.
    pub fn repair(&self) -> std::io::Result<bool> {
        let path = self.path();
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(LAST_LINE_WINDOW);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        if tail.is_empty() || tail.ends_with(b"\n") {
            return Ok(false);
        }
        let keep = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => start + i as u64 + 1,
            None if start == 0 => 0,
            // No line end in the window: not a torn append of ours.
            None => return Ok(false),
        };
        warn!(
            path = %path.display(),
            bytes = len - keep,
            "skipping a torn last history line (a crash in the middle of an append)"
        );
        f.set_len(keep)?;
        f.sync_all()?;
        Ok(true)
    }

    /// The last event logged, in the newest file that has one.
    pub fn last(&self) -> Option<Event> {
        (0..=ROTATED_KEPT).find_map(|n| last_event(&self.file(n)))
    }

    /// The events `query` asks for, oldest first: every file from the
    /// newest back, until [`TAIL`] are found (unless `all`).
    pub fn read(&self, query: &Query) -> std::io::Result<Vec<Event>> {
        let mut newest_first: Vec<Vec<Event>> = Vec::new();
        let mut found = 0;
        for n in 0..=ROTATED_KEPT {
            let path = self.file(n);
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let events: Vec<Event> = parse(&path, &text)
                .into_iter()
                .filter(|e| query.service.as_ref().is_none_or(|s| e.service == *s))
                .collect();
            found += events.len();
            newest_first.push(events);
            if !query.all && found >= TAIL {
                break;
            }
        }
        let mut all: Vec<Event> = newest_first.into_iter().rev().flatten().collect();
        if !query.all && all.len() > TAIL {
            all.drain(..all.len() - TAIL);
        }
        Ok(all)
    }
}

/// The events of one file's text; unreadable lines are skipped with a
/// warning naming `path` and the line.
fn parse(path: &Path, text: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let torn = !text.is_empty() && !text.ends_with(b"\n");
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let count = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Event>(line) {
            Ok(e) => out.push(e),
            Err(e) if torn && i + 1 == count => warn!(
                path = %path.display(),
                line = i + 1,
                error = %e,
                "skipping a torn last history line (a crash in the middle of an append)"
            ),
            Err(e) => warn!(
                path = %path.display(),
                line = i + 1,
                error = %e,
                "skipping an unreadable history line"
            ),
        }
    }
    out
}

/// The last complete event of a file, if any.
fn last_event(path: &Path) -> Option<Event> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LAST_LINE_WINDOW)))
        .ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    tail.split(|b| *b == b'\n')
        .rev()
        .skip(1) // after the last line end: empty, or a torn line
        .find_map(|l| serde_json::from_slice(l).ok())
}

/// How many events a file holds, and the dates of its first and last.
fn summary(path: &Path) -> (usize, String, String) {
    let events = std::fs::read(path)
        .map(|t| parse(path, &t))
        .unwrap_or_default();
    let date = |e: Option<&Event>| {
        e.map_or_else(String::new, |e| {
            crate::clock::format_ms(e.at.saturating_mul(1000))
        })
    };
    (events.len(), date(events.first()), date(events.last()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Change;

    fn event(i: u64, service: &str) -> Event {
        Event {
            at: 1_700_000_000 + i,
            service: service.into(),
            change: Change::Enable {
                endpoint: format!("p/{i}"),
            },
            reason: Some("x".repeat(200)),
            forced: false,
            node: None,
            actor: None,
        }
    }

    #[test]
    fn appends_reads_the_tail_or_all_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        assert_eq!(j.last(), None);
        assert!(j.read(&Query::default()).unwrap().is_empty());
        let events: Vec<Event> = (0..1_500)
            .map(|i| event(i, if i % 3 == 0 { "a." } else { "b." }))
            .collect();
        for chunk in events.chunks(100) {
            j.append(chunk).unwrap();
        }
        assert_eq!(j.last(), events.last().cloned());
        let tail = j.read(&Query::default()).unwrap();
        assert_eq!(tail, events[500..]);
        assert_eq!(j.read(&Query::everything()).unwrap(), events);
        let a = j
            .read(&Query {
                service: Some("a.".into()),
                all: false,
            })
            .unwrap();
        assert_eq!(a.len(), 500);
        assert!(a.iter().all(|e| e.service == "a."));
    }

    #[test]
    fn rotates_by_size_and_deletes_only_beyond_the_kept_files() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        // Lines of about 250 bytes: 4 MiB is about 16,800 of them.
        let per_file =
            (ROTATE_BYTES as usize) / (serde_json::to_vec(&event(0, "a.")).unwrap().len() + 1) + 1;
        let mut i = 0;
        let mut write = |files: usize| {
            for _ in 0..files {
                let batch: Vec<Event> = (i..i + per_file as u64).map(|k| event(k, "a.")).collect();
                i += per_file as u64;
                j.append(&batch).unwrap();
            }
        };
        write(ROTATED_KEPT + 1);
        // Every file holds one batch; none is lost yet.
        for n in 0..=ROTATED_KEPT {
            assert!(j.file(n).exists(), "{n}");
        }
        let all = j.read(&Query::everything()).unwrap();
        assert_eq!(all.len(), per_file * (ROTATED_KEPT + 1));
        assert!(all.windows(2).all(|w| w[0].at < w[1].at));
        write(1);
        // The oldest batch is gone, the rest kept, in order.
        let all = j.read(&Query::everything()).unwrap();
        assert_eq!(all.len(), per_file * (ROTATED_KEPT + 1));
        assert_eq!(all[0].at, 1_700_000_000 + per_file as u64);
        assert!(!j.file(ROTATED_KEPT + 1).exists());
    }

    #[test]
    fn a_torn_last_line_is_skipped_then_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        j.append(&[event(1, "a."), event(2, "a.")]).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap();
        f.write_all(b"{\"at\": 3, \"serv").unwrap();
        assert_eq!(j.read(&Query::default()).unwrap().len(), 2);
        assert_eq!(j.last(), Some(event(2, "a.")));
        assert!(j.repair().unwrap());
        assert!(!j.repair().unwrap());
        j.append(&[event(4, "a.")]).unwrap();
        assert_eq!(
            j.read(&Query::default()).unwrap(),
            vec![event(1, "a."), event(2, "a."), event(4, "a.")]
        );
        // A bad line in the middle is skipped too.
        std::fs::write(
            j.path(),
            format!(
                "{}\nnot json\n{}\n",
                serde_json::to_string(&event(1, "a.")).unwrap(),
                serde_json::to_string(&event(2, "a.")).unwrap()
            ),
        )
        .unwrap();
        assert_eq!(j.read(&Query::default()).unwrap().len(), 2);
    }
}
