//! The static records of a zone (`records = """..."""` in zone-file
//! syntax): parsed with hickory's parser, errors mapped back to the line
//! of the zone file; and the check that no static name collides with a
//! service's name.

use super::*;

/// Parses the zone-file text of static records with hickory's parser.
pub(super) fn parse_records(
    src: &Source,
    text: &Spanned<String>,
    origin: &Name,
    ttl: u32,
    errs: &mut Vec<ConfigError>,
) -> Vec<Record> {
    let first_line = records_first_line(src, text);
    let body = text.get_ref();
    for (i, line) in body.lines().enumerate() {
        let t = line.trim_start().to_ascii_uppercase();
        if t.starts_with("$INCLUDE") {
            errs.push(src.error_at_line(
                first_line + i,
                "zone.records",
                "$INCLUDE is not allowed: keep static records in the zone file",
            ));
            return Vec::new();
        }
    }
    let run =
        |text: &str| Parser::new(format!("$TTL {ttl}\n{text}"), None, Some(origin.clone())).parse();
    let parsed = match run(body) {
        Ok((_, sets)) => sets,
        Err(e) => {
            // The parser does not report positions: find the last prefix of
            // lines that still parses; the error is on the line after it.
            let lines: Vec<&str> = body.lines().collect();
            let good = (0..lines.len())
                .rev()
                .find(|&k| run(&lines[..k].join("\n")).is_ok())
                .unwrap_or(0);
            let record = lines.get(good).map_or("", |l| l.trim());
            errs.push(src.error_at_line(
                first_line + good,
                "zone.records",
                format!("invalid record `{record}`: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let lines = owner_lines(src, text, origin);
    for (key, set) in parsed {
        let name = Name::from(&key.name);
        let line = lines.get(&key.name).copied().unwrap_or(first_line);
        if !origin.zone_of(&name) {
            errs.push(src.error_at_line(
                line,
                "zone.records",
                format!("{name} is outside the zone {origin}"),
            ));
            continue;
        }
        match key.record_type {
            RecordType::SOA => {
                errs.push(src.error_at_line(
                    line,
                    "zone.records",
                    "SOA is generated from [zone]; remove it from records",
                ));
                continue;
            }
            RecordType::NS if name == *origin => {
                errs.push(src.error_at_line(
                    line,
                    "zone.records",
                    "apex NS records come from zone.nameservers; remove them from records",
                ));
                continue;
            }
            _ => {}
        }
        out.extend(set.records_without_rrsigs().cloned());
    }
    // CNAME and other data cannot share a name (RFC 1034 3.6.2).
    let mut types: HashMap<LowerName, HashSet<RecordType>> = HashMap::new();
    for r in &out {
        types
            .entry(LowerName::from(&r.name))
            .or_default()
            .insert(r.record_type());
    }
    let mut bad: Vec<_> = types
        .iter()
        .filter(|(_, t)| t.contains(&RecordType::CNAME) && t.len() > 1)
        .map(|(n, _)| n.clone())
        .collect();
    bad.sort();
    for n in bad {
        let line = lines.get(&n).copied().unwrap_or(first_line);
        errs.push(src.error_at_line(
            line,
            "zone.records",
            format!("{n} has a CNAME beside other data"),
        ));
    }
    let cname_counts = out
        .iter()
        .filter(|r| r.record_type() == RecordType::CNAME)
        .fold(HashMap::<LowerName, usize>::new(), |mut m, r| {
            *m.entry(LowerName::from(&r.name)).or_default() += 1;
            m
        });
    for (n, c) in cname_counts {
        if c > 1 {
            let line = lines.get(&n).copied().unwrap_or(first_line);
            errs.push(src.error_at_line(
                line,
                "zone.records",
                format!("{n} has {c} CNAME records"),
            ));
        }
    }
    out
}

/// File line on which the first line of the records text sits.
pub(super) fn records_first_line(src: &Source, text: &Spanned<String>) -> usize {
    let start = text.span().start;
    let raw = &src.text[start..text.span().end.min(src.text.len())];
    let opening_newline = ["\"\"\"\n", "'''\n", "\"\"\"\r\n", "'''\r\n"]
        .iter()
        .any(|p| raw.starts_with(p));
    src.line_of(start) + usize::from(opening_newline)
}

/// First file line on which each owner name appears in the records text.
pub(super) fn owner_lines(
    src: &Source,
    text: &Spanned<String>,
    origin: &Name,
) -> HashMap<LowerName, usize> {
    let first = records_first_line(src, text);
    let mut out = HashMap::new();
    for (i, line) in text.get_ref().lines().enumerate() {
        if line.starts_with(char::is_whitespace) || line.starts_with('$') || line.starts_with(';') {
            continue;
        }
        let Some(tok) = line.split_whitespace().next() else {
            continue;
        };
        let name = if tok == "@" {
            Ok(origin.clone())
        } else {
            Name::parse(tok, Some(origin))
        };
        if let Ok(n) = name {
            out.entry(LowerName::from(&n)).or_insert(first + i);
        }
    }
    out
}

/// Names in one zone must not collide: services, staging names and static
/// owners are distinct, and nothing sits below a sub-delegation.
/// `service_lines` holds the file lines of each service's `name` and `staging`.
pub(super) fn check_names(
    src: &Source,
    origin: &Name,
    records: &[Record],
    owner_lines: &HashMap<LowerName, usize>,
    services: &[Service],
    service_lines: &[(usize, usize)],
    errs: &mut Vec<ConfigError>,
) {
    let line_of = |n: &LowerName| owner_lines.get(n).copied().unwrap_or(0);
    let mut names: HashMap<LowerName, String> = HashMap::new();
    for r in records {
        names.entry(LowerName::from(&r.name)).or_insert_with(|| {
            format!(
                "a static record (line {})",
                line_of(&LowerName::from(&r.name))
            )
        });
    }
    let cuts: Vec<LowerName> = records
        .iter()
        .filter(|r| r.record_type() == RecordType::NS && r.name != *origin)
        .map(|r| LowerName::from(&r.name))
        .collect();
    for r in records {
        let n = LowerName::from(&r.name);
        let glue = matches!(r.data, RData::A(_) | RData::AAAA(_));
        for cut in &cuts {
            if *cut != n && cut.zone_of(&n) && !glue {
                errs.push(src.error_at_line(
                    line_of(&n),
                    "zone.records",
                    format!("{n} is below the delegation {cut}: only glue addresses may be there"),
                ));
            }
        }
    }
    for (s, &(name_line, staging_line)) in services.iter().zip(service_lines) {
        let mut own = vec![(s.name.clone(), "name", name_line)];
        if let Some(st) = &s.staging {
            own.push((st.clone(), "staging", staging_line));
        }
        for (n, what, line) in own {
            let ln = LowerName::from(&n);
            let key = format!("service.{}.{what}", s.short);
            if let Some(prev) = names.get(&ln) {
                errs.push(src.error_at_line(
                    line,
                    &key,
                    format!("duplicate name {n}: already used by {prev}"),
                ));
                continue;
            }
            for cut in &cuts {
                if cut.zone_of(&ln) {
                    errs.push(src.error_at_line(
                        line,
                        &key,
                        format!("{n} is inside the delegation {cut}"),
                    ));
                }
            }
            names.insert(ln, format!("service {:?} (line {line})", s.short));
        }
    }
}
