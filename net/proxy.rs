//! An HTTP proxy from the environment, used through `CONNECT` tunnels.
//!
//! The first of `ALL_PROXY`, `all_proxy`, `HTTPS_PROXY`, `https_proxy`, `HTTP_PROXY`,
//! `http_proxy` that holds an `http://[user:password@]host[:port]` URL (port 80 by default);
//! `NO_PROXY` / `no_proxy` lists hosts reached directly: `*` (all), `host` (exactly),
//! `.example.com` or `*.example.com` (its subdomains), `10.1.` or `10.1.*` (a prefix), compared
//! without case. Every request through a proxy, `http://` included, goes through a `CONNECT`
//! tunnel, so the proxy never sees a request head (or its API key). These are the rules ureq
//! applied before this client replaced it, so a deployment's proxy settings keep working.

use base64::Engine as _;

use crate::url::Url;

/// A proxy to tunnel through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's address.
    pub url: Url,
    /// `Proxy-Authorization` value (`Basic …`), when the proxy URL holds credentials.
    pub authorization: Option<String>,
    no_proxy: Vec<NoProxy>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({}, credentials: {})", self.url.host_port(), self.authorization.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxy {
    All,
    Exact(String),
    Suffix(String),
    Prefix(String),
}

impl Proxy {
    /// The proxy the environment names, if any (an unusable value is skipped with a warning).
    pub fn from_env() -> Option<Proxy> {
        let lookup = |name: &str| std::env::var(name).ok();
        Proxy::from_vars(&lookup)
    }

    /// [`Proxy::from_env`] over any variable lookup (tests).
    pub fn from_vars(lookup: &dyn Fn(&str) -> Option<String>) -> Option<Proxy> {
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .find_map(|name| lookup(name))
            .map(|list| list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(NoProxy::parse).collect())
            .unwrap_or_default();
        for name in ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            let Some(value) = lookup(name) else { continue };
            match Proxy::parse(&value) {
                Ok((url, authorization)) => return Some(Proxy { url, authorization, no_proxy }),
                Err(why) => log::warn!("{name} is not used: {why}"),
            }
        }
        None
    }

    /// `http://[user:password@]host[:port]` (a bare `host:port` is taken as `http://`).
    fn parse(value: &str) -> Result<(Url, Option<String>), String> {
        let value = value.trim();
        let rest = match value.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => return Err(format!("a {scheme}:// proxy is not supported (only http://)")),
            None => value,
        };
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, rest),
        };
        let url = Url::parse(&format!("http://{}", host.trim_end_matches('/')))?;
        let authorization =
            credentials.map(|c| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c.as_bytes())));
        Ok((url, authorization))
    }

    /// True when requests to `host` go through this proxy.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        !self.no_proxy.iter().any(|entry| match entry {
            NoProxy::All => true,
            NoProxy::Exact(exact) => host == *exact,
            NoProxy::Suffix(suffix) => host.ends_with(suffix.as_str()),
            NoProxy::Prefix(prefix) => host.starts_with(prefix.as_str()),
        })
    }
}

impl NoProxy {
    fn parse(entry: &str) -> NoProxy {
        let entry = entry.to_ascii_lowercase();
        if entry == "*" {
            NoProxy::All
        } else if let Some(suffix) = entry.strip_prefix('*') {
            NoProxy::Suffix(suffix.to_string())
        } else if entry.starts_with('.') {
            NoProxy::Suffix(entry)
        } else if let Some(prefix) = entry.strip_suffix('*') {
            NoProxy::Prefix(prefix.to_string())
        } else if entry.ends_with('.') {
            NoProxy::Prefix(entry)
        } else {
            NoProxy::Exact(entry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(vars: &[(&str, &str)]) -> Option<Proxy> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Proxy::from_vars(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn environment_rules() {
        assert_eq!(proxy(&[]), None);
        let p = proxy(&[("http_proxy", "http://10.0.0.1:3128"), ("HTTPS_PROXY", "proxy.lan:8080")]).expect("proxy");
        assert_eq!((p.url.host.as_str(), p.url.port, p.authorization.as_deref()), ("proxy.lan", 8080, None));
        let p = proxy(&[("ALL_PROXY", "socks5://x:1"), ("http_proxy", "http://u:p%40ss@p:3128/")]).expect("proxy");
        assert_eq!((p.url.host.as_str(), p.authorization.as_deref()), ("p", Some("Basic dTpwJTQwc3M=")));
        assert!(!format!("{p:?}").contains("dTp"), "credentials are not printed");
        let p = proxy(&[("HTTP_PROXY", "http://p:3128"), ("NO_PROXY", "localhost, .internal.com,*.dev,10.1.*,*")])
            .expect("proxy");
        assert!(!p.applies_to("anything"), "`*` matches all");
        let p = proxy(&[("HTTP_PROXY", "http://p:3128"), ("no_proxy", "LOCALHOST,.internal.com,*.dev,10.1.")])
            .expect("proxy");
        for direct in ["localhost", "api.internal.com", "x.DEV", "10.1.2.3"] {
            assert!(!p.applies_to(direct), "{direct}");
        }
        for proxied in ["internal.com", "mylocalhost", "10.2.1.1", "fleet.example.com"] {
            assert!(p.applies_to(proxied), "{proxied}");
        }
    }
}
