//! APK signatures: parses `.SIGN.<ALG>.<keyid>` entries and verifies them (RSA PKCS#1 v1.5) against a keys directory; [`SigningKey`] makes them.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha512};

use super::framing::hash_file_range;
use crate::package::ReadOptions;
use crate::{Error, Result};

/// Largest public key file read from a keys directory.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Digest algorithm of a `.SIGN.<ALG>.<keyid>` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigAlg {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug)]
pub(in crate::package) struct SignEntry {
    /// `None` for algorithms btfgate does not verify (DSA).
    alg: Option<SigAlg>,
    name: String,
    key_id: String,
    sig: Vec<u8>,
}

pub(in crate::package) fn parse_sign_entries(
    path: &Path,
    tar: &[(String, Vec<u8>)],
) -> Result<Vec<SignEntry>> {
    let mut out = Vec::new();
    for (name, data) in tar {
        let rest = name.strip_prefix(".SIGN.").ok_or_else(|| {
            Error::bad(
                path,
                "read signature tar",
                format!("unexpected entry {name:?} in the signature member"),
            )
        })?;
        let (alg, key_id) = rest.split_once('.').ok_or_else(|| {
            Error::bad(
                path,
                "read signature tar",
                format!("{name:?} is not .SIGN.<ALG>.<keyid>"),
            )
        })?;
        if key_id.is_empty() || key_id.contains('/') || key_id == ".." || key_id.contains('\0') {
            return Err(Error::bad(
                path,
                "read signature tar",
                format!("refusing key id {key_id:?} in {name:?}"),
            ));
        }
        let alg = match alg {
            "RSA" => Some(SigAlg::Sha1),
            "RSA256" => Some(SigAlg::Sha256),
            "RSA512" => Some(SigAlg::Sha512),
            _ => None,
        };
        out.push(SignEntry {
            alg,
            name: name.clone(),
            key_id: key_id.to_string(),
            sig: data.clone(),
        });
    }
    Ok(out)
}

/// Verifies the first signature whose key is in `opts.keys_dir`. Returns the signer, or `None`
/// when the package is unsigned or no key is known and `opts.allow_untrusted` is set. A
/// signature that fails with a key that is present is an error in every case.
pub(in crate::package) fn verify_signature(
    path: &Path,
    opts: &ReadOptions,
    sigs: &[SignEntry],
    control: &[u8],
    legacy_data: Option<Range<u64>>,
) -> Result<Option<String>> {
    const PHASE: &str = "verify signature";
    for s in sigs {
        let Some(alg) = s.alg else { continue };
        let key_path = opts.keys_dir.join(&s.key_id);
        if !key_path.is_file() {
            continue;
        }
        let key = load_public_key(&key_path)?;
        let hash = match alg {
            SigAlg::Sha1 => signed_digest::<Sha1>(path, control, legacy_data.as_ref())?,
            SigAlg::Sha256 => signed_digest::<Sha256>(path, control, legacy_data.as_ref())?,
            SigAlg::Sha512 => signed_digest::<Sha512>(path, control, legacy_data.as_ref())?,
        };
        let verdict = match alg {
            SigAlg::Sha1 => key.pkcs1v15_verify_prehash::<Sha1>(&hash, &s.sig),
            SigAlg::Sha256 => key.pkcs1v15_verify_prehash::<Sha256>(&hash, &s.sig),
            SigAlg::Sha512 => key.pkcs1v15_verify_prehash::<Sha512>(&hash, &s.sig),
        };
        let covered = if legacy_data.is_some() {
            "control and data members (legacy package without datahash)"
        } else {
            "control member"
        };
        return match verdict {
            Ok(()) => Ok(Some(s.key_id.clone())),
            Err(e) => Err(Error::untrusted(
                path,
                PHASE,
                format!(
                    "signature {} does not verify with key {} ({e}): the {covered} was modified or signed by another key",
                    s.name,
                    key_path.display()
                ),
            )),
        };
    }
    if opts.allow_untrusted {
        return Ok(None);
    }
    if sigs.is_empty() {
        return Err(Error::untrusted(
            path,
            PHASE,
            "package is not signed (no .SIGN.* member); allow untrusted packages to read it anyway",
        ));
    }
    let described: Vec<String> = sigs
        .iter()
        .map(|s| match s.alg {
            Some(_) => format!("key id {}", s.key_id),
            None => format!("{} (unsupported algorithm)", s.name),
        })
        .collect();
    let absent = if opts.keys_dir.is_dir() {
        ""
    } else {
        " (the directory does not exist)"
    };
    Err(Error::untrusted(
        path,
        PHASE,
        format!(
            "signed by {} but no such key in keys dir {}{absent}",
            described.join(", "),
            opts.keys_dir.display()
        ),
    ))
}

fn signed_digest<D: Digest>(
    path: &Path,
    control: &[u8],
    legacy_data: Option<&Range<u64>>,
) -> Result<Vec<u8>> {
    let mut h = D::new();
    h.update(control);
    if let Some(range) = legacy_data {
        hash_file_range(path, range, &mut h)?;
    }
    Ok(h.finalize().as_slice().to_vec())
}

/// Loads an RSA public key: PEM SPKI (`PUBLIC KEY`, Alpine's format) or PKCS#1 (`RSA PUBLIC KEY`).
fn load_public_key(key_path: &Path) -> Result<rsa::PublicKey> {
    const PHASE: &str = "read signing key";
    let mut text = String::new();
    File::open(key_path)
        .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
        .map_err(|e| Error::io(key_path, PHASE, e))?;
    let not_rsa = |e: &dyn std::fmt::Display| {
        Error::bad(key_path, PHASE, format!("not an RSA public key: {e}"))
    };
    if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::PublicKey::from_pkcs1_pem(text.trim()).map_err(|e| not_rsa(&e))
    } else if text.contains("-----BEGIN PUBLIC KEY-----") {
        rsa::PublicKey::from_public_key_pem(text.trim()).map_err(|e| not_rsa(&e))
    } else {
        Err(not_rsa(&"expected a PEM 'PUBLIC KEY' or 'RSA PUBLIC KEY'"))
    }
}

/// An RSA key that signs APKs; `name` is the key id written in `.SIGN.RSA.<name>` and the file
/// name its public half must have in a keys directory.
pub struct SigningKey {
    /// Key id, e.g. `btfgate-test.rsa.pub`.
    pub name: String,
    key: rsa::PrivateKey,
    public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key of `bits` bits (from the OS random source).
    pub fn generate(name: impl Into<String>, bits: usize) -> Result<Self> {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
            .map_err(|e| failed(format!("generate a {bits}-bit RSA key: {e}")))?;
        Self::new(name.into(), key)
    }

    /// Loads a private key from PEM: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(name: impl Into<String>, pem: &str) -> Result<Self> {
        let key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            rsa::PrivateKey::from_pkcs1_pem(pem.trim())
                .map_err(|e| failed(format!("read PKCS#1 RSA private key: {e}")))?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            rsa::PrivateKey::from_pkcs8_pem(pem.trim())
                .map_err(|e| failed(format!("read PKCS#8 private key: {e}")))?
        } else {
            return Err(failed("expected a PEM 'PRIVATE KEY' or 'RSA PRIVATE KEY'"));
        };
        Self::new(name.into(), key)
    }

    fn new(name: String, key: rsa::PrivateKey) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(failed(format!(
                "key name {name:?} cannot be a file name in a keys directory"
            )));
        }
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| failed(format!("encode public key: {e}")))?;
        Ok(SigningKey {
            name,
            key,
            public_pem,
        })
    }

    /// The public key as PEM SPKI (`PUBLIC KEY`): save it as `<keys_dir>/<name>`.
    pub fn public_pem(&self) -> String {
        self.public_pem.clone()
    }

    /// The private key as PEM PKCS#8 (`PRIVATE KEY`), to keep a key across runs.
    pub fn private_pem(&self) -> Result<String> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| failed(format!("encode private key: {e}")))?;
        Ok(pem.as_str().to_string())
    }

    /// The RSA PKCS#1 v1.5 signature of the SHA-1 of `bytes` (what `.SIGN.RSA.<name>` holds).
    pub(in crate::package) fn sign_sha1(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.key
            .pkcs1v15_sign_prehash::<Sha1>(&Sha1::digest(bytes))
            .map_err(|e| failed(format!("sign with key {}: {e}", self.name)))
    }
}

/// An error of a [`SigningKey`] step (not about an input file): the phase is "signing key".
fn failed(msg: impl Into<String>) -> Error {
    Error::failed("signing key", msg)
}
