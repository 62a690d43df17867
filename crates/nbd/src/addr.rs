//! Where the server listens: `HOST:PORT` over TCP or `unix:PATH`.

use crate::NbdError;
use std::fmt;
use std::path::PathBuf;

/// The address of an NBD server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddr {
    /// `HOST:PORT` (an IPv6 host in brackets: `[::1]:10809`).
    Tcp(String),
    /// A unix stream socket.
    Unix(PathBuf),
}

impl std::str::FromStr for NbdAddr {
    type Err = NbdError;

    /// Parses `unix:PATH` or `HOST:PORT`.
    fn from_str(s: &str) -> Result<NbdAddr, NbdError> {
        let bad = || NbdError::BadAddr(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(NbdAddr::Unix(PathBuf::from(path)));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(NbdAddr::Tcp(s.to_owned()))
    }
}

impl fmt::Display for NbdAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdAddr::Tcp(a) => f.write_str(a),
            NbdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            "127.0.0.1:10809".parse::<NbdAddr>().unwrap(),
            NbdAddr::Tcp("127.0.0.1:10809".into())
        );
        assert_eq!(
            "[::1]:10809".parse::<NbdAddr>().unwrap(),
            NbdAddr::Tcp("[::1]:10809".into())
        );
        assert_eq!(
            "unix:/tmp/s".parse::<NbdAddr>().unwrap(),
            NbdAddr::Unix("/tmp/s".into())
        );
        for bad in ["", "host", "host:", ":10809", "host:99999", "unix:"] {
            assert!(bad.parse::<NbdAddr>().is_err(), "{bad}");
        }
        assert_eq!(NbdAddr::Unix("/a".into()).to_string(), "unix:/a");
    }
}
