//! Peer addresses as URLs: `tcp://HOST:PORT`, `quic://HOST:PORT#FINGERPRINT`, `mem://NAME`; a
//! bare `HOST:PORT` is TCP.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A peer's address: a scheme (which transport), an authority (`HOST:PORT`, or a name for
/// transports without sockets) and an optional fragment (what the transport needs beyond the
/// address: QUIC's certificate fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerUrl {
    scheme: String,
    authority: String,
    fragment: Option<String>,
}

/// Why a string is not a peer URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not a peer address: {reason}")]
pub struct UrlError {
    url: String,
    reason: &'static str,
}

impl PeerUrl {
    /// `scheme://authority[#fragment]`.
    pub fn new(scheme: &str, authority: &str, fragment: Option<&str>) -> Result<Self, UrlError> {
        let text = match fragment {
            Some(f) => format!("{scheme}://{authority}#{f}"),
            None => format!("{scheme}://{authority}"),
        };
        text.parse()
    }

    /// `scheme://ADDR[#fragment]`.
    pub fn from_addr(scheme: &str, addr: SocketAddr, fragment: Option<&str>) -> Self {
        PeerUrl {
            scheme: scheme.to_owned(),
            authority: addr.to_string(),
            fragment: fragment.map(str::to_owned),
        }
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `HOST:PORT` (or a transport's own kind of name).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// What follows `#`.
    pub fn fragment(&self) -> Option<&str> {
        self.fragment.as_deref()
    }

    /// The authority as a socket address (numeric host only: see [`resolve`](Self::resolve)).
    pub fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        self.authority.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{}` is not an IP address and port", self.authority),
            )
        })
    }

    /// One URL per address `HOST` resolves to (blocking: a name lookup), scheme and fragment
    /// kept.
    pub fn resolve(&self) -> std::io::Result<Vec<PeerUrl>> {
        if let Ok(addr) = self.socket_addr() {
            return Ok(vec![self.with_addr(addr)]);
        }
        let addrs: Vec<_> = self.authority.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`{}` resolves to no address", self.authority),
            ));
        }
        Ok(addrs.into_iter().map(|a| self.with_addr(a)).collect())
    }

    fn with_addr(&self, addr: SocketAddr) -> PeerUrl {
        PeerUrl {
            authority: addr.to_string(),
            ..self.clone()
        }
    }
}

impl FromStr for PeerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let err = |reason| UrlError {
            url: s.to_owned(),
            reason,
        };
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("tcp".to_owned(), s),
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err(err("the scheme must be letters, digits, `+`, `-` or `.`"));
        }
        let (authority, fragment) = match rest.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (rest, None),
        };
        if authority.is_empty() {
            return Err(err("no HOST:PORT"));
        }
        if authority.contains(['/', '?', '#', ' ']) {
            return Err(err("a peer address has no path, query or spaces"));
        }
        if fragment == Some("") {
            return Err(err("nothing after `#`"));
        }
        Ok(PeerUrl {
            scheme,
            authority: authority.to_owned(),
            fragment: fragment.map(str::to_owned),
        })
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)?;
        if let Some(fragment) = &self.fragment {
            write!(f, "#{fragment}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_fragments_and_bare_tcp() {
        let u: PeerUrl = "quic://127.0.0.1:7000#ABcd".parse().unwrap();
        assert_eq!(
            (u.scheme(), u.authority(), u.fragment()),
            ("quic", "127.0.0.1:7000", Some("ABcd"))
        );
        assert_eq!(u.to_string(), "quic://127.0.0.1:7000#ABcd");
        let bare: PeerUrl = "[::1]:9".parse().unwrap();
        assert_eq!(bare.to_string(), "tcp://[::1]:9");
        assert_eq!(bare.socket_addr().unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!("TCP://h:1".parse::<PeerUrl>().unwrap().scheme(), "tcp");
        for bad in [
            "",
            "tcp://",
            "1cp://h:1",
            "tcp://h:1/x",
            "quic://h:1#",
            "t p://h:1",
        ] {
            assert!(bad.parse::<PeerUrl>().is_err(), "{bad}");
        }
        let e = "tcp://".parse::<PeerUrl>().unwrap_err().to_string();
        assert!(e.contains("`tcp://`") && e.contains("no HOST:PORT"), "{e}");
    }

    #[test]
    fn resolves_names_keeping_scheme_and_fragment() {
        let u: PeerUrl = "quic://localhost:5#ff".parse().unwrap();
        let all = u.resolve().unwrap();
        assert!(!all.is_empty());
        for r in all {
            assert!(r.socket_addr().unwrap().ip().is_loopback());
            assert_eq!((r.scheme(), r.fragment()), ("quic", Some("ff")));
        }
        assert!("h:1".parse::<PeerUrl>().unwrap().socket_addr().is_err());
    }
}
