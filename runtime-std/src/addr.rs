//! Addresses: dial strings in Plan 9 form (`tcp!host!port`, `tcp!host!9fs`, `tcp!host` for the
//! 9fs port, `unix!/path`) and the usual ones (`host:port`, `unix:/path`), and listen addresses
//! (a bare port means loopback, `tcp!*!port` every IPv4 interface).

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `host:port` (IPv6 hosts in brackets).
    Tcp(String),
    Unix(PathBuf),
    /// Standard input and output (listening only).
    Stdio,
}

/// A malformed address, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrError(pub String);

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddrError {}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => match a.rsplit_once(':') {
                Some((host, port)) => {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    write!(f, "tcp!{host}!{port}")
                }
                None => write!(f, "tcp!{a}"),
            },
            Addr::Unix(p) => write!(f, "unix!{}", p.display()),
            Addr::Stdio => f.write_str("stdio"),
        }
    }
}

fn bad(s: &str) -> AddrError {
    AddrError(format!(
        "cannot read address {s:?}: use tcp!HOST!PORT, HOST:PORT, unix!/PATH or unix:/PATH"
    ))
}

/// The service names Plan 9 and Inferno dial strings carry where a port goes.
const SERVICES: [(&str, u16); 3] = [("9fs", 564), ("9pfs", 564), ("styx", 6666)];

fn port(s: &str, p: &str) -> Result<u16, AddrError> {
    if let Some((_, n)) = SERVICES.iter().find(|(name, _)| *name == p) {
        return Ok(*n);
    }
    p.parse().map_err(|_| {
        AddrError(format!(
            "{s:?}: {p:?} is not a port number or a known service (9fs, 9pfs, styx)"
        ))
    })
}

impl Addr {
    /// Parse a dial string (where to connect).
    pub fn dial(s: &str) -> Result<Addr, AddrError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("unix!").or_else(|| s.strip_prefix("unix:")) {
            if rest.is_empty() {
                return Err(bad(s));
            }
            return Ok(Addr::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("tcp!").or_else(|| s.strip_prefix("net!")) {
            // Without a service, the file service's port, as Plan 9's 9fs dials.
            let (host, p) = rest.rsplit_once('!').unwrap_or((rest, "9fs"));
            if host.is_empty() || host.contains('!') {
                return Err(bad(s));
            }
            if host == "*" {
                return Err(AddrError(format!(
                    "{s:?}: * (every interface) is for listening; dial a host"
                )));
            }
            let n = port(s, p)?;
            // An IPv6 address goes in brackets; any other colon is a mistake (`tcp!fs:564`).
            let v6 = |h: &str| h.split('%').next().unwrap_or(h).parse::<Ipv6Addr>().is_ok();
            let host = match host {
                h if h.starts_with('[') && h.ends_with(']') && v6(&h[1..h.len() - 1]) => {
                    h.to_string()
                }
                h if v6(h) => format!("[{h}]"),
                h if h.contains(':') || h.contains('[') => return Err(bad(s)),
                h => h.to_string(),
            };
            return Ok(Addr::Tcp(format!("{host}:{n}")));
        }
        // `tcp:HOST:PORT`, as socat and QEMU users write it.
        let plain = s.strip_prefix("tcp:").unwrap_or(s);
        let (host, p) = plain.rsplit_once(':').ok_or_else(|| bad(s))?;
        if host.is_empty() {
            return Err(bad(s));
        }
        let n = port(s, p)?;
        Ok(Addr::Tcp(format!("{host}:{n}")))
    }

    /// Parse a listen address: like a dial string, but a bare port (or `:port`) means the
    /// loopback interface, `tcp!*!port` every IPv4 interface, `-` or `stdio` standard input and
    /// output.
    pub fn listen(s: &str) -> Result<Addr, AddrError> {
        let s = s.trim();
        if s == "-" || s == "stdio" {
            return Ok(Addr::Stdio);
        }
        // Every IPv4 interface (Plan 9's `*`; `[::]:PORT` takes IPv6 too), on the 9fs port
        // when none is given.
        if let Some(rest) = s.strip_prefix("tcp!*").or_else(|| s.strip_prefix("net!*")) {
            let p = match rest {
                "" => "9fs",
                r => r.strip_prefix('!').ok_or_else(|| bad(s))?,
            };
            return Ok(Addr::Tcp(format!("0.0.0.0:{}", port(s, p)?)));
        }
        let bare = s.strip_prefix("tcp:").unwrap_or(s);
        if let Some(p) = bare
            .strip_prefix(':')
            .or(Some(bare).filter(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_digit())))
        {
            return Ok(Addr::Tcp(format!("127.0.0.1:{}", port(s, p)?)));
        }
        Addr::dial(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_strings() {
        assert_eq!(
            Addr::dial("tcp!10.0.0.1!564"),
            Ok(Addr::Tcp("10.0.0.1:564".into()))
        );
        assert_eq!(Addr::dial("tcp!::1!564"), Ok(Addr::Tcp("[::1]:564".into())));
        assert_eq!(
            Addr::dial("localhost:5640"),
            Ok(Addr::Tcp("localhost:5640".into()))
        );
        assert_eq!(Addr::dial("[::1]:5640"), Ok(Addr::Tcp("[::1]:5640".into())));
        assert_eq!(Addr::dial("unix!/tmp/s"), Ok(Addr::Unix("/tmp/s".into())));
        assert_eq!(Addr::dial("unix:/tmp/s"), Ok(Addr::Unix("/tmp/s".into())));
        // Plan 9's service names, and its default: the file service.
        assert_eq!(Addr::dial("tcp!fs!9fs"), Ok(Addr::Tcp("fs:564".into())));
        assert_eq!(Addr::dial("tcp!fs"), Ok(Addr::Tcp("fs:564".into())));
        assert_eq!(Addr::dial("net!fs!styx"), Ok(Addr::Tcp("fs:6666".into())));
        assert_eq!(Addr::dial("fs:9pfs"), Ok(Addr::Tcp("fs:564".into())));
        assert!(Addr::dial("tcp!fs!ftp").is_err());
        assert!(Addr::dial("tcp!*!564").is_err(), "* only listens");
        assert!(Addr::dial("tcp!").is_err());
        assert!(Addr::dial("tcp!a!b!564").is_err());
        assert!(
            Addr::dial("tcp!fs:564").is_err(),
            "a colon, not an IPv6 address"
        );
        assert!(Addr::dial("tcp![fs]!564").is_err());
        assert_eq!(
            Addr::dial("tcp![fe80::1%eth0]!564"),
            Ok(Addr::Tcp("[fe80::1%eth0]:564".into()))
        );
        assert_eq!(
            Addr::dial("tcp!fe80::1%eth0!564"),
            Ok(Addr::Tcp("[fe80::1%eth0]:564".into()))
        );
        assert!(Addr::dial("host:port").is_err());
        assert!(Addr::dial("nonsense").is_err());
        assert!(Addr::dial("unix:").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(Addr::listen("5640"), Ok(Addr::Tcp("127.0.0.1:5640".into())));
        assert_eq!(
            Addr::listen(":5640"),
            Ok(Addr::Tcp("127.0.0.1:5640".into()))
        );
        assert_eq!(
            Addr::listen("0.0.0.0:5640"),
            Ok(Addr::Tcp("0.0.0.0:5640".into()))
        );
        assert_eq!(Addr::listen("-"), Ok(Addr::Stdio));
        assert_eq!(
            Addr::listen("tcp!*!5640"),
            Ok(Addr::Tcp("0.0.0.0:5640".into()))
        );
        assert_eq!(
            Addr::listen("tcp!*!styx"),
            Ok(Addr::Tcp("0.0.0.0:6666".into()))
        );
        assert_eq!(Addr::listen("tcp!*"), Ok(Addr::Tcp("0.0.0.0:564".into())));
        assert!(Addr::listen("tcp!*x").is_err());
        assert_eq!(Addr::listen(":9fs"), Ok(Addr::Tcp("127.0.0.1:564".into())));
        assert_eq!(
            Addr::listen("tcp::styx"),
            Ok(Addr::Tcp("127.0.0.1:6666".into()))
        );
        assert_eq!(
            Addr::listen("tcp:127.0.0.1:5640"),
            Ok(Addr::Tcp("127.0.0.1:5640".into()))
        );
        assert_eq!(
            Addr::listen("tcp:5640"),
            Ok(Addr::Tcp("127.0.0.1:5640".into()))
        );
        assert_eq!(
            Addr::dial("tcp:fileserver:564"),
            Ok(Addr::Tcp("fileserver:564".into()))
        );
        assert!(Addr::dial("tcp:").is_err());
        assert_eq!(
            Addr::listen("unix!/run/p9"),
            Ok(Addr::Unix("/run/p9".into()))
        );
    }

    #[test]
    fn display_is_plan9_form() {
        assert_eq!(
            Addr::dial("localhost:564").unwrap().to_string(),
            "tcp!localhost!564"
        );
        assert_eq!(Addr::dial("unix:/x").unwrap().to_string(), "unix!/x");
    }
}
