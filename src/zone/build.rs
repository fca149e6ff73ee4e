//! Raw specs ([`super::spec`]) to the validated [`Zone`]: every check of a
//! zone file, errors collected with file, line and key.

use super::*;

pub(super) fn build_zone(
    src: &Source,
    spec: FileSpec,
    errs: &mut Vec<ConfigError>,
) -> Option<Zone> {
    let zspan = spec.zone.span();
    let zs = spec.zone.into_inner();
    let required = |v_absent: bool, key: &str, errs: &mut Vec<ConfigError>| {
        missing(src, v_absent, zspan.clone(), "zone", key, errs)
    };
    if required(is_absent(&zs.origin), "origin", errs) {
        return None;
    }
    let origin = fqdn(src, &zs.origin, "zone.origin", None)
        .map_err(|e| errs.push(e))
        .ok()?;
    let mut nameservers = Vec::new();
    for ns in zs.nameservers.get_ref() {
        match fqdn(src, ns, "zone.nameservers", Some(&origin)) {
            Ok(n) => nameservers.push(n),
            Err(e) => errs.push(e),
        }
    }
    if !required(is_absent(&zs.nameservers), "nameservers", errs)
        && zs.nameservers.get_ref().is_empty()
    {
        errs.push(src.error(
            zs.nameservers.span(),
            "zone.nameservers",
            "at least one nameserver is required",
        ));
    }
    let hostmaster = if required(is_absent(&zs.hostmaster), "hostmaster", errs) {
        None
    } else {
        fqdn(src, &zs.hostmaster, "zone.hostmaster", None)
            .map_err(|e| errs.push(e))
            .ok()
    };
    let ttl_or =
        |v: &Option<Spanned<DurationSpec>>, key: &str, default: u32, errs: &mut Vec<_>| match v {
            Some(v) => src.ttl(v, key).unwrap_or_else(|e| {
                errs.push(e);
                default
            }),
            None => default,
        };
    let ttl = ttl_or(&zs.ttl, "zone.ttl", DEFAULT_ZONE_TTL, errs);
    let negative_ttl = ttl_or(
        &zs.negative_ttl,
        "zone.negative_ttl",
        DEFAULT_NEGATIVE_TTL,
        errs,
    );
    let refresh = ttl_or(&zs.refresh, "zone.refresh", 3600, errs);
    let retry = ttl_or(&zs.retry, "zone.retry", 600, errs);
    let expire = ttl_or(&zs.expire, "zone.expire", 1_209_600, errs);

    let records = match &zs.records {
        Some(text) => parse_records(src, text, &origin, ttl, errs),
        None => Vec::new(),
    };
    let owner_lines = zs
        .records
        .as_ref()
        .map(|t| owner_lines(src, t, &origin))
        .unwrap_or_default();

    let mut services = Vec::new();
    // Lines of each built service's `name` and `staging`, for name collisions.
    let mut service_lines = Vec::new();
    for (i, s) in spec.service.into_iter().enumerate() {
        let name_line = src.line_of(s.get_ref().name.span().start);
        let staging_line = s
            .get_ref()
            .staging
            .as_ref()
            .map_or(name_line, |v| src.line_of(v.span().start));
        if let Some(svc) = build_service(src, s, i, &origin, errs) {
            services.push(svc);
            service_lines.push((name_line, staging_line));
        }
    }
    check_names(
        src,
        &origin,
        &records,
        &owner_lines,
        &services,
        &service_lines,
        errs,
    );

    let dnssec = zs
        .dnssec
        .as_ref()
        .and_then(|d| build_dnssec(src, d, &origin, errs))
        .map(std::sync::Arc::new);

    Some(Zone {
        file: src.path.clone(),
        origin,
        nameservers,
        hostmaster: hostmaster?,
        ttl,
        negative_ttl,
        refresh,
        retry,
        expire,
        serial: zs.serial.map(|s| s.into_inner()),
        records,
        services,
        dnssec,
    })
}

/// `[zone.dnssec]`: reads every key file (relative to the zone file's
/// directory). Each unusable key is an error at its line; a zone is never
/// loaded with only some of its keys.
fn build_dnssec(
    src: &Source,
    spec: &Spanned<DnssecSpec>,
    origin: &Name,
    errs: &mut Vec<ConfigError>,
) -> Option<crate::dnssec::ZoneKeys> {
    let d = spec.get_ref();
    let before = errs.len();
    let algorithm = match &d.algorithm {
        Some(a) => match crate::dnssec::algorithm_by_name(a.get_ref()) {
            Some(alg) => Some(alg),
            None => {
                errs.push(src.error(
                    a.span(),
                    "zone.dnssec.algorithm",
                    format!(
                        "unknown algorithm {:?}, expected one of {}",
                        a.get_ref(),
                        crate::dnssec::ALGORITHMS
                            .iter()
                            .map(|(n, _)| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                None
            }
        },
        None => None,
    };
    if d.keys.is_empty() {
        errs.push(src.error(
            spec.span(),
            "zone.dnssec.keys",
            "at least one signing key is required",
        ));
    }
    let dir = src.path.parent().unwrap_or(Path::new("."));
    let mut keys = Vec::new();
    for (list, signs, key) in [
        (&d.keys, true, "zone.dnssec.keys"),
        (&d.publish, false, "zone.dnssec.publish"),
    ] {
        for f in list {
            let path = dir.join(f.get_ref());
            match crate::dnssec::Key::load(&path, signs) {
                Ok(k) => {
                    if let Some(alg) = algorithm
                        && k.algorithm != alg
                    {
                        errs.push(src.error(
                            f.span(),
                            key,
                            format!(
                                "{}: the key is {} but zone.dnssec.algorithm is {}",
                                path.display(),
                                crate::dnssec::algorithm_name(k.algorithm),
                                crate::dnssec::algorithm_name(alg)
                            ),
                        ));
                    } else if let Some(prev) =
                        keys.iter().find(|p: &&crate::dnssec::Key| p.tag == k.tag)
                    {
                        errs.push(src.error(
                            f.span(),
                            key,
                            format!(
                                "{}: key tag {} is already listed ({})",
                                path.display(),
                                k.tag,
                                prev.path.display()
                            ),
                        ));
                    } else {
                        keys.push(k);
                    }
                }
                Err(e) => errs.push(src.error(f.span(), key, e.to_string())),
            }
        }
    }
    (errs.len() == before).then(|| crate::dnssec::ZoneKeys::new(origin.clone(), keys))
}

/// A required key left out of the table at key path `table` (written at
/// `table_span`): one error at the table's line, unless the table has an
/// unknown key, which is then taken for its misspelling (reported already).
/// Returns `absent`.
pub(super) fn missing(
    src: &Source,
    absent: bool,
    table_span: Range<usize>,
    table: &str,
    key: &str,
    errs: &mut Vec<ConfigError>,
) -> bool {
    if absent && !has_unknown_key(errs, table) {
        errs.push(src.error(
            table_span,
            &format!("{table}.{key}"),
            format!("`{key}` is required here"),
        ));
    }
    absent
}

/// Whether the table at key path `table` has an unknown key (reported).
pub(super) fn has_unknown_key(errs: &[ConfigError], table: &str) -> bool {
    errs.iter().any(|e| e.is_unknown_key_in(table))
}

/// Parses a name; relative names are taken relative to `origin` when given.
pub(super) fn fqdn(
    src: &Source,
    v: &Spanned<String>,
    key: &str,
    origin: Option<&Name>,
) -> Result<Name, ConfigError> {
    let s = v.get_ref().trim();
    if s.is_empty() {
        return Err(src.error(v.span(), key, "empty name"));
    }
    let mut n = Name::parse(s, origin).map_err(|e| {
        // hickory ends some messages with the (empty) offending label.
        let e = e.to_string();
        let e = e.trim_end().trim_end_matches(':');
        src.error(v.span(), key, format!("invalid name {s:?}: {e}"))
    })?;
    if origin.is_none() && !s.ends_with('.') {
        // Top-level names (origin, hostmaster) are always absolute.
        n.set_fqdn(true);
    }
    Ok(n)
}

pub(super) fn build_service(
    src: &Source,
    spec: Spanned<ServiceSpec>,
    index: usize,
    origin: &Name,
    errs: &mut Vec<ConfigError>,
) -> Option<Service> {
    let span = spec.span();
    let s = spec.into_inner();
    let short = s.name.get_ref().trim().to_string();
    let k = |field: &str| {
        if short.is_empty() {
            format!("service[{index}].{field}")
        } else {
            format!("service.{short}.{field}")
        }
    };
    let n_errs = errs.len();
    // The service's own key path, as `k` names its keys.
    let table = if short.is_empty() {
        format!("service[{index}]")
    } else {
        format!("service.{short}")
    };
    let table = table.as_str();
    let name = if missing(src, is_absent(&s.name), span.clone(), table, "name", errs) {
        None
    } else {
        service_name(src, &s.name, &k("name"), origin)
            .map_err(|e| errs.push(e))
            .ok()
    };
    let staging = s.staging.as_ref().and_then(|v| {
        service_name(src, v, &k("staging"), origin)
            .map_err(|e| errs.push(e))
            .ok()
    });
    let ttl = match &s.ttl {
        Some(v) => src.ttl(v, &k("ttl")).map_err(|e| errs.push(e)).unwrap_or(0),
        None => DEFAULT_SERVICE_TTL,
    };
    let max_answers = match &s.max_answers {
        Some(v) => {
            let n = *v.get_ref();
            if n < 1 || n as usize > MAX_ANSWERS_LIMIT {
                errs.push(src.error(
                    v.span(),
                    &k("max_answers"),
                    format!("must be between 1 and {MAX_ANSWERS_LIMIT}, not {n}"),
                ));
            }
            n.clamp(1, MAX_ANSWERS_LIMIT as i64) as usize
        }
        None => DEFAULT_MAX_ANSWERS,
    };
    let on_all_down = match s
        .on_all_down
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("fail-open", _)) => OnAllDown::FailOpen,
        Some(("servfail", _)) => OnAllDown::Servfail,
        Some((other, sp)) => {
            errs.push(src.error(
                sp,
                &k("on_all_down"),
                format!("unknown value {other:?} (expected \"fail-open\" or \"servfail\")"),
            ));
            OnAllDown::FailOpen
        }
    };
    let drain_grace = match &s.drain_grace {
        Some(v) => src
            .duration(v, &k("drain_grace"))
            .map_err(|e| errs.push(e))
            .unwrap_or_default(),
        None => DEFAULT_DRAIN_GRACE,
    };

    let (assignment, sticky) = sticky_keys(src, &s, &k, errs, name.as_ref());

    let base_health = HealthLayer::new(
        src,
        s.health.as_ref().map(|h| h.get_ref()),
        &k("health"),
        errs,
    );
    // Pools in the order the file lists them (the map sorts by name):
    // status shows them that way.
    let mut listed: Vec<(&String, &Spanned<PoolSpec>)> = s.pools.get_ref().iter().collect();
    listed.sort_by_key(|(_, v)| v.span().start);
    // Phases and the staging pool refer to pools by the names written (in
    // the file's order, the order of `pools`), so that a pool with an
    // error of its own is not reported missing again.
    let pool_names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    let mut pools = Vec::new();
    let mut seen_endpoints: HashMap<String, String> = HashMap::new();
    for (pname, pval) in listed {
        let key = k(&format!("pools.{pname}"));
        if !valid_pool_name(pname) {
            errs.push(src.error(
                pval.span(),
                &key,
                "pool names use lowercase letters, digits, '-' and '_'",
            ));
            continue;
        }
        if let Some(pool) = build_pool(src, pname, pval, &key, base_health.as_ref(), errs) {
            for e in &pool.endpoints {
                if let Some(prev) = seen_endpoints.insert(e.id.clone(), pname.clone()) {
                    errs.push(src.error(
                        pval.span(),
                        &key,
                        format!("endpoint {} is also in pool {prev:?}", e.id),
                    ));
                }
            }
            pools.push(pool);
        }
    }
    if !missing(src, is_absent(&s.pools), span.clone(), table, "pools", errs)
        && s.pools.get_ref().is_empty()
    {
        errs.push(src.error(
            s.pools.span(),
            &k("pools"),
            "a service needs at least one pool",
        ));
    }

    // Pool names the phases use that no pool has, each reported once
    // already: the staging name's missing pool is then not reported again.
    let mut missing_pools = HashSet::new();
    let phases = if s.phase.is_empty() {
        match (
            pool_names.iter().position(|&p| p == "old"),
            pool_names.iter().position(|&p| p == "new"),
        ) {
            (Some(o), Some(n)) => phase::classic(o, n, pool_names.len()),
            _ => {
                missing_pools.extend(["old", "new"].map(String::from));
                if !pool_names.is_empty() {
                    errs.push(src.error(
                        s.pools.span(),
                        &k("pools"),
                        "a service without [[service.phase]] needs pools named \"old\" and \"new\"",
                    ));
                }
                Vec::new()
            }
        }
    } else {
        build_phases(src, &s.phase, &pool_names, &k, &mut missing_pools, errs)
    };

    let staging_pool_name = s
        .staging_pool
        .as_ref()
        .map(|v| v.get_ref().as_str())
        .unwrap_or("new");
    let staging_pool = match pool_names.iter().position(|&p| p == staging_pool_name) {
        Some(i) => i,
        None => {
            // At the key that names the pool: `staging_pool`, or else
            // `staging`, which answers the pool `new` by default.
            let written = match (&s.staging_pool, &s.staging) {
                (Some(v), _) => Some((v.span(), k("staging_pool"), "")),
                (None, Some(v)) => Some((
                    v.span(),
                    k("staging"),
                    " (set staging_pool to answer another)",
                )),
                (None, None) => None,
            };
            // Without pools (reported), the staging pool would only
            // report that again.
            if let Some((sp, key, hint)) = written
                && !pool_names.is_empty()
                && (s.staging_pool.is_some() || !missing_pools.contains(staging_pool_name))
            {
                errs.push(src.error(
                    sp,
                    &key,
                    format!(
                        "the staging name answers pool {staging_pool_name:?}{hint}, which does not exist"
                    ),
                ));
            }
            0
        }
    };

    let initial_phase = match &s.initial_phase {
        Some(v) => match phases.iter().position(|p| p.name == *v.get_ref()) {
            Some(i) => i,
            None => {
                errs.push(src.error(
                    v.span(),
                    &k("initial_phase"),
                    format!("no phase named {:?}", v.get_ref()),
                ));
                0
            }
        },
        None => 0,
    };

    let analysis = s
        .analysis
        .as_ref()
        .and_then(|a| build_analysis(src, a, &pool_names, &k, errs));
    let ttl_service = ttl;
    let auto = build_auto(
        src,
        &s.phase,
        &phases,
        ttl_service,
        analysis.as_ref(),
        s.analysis.is_some(),
        &k,
        errs,
    );

    if errs.len() != n_errs {
        return None;
    }
    Some(Service {
        name: name?,
        short,
        staging,
        staging_pool,
        ttl,
        max_answers,
        pools,
        phases,
        initial_phase,
        on_all_down,
        drain_grace,
        analysis,
        auto,
        assignment,
        sticky,
    })
}

/// The sticky assignment keys of a service (issue 18): `assignment`,
/// `sticky_seed` (default: the service's full name, which every host of a
/// zone shares) and the resolver prefixes used without ECS.
fn sticky_keys(
    src: &Source,
    s: &ServiceSpec,
    k: &dyn Fn(&str) -> String,
    errs: &mut Vec<ConfigError>,
    name: Option<&Name>,
) -> (Assignment, Sticky) {
    let assignment = match s
        .assignment
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("random", _)) => Assignment::Random,
        Some(("sticky", _)) => Assignment::Sticky,
        Some((other, sp)) => {
            errs.push(src.error(
                sp,
                &k("assignment"),
                format!("unknown value {other:?} (expected \"random\" or \"sticky\")"),
            ));
            Assignment::Random
        }
    };
    let seed = match &s.sticky_seed {
        Some(v) if v.get_ref().trim().is_empty() => {
            errs.push(src.error(v.span(), &k("sticky_seed"), "must not be empty"));
            String::new()
        }
        Some(v) => v.get_ref().clone(),
        None => name
            .map(|n| n.to_lowercase().to_string())
            .unwrap_or_default(),
    };
    let mut prefix = |v: &Option<Spanned<i64>>, key: &str, max: u8, default: u8| match v {
        Some(v) if !(0..=i64::from(max)).contains(v.get_ref()) => {
            errs.push(src.error(
                v.span(),
                &k(key),
                format!("must be between 0 and {max}, not {}", v.get_ref()),
            ));
            default
        }
        Some(v) => *v.get_ref() as u8,
        None => default,
    };
    let sticky = Sticky {
        seed,
        prefix_v4: prefix(
            &s.sticky_prefix_v4,
            "sticky_prefix_v4",
            32,
            DEFAULT_PREFIX_V4,
        ),
        prefix_v6: prefix(
            &s.sticky_prefix_v6,
            "sticky_prefix_v6",
            128,
            DEFAULT_PREFIX_V6,
        ),
    };
    (assignment, sticky)
}

pub(super) fn valid_pool_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub(super) fn service_name(
    src: &Source,
    v: &Spanned<String>,
    key: &str,
    origin: &Name,
) -> Result<Name, ConfigError> {
    let n = fqdn(src, v, key, Some(origin))?;
    if !origin.zone_of(&n) {
        return Err(src.error(v.span(), key, format!("{n} is outside the zone {origin}")));
    }
    if n == *origin {
        return Err(src.error(v.span(), key, "a service cannot be the zone apex"));
    }
    Ok(n)
}

/// Builds one pool. `service_health` is None when the service's own health
/// keys are wrong (already reported): endpoints are still validated, but
/// no check is built from the broken keys.
pub(super) fn build_pool(
    src: &Source,
    name: &str,
    value: &Spanned<PoolSpec>,
    key: &str,
    service_health: Option<&HealthLayer>,
    errs: &mut Vec<ConfigError>,
) -> Option<Pool> {
    let errors_before = errs.len();
    // (endpoint, where it is written, its key path for health errors)
    let one;
    let (items, pool_health): (Vec<(&EndpointSpec, Range<usize>, String)>, _) = match value
        .get_ref()
    {
        PoolSpec::One(address) => {
            one = EndpointSpec::Address(address.clone());
            let items = vec![(&one, value.span(), key.to_string())];
            (items, service_health.cloned())
        }
        PoolSpec::List(list) => {
            let items = list
                .iter()
                .enumerate()
                .map(|(i, e)| (e.get_ref(), e.span(), format!("{key}[{i}]")))
                .collect();
            (items, service_health.cloned())
        }
        PoolSpec::Table(t) => {
            let own = HealthLayer::new(src, t.health.as_deref(), &format!("{key}.health"), errs);
            let items = t
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (e.get_ref(), e.span(), format!("{key}.endpoints[{i}]")))
                .collect();
            (items, own.zip(service_health).map(|(o, s)| o.over(s)))
        }
    };
    let written = items.len();
    let mut endpoints = Vec::new();
    for (item, span, ekey) in items {
        let (address, check_address, ep_health) = match item {
            EndpointSpec::Address(a) => (a, None, None),
            EndpointSpec::Table(t) => match &t.address {
                Some(a) => (a, t.check_address.as_ref(), t.health.as_deref()),
                None => {
                    missing(src, true, span, &ekey, "address", errs);
                    continue;
                }
            },
        };
        let target = match parse_target(address) {
            Ok(t) => t,
            Err(m) => {
                errs.push(src.error(span, key, m));
                continue;
            }
        };
        let check_ip = match check_address {
            Some(a) => match a.get_ref().trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errs.push(src.error(
                        a.span(),
                        &format!("{ekey}.check_address"),
                        format!("check_address {:?} is not an IP address", a.get_ref()),
                    ));
                    continue;
                }
            },
            None => None,
        };
        let own = HealthLayer::new(src, ep_health, &format!("{ekey}.health"), errs);
        let (Some(own), Some(base)) = (own, &pool_health) else {
            continue;
        };
        let endpoint_text = match (check_ip, &target) {
            (Some(ip), _) => bracket(ip),
            (None, Target::Host(n)) => n.to_string().trim_end_matches('.').to_string(),
            (None, t) => t.ip().map(bracket).unwrap_or_default(),
        };
        let line = src.line_of(span.start);
        match own
            .over(base)
            .check(src, &endpoint_text, line, &format!("{key}.health"))
        {
            Ok(check) => endpoints.push(Endpoint {
                id: address.trim().to_string(),
                target,
                check,
            }),
            Err(e) => errs.push(e),
        }
    }
    // No `endpoints` in a pool table with an unknown key: its misspelling.
    if written == 0 && !has_unknown_key(errs, key) {
        errs.push(src.error(value.span(), key, "a pool needs at least one endpoint"));
    }
    // An endpoint left out was reported here, or its inherited health keys
    // were at another level.
    if errs.len() != errors_before || endpoints.len() != written || written == 0 {
        return None;
    }
    let hosts = endpoints
        .iter()
        .filter(|e| matches!(e.target, Target::Host(_)))
        .count();
    if hosts > 0 && endpoints.len() > 1 {
        errs.push(src.error(
            value.span(),
            key,
            format!(
                "pool {name:?} mixes a host name with other endpoints: a host-name pool is answered by a CNAME, which cannot stand beside other data"
            ),
        ));
        return None;
    }
    Some(Pool {
        name: name.to_string(),
        endpoints,
    })
}

pub(super) fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// An endpoint string: IPv4, IPv6, or a fully qualified host name.
pub(super) fn parse_target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => Target::V4(a),
            IpAddr::V6(a) => Target::V6(a),
        });
    }
    let labels: Vec<&str> = s.trim_end_matches('.').split('.').collect();
    if s.contains(':') || labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{s:?} is not a valid IP address"));
    }
    if labels.len() < 2 {
        return Err(format!(
            "{s:?} is neither an IP address nor a fully qualified host name"
        ));
    }
    let mut n = Name::from_ascii(s).map_err(|e| format!("invalid host name {s:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(Target::Host(n))
}

/// Builds the phases; `pools` are the pool names as written, in the order
/// the built pools will have.
pub(super) fn build_phases(
    src: &Source,
    specs: &[Spanned<PhaseSpec>],
    pools: &[&str],
    k: &dyn Fn(&str) -> String,
    missing_pools: &mut HashSet<String>,
    errs: &mut Vec<ConfigError>,
) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut names = HashSet::new();
    // A pool name no pool has, by name: where it is first used (span, key)
    // and the lines of its other uses. A removed or renamed pool is one
    // mistake, reported once, however many phases weight it.
    let mut unknown_pools: BTreeMap<String, (Range<usize>, String, Vec<usize>)> = BTreeMap::new();
    for (i, p) in specs.iter().enumerate() {
        let span = p.span();
        let p = p.get_ref();
        let pname = p.name.get_ref().trim().to_string();
        let key = if pname.is_empty() {
            k(&format!("phase[{i}]"))
        } else {
            k(&format!("phase.{pname}"))
        };
        if missing(src, is_absent(&p.name), span.clone(), &key, "name", errs) {
            continue;
        }
        if pname.is_empty() {
            errs.push(src.error(p.name.span(), &key, "a phase needs a name"));
            continue;
        }
        if !names.insert(pname.clone()) {
            errs.push(src.error(
                p.name.span(),
                &key,
                format!("duplicate phase name {pname:?}"),
            ));
            continue;
        }
        let before = errs.len();
        let wkey = format!("{key}.weights");
        let mut weights = vec![0u32; pools.len()];
        // A misspelt pool name is one mistake: its pool is not missing too.
        let mut unknown = false;
        for (pool, w) in p.weights.get_ref() {
            let wkey = format!("{wkey}.{pool}");
            let Some(i) = pools.iter().position(|x| x == pool) else {
                unknown = true;
                // Without pools (reported), every name would be unknown.
                if pools.is_empty() {
                    continue;
                }
                match unknown_pools.get_mut(pool) {
                    Some((_, _, lines)) => lines.push(src.line_of(w.span().start)),
                    None => {
                        unknown_pools.insert(pool.clone(), (w.span(), wkey, Vec::new()));
                    }
                }
                continue;
            };
            match w.get_ref() {
                Value::Integer(n) if *n >= 0 && *n <= i64::from(u32::MAX / 1024) => {
                    weights[i] = *n as u32
                }
                Value::Integer(n) if *n < 0 => {
                    errs.push(src.error(w.span(), &wkey, format!("weight {n} is negative")))
                }
                Value::Integer(n) => {
                    errs.push(src.error(w.span(), &wkey, format!("weight {n} is too large")))
                }
                other => errs.push(src.error(
                    w.span(),
                    &wkey,
                    format!("a weight is a non-negative integer, not {other}"),
                )),
            }
        }
        let no_weights = missing(src, is_absent(&p.weights), span, &key, "weights", errs);
        if no_weights {
            // Reported; the phase is kept so that nothing names it missing.
        } else if p.weights.get_ref().is_empty() {
            errs.push(src.error(p.weights.span(), &wkey, "no weights given"));
        } else {
            let missing: Vec<&str> = pools
                .iter()
                .copied()
                .filter(|pool| !p.weights.get_ref().contains_key(*pool))
                .collect();
            if !missing.is_empty() && !unknown {
                let what = if missing.len() == 1 { "pool" } else { "pools" };
                errs.push(src.error(
                    p.weights.span(),
                    &wkey,
                    format!(
                        "no weight for {what} {}: give every pool a weight ({} = 0 for a standby)",
                        missing
                            .iter()
                            .map(|m| format!("{m:?}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        missing[0]
                    ),
                ));
            } else if missing.is_empty()
                && !unknown
                && !pools.is_empty()
                && errs.len() == before
                && weights.iter().all(|&w| w == 0)
            {
                errs.push(src.error(
                    p.weights.span(),
                    &wkey,
                    "every pool has weight 0: at least one pool must receive traffic",
                ));
            }
        }
        let hold = p.hold.as_ref().and_then(|h| {
            src.duration(h, &format!("{key}.hold"))
                .map_err(|e| errs.push(e))
                .ok()
        });
        let ttl = p.ttl.as_ref().and_then(|t| {
            src.ttl(t, &format!("{key}.ttl"))
                .map_err(|e| errs.push(e))
                .ok()
        });
        phases.push(Phase {
            name: pname,
            weights,
            hold,
            ttl,
        });
    }
    for (pool, (span, key, lines)) in unknown_pools {
        let also = match lines.as_slice() {
            [] => String::new(),
            [l] => format!("; also weighted at line {l}"),
            ls => format!(
                "; also weighted at lines {}",
                ls.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        errs.push(src.error(
            span,
            &key,
            format!("no pool named {pool:?} (pools: {}){also}", pools.join(", ")),
        ));
        missing_pools.insert(pool);
    }
    phases
}
