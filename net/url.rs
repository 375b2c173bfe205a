//! `http://` and `https://` URLs: `scheme://host[:port][/path][?query]`.
//!
//! Strict: no user information (credentials in a URL would go to logs), no bytes outside
//! printable ASCII in the path (nothing that could end the request line), a port within
//! 1..=65535; the fragment is dropped. An IPv6 literal is written in brackets.

use std::net::{IpAddr, SocketAddr};

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// True for `https`.
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port (80 and 443 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parse `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an http:// or https:// URL"));
        };
        let rest = rest.split('#').next().unwrap_or(rest);
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in a URL are not supported".to_string());
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port {port:?}"))?,
        };
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
            return Err(format!("bad host {host:?}"));
        }
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        check_path(&path)?;
        Ok(Url { tls, host: host.to_string(), port, path })
    }

    /// The host as an address when it is an IP literal (used without a resolver).
    pub fn ip_literal(&self) -> Option<SocketAddr> {
        self.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `host:port` as sent in `Host` and `CONNECT` (brackets around IPv6).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `host:port` always with the port (CONNECT's request target).
    pub fn host_port(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{host}:{}", self.port)
    }
}

/// A request path: starts with `/`, printable ASCII only (no space, CR, LF or control byte).
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("bad request path {path:?}"));
    }
    Ok(())
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("bad IPv6 literal in {authority:?}"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 literal in {authority:?}"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => after.strip_prefix(':').map(|p| (host, Some(p))).ok_or_else(|| format!("bad authority {authority:?}")),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_configs_hold() {
        let url = Url::parse("http://127.0.0.1:8768/api/v2/batches").expect("url");
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.path.as_str()),
            (false, "127.0.0.1", 8768, "/api/v2/batches")
        );
        assert_eq!(url.ip_literal(), Some("127.0.0.1:8768".parse().expect("addr")));
        assert_eq!(url.authority(), "127.0.0.1:8768");
        let url = Url::parse("HTTPS://[::1]/x?y=1#frag").expect("url");
        assert_eq!((url.tls, url.host.as_str(), url.port, url.path.as_str()), (true, "::1", 443, "/x?y=1"));
        assert_eq!((url.authority(), url.host_port()), ("[::1]".to_string(), "[::1]:443".to_string()));
        assert_eq!(url.ip_literal(), Some("[::1]:443".parse().expect("addr")));
        let url = Url::parse("https://fleet.example.com").expect("url");
        assert_eq!((url.port, url.path.as_str(), url.ip_literal()), (443, "/", None));
        assert_eq!(Url::parse("http://h?q").expect("url").path, "/?q");
    }

    #[test]
    fn refuses_what_is_not_a_plain_url() {
        for bad in [
            "ftp://x/",
            "http://",
            "http://user:pw@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:x/",
            "http://[::1/",
            "http://[zz]/",
            "http://ho st/",
            "http://host/a b",
            "http://host/a\r\nX: y",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
