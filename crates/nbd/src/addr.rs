//! Where the server listens: `HOST:PORT` over TCP or `unix:PATH`. Parsing the user's spelling
//! is the configuration's job (`machine::ServerAddr`, converted by `hostblk`).

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
    fn display() {
        assert_eq!(NbdAddr::Unix("/a".into()).to_string(), "unix:/a");
        assert_eq!(
            NbdAddr::Tcp("[::1]:10809".into()).to_string(),
            "[::1]:10809"
        );
    }
}
