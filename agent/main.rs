//! The `fleet-agent` binary: everything lives in the library; see `fleet_agent::commands`.

fn main() -> std::process::ExitCode {
    fleet_agent::commands::main(std::env::args_os().collect())
}
