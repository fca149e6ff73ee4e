//! Online DNSSEC (issue 20): a zone's keys, read from PKCS#8 PEM files, and
//! signing with a cache of signatures by RRset content.
//!
//! Signing happens when a plan is built, never per query: the plan asks
//! [`ZoneKeys::sign`] for the RRSIGs of every RRset it can serve, and the
//! cache answers repeats (a phase flip A → B → A, two rotations holding the
//! same addresses) without signing again. A signature is made with its
//! inception [`INCEPTION_BACKDATE`] before the hour it is made in, lives
//! [`SIGNATURE_LIFETIME`], and is made anew by the first build that finds
//! less than [`REFRESH_BEFORE`] of it left.
//!
//! One combined signing key (CSK, flags 257) signs everything; every key
//! is online. Keys listed in `publish` are in the DNSKEY set but do not
//! sign (RFC 7583 pre-publication and retirement).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::{CDNSKEY, CDS, DNSKEY, DNSSECRData, DS, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, DigestType, PublicKey, SigningKey, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

/// The inception of a signature lies this far before the start of the hour
/// it is made in, for validators whose clocks run behind.
pub const INCEPTION_BACKDATE: u64 = 3600;
/// How long a signature is valid from its inception.
pub const SIGNATURE_LIFETIME: u64 = 14 * 86_400;
/// A plan build makes a signature anew when less than this is left of it.
pub const REFRESH_BEFORE: u64 = 7 * 86_400;
/// The longest a plan may go unbuilt while signed: the daemon rebuilds at
/// least this often, so a signature is always refreshed well before
/// [`REFRESH_BEFORE`] runs out.
pub const REBUILD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(86_400);
/// DNSKEY flags of a combined signing key: zone key and secure entry point.
pub const CSK_FLAGS: u16 = 257;

/// An error reading or using a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file cannot be read, or is not safe to read.
    #[error("{path}: {message}")]
    File {
        /// The key file.
        path: PathBuf,
        /// What is wrong, with the fix where there is one.
        message: String,
    },
    /// The file is not a PKCS#8 PEM key of a supported algorithm.
    #[error("{path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Signing failed (should not happen with a key that loaded).
    #[error("signing with key {tag} failed: {message}")]
    Sign {
        /// The key's tag.
        tag: u16,
        /// The library's message.
        message: String,
    },
}

/// The algorithms dnsshift signs with, by the names the CLI and zone files use.
pub const ALGORITHMS: [(&str, Algorithm); 2] = [
    ("ecdsap256sha256", Algorithm::ECDSAP256SHA256),
    ("ed25519", Algorithm::ED25519),
];

/// The name of a supported algorithm.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, x)| *x == a)
        .map_or("unsupported", |(n, _)| n)
}

/// A supported algorithm by name (case-insensitive).
pub fn algorithm_by_name(name: &str) -> Option<Algorithm> {
    ALGORITHMS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, a)| *a)
}

/// One key of a zone.
pub struct Key {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its algorithm (from the key itself).
    pub algorithm: Algorithm,
    /// Its key tag (RFC 4034 appendix B).
    pub tag: u16,
    /// Its DNSKEY data (flags 257).
    pub dnskey: DNSKEY,
    /// Whether it signs (`keys`) or is only published (`publish`).
    pub signs: bool,
    signer: Box<dyn SigningKey>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("path", &self.path)
            .field("algorithm", &self.algorithm)
            .field("tag", &self.tag)
            .field("signs", &self.signs)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Reads a key file: PKCS#8 PEM, mode 0600 (no access for group or
    /// others), owned by the user dnsshift runs as.
    pub fn load(path: &Path, signs: bool) -> Result<Key, KeyError> {
        let file_err = |message: String| KeyError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = crate::config::source::read_regular(path)
            .map_err(|e| file_err(format!("cannot read key file: {e}")))?;
        check_key_file(path).map_err(file_err)?;
        let (signer, algorithm) = parse_key(text.as_bytes()).map_err(|message| KeyError::Key {
            path: path.to_path_buf(),
            message,
        })?;
        let public = signer.to_public_key().map_err(|e| KeyError::Key {
            path: path.to_path_buf(),
            message: format!("no public key: {e}"),
        })?;
        let dnskey = DNSKEY::with_flags(CSK_FLAGS, public);
        let tag = dnskey.calculate_key_tag().map_err(|e| KeyError::Key {
            path: path.to_path_buf(),
            message: format!("no key tag: {e}"),
        })?;
        Ok(Key {
            path: path.to_path_buf(),
            algorithm,
            tag,
            dnskey,
            signs,
            signer,
        })
    }

    /// The DS of this key under `origin` (SHA-256), for the parent.
    pub fn ds(&self, origin: &Name) -> Result<DS, KeyError> {
        let digest = self
            .dnskey
            .to_digest(origin, DigestType::SHA256)
            .map_err(|e| KeyError::Sign {
                tag: self.tag,
                message: e.to_string(),
            })?;
        Ok(DS::new(
            self.tag,
            self.algorithm,
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        ))
    }
}

/// A PKCS#8 PEM private key: Ed25519 or ECDSA P-256, whichever it is.
fn parse_key(pem: &[u8]) -> Result<(Box<dyn SigningKey>, Algorithm), String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| {
        format!("not a PKCS#8 PEM private key (\"-----BEGIN PRIVATE KEY-----\"): {e}")
    })?;
    if let Ok(k) = Ed25519SigningKey::from_pkcs8(&der) {
        return Ok((Box::new(k), Algorithm::ED25519));
    }
    if let Ok(k) = EcdsaSigningKey::from_pkcs8(&der, Algorithm::ECDSAP256SHA256) {
        return Ok((Box::new(k), Algorithm::ECDSAP256SHA256));
    }
    Err("the key is neither ECDSA P-256 nor Ed25519 (or its PKCS#8 data is corrupt)".into())
}

/// Refuses a key file that others could read or that another user owns,
/// with the command that fixes it (as for the control token).
fn check_key_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read key file: {e}"))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the key file has mode {mode:04o} but must be readable by its owner only: run `chmod 600 {}`",
            path.display()
        ));
    }
    if let Some(me) = crate::config::source::effective_uid()
        && meta.uid() != me
    {
        return Err(format!(
            "the key file is owned by uid {} but dnsshift runs as uid {me}: run `chown {me} {}`",
            meta.uid(),
            path.display()
        ));
    }
    Ok(())
}

/// Makes a new key of `algorithm` and writes it to `out` as PKCS#8 PEM with
/// mode 0600 (refusing to overwrite a file). Returns its key tag.
pub fn keygen(out: &Path, algorithm: Algorithm) -> Result<u16, KeyError> {
    let err = |message: String| KeyError::File {
        path: out.to_path_buf(),
        message,
    };
    let der = match algorithm {
        Algorithm::ED25519 => Ed25519SigningKey::generate_pkcs8(),
        _ => EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256),
    }
    .map_err(|e| err(format!("cannot generate a key: {e}")))?;
    let pem = pem_encode(der.secret_pkcs8_der());
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| err(format!("cannot create key file: {e}")))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(format!("cannot write key file: {e}")))?;
    Ok(Key::load(out, true)?.tag)
}

/// PEM text of a PKCS#8 private key: base64 in lines of 64 characters.
fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// A signature kept for reuse.
#[derive(Debug)]
struct Cached {
    rrsigs: Arc<[Record]>,
    /// Expiration of the signatures (Unix seconds).
    expiration: u64,
}

/// What [`ZoneKeys::sign`] did, for tests and `status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SignStats {
    /// RRsets signed (cache misses and refreshes).
    pub signed: u64,
    /// RRsets answered from the cache.
    pub reused: u64,
}

/// A zone's keys and its cache of signatures.
#[derive(Debug)]
pub struct ZoneKeys {
    /// The zone's apex: the signer name.
    pub origin: Name,
    /// Signing keys first (`keys`), then published ones (`publish`).
    pub keys: Vec<Key>,
    cache: Mutex<SigCache>,
}

#[derive(Debug, Default)]
struct SigCache {
    by_content: HashMap<Box<[u8]>, Cached>,
    stats: SignStats,
}

impl ZoneKeys {
    /// The keys of the zone at `origin`.
    pub fn new(origin: Name, keys: Vec<Key>) -> ZoneKeys {
        ZoneKeys {
            origin,
            keys,
            cache: Mutex::default(),
        }
    }

    /// The keys that sign.
    pub fn signing(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(|k| k.signs)
    }

    /// The apex DNSKEY RRset: every key, signing or published.
    pub fn dnskey_records(&self, ttl: u32) -> Vec<Record> {
        self.keys
            .iter()
            .map(|k| {
                Record::from_rdata(
                    self.origin.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.dnskey.clone())),
                )
            })
            .collect()
    }

    /// The apex CDS and CDNSKEY RRsets (RFC 7344): the signing keys, for
    /// parents that scan.
    pub fn cds_records(&self, ttl: u32) -> (Vec<Record>, Vec<Record>) {
        let mut cds = Vec::new();
        let mut cdnskey = Vec::new();
        for k in self.signing() {
            if let Ok(ds) = k.ds(&self.origin) {
                let data = CDS::new(
                    ds.key_tag(),
                    Some(ds.algorithm()),
                    ds.digest_type(),
                    ds.digest().to_vec(),
                );
                cds.push(Record::from_rdata(
                    self.origin.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::CDS(data)),
                ));
            }
            let data = CDNSKEY::with_flags(
                CSK_FLAGS,
                Some(k.algorithm),
                k.dnskey.public_key().public_bytes().to_vec(),
            );
            cdnskey.push(Record::from_rdata(
                self.origin.clone(),
                ttl,
                RData::DNSSEC(DNSSECRData::CDNSKEY(data)),
            ));
        }
        (cds, cdnskey)
    }

    /// The RRSIGs (one per signing key) of `rrset`, all records of one
    /// owner, type and TTL, at Unix time `now`: from the cache if it holds
    /// them with at least [`REFRESH_BEFORE`] left, else newly made.
    pub fn sign(&self, rrset: &[&Record], now: u64) -> Result<Arc<[Record]>, KeyError> {
        self.sign_keyed(rrset_key(rrset), rrset, now)
    }

    /// [`ZoneKeys::sign`] with the RRset's [`rrset_key`] already made.
    pub fn sign_keyed(
        &self,
        key: Box<[u8]>,
        rrset: &[&Record],
        now: u64,
    ) -> Result<Arc<[Record]>, KeyError> {
        let mut cache = crate::sync::lock(&self.cache);
        let fresh = cache
            .by_content
            .get(&key)
            .filter(|c| c.expiration >= now + REFRESH_BEFORE)
            .map(|c| c.rrsigs.clone());
        if let Some(rrsigs) = fresh {
            cache.stats.reused += 1;
            return Ok(rrsigs);
        }
        let inception = now - now % 3600 - INCEPTION_BACKDATE.min(now - now % 3600);
        let expiration = inception + SIGNATURE_LIFETIME;
        let mut sigs = Vec::new();
        for k in self.signing() {
            sigs.push(self.sign_with(k, rrset, inception, expiration)?);
        }
        let rrsigs: Arc<[Record]> = sigs.into();
        cache.stats.signed += 1;
        cache.by_content.insert(
            key,
            Cached {
                rrsigs: rrsigs.clone(),
                expiration,
            },
        );
        Ok(rrsigs)
    }

    fn sign_with(
        &self,
        k: &Key,
        rrset: &[&Record],
        inception: u64,
        expiration: u64,
    ) -> Result<Record, KeyError> {
        let err = |e: &dyn std::fmt::Display| KeyError::Sign {
            tag: k.tag,
            message: e.to_string(),
        };
        let Some(first) = rrset.first() else {
            return Err(err(&"empty RRset"));
        };
        let input = SigInput {
            type_covered: first.record_type(),
            algorithm: k.algorithm,
            num_labels: first.name.num_labels(),
            original_ttl: first.ttl,
            sig_expiration: SerialNumber::new(expiration as u32),
            sig_inception: SerialNumber::new(inception as u32),
            key_tag: k.tag,
            signer_name: self.origin.to_lowercase(),
        };
        let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, rrset.iter().copied())
            .map_err(|e| err(&e))?;
        let sig = k.signer.sign(&tbs).map_err(|e| err(&e))?;
        Ok(Record::from_rdata(
            first.name.clone(),
            first.ttl,
            RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
        ))
    }

    /// Drops signatures that the next build would make anew anyway, so the
    /// cache holds no more than the answers of the last
    /// [`SIGNATURE_LIFETIME`] − [`REFRESH_BEFORE`].
    pub fn prune(&self, now: u64) {
        crate::sync::lock(&self.cache)
            .by_content
            .retain(|_, c| c.expiration >= now + REFRESH_BEFORE);
    }

    /// Signing counters since the zone was loaded.
    pub fn stats(&self) -> SignStats {
        crate::sync::lock(&self.cache).stats
    }

    /// The earliest expiration (Unix seconds) among the cached signatures.
    pub fn earliest_expiry(&self) -> Option<u64> {
        crate::sync::lock(&self.cache)
            .by_content
            .values()
            .map(|c| c.expiration)
            .min()
    }
}

/// The content of an RRset as validators see it: owner (lowercased),
/// type, TTL and the sorted canonical RDATA. Two rotations of the same
/// addresses have the same key.
pub fn rrset_key(rrset: &[&Record]) -> Box<[u8]> {
    let mut out = Vec::new();
    if let Some(first) = rrset.first() {
        for label in first.name.to_lowercase().iter() {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
        out.extend(u16::from(first.record_type()).to_be_bytes());
        out.extend(first.ttl.to_be_bytes());
    }
    let mut datas: Vec<Vec<u8>> = rrset
        .iter()
        .map(|r| {
            let mut b = Vec::new();
            let mut enc = BinEncoder::new(&mut b);
            enc.set_canonical_form(true);
            enc.set_name_encoding(NameEncoding::UncompressedLowercase);
            // An RDATA that does not encode keys as empty: it is never served either.
            let _ = r.data.emit(&mut enc);
            b
        })
        .collect();
    datas.sort();
    datas.dedup();
    for d in datas {
        out.extend((d.len() as u16).to_be_bytes());
        out.extend(d);
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use std::os::unix::fs::PermissionsExt;

    fn a(name: &str, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            30,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    }

    #[test]
    fn keygen_load_and_sign_with_cache() {
        let dir = tempfile::tempdir().unwrap();
        for (name, alg) in ALGORITHMS {
            let p = dir.path().join(format!("{name}.pem"));
            let tag = keygen(&p, alg).unwrap();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let k = Key::load(&p, true).unwrap();
            assert_eq!((k.tag, k.algorithm), (tag, alg));
            let zk = ZoneKeys::new(Name::from_ascii("z.test.").unwrap(), vec![k]);
            let (r1, r2) = (
                a("w.z.test.", [192, 0, 2, 1]),
                a("w.z.test.", [192, 0, 2, 2]),
            );
            let now = 1_800_001_234;
            let s1 = zk.sign(&[&r1, &r2], now).unwrap();
            // Another rotation of the same addresses: the same signature.
            let s2 = zk.sign(&[&r2, &r1], now + 60).unwrap();
            assert!(Arc::ptr_eq(&s1, &s2));
            assert_eq!(
                zk.stats(),
                SignStats {
                    signed: 1,
                    reused: 1
                }
            );
            let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &s1[0].data else {
                panic!("not an RRSIG");
            };
            let inception = u64::from(sig.input().sig_inception.get());
            assert_eq!(inception % 3600, 0);
            assert!(inception <= now - 3600 && inception > now - 7200);
            assert_eq!(
                u64::from(sig.input().sig_expiration.get()) - inception,
                SIGNATURE_LIFETIME
            );
            // Less than REFRESH_BEFORE left: signed anew.
            zk.sign(
                &[&r1, &r2],
                inception + SIGNATURE_LIFETIME - REFRESH_BEFORE + 1,
            )
            .unwrap();
            assert_eq!(zk.stats().signed, 2);
        }
    }

    #[test]
    fn bad_key_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        keygen(&p, Algorithm::ECDSAP256SHA256).unwrap();
        assert!(
            keygen(&p, Algorithm::ECDSAP256SHA256).is_err(),
            "no overwrite"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Key::load(&p, true).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Key::load(&bad, true).unwrap_err().to_string();
        assert!(e.contains("not a PKCS#8 PEM private key"), "{e}");
        let e = Key::load(&dir.path().join("missing.pem"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read key file"), "{e}");
    }
}
