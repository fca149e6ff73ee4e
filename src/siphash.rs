//! SipHash (Aumasson and Bernstein), the one hand-written copy: the
//! sticky assignment hashes with SipHash-1-3 (its vectors are pinned in
//! `answer::sticky`), DNS cookies with SipHash-2-4 (RFC 9018). Pinned by
//! the paper's SipHash-2-4 test vector below.

/// SipHash with `C` compression and `D` finalisation rounds over the
/// concatenation of `a` and `b` (so a prefix needs no buffer).
pub fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, a: &[u8], b: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let len = a.len() + b.len();
    let byte = |i: usize| if i < a.len() { a[i] } else { b[i - a.len()] };
    let mut i = 0;
    while i + 8 <= len {
        let m = match a.get(i..i + 8) {
            Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            None => (0..8).fold(0u64, |m, j| m | u64::from(byte(i + j)) << (8 * j)),
        };
        v[3] ^= m;
        for _ in 0..C {
            round(&mut v);
        }
        v[0] ^= m;
        i += 8;
    }
    let mut m = (len as u64 & 0xFF) << 56;
    for j in 0..len - i {
        m |= u64::from(byte(i + j)) << (8 * j);
    }
    v[3] ^= m;
    for _ in 0..C {
        round(&mut v);
    }
    v[0] ^= m;
    v[2] ^= 0xFF;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::siphash;

    #[test]
    fn siphash24_matches_the_papers_test_vectors() {
        // Key 00..0f; message 00..0e (15 bytes) and the empty message.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash::<2, 4>(k0, k1, &msg, &[]), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash::<2, 4>(k0, k1, &[], &[]), 0x726f_db47_dd0e_0e31);
    }
}
