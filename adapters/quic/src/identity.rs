//! A node's QUIC identity: a self-signed certificate, its key, and the fingerprint that peers
//! pin.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name in every tierswarm certificate (and the TLS server name dialled). Peers are
/// recognised by fingerprint, never by name.
pub(crate) const SERVER_NAME: &str = "tierswarm";

/// SHA-256 of a certificate's DER bytes: what a `quic://HOST:PORT#FINGERPRINT` URL pins.
/// Shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `cert` (DER).
    pub fn of(cert: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a certificate fingerprint is 64 hex digits (SHA-256), not `{0}`")]
pub struct BadFingerprint(String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let bad = || BadFingerprint(s.to_owned());
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// A node's certificate and private key.
pub struct Identity {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Why an identity file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// It is not a certificate and a matching key.
    #[error("{path}: not a tierswarm identity ({reason}); move it away to make a new one")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Identity {
    /// A fresh self-signed certificate (ECDSA P-256) for `tierswarm`.
    pub fn generate() -> Identity {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .expect("rcgen makes a P-256 certificate for a valid DNS name");
        Identity {
            cert: made.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()),
        }
    }

    /// The fingerprint peers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// Loads the identity kept at `path`, or makes one and keeps it there (PEM: the
    /// certificate, then the PKCS#8 key; readable by the owner only), so that the fingerprint
    /// stays the same from run to run.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(pem) => Identity::from_pem(&pem).map_err(|reason| IdentityError::Invalid {
                path: path.to_owned(),
                reason,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate();
                write_private(path, id.to_pem().as_bytes()).map_err(io_err)?;
                Ok(id)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn to_pem(&self) -> String {
        let block = |label: &str, der: &[u8]| pem_block(label, der);
        block("CERTIFICATE", &self.cert) + &block("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    fn from_pem(pem: &[u8]) -> Result<Identity, String> {
        let cert = CertificateDer::from_pem_slice(pem).map_err(|e| format!("certificate: {e}"))?;
        let key = match PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("key: {e}"))? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => return Err("the key is not PKCS#8".into()),
        };
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key().into(), &provider)
            .and_then(|k| k.keys_match())
            .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        Ok(Identity { cert, key })
    }
}

/// A PEM block of `der` (base64, 64 columns).
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, fsynced, renamed), readable
/// and writable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_as_lowercase_hex() {
        let f = Fingerprint::of(b"cert");
        let text = f.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Fingerprint>().unwrap(), f);
        assert_eq!(text.to_uppercase().parse::<Fingerprint>().unwrap(), f);
        for bad in ["", "abc", &text[1..], &format!("{}g", &text[1..])] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_identity_is_kept_and_reloaded_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.tsk");
        let made = Identity::load_or_create(&path).unwrap();
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(made.fingerprint(), again.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(Identity::generate().fingerprint(), made.fingerprint());
    }

    #[test]
    fn a_damaged_or_mismatched_identity_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.tsk");
        std::fs::write(&path, "garbage").unwrap();
        let e = Identity::load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("node.tsk") && e.contains("not a tierswarm identity"),
            "{e}"
        );
        // Another node's key under this node's certificate.
        let (a, b) = (Identity::generate(), Identity::generate());
        let mixed =
            pem_block("CERTIFICATE", &a.cert) + &pem_block("PRIVATE KEY", b.key.secret_pkcs8_der());
        std::fs::write(&path, mixed).unwrap();
        let e = Identity::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("does not fit the certificate"), "{e}");
    }
}
