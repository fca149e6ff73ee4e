//! The fast path's request parser: header, one question and an optional
//! OPT record, read in place without allocating. Anything it does not fully
//! understand is [`Parsed::Fallback`], for hickory's decoder.

use super::cookie::{self, OPTION_COOKIE};
use super::message::{self, End, HEADER_LEN, Label, TYPE_OPT};
use crate::answer::sticky::Ecs;
use crate::answer::wire::Question;

/// Longest name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Query types the fast path leaves to hickory: 0, OPT, TKEY, TSIG, IXFR,
/// AXFR, MAILB, MAILA and ANY (RFC 8482 minimal answers).
const SPECIAL_TYPES: [u16; 9] = [0, TYPE_OPT, 249, 250, 251, 252, 253, 254, 255];
/// Classes answered from our IN zones: IN and ANY (`*`).
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
/// EDNS options the fast path leaves to hickory, which reads their
/// contents: NSID (RFC 5001, which the handler answers). Others are opaque
/// to hickory too and ignored, as it ignores them; client subnet and
/// cookies are read here ([`OPTION_ECS`], [`OPTION_COOKIE`]).
const HICKORY_OPTIONS: [u16; 1] = [3];
/// EDNS Client Subnet (RFC 7871): read here, once; a malformed or repeated
/// one goes to hickory's path, which answers FORMERR.
const OPTION_ECS: u16 = 8;
/// The DO bit (RFC 3225) in the first byte of the OPT record's flags.
const DO_BIT: u8 = 0x80;

/// The result of reading a datagram.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A plain query the fast path answers.
    Query(Question<'a>),
    /// Never answered: shorter than a header, or a response (QR=1), which
    /// must not be reflected.
    Drop,
    /// Something else: the hickory handler decides.
    Fallback,
    /// The question name uses a compression pointer or an obsolete label
    /// type: FORMERR without the question, which cannot be echoed as it
    /// was sent (RFC 1035 §4.1.4 pointers only point backwards, and before
    /// the question there is only the header).
    FormErr,
}

/// Reads `req`. `lower` receives the lowercased question name; `max_payload`
/// caps the UDP size the response advertises and uses.
pub fn parse<'a>(req: &'a [u8], lower: &'a mut [u8; MAX_NAME], max_payload: u16) -> Parsed<'a> {
    if req.len() < HEADER_LEN || req[2] & 0x80 != 0 {
        return Parsed::Drop;
    }
    let count = |i: usize| u16::from_be_bytes([req[i], req[i + 1]]);
    let opcode = (req[2] >> 3) & 0x0F;
    let truncated = req[2] & 0x02 != 0;
    if opcode != 0 || truncated || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1
    {
        return Parsed::Fallback;
    }
    // The name: plain labels only; a compression pointer in the only
    // question can point nowhere useful, and extended label types are dead.
    let mut len = 0;
    let mut labels = message::labels(req, HEADER_LEN);
    for Label { at, len: l } in labels.by_ref() {
        // Room for this label and the root.
        if len + l + 2 > MAX_NAME {
            return Parsed::Fallback;
        }
        lower[len] = l as u8;
        for (d, s) in lower[len + 1..len + 1 + l]
            .iter_mut()
            .zip(&req[at + 1..at + 1 + l])
        {
            *d = s.to_ascii_lowercase();
        }
        len += l + 1;
    }
    let mut at = match labels.end() {
        End::Root(end) => end,
        End::Pointer(_) | End::BadType(_) => return Parsed::FormErr,
        End::Truncated => return Parsed::Fallback,
    };
    lower[len] = 0;
    len += 1;
    let Some(tc) = req.get(at..at + 4) else {
        return Parsed::Fallback;
    };
    let qtype = u16::from_be_bytes([tc[0], tc[1]]);
    let qclass = u16::from_be_bytes([tc[2], tc[3]]);
    if SPECIAL_TYPES.contains(&qtype) || !matches!(qclass, CLASS_IN | CLASS_ANY) {
        return Parsed::Fallback;
    }
    let question = &req[HEADER_LEN..at + 4];
    at += 4;
    let (edns, ecs, dnssec_ok, cookie) = if count(10) == 1 {
        match opt(&req[at..]) {
            Some(o) => (
                Some(o.payload.clamp(512, max_payload)),
                o.ecs,
                o.dnssec_ok,
                o.cookie,
            ),
            None => return Parsed::Fallback,
        }
    } else if at != req.len() {
        return Parsed::Fallback;
    } else {
        (None, None, false, None)
    };
    Parsed::Query(Question {
        header: &req[..HEADER_LEN],
        question,
        lower: &lower[..len],
        qtype,
        edns,
        ecs,
        dnssec_ok,
        cookie,
        cookie_reply: None,
    })
}

/// What the OPT record of a query says, as far as the fast path reads it.
struct Opt<'a> {
    /// UDP payload size.
    payload: u16,
    /// Client subnet.
    ecs: Option<Ecs>,
    /// The DO bit.
    dnssec_ok: bool,
    /// The COOKIE option's data (of a length RFC 7873 allows).
    cookie: Option<&'a [u8]>,
}

/// Reads an OPT record that ends the message; its UDP payload size, client
/// subnet and DO bit, or `None` when anything is unusual (not OPT, version
/// above 0, an extended RCODE, NSID, a malformed or repeated client
/// subnet or cookie, a malformed option, trailing bytes). The hickory path
/// answers a malformed cookie FORMERR.
fn opt(rr: &[u8]) -> Option<Opt<'_>> {
    if rr.len() < 11 || rr[0] != 0 || u16::from_be_bytes([rr[1], rr[2]]) != TYPE_OPT {
        return None;
    }
    let payload = u16::from_be_bytes([rr[3], rr[4]]);
    let (ext_rcode, version) = (rr[5], rr[6]);
    let rdlen = usize::from(u16::from_be_bytes([rr[9], rr[10]]));
    if ext_rcode != 0 || version != 0 || rr.len() != 11 + rdlen {
        return None;
    }
    let mut options = &rr[11..];
    let mut ecs = None;
    let mut cookie = None;
    while !options.is_empty() {
        if options.len() < 4 {
            return None;
        }
        let code = u16::from_be_bytes([options[0], options[1]]);
        let len = usize::from(u16::from_be_bytes([options[2], options[3]]));
        if HICKORY_OPTIONS.contains(&code) || options.len() < 4 + len {
            return None;
        }
        if code == OPTION_ECS {
            if ecs.is_some() {
                return None;
            }
            ecs = Some(Ecs::parse(&options[4..4 + len]).ok()?);
        } else if code == OPTION_COOKIE {
            if cookie.is_some() {
                return None;
            }
            let data = &options[4..4 + len];
            cookie::Received::parse(data).ok()?;
            cookie = Some(data);
        }
        options = &options[4 + len..];
    }
    Some(Opt {
        payload,
        ecs,
        dnssec_ok: rr[7] & DO_BIT != 0,
        cookie,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn plain_query_and_edns() {
        let mut lower = [0; MAX_NAME];
        let q = query("WwW.Example.", RecordType::A, None);
        let Parsed::Query(p) = parse(&q, &mut lower, 1232) else {
            panic!("not parsed");
        };
        assert_eq!(p.lower, b"\x03www\x07example\x00");
        assert_eq!(p.question, &q[12..]);
        assert_eq!((p.qtype, p.edns), (1, None));
        let q = query("a.example.", RecordType::AAAA, Some(4096));
        let Parsed::Query(p) = parse(&q, &mut lower, 1232) else {
            panic!("not parsed");
        };
        assert_eq!(p.edns, Some(1232));
        let q = query("a.example.", RecordType::AAAA, Some(100));
        let Parsed::Query(p) = parse(&q, &mut lower, 1232) else {
            panic!("not parsed");
        };
        assert_eq!(p.edns, Some(512));
    }

    #[test]
    fn unusual_packets_fall_back_or_drop() {
        let mut lower = [0; MAX_NAME];
        let base = query("a.example.", RecordType::A, None);
        let mut response = base.clone();
        response[2] |= 0x80;
        let mut notify = base.clone();
        notify[2] |= 4 << 3;
        let mut pointer = base[..12].to_vec();
        pointer.extend([0xC0, 0x00, 0, 1, 0, 1]);
        let mut trailing = base.clone();
        trailing.push(0);
        let mut badvers = query("a.example.", RecordType::A, Some(1232));
        let n = badvers.len();
        badvers[n - 5] = 1; // OPT version
        // (packet, expect drop)
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (base[..11].to_vec(), true),
            (response, true),
            (notify, false),
            (trailing, false),
            (badvers, false),
            (query("a.example.", RecordType::ANY, None), false),
            (query("a.example.", RecordType::AXFR, None), false),
            (base[..base.len() - 1].to_vec(), false),
        ];
        for (i, (p, drop)) in cases.iter().enumerate() {
            let got = parse(p, &mut lower, 1232);
            match (got, drop) {
                (Parsed::Drop, true) | (Parsed::Fallback, false) => {}
                (other, _) => panic!("case {i}: {other:?}"),
            }
        }
        assert!(matches!(parse(&pointer, &mut lower, 1232), Parsed::FormErr));
    }
}
