//! `fleet-agent receive`: run the bundled receiver until SIGTERM/SIGINT, or look after its
//! store (`receive ls|show|verify|rekey`, in [`super::receive_store`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{receive_store, usage_error, Command};
use crate::cli::{print_error, Args, Common, UsageError, EXIT_OK, EXIT_RUNTIME};
use crate::otlp::forwarder::{ForwardSettings, Forwarder};
use crate::otlp::{self, source::StorageSource};
use crate::sender::http::HttpClient;
use crate::signals::Signals;
use fleet_receiver::startup::credential_conflict;
use fleet_receiver::{Receiver, ReceiverConfig, StoreKeys, StoreLocation, StoreSource, DEFAULT_LISTEN};
use fleet_wire::keys::{Key32, SecretString};

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "receive",
    help: "\
Usage: fleet-agent receive [--listen ADDR] [--store DIR_OR_URL] [--store-password-file FILE]
                           [--api-key-file FILE]
                           [--read-token-file FILE] [--encryption-key-file FILE]...
                           (--store-key-file FILE... | --store-plaintext)
                           [--tls-cert FILE --tls-key FILE] [--workers N] [-v|-q]
                           [--forward-otlp URL [--forward-otlp-header-file FILE] [--forward-otlp-ca-file FILE]]
       fleet-agent receive ls --store DIR_OR_URL [--store-key-file FILE]...
       fleet-agent receive show --store DIR_OR_URL MACHINE [--widget W] [--since T] [--limit N] [--json]
       fleet-agent receive verify --store DIR_OR_URL [--store-key-file FILE]...
       fleet-agent receive migrate --store postgres://USER@HOST[:PORT]/DBNAME [--store-password-file FILE]
                                   [--forwarding on|off]
       fleet-agent receive rekey --store DIR [--old-key-file FILE]... --new-key-file FILE [--from-plaintext]
                                 (or env FLEET_STORE_KEY for the old keys, FLEET_NEW_STORE_KEY for the new)

Run the bundled receiver: the Atlas v1 endpoints (/api/fleet/report, /api/fleet/widget-logs),
v2 sealed batches (/api/v2/batches, stored exactly once), reads (/api/fleet/machines,
/api/fleet/widget-logs?format=json|csv), /api/health and speedtest endpoints (/speedtest/down,
/speedtest/up, /__down, /__up). Prints `listening on http(s)://ADDR` once ready, with the
address really listened on.

Secrets are read from files (one line, base64 or text; the file must not be readable by group
or others) or from the environment, never from the command line.

Options:
  --listen ADDR               address to listen on (default 127.0.0.1:8768; port 0 picks a free one)
  --store DIR_OR_URL          where to store what arrives: a directory (default ./fleet-store) or
                              postgres://USER@HOST[:PORT]/DBNAME (a build with the cargo feature
                              `postgres`; no password in the URL)
  --store-password-file FILE  the PostgreSQL role's password (or env FLEET_STORE_PASSWORD)
  --api-key-file FILE         the agents' X-API-Key, for writes only (or env FLEET_API_KEY;
                              none: accept every write, with a warning)
  --read-token-file FILE      bearer token for reads: /api/fleet/machines and exports (or env
                              FLEET_READ_TOKEN; none: reads over HTTP are disabled)
  --encryption-key-file FILE  fleet (transport) key, base64 of 32 bytes (or env FLEET_ENCRYPTION_KEY,
                              comma-separated); repeat for key rotation; none: plaintext test mode
  --store-key-file FILE       store key (make one with `fleet-agent keygen`): every stored row is
                              sealed with the first; more only open rows (during a rekey). Or env
                              FLEET_STORE_KEY, comma-separated. Must differ from the fleet keys
  --store-plaintext           store rows in plaintext (no store key): refused without this flag
  --tls-cert FILE             PEM certificate chain: serve HTTPS (needs --tls-key)
  --tls-key FILE              PEM private key
  --workers N                 requests worked on at once (default 4, at most 64)
  --forward-otlp URL          also send every committed record, decrypted, to this OpenTelemetry
                              collector as OTLP/HTTP JSON (URL/v1/metrics, URL/v1/logs), at least
                              once, from a cursor in the store (docs/otlp-forwarding.md)
  --forward-otlp-header-file FILE  one `Name: value` header for the collector (e.g. Authorization)
  --forward-otlp-ca-file FILE extra trusted CA certificates (PEM) for an https:// collector

Store commands (read the store directly; a receiver may be running, except for rekey, which
works on a directory store only):
  ls       machines, last seen, rows per widget, bytes on disk
  show     one machine's rows, decrypted, newest first (--limit, default 50; --json: JSON lines)
  verify   authenticate every row: good, bad, torn per machine; exit 1 if any row is bad
  rekey    rewrite the store under a new store key, crash-safely (a receiver must not be running)
  migrate  bring a PostgreSQL store's schema to this version (idempotent; receivers also do it
           at start); prints `schema version N (was M)`; --forwarding off stops queueing rows for
           OTLP forwarding and empties the queue (a receiver with --forward-otlp turns it on)

SIGTERM/SIGINT stop the receiver (exit 0).
",
    run,
};

/// Flags that carried secrets on the command line; they are refused with their replacement.
const REMOVED: [(&str, &str); 4] = [
    ("--api-key", "--api-key-file FILE or env FLEET_API_KEY"),
    ("--encryption-key", "--encryption-key-file FILE or env FLEET_ENCRYPTION_KEY"),
    ("--read-token", "--read-token-file FILE or env FLEET_READ_TOKEN"),
    ("--store-key", "--store-key-file FILE or env FLEET_STORE_KEY"),
];

/// Refuse the removed secret-on-argv flags with a pointer to what replaces them.
pub fn refuse_removed_flags(args: &mut Args) -> Result<(), UsageError> {
    for (flag, instead) in REMOVED {
        if !args.values(flag)?.is_empty() {
            return Err(UsageError(format!(
                "{flag} was removed: secrets are never given on the command line (visible in ps); use {instead}"
            )));
        }
    }
    Ok(())
}

/// Largest secret file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Read a secret from a file: one line (surrounding whitespace dropped), not empty, the file
/// not readable by group or others.
pub fn read_secret_file(path: &Path) -> Result<SecretString, UsageError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    let meta = file.metadata().map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(UsageError(format!(
            "{shown} holds a secret but is readable by group or others: chmod 600 {shown}"
        )));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    let secret = SecretString::new(text.trim().to_string());
    drop(zeroize::Zeroizing::new(text));
    if secret.expose().is_empty() {
        return Err(UsageError(format!("{shown} is empty")));
    }
    Ok(secret)
}

/// One secret: from `--FLAG FILE`, else the environment variable, else none.
fn secret(args: &mut Args, flag: &str, env: &str) -> Result<Option<SecretString>, UsageError> {
    if let Some(path) = args.value(flag)? {
        return read_secret_file(Path::new(&path)).map(Some);
    }
    Ok(std::env::var(env).ok().filter(|v| !v.trim().is_empty()).map(|v| SecretString::new(v.trim().to_string())))
}

/// Keys: from every `--FLAG FILE` (in order), else the comma-separated environment variable.
pub fn keys(args: &mut Args, flag: &str, env: &str) -> Result<Vec<Key32>, UsageError> {
    let mut texts = Vec::new();
    for path in args.values(flag)? {
        texts.push((path.clone(), read_secret_file(Path::new(&path))?));
    }
    if texts.is_empty() {
        if let Ok(value) = std::env::var(env) {
            for part in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                texts.push((env.to_string(), SecretString::new(part.to_string())));
            }
        }
    }
    texts
        .iter()
        .map(|(source, text)| {
            Key32::from_base64(text.expose()).map_err(|e| UsageError(format!("{flag} ({source}): {e}")))
        })
        .collect()
}

/// The store keys of a store command or the receiver: `--store-key-file`/`FLEET_STORE_KEY`,
/// or plaintext with `--store-plaintext` (`required`: one of them must be given).
pub fn store_keys(args: &mut Args, required: bool) -> Result<StoreKeys, UsageError> {
    let plaintext = args.flag(&["--store-plaintext"]);
    let keys = keys(args, "--store-key-file", "FLEET_STORE_KEY")?;
    match (keys.is_empty(), plaintext) {
        (false, true) => Err(UsageError(
            "--store-plaintext and a store key (--store-key-file / FLEET_STORE_KEY) exclude each other".into(),
        )),
        (true, false) if required => Err(UsageError(
            "no store key: give --store-key-file FILE (make one with `fleet-agent keygen`) or FLEET_STORE_KEY, \
             or accept an unencrypted store with --store-plaintext"
                .into(),
        )),
        _ => Ok(StoreKeys::new(&keys)),
    }
}

/// `--store DIR_OR_URL` (default `./fleet-store`; `postgres://USER@HOST[:PORT]/DBNAME`, see
/// [`StoreLocation::parse`]) with a PostgreSQL role's password from `--store-password-file
/// FILE` or env `FLEET_STORE_PASSWORD` (never from the URL: argv shows in `ps`).
pub fn store_location(args: &mut Args) -> Result<StoreLocation, UsageError> {
    let text = args.value("--store")?.unwrap_or_else(|| "./fleet-store".to_string());
    let location = StoreLocation::parse(&text).map_err(|e| UsageError(e.to_string()))?;
    let password_file = args.value("--store-password-file")?;
    match location {
        StoreLocation::Dir(_) if password_file.is_some() => Err(UsageError(
            "--store-password-file is for a PostgreSQL store (--store postgres://USER@HOST/DBNAME), not a directory"
                .into(),
        )),
        StoreLocation::Dir(_) => Ok(location),
        StoreLocation::Postgres(postgres) => {
            let password = match password_file {
                Some(path) => Some(read_secret_file(Path::new(&path))?),
                None => std::env::var("FLEET_STORE_PASSWORD").ok().filter(|v| !v.is_empty()).map(SecretString::new),
            };
            Ok(StoreLocation::Postgres(match password {
                Some(password) => postgres.with_password(password),
                None => postgres,
            }))
        }
    }
}

struct Options {
    config: ReceiverConfig,
    /// The OTLP collector's client (`--forward-otlp`).
    forward: Option<HttpClient>,
    verbosity: Common,
}

fn parse(mut args: Args) -> Result<Options, UsageError> {
    let common = Common::take(&mut args)?;
    refuse_removed_flags(&mut args)?;
    let listen_text = args.value("--listen")?.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| UsageError(format!("--listen: `{listen_text}` is not an address like 127.0.0.1:8768")))?;
    let api_key = secret(&mut args, "--api-key-file", "FLEET_API_KEY")?;
    let read_token = secret(&mut args, "--read-token-file", "FLEET_READ_TOKEN")?;
    let encryption_keys = keys(&mut args, "--encryption-key-file", "FLEET_ENCRYPTION_KEY")?;
    let store_key_list = keys(&mut args, "--store-key-file", "FLEET_STORE_KEY")?;
    let plaintext = args.flag(&["--store-plaintext"]);
    if store_key_list.is_empty() && !plaintext {
        return Err(UsageError(
            "no store key: give --store-key-file FILE (make one with `fleet-agent keygen`) or FLEET_STORE_KEY, \
             or accept an unencrypted store with --store-plaintext"
                .into(),
        ));
    }
    if !store_key_list.is_empty() && plaintext {
        return Err(UsageError("--store-plaintext and a store key exclude each other".into()));
    }
    let store_keys = StoreKeys::new(&store_key_list);
    if let Some(conflict) = credential_conflict(&encryption_keys, &store_keys, api_key.as_ref(), read_token.as_ref()) {
        return Err(UsageError(conflict.to_string()));
    }
    let store = store_location(&mut args)?;
    let tls = match (args.value("--tls-cert")?, args.value("--tls-key")?) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => return Err(UsageError("--tls-cert and --tls-key go together".into())),
    };
    let workers = match args.value("--workers")? {
        None => 0,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=fleet_receiver::MAX_WORKERS).contains(&n) => n,
            _ => return Err(UsageError(format!("--workers: `{text}` is not a number from 1 to 64"))),
        },
    };
    let forward = forward_otlp(&mut args)?;
    args.finish()?;
    Ok(Options {
        forward,
        config: ReceiverConfig {
            listen,
            api_key,
            read_token,
            encryption_keys,
            store: StoreSource::Location { location: store, keys: store_keys },
            tls,
            workers,
        },
        verbosity: common,
    })
}

/// `--forward-otlp URL` with its header and CA files: the collector's client, or none.
fn forward_otlp(args: &mut Args) -> Result<Option<HttpClient>, UsageError> {
    let url = args.value("--forward-otlp")?;
    let header_file = args.value("--forward-otlp-header-file")?;
    let ca_file = args.value("--forward-otlp-ca-file")?;
    let Some(url) = url else {
        if header_file.is_some() || ca_file.is_some() {
            return Err(UsageError(
                "--forward-otlp-header-file and --forward-otlp-ca-file need --forward-otlp URL".into(),
            ));
        }
        return Ok(None);
    };
    let header = match header_file {
        Some(path) => {
            Some(otlp::parse_header(read_secret_file(Path::new(&path))?.expose()).map_err(|e| UsageError(e.0))?)
        }
        None => None,
    };
    otlp::collector_client(&url, header, ca_file.as_deref().map(Path::new)).map(Some).map_err(|e| UsageError(e.0))
}

fn run(mut args: Args) -> u8 {
    if let Some(sub) = args.subcommand(&["ls", "show", "verify", "rekey", "migrate"]) {
        return receive_store::run(&sub, args);
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => return usage_error("receive", &e),
    };
    crate::log::init(options.verbosity.log_level(log::LevelFilter::Info));
    let config = options.config;
    config.announce();
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    };
    let store = config.store.describe();
    // PostgreSQL queues rows for forwarding only while forwarding is on for the database
    // (docs/receiver-store-postgres.md, "Forwarding"): turn it on before accepting requests.
    #[cfg(feature = "postgres")]
    if let (Some(_), StoreSource::Location { location: fleet_receiver::StoreLocation::Postgres(postgres), .. }) =
        (&options.forward, &config.store)
    {
        if let Err(e) = fleet_receiver::postgres::set_forwarding(postgres, true) {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    }
    let receiver = match Receiver::start(config) {
        Ok(receiver) => receiver,
        Err(e) => {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    };
    log::info!("storing under {store}");
    // The forwarder reads the receiver's own store (never a second opening of it).
    let forwarder = match options
        .forward
        .map(|client| Forwarder::start(Arc::new(StorageSource(receiver.storage())), client, ForwardSettings::default()))
    {
        None => None,
        Some(Ok(forwarder)) => Some(forwarder),
        Some(Err(e)) => {
            print_error(&e);
            receiver.shutdown();
            return EXIT_RUNTIME;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {}", receiver.listening_url());
    let _ = stdout.flush();
    drop(stdout);
    while !signals.terminating() {
        signals.sleep(Duration::from_secs(3600));
        // SIGHUP and SIGUSR1 mean nothing to the receiver: clear them so sleep blocks again.
        let _ = signals.take_reload();
        let _ = signals.take_collect_now();
    }
    log::info!("stopping");
    receiver.shutdown();
    if let Some(forwarder) = forwarder {
        forwarder.stop();
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse_list(list: &[&str]) -> Result<Options, UsageError> {
        parse(Args::new(list.iter().map(|s| s.to_string()).collect()))
    }

    fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = secret_file(dir.path(), "fleet.key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", 0o600);
        let store_key = secret_file(dir.path(), "store.key", "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\n", 0o600);
        let api = secret_file(dir.path(), "api", "k\n", 0o600);
        let read = secret_file(dir.path(), "read", "r", 0o400);
        let options = parse_list(&[
            "--listen",
            "127.0.0.1:0",
            "--encryption-key-file",
            &key,
            "--encryption-key-file",
            &key,
            "--store",
            "/tmp/x",
            "--workers",
            "2",
            "--api-key-file",
            &api,
            "--read-token-file",
            &read,
            "--store-key-file",
            &store_key,
        ])
        .map_err(|e| e.0);
        let options = options.as_ref().expect("parses");
        assert_eq!(options.config.encryption_keys.len(), 2);
        assert_eq!(options.config.workers, 2);
        assert_eq!(options.config.api_key.as_ref().map(|k| k.expose()), Some("k"));
        assert_eq!(options.config.read_token.as_ref().map(|k| k.expose()), Some("r"));
        assert!(!options.config.store.keys().is_plaintext());
        let err = |list: &[&str]| parse_list(list).err().map(|e| e.0).unwrap_or_default();
        assert!(err(&["--listen", "nowhere", "--store-plaintext"]).contains("--listen"));
        assert!(err(&["--tls-cert", "c.pem", "--store-plaintext"]).contains("--tls-key"));
        assert!(err(&["--workers", "0", "--store-plaintext"]).contains("--workers"));
        assert!(err(&["--api-key", "k", "--store-plaintext"]).contains("--api-key-file"));
        assert!(err(&["--encryption-key", "k", "--store-plaintext"]).contains("never given on the command line"));
        assert!(err(&[]).contains("no store key"), "no store key and no --store-plaintext");
        assert!(err(&["--store-key-file", &key, "--encryption-key-file", &key]).contains("must not be a fleet"));
        let open = secret_file(dir.path(), "open.key", "k", 0o644);
        assert!(err(&["--api-key-file", &open, "--store-plaintext"]).contains("chmod 600"));
        let empty = secret_file(dir.path(), "empty", "\n", 0o600);
        assert!(err(&["--api-key-file", &empty, "--store-plaintext"]).contains("empty"));
        let short = secret_file(dir.path(), "short.key", "short", 0o600);
        assert!(err(&["--encryption-key-file", &short, "--store-plaintext"]).contains("--encryption-key-file"));
        assert!(parse_list(&["--store-plaintext"]).is_ok());
        let header = secret_file(dir.path(), "otlp-header", "Authorization: Bearer t\n", 0o600);
        let forwarding = parse_list(&[
            "--store-plaintext",
            "--forward-otlp",
            "http://127.0.0.1:4318/",
            "--forward-otlp-header-file",
            &header,
        ]);
        assert!(forwarding.is_ok_and(|o| o.forward.is_some_and(|c| c.base_url() == "http://127.0.0.1:4318")));
        assert!(err(&["--store-plaintext", "--forward-otlp-header-file", &header]).contains("need --forward-otlp URL"));
        assert!(err(&["--store-plaintext", "--forward-otlp", "127.0.0.1:4318"]).contains("http://"));
        let open_header = secret_file(dir.path(), "open-header", "Authorization: Bearer t", 0o644);
        assert!(err(&[
            "--store-plaintext",
            "--forward-otlp",
            "http://h:1",
            "--forward-otlp-header-file",
            &open_header
        ])
        .contains("chmod 600"));
        // --store: a directory or a postgres:// URL without a password.
        let pg = parse_list(&["--store-plaintext", "--store", "postgres://fleet@db:6000/fleet"]).map_err(|e| e.0);
        let described = pg.as_ref().map(|o| o.config.store.describe()).unwrap_or_default();
        assert_eq!(described, "postgres://fleet@db:6000/fleet");
        assert!(
            err(&["--store-plaintext", "--store", "postgres://fleet:pw@db/fleet"]).contains("--store-password-file")
        );
        assert!(err(&["--store-plaintext", "--store", "mysql://x@db/y"]).contains("mysql"));
        let password = secret_file(dir.path(), "pg.pw", "hunter2\n", 0o600);
        assert!(err(&["--store-plaintext", "--store-password-file", &password]).contains("not a directory"));
        let with_password =
            parse_list(&["--store-plaintext", "--store", "postgres://u@h/d", "--store-password-file", &password]);
        match with_password.map(|o| o.config.store) {
            Ok(StoreSource::Location { location: StoreLocation::Postgres(pg), .. }) => {
                assert_eq!(pg.password.as_ref().map(|p| p.expose()), Some("hunter2"));
                assert!(!format!("{pg} {pg:?}").contains("hunter2"));
            }
            _ => panic!("a postgres location with its password"),
        }
        let open_password = secret_file(dir.path(), "open.pw", "pw", 0o644);
        let list = ["--store-plaintext", "--store", "postgres://u@h/d", "--store-password-file", &open_password];
        assert!(err(&list).contains("chmod 600"));
    }
}
