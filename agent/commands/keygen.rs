//! `fleet-agent keygen`: print a fresh key.

use super::{usage_error, Command};
use crate::cli::{print_error, Args, Common, EXIT_OK, EXIT_RUNTIME};
use fleet_wire::keys::Key32;

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "keygen",
    help: "\
Usage: fleet-agent keygen

Print a new key: standard base64 of 32 bytes from the OS random number generator, and nothing
else on stdout. Use it for `encryption_key` (shared with the server) or `FLEET_ENCRYPTION_KEY`,
or as the receiver's store key (`fleet-agent keygen > store.key`, then `receive --store-key-file
store.key`), which must be another key than the fleet's.
",
    run,
};

fn run(mut args: Args) -> u8 {
    // The global options are accepted (and mean nothing here), so `fleet-agent -v keygen` works.
    if let Err(e) = Common::take(&mut args).and_then(|_| args.finish()) {
        return usage_error("keygen", &e);
    }
    match Key32::generate() {
        Ok(key) => {
            println!("{}", key.to_base64().as_str());
            EXIT_OK
        }
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}
