//! `fleet-agent receive`: run the bundled receiver until SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{usage_error, Command};
use crate::cli::{print_error, Args, Common, UsageError, EXIT_OK, EXIT_RUNTIME};
use crate::keys::Key32;
use crate::receiver::{Receiver, ReceiverConfig, DEFAULT_LISTEN};
use crate::signals::Signals;

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "receive",
    help: "\
Usage: fleet-agent receive [--listen ADDR] [--api-key K] [--encryption-key K]...
                           [--store DIR] [--tls-cert FILE --tls-key FILE] [--workers N] [-v|-q]

Run the bundled receiver: the Atlas v1 endpoints (/api/fleet/report, /api/fleet/widget-logs),
v2 sealed batches (/api/v2/batches, stored exactly once), exports (/api/fleet/machines,
/api/fleet/widget-logs?format=csv), /api/health and speedtest endpoints (/speedtest/down,
/speedtest/up, /__down, /__up). Prints `listening on http(s)://ADDR` once ready.

Options:
  --listen ADDR          address to listen on (default 127.0.0.1:8768; port 0 picks a free one)
  --api-key K            required X-API-Key (or env FLEET_API_KEY; none: accept all, with a warning)
  --encryption-key K     fleet key, base64 of 32 bytes (or env FLEET_ENCRYPTION_KEY, comma-separated);
                         repeat for key rotation; none: plaintext test mode, with a warning
  --store DIR            where to store what arrives (default ./fleet-store)
  --tls-cert FILE        PEM certificate chain: serve HTTPS (needs --tls-key)
  --tls-key FILE         PEM private key
  --workers N            worker threads (default 4, at most 64)

SIGTERM/SIGINT stop it (exit 0).
",
    run,
};

struct Options {
    config: ReceiverConfig,
    verbosity: Common,
}

fn parse(mut args: Args) -> Result<Options, UsageError> {
    let common = Common::take(&mut args)?;
    let listen_text = args.value("--listen")?.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| UsageError(format!("--listen: `{listen_text}` is not an address like 127.0.0.1:8768")))?;
    let api_key = args.value("--api-key")?.or_else(|| std::env::var("FLEET_API_KEY").ok()).filter(|k| !k.is_empty());
    let mut key_texts = args.values("--encryption-key")?;
    if key_texts.is_empty() {
        if let Ok(env) = std::env::var("FLEET_ENCRYPTION_KEY") {
            key_texts = env.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
        }
    }
    let mut encryption_keys = Vec::new();
    for (i, text) in key_texts.iter().enumerate() {
        let key = Key32::from_base64(text).map_err(|e| UsageError(format!("encryption key #{}: {e}", i + 1)))?;
        encryption_keys.push(key);
    }
    let store = PathBuf::from(args.value("--store")?.unwrap_or_else(|| "./fleet-store".to_string()));
    let tls = match (args.value("--tls-cert")?, args.value("--tls-key")?) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => return Err(UsageError("--tls-cert and --tls-key go together".into())),
    };
    let workers = match args.value("--workers")? {
        None => 0,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=crate::receiver::MAX_WORKERS).contains(&n) => n,
            _ => return Err(UsageError(format!("--workers: `{text}` is not a number from 1 to 64"))),
        },
    };
    args.finish()?;
    Ok(Options { config: ReceiverConfig { listen, api_key, encryption_keys, store, tls, workers }, verbosity: common })
}

fn run(args: Args) -> u8 {
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => return usage_error("receive", &e),
    };
    crate::log::init(options.verbosity.log_level(log::LevelFilter::Info));
    let config = options.config;
    if config.api_key.is_none() {
        log::warn!("no API key configured (--api-key / FLEET_API_KEY): accepting requests from anyone");
    }
    if config.encryption_keys.is_empty() {
        log::warn!("no encryption key (--encryption-key / FLEET_ENCRYPTION_KEY): test mode, plaintext bodies accepted");
    } else {
        let kids: Vec<String> = config.encryption_keys.iter().map(crate::envelope::kid).collect();
        log::info!("sealed bodies only; key ids {}", kids.join(", "));
    }
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    };
    let store = config.store.display().to_string();
    let receiver = match Receiver::start(config) {
        Ok(receiver) => receiver,
        Err(e) => {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    };
    log::info!("storing under {store}");
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {}", receiver.url());
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
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_list(list: &[&str]) -> Result<Options, UsageError> {
        parse(Args::new(list.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn flags() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let options = parse_list(&[
            "--listen",
            "127.0.0.1:0",
            "--encryption-key",
            key,
            "--encryption-key",
            key,
            "--store",
            "/tmp/x",
            "--workers",
            "2",
            "--api-key=k",
        ])
        .map_err(|e| e.0);
        let options = options.as_ref().expect("parses");
        assert_eq!(options.config.encryption_keys.len(), 2);
        assert_eq!(options.config.workers, 2);
        assert_eq!(options.config.api_key.as_deref(), Some("k"));
        assert!(parse_list(&["--listen", "nowhere"]).is_err());
        assert!(parse_list(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse_list(&["--workers", "0"]).is_err());
        assert!(parse_list(&["--encryption-key", "short"]).is_err());
    }
}
