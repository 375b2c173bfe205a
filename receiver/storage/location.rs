//! Where a store is: `--store DIR_OR_URL`, parsed by [`StoreLocation::parse`].
//!
//! ```text
//! --store /var/lib/fleet-store                       a file store directory (anything not URL-like)
//! --store postgres://fleet@db.example:5432/fleet     PostgreSQL (also postgresql://)
//! --store postgres://fleet@%2Frun%2Fpostgresql/fleet PostgreSQL over a Unix socket directory
//! --store 'postgres://fleet@[::1]/fleet?sslmode=require'
//! ```
//!
//! The URL is `postgres://USER@HOST[:PORT][/DBNAME][?KEY=VALUE&…]`: `USER` is required (the
//! role; no default from the OS account, so a receiver never connects as someone it was not
//! told to), `PORT` defaults to 5432, `DBNAME` to `USER` (as libpq does); `USER`, `HOST` and
//! `DBNAME` may be percent-encoded (a host starting with `/` is a socket directory). Query
//! parameters are kept as given for the backend, which refuses any it does not know. A
//! password in the URL (`USER:PASSWORD@`) is refused: argv is visible to every local user in
//! `ps`, so the password comes from `--store-password-file FILE` or env
//! `FLEET_STORE_PASSWORD` and is attached with [`PostgresLocation::with_password`]. Any other
//! `SCHEME://` is refused rather than taken as a directory name.

use std::fmt;
use std::path::PathBuf;

use fleet_wire::keys::SecretString;

/// PostgreSQL's default port.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// Where a store is.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A file store directory (created with mode 0700 by the receiver).
    Dir(PathBuf),
    /// A PostgreSQL database (cargo feature `postgres`).
    Postgres(PostgresLocation),
}

/// A PostgreSQL database and the role to connect as. `Display` and `Debug` never show the
/// password.
pub struct PostgresLocation {
    /// The role.
    pub user: String,
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// TCP port (also the socket file's suffix: `.s.PGSQL.PORT`).
    pub port: u16,
    /// The database.
    pub dbname: String,
    /// Query parameters as given (`sslmode=require`), for the backend to check.
    pub params: Vec<(String, String)>,
    /// The role's password, from `--store-password-file` or `FLEET_STORE_PASSWORD` (`None`:
    /// the server needs none, e.g. peer or trust authentication).
    pub password: Option<SecretString>,
}

/// Why `--store` could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationError {
    /// The value is empty.
    Empty,
    /// A URL carries a password (`postgres://user:secret@host/db`).
    PasswordInUrl,
    /// A `SCHEME://` other than `postgres://` or `postgresql://`.
    UnknownScheme(String),
    /// A `postgres://` URL that does not follow the form above; says what is wrong.
    Malformed(String),
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::Empty => f.write_str("--store is empty: give a directory or a postgres:// URL"),
            LocationError::PasswordInUrl => f.write_str(
                "--store: the URL holds a password, which every local user can read in `ps`; remove it from the URL \
                 and give it with --store-password-file FILE or FLEET_STORE_PASSWORD",
            ),
            LocationError::UnknownScheme(scheme) => write!(
                f,
                "--store: `{scheme}://` is not a known store (a directory, or postgres://USER@HOST[:PORT]/DBNAME)"
            ),
            LocationError::Malformed(why) => {
                write!(f, "--store: {why} (expected postgres://USER@HOST[:PORT][/DBNAME][?KEY=VALUE])")
            }
        }
    }
}

impl std::error::Error for LocationError {}

impl StoreLocation {
    /// Parse `--store DIR_OR_URL` (see the module docs). Never reads the file system.
    pub fn parse(text: &str) -> Result<StoreLocation, LocationError> {
        if text.is_empty() {
            return Err(LocationError::Empty);
        }
        match text.split_once("://") {
            Some((scheme, rest)) if is_scheme(scheme) => match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => PostgresLocation::parse_rest(rest).map(StoreLocation::Postgres),
                _ => Err(LocationError::UnknownScheme(scheme.to_string())),
            },
            _ => Ok(StoreLocation::Dir(PathBuf::from(text))),
        }
    }

    /// The file store directory, if this is one.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            StoreLocation::Dir(dir) => Some(dir),
            StoreLocation::Postgres(_) => None,
        }
    }
}

impl fmt::Display for StoreLocation {
    /// `store DIR` or the URL without a password (what [`crate::StorageRead::describe`] says).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Dir(dir) => write!(f, "store {}", dir.display()),
            StoreLocation::Postgres(postgres) => postgres.fmt(f),
        }
    }
}

/// RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl PostgresLocation {
    /// Everything after `postgres://`.
    fn parse_rest(rest: &str) -> Result<PostgresLocation, LocationError> {
        let malformed = |why: &str| LocationError::Malformed(why.to_string());
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        // The last `@` separates the user: a host never holds one.
        let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
            return Err(malformed("no role: name it before the host, as postgres://USER@HOST/DBNAME"));
        };
        if userinfo.contains(':') {
            return Err(LocationError::PasswordInUrl);
        }
        let user = decode(userinfo, "the role")?;
        if user.is_empty() {
            return Err(malformed("the role is empty"));
        }
        let (host, port) = split_host_port(hostport)?;
        let host = decode(&host, "the host")?;
        if host.is_empty() {
            return Err(malformed("the host is empty"));
        }
        let port =
            match port {
                None => DEFAULT_POSTGRES_PORT,
                Some(text) => text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    LocationError::Malformed(format!("port `{text}` is not a number from 1 to 65535"))
                })?,
            };
        if path.contains('/') {
            return Err(malformed("the database name holds a `/`"));
        }
        let dbname = match decode(path, "the database name")? {
            name if name.is_empty() => user.clone(),
            name => name,
        };
        let mut params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| LocationError::Malformed(format!("query parameter `{pair}` has no `=`")))?;
            let key = decode(key, "a query parameter")?;
            if key.eq_ignore_ascii_case("password") {
                return Err(LocationError::PasswordInUrl);
            }
            params.push((key, decode(value, "a query parameter")?));
        }
        Ok(PostgresLocation { user, host, port, dbname, params, password: None })
    }

    /// The same location with the role's password attached.
    pub fn with_password(mut self, password: SecretString) -> PostgresLocation {
        self.password = Some(password);
        self
    }

    /// True if the host is a Unix socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

/// `HOST[:PORT]` or `[V6]:PORT`.
fn split_host_port(text: &str) -> Result<(String, Option<&str>), LocationError> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) =
            bracketed.split_once(']').ok_or_else(|| LocationError::Malformed("an IPv6 host misses its `]`".into()))?;
        return match after {
            "" => Ok((host.to_string(), None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host.to_string(), Some(port))),
                None => Err(LocationError::Malformed(format!("`{after}` after the IPv6 host"))),
            },
        };
    }
    match text.split_once(':') {
        Some((host, port)) => Ok((host.to_string(), Some(port))),
        None => Ok((text.to_string(), None)),
    }
}

/// Percent-decode one URL component (UTF-8; no control characters).
fn decode(text: &str, what: &str) -> Result<String, LocationError> {
    let bad = || LocationError::Malformed(format!("{what} has a bad percent escape: `{text}`"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| bad())?;
    if decoded.chars().any(char::is_control) {
        return Err(LocationError::Malformed(format!("{what} holds control characters")));
    }
    Ok(decoded)
}

/// Percent-encode what a URL component cannot hold as is.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Display for PostgresLocation {
    /// `postgres://USER@HOST:PORT/DBNAME[?…]`, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { encode(&self.host) };
        write!(f, "postgres://{}@{host}:{}/{}", encode(&self.user), self.port, encode(&self.dbname))?;
        for (i, (key, value)) in self.params.iter().enumerate() {
            write!(f, "{}{}={}", if i == 0 { '?' } else { '&' }, encode(key), encode(value))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PostgresLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_some() { "Some(<redacted>)" } else { "None" };
        write!(f, "PostgresLocation({self}, password: {password})")
    }
}

impl Clone for PostgresLocation {
    fn clone(&self) -> Self {
        PostgresLocation {
            user: self.user.clone(),
            host: self.host.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
            params: self.params.clone(),
            password: self.password.as_ref().map(|p| SecretString::new(p.expose().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(text: &str) -> PostgresLocation {
        match StoreLocation::parse(text) {
            Ok(StoreLocation::Postgres(location)) => location,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn directories_are_anything_not_url_like() {
        for text in ["./fleet-store", "/var/lib/fleet", "store", "a:b", "dir//x", "c:/x"] {
            assert!(matches!(StoreLocation::parse(text), Ok(StoreLocation::Dir(d)) if d == std::path::Path::new(text)));
        }
        assert_eq!(StoreLocation::parse("").err(), Some(LocationError::Empty));
    }

    #[test]
    fn postgres_urls_parse_with_defaults() {
        let pg = postgres("postgres://fleet@db.example:6543/metrics?sslmode=require");
        assert_eq!(
            (pg.user.as_str(), pg.host.as_str(), pg.port, pg.dbname.as_str()),
            ("fleet", "db.example", 6543, "metrics")
        );
        assert_eq!(pg.params, vec![("sslmode".to_string(), "require".to_string())]);
        assert!(pg.password.is_none());
        let pg = postgres("postgresql://fleet@127.0.0.1");
        assert_eq!((pg.port, pg.dbname.as_str()), (5432, "fleet"), "port 5432 and dbname = user by default");
        let pg = postgres("postgres://fleet@[::1]:5433/db");
        assert_eq!((pg.host.as_str(), pg.port), ("::1", 5433));
        let pg = postgres("POSTGRES://a%40b@%2Frun%2Fpostgresql/my%20db");
        assert_eq!((pg.user.as_str(), pg.host.as_str(), pg.dbname.as_str()), ("a@b", "/run/postgresql", "my db"));
        assert!(pg.is_socket());
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        for text in ["postgres://fleet:secret@db/x", "postgres://fleet:@db/x", "postgres://fleet@db/x?password=s"] {
            let err = StoreLocation::parse(text).err();
            assert_eq!(err, Some(LocationError::PasswordInUrl), "{text}");
            let message = LocationError::PasswordInUrl.to_string();
            assert!(message.contains("--store-password-file") && !message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        let err = |text: &str| StoreLocation::parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("postgres://db/x").contains("no role"));
        assert!(err("postgres://@db/x").contains("role is empty"));
        assert!(err("postgres://u@/x").contains("host is empty"));
        assert!(err("postgres://u@db:0/x").contains("port `0`"));
        assert!(err("postgres://u@db:99999/x").contains("port"));
        assert!(err("postgres://u@db/x/y").contains("`/`"));
        assert!(err("postgres://u@[::1/x").contains("`]`"));
        assert!(err("postgres://u@db/x?sslmode").contains("no `=`"));
        assert!(err("postgres://u@db/%zz").contains("percent"));
        assert!(err("postgres://u@db/%0A").contains("control"));
        assert!(err("mysql://u@db/x").contains("`mysql://` is not a known store"));
    }

    #[test]
    fn display_round_trips_and_never_shows_the_password() {
        for text in [
            "postgres://fleet@db.example:6543/metrics?sslmode=require",
            "postgres://a%40b@%2Frun%2Fpostgresql:5432/my%20db",
            "postgres://fleet@[::1]:5433/db",
        ] {
            let pg = postgres(text).with_password(SecretString::new("hunter2".into()));
            assert_eq!(pg.to_string(), text);
            let again = postgres(&pg.to_string());
            assert_eq!(
                (again.user, again.host, again.port, again.dbname),
                (pg.user.clone(), pg.host.clone(), pg.port, pg.dbname.clone())
            );
            let debug = format!("{pg:?} {:?}", StoreLocation::Postgres(pg.clone()));
            assert!(!debug.contains("hunter2") && debug.contains("redacted"), "{debug}");
            assert_eq!(pg.clone().password.map(|p| p.expose().to_string()).as_deref(), Some("hunter2"));
        }
    }
}
