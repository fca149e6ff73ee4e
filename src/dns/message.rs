//! DNS wire-format basics shared by every reader and writer of raw
//! messages: the header length, the OPT record type, the one walker over
//! the labels of a name (in a message, or a wire name on its own), so that
//! the label loop and its checks (label types, pointers, running past the
//! end) are written once, and the one walk to a message's OPT record.

/// DNS header length (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// Record type of the EDNS pseudo-record OPT (RFC 6891).
pub const TYPE_OPT: u16 = 41;

/// The two top bits of a length byte: 00 a label, 11 a compression
/// pointer, 01 and 10 the obsolete extended label types.
const LABEL_TYPE: u8 = 0xC0;
const POINTER: u8 = 0xC0;

/// How the name a [`Labels`] walked ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// With the root label: the position after it.
    Root(usize),
    /// With a compression pointer: the position after its two bytes
    /// (which may be past the end of the message).
    Pointer(usize),
    /// With an obsolete label type (01 or 10 in the top bits), at this
    /// position.
    BadType(usize),
    /// The message ends inside the name.
    Truncated,
}

/// One label of a name: where its length byte is, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// Position of the length byte; the label's bytes follow it.
    pub at: usize,
    /// Length of the label (1 to 63).
    pub len: usize,
}

/// The labels of the name at a position of a message, left to right, the
/// root label left out; does not follow compression pointers. After the
/// last one, [`Labels::end`] says how the name ended.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    msg: &'a [u8],
    at: usize,
    end: Option<End>,
}

/// Walks the name at `pos` in `msg` (a whole message, or a wire name with
/// `pos` 0).
#[inline]
pub fn labels(msg: &[u8], pos: usize) -> Labels<'_> {
    Labels {
        msg,
        at: pos,
        end: None,
    }
}

impl Iterator for Labels<'_> {
    type Item = Label;

    #[inline]
    fn next(&mut self) -> Option<Label> {
        if self.end.is_some() {
            return None;
        }
        let at = self.at;
        let Some(&b) = self.msg.get(at) else {
            self.end = Some(End::Truncated);
            return None;
        };
        let len = usize::from(b);
        let end = match b & LABEL_TYPE {
            0 if b == 0 => End::Root(at + 1),
            0 if at + 1 + len <= self.msg.len() => {
                self.at = at + 1 + len;
                return Some(Label { at, len });
            }
            0 => End::Truncated,
            // Its second byte is for the reader that follows it to check.
            POINTER => End::Pointer(at + 2),
            _ => End::BadType(at),
        };
        self.end = Some(end);
        None
    }
}

impl Labels<'_> {
    /// How the name ends (walking the rest of it first).
    #[inline]
    pub fn end(mut self) -> End {
        while self.next().is_some() {}
        self.end.unwrap_or(End::Truncated)
    }
}

/// Where the uncompressed name at `pos` ends (after its root label), if it
/// is one.
#[inline]
pub fn plain_name_end(msg: &[u8], pos: usize) -> Option<usize> {
    match labels(msg, pos).end() {
        End::Root(end) => Some(end),
        _ => None,
    }
}

/// Where the name at `pos` ends, compressed or not.
#[inline]
pub fn name_end(msg: &[u8], pos: usize) -> Option<usize> {
    match labels(msg, pos).end() {
        End::Root(end) | End::Pointer(end) => Some(end),
        End::BadType(_) | End::Truncated => None,
    }
}

/// Where the first OPT record of the additional section of `msg` starts
/// and ends (the whole record: owner, fixed fields, RDATA), if it has one
/// and every record before it is well-formed. Allocation-free: the RRL
/// slip runs it on the fast path.
pub fn opt_span(msg: &[u8]) -> Option<(usize, usize)> {
    let count = |i: usize| {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(i)?,
            *msg.get(i + 1)?,
        ])))
    };
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = HEADER_LEN;
    for _ in 0..qd {
        pos = name_end(msg, pos)? + 4;
    }
    for i in 0..an + ns + ar {
        let start = pos;
        pos = name_end(msg, pos)?;
        let rtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([*msg.get(pos + 8)?, *msg.get(pos + 9)?]));
        let end = pos + 10 + rdlen;
        if end > msg.len() {
            return None;
        }
        if i >= an + ns && rtype == TYPE_OPT {
            return Some((start, end));
        }
        pos = end;
    }
    None
}

/// The positions of wire name `name`'s suffixes, longest first: the name
/// itself, then each ancestor, the root last. `name` is a whole wire name
/// (no pointers).
#[inline]
pub fn suffixes(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    labels(name, 0)
        .map(|l| l.at)
        .chain(name.len().checked_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_plain_compressed_and_broken_names() {
        let name = b"\x03www\x07example\x00";
        let got: Vec<Label> = labels(name, 0).collect();
        assert_eq!(got, [Label { at: 0, len: 3 }, Label { at: 4, len: 7 }]);
        assert_eq!(labels(name, 0).end(), End::Root(13));
        assert_eq!(plain_name_end(name, 0), Some(13));
        assert_eq!(plain_name_end(name, 4), Some(13));
        // A pointer after one label; a pointer cut short.
        let msg = b"\x03www\xC0\x0c";
        assert_eq!(labels(msg, 0).end(), End::Pointer(6));
        assert_eq!(plain_name_end(msg, 0), None);
        assert_eq!(name_end(msg, 0), Some(6));
        assert_eq!(labels(&msg[..5], 0).end(), End::Pointer(6));
        // Extended label types, a label past the end, no root.
        assert_eq!(labels(b"\x03www\x41", 0).end(), End::BadType(4));
        assert_eq!(labels(b"\x80", 0).end(), End::BadType(0));
        assert_eq!(labels(b"\x05ab", 0).end(), End::Truncated);
        assert_eq!(labels(b"\x01a", 0).end(), End::Truncated);
        assert_eq!(name_end(b"", 0), None);
        assert_eq!(name_end(b"\x00", 0), Some(1));
    }

    #[test]
    fn suffixes_run_from_the_name_to_the_root() {
        let name = b"\x01a\x01b\x00";
        assert_eq!(suffixes(name).collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(suffixes(b"\x00").collect::<Vec<_>>(), [0]);
    }
}
