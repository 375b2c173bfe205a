//! The `fleet-agent` binary: everything lives in the library; see `fleet_agent::cli`.

fn main() -> std::process::ExitCode {
    fleet_agent::cli::main(std::env::args_os().collect())
}
