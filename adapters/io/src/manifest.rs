//! The `.tsm` manifest: what a downloader needs to know about a file before fetching it.
//!
//! A small JSON object:
//!
//! ```json
//! {
//!   "version": 1,
//!   "root": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
//!   "file_len": 0,
//!   "name": "empty.bin"
//! }
//! ```
//!
//! `root` is the content root (BLAKE3 of the file, as `b3sum` prints it) in 64 lowercase hex
//! digits; uppercase is accepted on load. Unknown keys are ignored, so later versions can add
//! fields. `name` is only a suggestion: never use it as a path without sanitising it.
//!
//! A manifest comes from someone else, so nothing in it is believed without a bound: a file
//! larger than [`MAX_MANIFEST_LEN`] is refused before it is read, and `file_len` must be within
//! the protocol's maximum ([`MAX_FILE_LEN`], 64 TiB). Every error of [`Manifest::load`] names the
//! file. [`Manifest::save`] writes atomically (temp file, fsync, rename), so a full disk never
//! leaves a half-written manifest behind.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde_json::{Map, Value};
use tierswarm_core::tiers::MAX_FILE_LEN;

use crate::store_file;

/// The manifest format version this crate writes and reads.
pub const MANIFEST_VERSION: u64 = 1;

/// Largest manifest file read: 64 KiB (a real one is about 150 bytes plus its name).
pub const MAX_MANIFEST_LEN: u64 = 64 * 1024;

/// What identifies a shared file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Manifest {
    /// The content root: BLAKE3 of the file's bytes.
    pub root: [u8; 32],
    /// The file length in bytes.
    pub file_len: u64,
    /// A suggested file name (untrusted).
    pub name: String,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read or written.
    #[error("manifest {path}: {source}")]
    Io {
        /// The manifest path.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The text is not a JSON object.
    #[error("manifest is not a JSON object: {0}")]
    Syntax(String),
    /// A required field is absent.
    #[error("manifest field `{0}` is missing")]
    Missing(&'static str),
    /// A field is present but unusable.
    #[error("manifest field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The file is larger than [`MAX_MANIFEST_LEN`].
    #[error("manifest is larger than {MAX_MANIFEST_LEN} bytes: not a tierswarm manifest")]
    TooLarge,
    /// The bytes are not UTF-8 text.
    #[error("manifest is not UTF-8 text: {0}")]
    NotText(std::str::Utf8Error),
    /// An error in the manifest file at `path`.
    #[error("manifest {path}: {source}")]
    InFile {
        /// The manifest path.
        path: String,
        /// What is wrong with it.
        source: Box<ManifestError>,
    },
}

impl Manifest {
    /// The manifest as pretty-printed JSON (with a trailing newline).
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "version": MANIFEST_VERSION,
            "root": root_to_hex(&self.root),
            "file_len": self.file_len,
            "name": self.name,
        });
        // Serialising a `Value` of strings and numbers cannot fail.
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses the bytes of a manifest file: at most [`MAX_MANIFEST_LEN`] bytes of UTF-8 JSON.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge);
        }
        Self::from_json(std::str::from_utf8(bytes).map_err(ManifestError::NotText)?)
    }

    /// Parses a manifest, naming the field and the reason on any error.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ManifestError::Syntax("expected an object".into()));
        };
        let version = get_u64(&obj, "version")?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Invalid {
                field: "version",
                reason: format!(
                    "unsupported version {version} (this build reads {MANIFEST_VERSION})"
                ),
            });
        }
        let root_hex = get_str(&obj, "root")?;
        let root = root_from_hex(root_hex).map_err(|reason| ManifestError::Invalid {
            field: "root",
            reason,
        })?;
        let file_len = get_u64(&obj, "file_len")?;
        if file_len > MAX_FILE_LEN {
            return Err(ManifestError::Invalid {
                field: "file_len",
                reason: format!("{file_len} bytes is more than the protocol's maximum of {MAX_FILE_LEN} (64 TiB)"),
            });
        }
        Ok(Manifest {
            root,
            file_len,
            name: get_str(&obj, "name")?.to_owned(),
        })
    }

    /// Writes the manifest to `path` atomically (replacing any file there).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ManifestError> {
        let path = path.as_ref();
        store_file::save(path, self.to_json().as_bytes()).map_err(|source| io_error(path, source))
    }

    /// Reads and parses the manifest at `path`; every error names the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|f| f.take(MAX_MANIFEST_LEN + 1).read_to_end(&mut bytes))
            .map_err(|source| io_error(path, source))?;
        Self::from_bytes(&bytes).map_err(|e| ManifestError::InFile {
            path: path.display().to_string(),
            source: Box::new(e),
        })
    }
}

/// The root as 64 lowercase hex digits (what `b3sum` prints).
pub fn root_to_hex(root: &[u8; 32]) -> String {
    root.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses 64 hex digits (either case) into a root.
pub fn root_from_hex(text: &str) -> Result<[u8; 32], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, found {} characters",
            text.chars().count()
        ));
    }
    let mut root = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| {
            (c as char)
                .to_digit(16)
                .ok_or_else(|| format!("`{}` at position {} is not a hex digit", c as char, 2 * i))
        };
        root[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(root)
}

fn get<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, ManifestError> {
    obj.get(field).ok_or(ManifestError::Missing(field))
}

fn get_u64(obj: &Map<String, Value>, field: &'static str) -> Result<u64, ManifestError> {
    let value = get(obj, field)?;
    value.as_u64().ok_or_else(|| ManifestError::Invalid {
        field,
        reason: format!("expected a non-negative integer, found {value}"),
    })
}

fn get_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, ManifestError> {
    let value = get(obj, field)?;
    value.as_str().ok_or_else(|| ManifestError::Invalid {
        field,
        reason: format!("expected a string, found {value}"),
    })
}

fn io_error(path: &Path, source: io::Error) -> ManifestError {
    ManifestError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            root: *blake3::hash(b"hello").as_bytes(),
            file_len: 5,
            name: "hello \"world\".txt".into(),
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.tsm");
        sample().save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap(), sample());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&blake3::hash(b"hello").to_hex().to_string()));
        assert!(text.contains("\"version\": 1"));
    }

    #[test]
    fn hex_matches_blake3() {
        let root = *blake3::hash(b"x").as_bytes();
        let hex = root_to_hex(&root);
        assert_eq!(hex, blake3::hash(b"x").to_hex().as_str());
        assert_eq!(root_from_hex(&hex).unwrap(), root);
        assert_eq!(root_from_hex(&hex.to_uppercase()).unwrap(), root);
    }

    fn err(text: &str) -> String {
        Manifest::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_and_reason() {
        let root = "00".repeat(32);
        let ok = format!(r#"{{"version":1,"root":"{root}","file_len":3,"name":"a","extra":true}}"#);
        assert!(Manifest::from_json(&ok).is_ok());
        assert!(err("[1]").contains("not a JSON object"));
        assert!(err("{").contains("not a JSON object"));
        assert!(err(r#"{"root":"00","file_len":1,"name":"a"}"#).contains("`version` is missing"));
        assert!(
            err(&ok.replace("\"version\":1", "\"version\":2")).contains("unsupported version 2")
        );
        assert!(err(&ok.replace(&root, "abc")).contains("`root` is invalid: expected 64 hex"));
        let bad_digit = format!("zz{}", "0".repeat(62));
        assert!(err(&ok.replace(&root, &bad_digit)).contains("`z` at position 0"));
        assert!(
            err(&ok.replace("\"file_len\":3", "\"file_len\":-3")).contains("`file_len` is invalid")
        );
        assert!(err(&ok.replace("\"file_len\":3", "\"file_len\":\"3\""))
            .contains("non-negative integer"));
        assert!(err(&ok.replace("\"name\":\"a\"", "\"name\":7")).contains("`name` is invalid"));
        let missing = Manifest::load("/nonexistent/dir/x.tsm")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/dir/x.tsm"));
        let huge = ok.replace("\"file_len\":3", "\"file_len\":70368744177665");
        assert!(
            err(&huge).contains("more than the protocol's maximum"),
            "{}",
            err(&huge)
        );
        let max = ok.replace("\"file_len\":3", "\"file_len\":70368744177664");
        assert!(Manifest::from_json(&max).is_ok());
    }

    #[test]
    fn hostile_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tsm");
        let good = sample().to_json();
        // Truncated.
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let e = Manifest::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("manifest {}: ", path.display())),
            "{e}"
        );
        assert!(e.contains("not a JSON object"), "{e}");
        // Not text.
        std::fs::write(&path, [0xff, 0xfe, 0]).unwrap();
        assert!(Manifest::load(&path)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        // Far too large: refused after reading at most 64 KiB + 1.
        std::fs::write(&path, vec![b' '; 10 << 20]).unwrap();
        let e = Manifest::load(&path).unwrap_err().to_string();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        // A directory.
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }
}
