//! Sticky assignment's properties over 10⁶ random keys, and the golden
//! vectors that pin the hash across releases.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Keys per property test: the issue asks for at least 10⁶.
const KEYS: usize = 1_000_000;

/// `n` random client keys, a quarter of them IPv6 /56, the rest IPv4 /24.
fn keys(n: usize, seed: u64) -> Vec<ClientKey> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            if rng.u8(0..4) == 0 {
                ClientKey::new(IpAddr::V6(Ipv6Addr::from(rng.u128(..))), ECS_MAX_V6)
            } else {
                ClientKey::new(IpAddr::V4(Ipv4Addr::from(rng.u32(..))), 24)
            }
        })
        .collect()
}

/// The pools' salts under `seed`.
fn salts(seed: &Seed, names: &[&str]) -> Vec<u64> {
    names.iter().map(|n| seed.salt(n)).collect()
}

/// Every key's pool for `weights` (indexes into `salts`), `usize::MAX`
/// when none.
fn assign(seed: &Seed, keys: &[ClientKey], salts: &[u64], weights: &[u32]) -> Vec<usize> {
    let mut cands: Vec<(u64, u32)> = salts.iter().copied().zip(weights.iter().copied()).collect();
    reduce(&mut cands);
    keys.iter()
        .map(|k| seed.rendezvous(k, &cands).unwrap_or(usize::MAX))
        .collect()
}

#[test]
fn siphash_core_matches_the_papers_test_vector() {
    // SipHash paper, appendix A: SipHash-2-4, key 00..0f, message 00..0e.
    let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
    let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
    let msg: Vec<u8> = (0..15).collect();
    assert_eq!(siphash::<2, 4>(k0, k1, &msg, &[]), 0xa129_ca61_49be_45e5);
    // The split input is the same message.
    assert_eq!(
        siphash::<2, 4>(k0, k1, &msg[..5], &msg[5..]),
        0xa129_ca61_49be_45e5
    );
    assert_eq!(
        siphash::<1, 3>(k0, k1, &msg[..9], &msg[9..]),
        siphash::<1, 3>(k0, k1, &msg, &[])
    );
}

#[test]
fn keys_are_masked_networks() {
    let a = ClientKey::new("192.0.2.77".parse().unwrap(), 24);
    let b = ClientKey::new("192.0.2.1".parse().unwrap(), 24);
    let c = ClientKey::new("192.0.3.1".parse().unwrap(), 24);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.prefix(), 24);
    let d = ClientKey::new("192.0.2.77".parse().unwrap(), 20);
    assert_eq!(d, ClientKey::new("192.0.15.255".parse().unwrap(), 20));
    assert_eq!(ClientKey::new("10.1.2.3".parse().unwrap(), 40).prefix(), 32);
    let v6 = ClientKey::new("2001:db8:1:2ff::1".parse().unwrap(), 56);
    assert_eq!(v6, ClientKey::new("2001:db8:1:200::".parse().unwrap(), 56));
    // The same bits in another family are another key.
    assert_ne!(
        ClientKey::new("0.0.0.0".parse().unwrap(), 0),
        ClientKey::new("::".parse().unwrap(), 0)
    );
}

#[test]
fn the_key_is_the_ecs_prefix_capped_else_the_resolver_network() {
    let cfg = StickyConfig::with_seed("s");
    let resolver: IpAddr = "198.51.100.9".parse().unwrap();
    let mut c = Client::from(resolver);
    assert_eq!(
        c.key(&cfg),
        Some((ClientKey::new(resolver, DEFAULT_PREFIX_V4), false))
    );
    c.ecs = Some(Ecs {
        addr: "203.0.113.0".parse().unwrap(),
        source: 32,
    });
    let (k, ecs) = c.key(&cfg).unwrap();
    assert!(ecs);
    assert_eq!(k.prefix(), ECS_MAX_V4);
    c.ecs = Some(Ecs {
        addr: "203.0.112.0".parse().unwrap(),
        source: 22,
    });
    assert_eq!(c.key(&cfg).unwrap().0.prefix(), 22);
    c.ecs = Some(Ecs {
        addr: "2001:db8::".parse().unwrap(),
        source: 64,
    });
    assert_eq!(c.key(&cfg).unwrap().0.prefix(), ECS_MAX_V6);
    // Source 0: the client asked to stay private; key on the resolver.
    c.ecs = Some(Ecs {
        addr: "0.0.0.0".parse().unwrap(),
        source: 0,
    });
    assert_eq!(c.key(&cfg).unwrap(), (ClientKey::new(resolver, 24), false));
    let v6: IpAddr = "2001:db8:aa:bbcc::1".parse().unwrap();
    assert_eq!(Client::from(v6).key(&cfg).unwrap().0.prefix(), 48);
    assert_eq!(Client::default().key(&cfg), None);
}

#[test]
fn ecs_options_are_read_and_echoed_as_rfc_7871_says() {
    let e = Ecs::parse(&[0, 1, 24, 0, 192, 0, 2]).unwrap();
    assert_eq!(e.addr, "192.0.2.0".parse::<IpAddr>().unwrap());
    assert_eq!(e.source, 24);
    let (bytes, n) = e.reply(24);
    assert_eq!(&bytes[..n], &[0, 1, 24, 24, 192, 0, 2]);
    let e = Ecs::parse(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 1, 0x42]).unwrap();
    assert_eq!(
        e.reply(0).0[..11],
        [0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 1, 0x42]
    );
    assert_eq!(Ecs::parse(&[0, 1, 0, 0]).unwrap().source, 0);
    let bad: [(&[u8], EcsError); 7] = [
        (&[0, 3, 0, 0], EcsError::Family),
        (&[0, 1, 33, 0, 1, 2, 3, 4, 5], EcsError::Source),
        (&[0, 1, 24, 8, 192, 0, 2], EcsError::Scope),
        (&[0, 1, 24, 0, 192, 0], EcsError::Length),
        (&[0, 1, 24, 0, 192, 0, 2, 0], EcsError::Length),
        (&[0, 1, 23, 0, 192, 0, 3], EcsError::Bits),
        (&[0, 1], EcsError::Length),
    ];
    for (data, err) in bad {
        assert_eq!(Ecs::parse(data), Err(err), "{data:?}");
    }
}

#[test]
fn units_lie_strictly_between_0_and_1() {
    let seed = Seed::new("units");
    let mut lo = 1.0f64;
    let mut hi = 0.0f64;
    for k in keys(100_000, 1) {
        let u = seed.unit(&k, 7);
        lo = lo.min(u);
        hi = hi.max(u);
    }
    assert!(lo > 0.0 && hi < 1.0, "{lo} {hi}");
    assert!(
        lo < 1e-3 && hi > 1.0 - 1e-3,
        "uniform over (0,1): {lo} {hi}"
    );
}

#[test]
fn raising_one_pools_weight_only_moves_keys_into_it() {
    let seed = Seed::new("raise");
    let keys = keys(KEYS, 2);
    let s = salts(&seed, &["old", "new", "canary"]);
    // new rises step by step; old and canary stay.
    let steps = [1u32, 5, 10, 30, 70, 300];
    let mut before = assign(&seed, &keys, &s, &[90, steps[0], 5]);
    for &w in &steps[1..] {
        let after = assign(&seed, &keys, &s, &[90, w, 5]);
        let mut moved_in = 0;
        for (b, a) in before.iter().zip(&after) {
            assert!(*b != 1 || *a == 1, "a key left new when new rose to {w}");
            assert!(a == b || *a == 1, "a key moved between other pools");
            moved_in += usize::from(a != b);
        }
        assert!(moved_in > 0, "raising new to {w} moved nobody");
        // Lowering (the same steps read backwards) only moves keys out.
        before = after;
    }
}

#[test]
fn each_pools_share_is_within_0_15_points_of_its_weight_share() {
    // Binomial sigma at p = 0.5 over 10^6 keys is 0.05 points: 0.15 is 3σ
    // at worst, 5σ at p = 0.1.
    let seed = Seed::new("share");
    let keys = keys(KEYS, 3);
    let s = salts(&seed, &["old", "new", "canary"]);
    for weights in [
        [90u32, 10, 0],
        [70, 30, 0],
        [50, 50, 0],
        [60, 30, 10],
        [1, 1, 1],
    ] {
        let got = assign(&seed, &keys, &s, &weights);
        let total: u32 = weights.iter().sum();
        for (p, &w) in weights.iter().enumerate() {
            let share = got.iter().filter(|&&g| g == p).count() as f64 / KEYS as f64;
            let want = f64::from(w) / f64::from(total);
            assert!(
                (share - want).abs() <= 0.0015,
                "{weights:?}: pool {p} got {share:.5}, weight share {want:.5}"
            );
        }
    }
}

#[test]
fn rescaled_weights_give_identical_assignments() {
    let seed = Seed::new("scale");
    let keys = keys(KEYS, 4);
    let s = salts(&seed, &["old", "new"]);
    let a = assign(&seed, &keys, &s, &[90, 10]);
    assert_eq!(a, assign(&seed, &keys, &s, &[9, 1]));
    assert_eq!(a, assign(&seed, &keys, &s, &[900, 100]));
}

#[test]
fn a_pool_going_away_gives_up_only_its_keys_and_gets_all_of_them_back() {
    let seed = Seed::new("health");
    let keys = keys(KEYS, 5);
    let s = salts(&seed, &["old", "new", "canary"]);
    let healthy = assign(&seed, &keys, &s, &[50, 30, 20]);
    // new loses its last usable endpoint: it leaves the candidates.
    let down = assign(&seed, &keys, &s, &[50, 0, 20]);
    let mut moved = 0;
    for (h, d) in healthy.iter().zip(&down) {
        if *h == 1 {
            assert_ne!(*d, 1);
            moved += 1;
        } else {
            assert_eq!(h, d, "a key of another pool moved");
        }
    }
    assert!(moved > KEYS / 4, "new held {moved} keys");
    // Recovery: exactly the same assignment, so 100% come back.
    assert_eq!(healthy, assign(&seed, &keys, &s, &[50, 30, 20]));
}

#[test]
fn a_rollback_moves_back_exactly_the_keys_the_step_moved() {
    let seed = Seed::new("rollback");
    let keys = keys(KEYS, 6);
    let s = salts(&seed, &["old", "new"]);
    let p1 = assign(&seed, &keys, &s, &[90, 10]);
    let p2 = assign(&seed, &keys, &s, &[70, 30]);
    let back = assign(&seed, &keys, &s, &[90, 10]);
    let stepped: Vec<usize> = (0..KEYS).filter(|&i| p1[i] != p2[i]).collect();
    let rolled: Vec<usize> = (0..KEYS).filter(|&i| p2[i] != back[i]).collect();
    assert_eq!(stepped, rolled);
    assert!(stepped.iter().all(|&i| p1[i] == 0 && p2[i] == 1));
    // 20% of keys move old -> new (σ = 0.04 points).
    let moved = stepped.len() as f64 / KEYS as f64;
    assert!((moved - 0.2).abs() < 0.0015, "{moved}");
}

#[test]
fn different_seeds_assign_independently() {
    let keys = keys(100_000, 7);
    let (a, b) = (Seed::new("one"), Seed::new("two"));
    let pa = assign(&a, &keys, &salts(&a, &["old", "new"]), &[1, 1]);
    let pb = assign(&b, &keys, &salts(&b, &["old", "new"]), &[1, 1]);
    let same = pa.iter().zip(&pb).filter(|(x, y)| x == y).count() as f64 / 1e5;
    // Independent halves agree half the time (σ = 0.16 points).
    assert!((same - 0.5).abs() < 0.01, "{same}");
}

/// (seed, client network, pools with weights) -> the pool: these must not
/// change between releases of the same [`HASH_VERSION`].
/// Pools with their weights, by name.
type Pools = &'static [(&'static str, u32)];
/// A golden vector: seed, client address, prefix, pools, the winner.
type Vector = (&'static str, &'static str, u8, Pools, &'static str);

include!("golden.rs");

#[test]
fn golden_vectors_do_not_change() {
    assert_eq!(HASH_VERSION, 1, "a new version needs new golden vectors");
    for &(seed_text, addr, prefix, pools, want) in GOLDEN_VECTORS {
        let seed = Seed::new(seed_text);
        let key = ClientKey::new(addr.parse().unwrap(), prefix);
        let mut cands: Vec<(u64, u32)> = pools.iter().map(|(n, w)| (seed.salt(n), *w)).collect();
        reduce(&mut cands);
        let got = seed.rendezvous(&key, &cands).map(|i| pools[i].0);
        assert_eq!(got, Some(want), "{seed_text} {addr}/{prefix} {pools:?}");
    }
    // The raw draws, pinned too.
    let seed = Seed::new("www.shift.example.com.");
    let key = ClientKey::new("192.0.2.0".parse().unwrap(), 24);
    assert_eq!(seed.salt("old"), GOLDEN_SALT_OLD);
    assert_eq!(seed.unit(&key, seed.salt("old")).to_bits(), GOLDEN_UNIT_OLD);
}

/// Prints the golden vectors (run once when a new HASH_VERSION is made:
/// `cargo test --lib golden_print -- --ignored --nocapture`).
#[test]
#[ignore = "generates src/answer/sticky/golden.rs"]
fn golden_print() {
    let cases: &[(&str, &str, u8, Pools)] = &[
        (
            "www.shift.example.com.",
            "192.0.2.0",
            24,
            &[("old", 90), ("new", 10)],
        ),
        (
            "www.shift.example.com.",
            "198.51.100.0",
            24,
            &[("old", 90), ("new", 10)],
        ),
        (
            "www.shift.example.com.",
            "203.0.113.0",
            24,
            &[("old", 50), ("new", 50)],
        ),
        (
            "www.shift.example.com.",
            "10.20.30.0",
            24,
            &[("old", 50), ("new", 50)],
        ),
        (
            "www.shift.example.com.",
            "10.20.31.0",
            24,
            &[("old", 50), ("new", 50)],
        ),
        (
            "www.shift.example.com.",
            "2001:db8:1:100::",
            56,
            &[("old", 70), ("new", 30)],
        ),
        (
            "www.shift.example.com.",
            "2001:db8:2::",
            48,
            &[("old", 70), ("new", 30)],
        ),
        (
            "seed-a",
            "172.16.5.0",
            24,
            &[("old", 1), ("new", 1), ("canary", 1)],
        ),
        (
            "seed-a",
            "172.16.6.0",
            24,
            &[("old", 1), ("new", 1), ("canary", 1)],
        ),
        (
            "seed-a",
            "172.16.7.0",
            24,
            &[("old", 1), ("new", 1), ("canary", 1)],
        ),
        (
            "seed-b",
            "172.16.5.0",
            24,
            &[("old", 1), ("new", 1), ("canary", 1)],
        ),
        ("seed-b", "100.64.0.0", 10, &[("blue", 30), ("green", 70)]),
        ("seed-b", "0.0.0.0", 0, &[("blue", 30), ("green", 70)]),
        ("seed-b", "::", 0, &[("blue", 30), ("green", 70)]),
    ];
    println!("/// Generated by `golden_print` for HASH_VERSION {HASH_VERSION}.");
    println!("const GOLDEN_VECTORS: &[Vector] = &[");
    for &(s, a, p, pools) in cases {
        let seed = Seed::new(s);
        let key = ClientKey::new(a.parse().unwrap(), p);
        let mut cands: Vec<(u64, u32)> = pools.iter().map(|(n, w)| (seed.salt(n), *w)).collect();
        reduce(&mut cands);
        let got = pools[seed.rendezvous(&key, &cands).unwrap()].0;
        println!("    ({s:?}, {a:?}, {p}, &{pools:?}, {got:?}),");
    }
    println!("];");
    let seed = Seed::new("www.shift.example.com.");
    let key = ClientKey::new("192.0.2.0".parse().unwrap(), 24);
    println!("const GOLDEN_SALT_OLD: u64 = {:#x};", seed.salt("old"));
    println!(
        "const GOLDEN_UNIT_OLD: u64 = {:#x};",
        seed.unit(&key, seed.salt("old")).to_bits()
    );
}
