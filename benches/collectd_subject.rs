//! collectd beside the agent, for the side-by-side figures of `fleet-bench footprint`: the
//! distribution's collectd (`apt-get install collectd-core liboping0`; `.ci/run` installs
//! them), started in the foreground with a config of its own in the bench's scratch folder.
//!
//! Its plugins match the agent's default widgets: cpu, memory, swap, load, uptime, df (the
//! root filesystem), disk, interface (without `lo`), processes, battery, wireless, ping
//! (one echo to 127.0.0.1 per interval, when liboping is installed), and `network` sending
//! every value signed and encrypted (AES-256, collectd's `SecurityLevel Encrypt`) to
//! 127.0.0.1 (loopback only; nothing listens, like a server that is down for the agent's
//! spool). collectd keeps nothing on disk, the agent spools every record: the comparison
//! favours collectd on that point.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::receiver_bench::Running;

/// Where Debian's collectd keeps its plugins and types.
const PLUGIN_DIR: &str = "/usr/lib/collectd";
const TYPES_DB: &str = "/usr/share/collectd/types.db";

/// The collectd binary, or why it cannot run.
pub fn find() -> Result<PathBuf, String> {
    let candidates = ["/usr/sbin/collectd", "/usr/bin/collectd", "/sbin/collectd"];
    let binary = candidates.iter().map(PathBuf::from).find(|p| p.exists());
    match binary {
        Some(binary) if Path::new(TYPES_DB).exists() => Ok(binary),
        Some(_) => Err(format!("{TYPES_DB} is missing")),
        None => Err("collectd is not installed (apt-get install collectd-core liboping0)".to_string()),
    }
}

/// The config: `interval_s`, the plugins above, everything under `dir`.
pub fn config(dir: &Path, interval_s: u64) -> String {
    let ping = if Path::new(PLUGIN_DIR).join("ping.so").exists() && liboping_installed() {
        "LoadPlugin ping\n<Plugin ping>\n  Host \"127.0.0.1\"\n</Plugin>\n"
    } else {
        ""
    };
    format!(
        r#"Hostname "bench-collectd"
FQDNLookup false
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "{PLUGIN_DIR}"
TypesDB "{TYPES_DB}"
Interval {interval_s}
LoadPlugin logfile
<Plugin logfile>
  LogLevel "warning"
  File "{dir}/collectd.log"
</Plugin>
LoadPlugin cpu
LoadPlugin memory
LoadPlugin swap
LoadPlugin load
LoadPlugin uptime
LoadPlugin df
<Plugin df>
  MountPoint "/"
</Plugin>
LoadPlugin disk
LoadPlugin interface
<Plugin interface>
  Interface "lo"
  IgnoreSelected true
</Plugin>
LoadPlugin processes
LoadPlugin battery
LoadPlugin wireless
{ping}LoadPlugin network
<Plugin network>
  <Server "127.0.0.1" "25826">
    SecurityLevel Encrypt
    Username "bench"
    Password "bench-footprint"
  </Server>
</Plugin>
"#,
        dir = dir.display()
    )
}

/// Whether liboping (the ping plugin's library) is installed.
fn liboping_installed() -> bool {
    Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("liboping.so"))
        .unwrap_or(false)
}

/// Start collectd in the foreground (`-f`) with the config above.
pub fn spawn(binary: &Path, dir: &Path, interval_s: u64) -> Result<Running, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let conf = dir.join("collectd.conf");
    std::fs::write(&conf, config(dir, interval_s)).map_err(|e| format!("writing {}: {e}", conf.display()))?;
    let test = Command::new(binary).arg("-t").arg("-C").arg(&conf).output();
    match test {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("collectd -t: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => return Err(format!("starting {}: {e}", binary.display())),
    }
    let child = Command::new(binary)
        .arg("-f")
        .arg("-C")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    Ok(Running(child))
}
