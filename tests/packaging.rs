//! Packaging: `packaging/paths.env` against everything that names a path (the launchd plist,
//! the systemd unit, every script, the agent's built-in defaults), the config template against
//! the real `fleet-agent validate`, the plist through a real parser (Python's `plistlib`), the
//! unit through `systemd-analyze verify` (nothing on stderr), every script through
//! `shellcheck`, and whole install/uninstall cycles into throwaway roots: the .deb with
//! `dpkg --root` then `--purge`, the tarball's install.sh/uninstall.sh with `DESTDIR`, the
//! macOS postinstall/uninstall.sh with a scratch target volume.
//!
//! A test whose tool is missing prints `skipped: …` and passes, unless
//! `FLEET_PACKAGING_REQUIRE_TOOLS=1` (set by `packaging/check.sh`, which CI runs after
//! installing the tools), where it fails. Other knobs: `FLEET_PACKAGING_BINARY` (package this
//! binary instead of the debug build), `FLEET_PACKAGING_DEB` (check this prebuilt .deb).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{bin, s, stderr, stdout, write_config};

// ---------------------------------------------------------------------------------------------
// Helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// `packaging/paths.env` as a map. Only `NAME="value"` lines, comments and blank lines are
/// allowed (it is read by bash, dash and this test alike).
fn paths() -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (n, line) in read("packaging/paths.env").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("paths.env:{}: not NAME=value", n + 1));
        assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "paths.env:{}: name {name:?}", n + 1);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("paths.env:{}: value must be double-quoted", n + 1));
        assert!(!value.contains(['"', '$', '`', '\\']), "paths.env:{}: no expansions in values", n + 1);
        assert!(map.insert(name.to_string(), value.to_string()).is_none(), "paths.env: {name} twice");
    }
    map
}

fn p<'a>(paths: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    paths.get(name).unwrap_or_else(|| panic!("paths.env has no {name}"))
}

/// Every packaging shell script (source form), relative to the repo.
const SCRIPTS: &[&str] = &[
    "packaging/lib.sh",
    "packaging/check.sh",
    "packaging/live-systemd-check.sh",
    "packaging/macos/build-pkg.sh",
    "packaging/macos/uninstall.sh",
    "packaging/macos/scripts/preinstall",
    "packaging/macos/scripts/postinstall",
    "packaging/linux/build-binary.sh",
    "packaging/linux/build-deb.sh",
    "packaging/linux/build-tarball.sh",
    "packaging/linux/install.sh",
    "packaging/linux/uninstall.sh",
    "packaging/linux/debian/postinst",
    "packaging/linux/debian/prerm",
    "packaging/linux/debian/postrm",
];

/// The scripts that run on a Mac (checked here only by reading: bash -n and shellcheck).
const MACOS_SCRIPTS: &[&str] = &[
    "packaging/macos/build-pkg.sh",
    "packaging/macos/uninstall.sh",
    "packaging/macos/scripts/preinstall",
    "packaging/macos/scripts/postinstall",
];

/// Whether `tool` is on [`sbin_path`] (the PATH every tool is run with).
fn on_path(tool: &str) -> bool {
    std::env::split_paths(&sbin_path()).any(|dir| dir.join(tool).is_file())
}

fn tools_required() -> bool {
    std::env::var_os("FLEET_PACKAGING_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// True when every tool is on PATH; otherwise prints `skipped: …` (or fails under
/// `FLEET_PACKAGING_REQUIRE_TOOLS`).
fn have(tools: &[&str], what: &str) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!tools_required(), "{what}: {} not installed (FLEET_PACKAGING_REQUIRE_TOOLS is set)", missing.join(", "));
    println!("skipped: {what}: {} not installed", missing.join(", "));
    false
}

/// True when running as root (chown, useradd --prefix, dpkg --root need it).
fn root_or_skip(what: &str) -> bool {
    let uid = Command::new("id").arg("-u").output().map(|o| stdout(&o).trim().to_string()).unwrap_or_default();
    if uid == "0" {
        return true;
    }
    assert!(!tools_required(), "{what}: needs root (FLEET_PACKAGING_REQUIRE_TOOLS is set)");
    println!("skipped: {what}: needs root (uid {uid})");
    false
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}\n{}", out.status, stdout(&out), stderr(&out));
    out
}

/// PATH with the sbin folders (dpkg wants ldconfig and start-stop-daemon, useradd lives there).
fn sbin_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin")
}

/// The fleet-agent to package: `FLEET_PACKAGING_BINARY` (CI: the release build) or this test
/// build's binary.
fn binary_to_package() -> (PathBuf, bool) {
    match std::env::var_os("FLEET_PACKAGING_BINARY") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(bin()), false),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A minimal root for user management: /etc/{passwd,group,shadow,gshadow} holding root only.
fn seed_accounts(root: &Path) {
    write_mode(&root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n", 0o644);
    write_mode(&root.join("etc/group"), "root:x:0:\n", 0o644);
    write_mode(&root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n", 0o640);
    write_mode(&root.join("etc/gshadow"), "root:*::\n", 0o640);
}

/// Another enabled unit, as on any real system (so systemctl does not remove the emptied
/// multi-user.target.wants folder, which a real system never sees).
fn other_enabled_unit(root: &Path) {
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("mkdir wants");
    std::os::unix::fs::symlink("/usr/lib/systemd/system/other.service", wants.join("other.service")).expect("symlink");
}

/// One line of a passwd/group-style file, split on `:`.
fn account(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(root.join("etc").join(file)).ok()?;
    text.lines().map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>()).find(|f| f[0] == name)
}

/// Everything under `root` (path -> kind, mode, owner, content or link target), leaving out
/// dpkg's own database and the `etc/*-` backups the shadow tools write.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            if rel == "var/lib/dpkg" || (rel.starts_with("etc/") && !rel[4..].contains('/') && rel.ends_with('-')) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let owner = format!("{:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid());
            let value = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).expect("readlink").display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {owner}")
            } else {
                let bytes = std::fs::read(&path).expect("read");
                format!(
                    "file {owner} {} bytes, {:?}",
                    bytes.len(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])
                )
            };
            out.insert(rel, value);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn assert_same_tree(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>, what: &str) {
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<&String> = before.keys().filter(|k| after.get(*k).is_some_and(|v| v != &before[*k])).collect();
    assert!(
        added.is_empty() && removed.is_empty() && changed.is_empty(),
        "{what} left the root different: left behind {added:?}, removed {removed:?}, changed {changed:?}"
    );
}

/// Values of `Key=` lines in a unit file (comments ignored).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    match unit_values(unit, key).as_slice() {
        [one] => one,
        other => panic!("unit: expected one {key}=, found {other:?}"),
    }
}

/// The server_url gate, as the scripts spell it (single-quoted ERE).
const SERVER_URL_ERE: &str = r#"'"server_url"[[:space:]]*:[[:space:]]*"https?://'"#;

/// A scratch root where `systemd-analyze verify --root` can resolve everything: a copy of the
/// host's system units (sysinit.target and friends), and stand-ins for the executables the
/// unit names (verify only checks that they exist and are executable).
fn verify_root(root: &Path) -> bool {
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").exists());
    let Some(host_units) = host_units else {
        assert!(!tools_required(), "systemd's units are not installed (apt-get install systemd)");
        println!("skipped: systemd-analyze verify: no system units (sysinit.target) on this host");
        return false;
    };
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).expect("mkdir units");
    run_ok(Command::new("cp").arg("-a").arg(format!("{}/.", host_units.display())).arg(&units));
    for tool in ["bin/kill", "bin/grep"] {
        write_mode(&root.join(tool), "#!/bin/sh\n", 0o755);
    }
    true
}

fn systemd_verify(root: &Path, unit: &str) -> Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze runs")
}

fn plist_as_json(path: &Path) -> Result<Value, String> {
    let script =
        "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(json.dumps(plistlib.load(f)))";
    let out = Command::new("python3").args(["-c", script]).arg(path).output().expect("python3 runs");
    if !out.status.success() {
        return Err(stderr(&out));
    }
    serde_json::from_str(&stdout(&out)).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// One source of truth

#[test]
fn paths_env_is_plain_and_complete() {
    let paths = paths();
    for name in [
        "FLEET_NAME",
        "FLEET_LABEL",
        "MACOS_BIN",
        "MACOS_CONFIG",
        "MACOS_STATE_DIR",
        "MACOS_LOG_DIR",
        "LINUX_BIN",
        "LINUX_CONFIG",
        "LINUX_STATE_DIR",
    ] {
        assert!(!p(&paths, name).is_empty(), "{name}");
    }
    // The issue's fixed points.
    assert_eq!(p(&paths, "MACOS_BIN"), "/usr/local/bin/fleet-agent");
    assert_eq!(p(&paths, "MACOS_CONFIG"), "/Library/Application Support/FleetAgent/config.json");
    assert_eq!(p(&paths, "MACOS_STATE_DIR"), "/Library/Application Support/FleetAgent/spool");
    assert_eq!(p(&paths, "MACOS_LOG_DIR"), "/Library/Logs/FleetAgent");
    assert_eq!(p(&paths, "LINUX_BIN"), "/usr/bin/fleet-agent");
    assert_eq!(p(&paths, "LINUX_CONFIG"), "/etc/fleet-agent/config.json");
    assert_eq!(p(&paths, "LINUX_STATE_DIR"), "/var/lib/fleet-agent");
    // Derived names stay consistent with each other.
    let label = p(&paths, "FLEET_LABEL");
    assert_eq!(p(&paths, "MACOS_PLIST"), format!("/Library/LaunchDaemons/{label}.plist"));
    assert_eq!(p(&paths, "MACOS_CONFIG"), format!("{}/config.json", p(&paths, "MACOS_SUPPORT_DIR")));
    assert!(p(&paths, "MACOS_STATE_DIR").starts_with(&format!("{}/", p(&paths, "MACOS_SUPPORT_DIR"))));
    assert!(p(&paths, "MACOS_LOG_FILE").starts_with(&format!("{}/", p(&paths, "MACOS_LOG_DIR"))));
    assert_eq!(p(&paths, "LINUX_CONFIG"), format!("{}/config.json", p(&paths, "LINUX_CONFIG_DIR")));
    let unit = p(&paths, "LINUX_UNIT_NAME");
    for key in ["LINUX_UNIT", "LINUX_TARBALL_UNIT", "LINUX_WANTS_LINK"] {
        assert!(p(&paths, key).ends_with(&format!("/{unit}")), "{key}");
    }
}

#[test]
fn every_license_cargo_toml_claims_has_its_file() {
    for manifest in ["Cargo.toml", "widgets/Cargo.toml"] {
        let text = read(manifest);
        let line = text.lines().find(|l| l.starts_with("license = ")).unwrap_or_else(|| panic!("{manifest}: license"));
        assert_eq!(line, r#"license = "MIT OR Apache-2.0""#, "{manifest}: update the LICENSE files with the claim");
    }
    let mit = read("LICENSE-MIT");
    assert!(
        mit.starts_with("MIT License\n\nCopyright (c) ")
            && mit.contains("Permission is hereby granted, free of charge")
    );
    let apache = read("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"), "the whole Apache text");
}

#[test]
fn agent_defaults_agree_with_paths_env() {
    let paths = paths();
    // This OS's defaults, from the code itself.
    let (config, state) = if cfg!(target_os = "macos") {
        ("MACOS_CONFIG", "MACOS_STATE_DIR")
    } else {
        ("LINUX_CONFIG", "LINUX_STATE_DIR")
    };
    assert_eq!(fleet_agent::config::default_config_path(), Path::new(p(&paths, config)));
    assert_eq!(fleet_agent::config::default_spool_dir(), Path::new(p(&paths, state)));
    // Both OSes' literals, from the source (the macOS branch cannot run here).
    let source = read("agent/config.rs");
    for (function, macos, linux) in [
        ("default_config_path", "MACOS_CONFIG", "LINUX_CONFIG"),
        ("default_spool_dir", "MACOS_STATE_DIR", "LINUX_STATE_DIR"),
    ] {
        let start = source.find(&format!("pub fn {function}()")).unwrap_or_else(|| panic!("config.rs: no {function}"));
        let body = &source[start..start + source[start..].find("\n}\n").expect("function end")];
        let after_macos = body.split_once(r#"cfg!(target_os = "macos")"#).expect("a macOS branch").1;
        let literals: Vec<&str> =
            after_macos.split("PathBuf::from(\"").skip(1).filter_map(|s| s.split('"').next()).collect();
        assert_eq!(literals, vec![p(&paths, macos), p(&paths, linux)], "{function}: macOS branch, then the other");
    }
}

#[test]
fn launchd_plist_agrees_with_paths_env() {
    let paths = paths();
    let label = p(&paths, "FLEET_LABEL");
    let text = read(&format!("launchd/{label}.plist"));
    for needle in [
        format!("<string>{label}</string>"),
        format!("<string>{}</string>", p(&paths, "MACOS_BIN")),
        format!("<string>{}</string>", p(&paths, "MACOS_CONFIG")),
        format!("<string>{}</string>", p(&paths, "MACOS_LOG_FILE")),
    ] {
        assert!(text.contains(&needle), "plist lacks {needle}");
    }
}

#[test]
fn systemd_unit_agrees_with_paths_env() {
    let paths = paths();
    let unit = read(&format!("systemd/{}", p(&paths, "LINUX_UNIT_NAME")));
    let (bin, config) = (p(&paths, "LINUX_BIN"), p(&paths, "LINUX_CONFIG"));
    assert_eq!(unit_value(&unit, "ExecStartPre"), format!("{bin} validate --config {config}"));
    assert_eq!(unit_value(&unit, "ExecStart"), format!("{bin} run --config {config}"));
    // Reload validates first: `systemctl reload` fails on a config the agent would refuse.
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        vec![format!("{bin} validate --config {config}").as_str(), "/bin/kill -HUP $MAINPID"]
    );
    assert!(unit_value(&unit, "ExecCondition").ends_with(&format!(" {config}")));
    assert_eq!(unit_value(&unit, "Documentation"), format!("file:{}", p(&paths, "LINUX_DOC")));
    assert_eq!(unit_value(&unit, "User"), p(&paths, "LINUX_USER"));
    assert_eq!(unit_value(&unit, "Group"), p(&paths, "LINUX_GROUP"));
    assert_eq!(format!("/var/lib/{}", unit_value(&unit, "StateDirectory")), p(&paths, "LINUX_STATE_DIR"));
    // The config folder stays read-only to the service: ConfigurationDirectory= (and
    // ReadWritePaths=) would mount it writable under ProtectSystem=strict.
    for key in ["ConfigurationDirectory", "ReadWritePaths"] {
        assert!(unit_values(&unit, key).is_empty(), "{key}= makes a path writable to the service");
    }
    assert_eq!(unit_value(&unit, "StateDirectoryMode"), "0700");
    // A bad config stops after a few tries: the limit must be reachable with RestartSec.
    let seconds = |key: &str| -> u64 {
        let value = unit_value(&unit, key);
        value.strip_suffix('s').unwrap_or(value).parse().unwrap_or_else(|_| panic!("{key}={value}: seconds"))
    };
    let burst: u64 = unit_value(&unit, "StartLimitBurst").parse().expect("StartLimitBurst is a number");
    assert!((2..=5).contains(&burst), "StartLimitBurst={burst}");
    assert!(
        burst * seconds("RestartSec") < seconds("StartLimitIntervalSec"),
        "{burst} starts RestartSec apart must fit in StartLimitIntervalSec, or the limit is never hit"
    );
    assert_eq!(unit_value(&unit, "UMask"), "0077");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    assert_eq!(unit_value(&unit, "RestrictAddressFamilies"), "AF_UNIX AF_INET AF_INET6 AF_NETLINK");
    assert_eq!(unit_value(&unit, "AmbientCapabilities"), "CAP_NET_RAW");
    assert_eq!(unit_value(&unit, "CapabilityBoundingSet"), "CAP_NET_RAW");
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectControlGroups",
    ] {
        assert_eq!(unit_value(&unit, key), "yes", "{key}");
    }
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    for key in ["MemoryMax", "CPUQuota", "Nice"] {
        assert!(!unit_value(&unit, key).is_empty(), "{key}");
    }
    // The processes widget reads other processes' /proc entries.
    assert!(unit_values(&unit, "ProtectProc").is_empty() && unit_values(&unit, "ProcSubset").is_empty());
}

#[test]
fn scripts_take_every_path_from_paths_env() {
    let paths = paths();
    let values: Vec<&str> = paths.values().map(String::as_str).filter(|v| v.starts_with('/')).collect();
    for rel in SCRIPTS {
        let text = read(rel);
        if *rel != "packaging/lib.sh" {
            let sources = text.lines().any(|l| l.starts_with(". \"$(dirname \"$0\")/") && l.ends_with("paths.env\""));
            assert!(sources, "{rel} does not source paths.env");
        }
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            for value in &values {
                assert!(!line.contains(value), "{rel}:{}: hard-codes {value} (use paths.env)", n + 1);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The config template

#[test]
fn config_template_validates_with_the_real_binary() {
    let template = read("packaging/config.template.json");
    let json: Value = serde_json::from_str(&template).expect("template is JSON");
    assert!(json.get("server_url").is_none(), "the template must not name a server (the unit gates on it)");
    let dir = tempfile::tempdir().expect("tempdir");

    let config = write_config(dir.path(), "config.json", &template, 0o600);
    let out = crate::support::run(&["validate", "--config", s(&config)]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "ok"), "stderr: {}", stderr(&out));

    // It holds (empty) key fields, so it must stay 0600: the agent refuses it otherwise.
    let loose = write_config(dir.path(), "loose.json", &template, 0o644);
    let out = crate::support::run(&["validate", "--config", s(&loose)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("chmod 600"), "stderr: {}", stderr(&out));

    // It restates the defaults: loading it equals loading nothing.
    let loaded = fleet_agent::config::Config::load(Some(&config)).map_err(|e| e.len()).expect("loads");
    let defaults = fleet_agent::config::Config::load(None).map_err(|e| e.len()).expect("defaults");
    assert_eq!(loaded.spool, defaults.spool);
    assert_eq!((loaded.interval, loaded.protocol, loaded.verify_ssl), (defaults.interval, defaults.protocol, true));
    assert_eq!(loaded.log_level, defaults.log_level);
    assert_eq!(loaded.widgets, defaults.widgets);
}

#[test]
fn config_template_keys_are_in_the_readme_table() {
    let json: Value = serde_json::from_str(&read("packaging/config.template.json")).expect("template is JSON");
    let readme = read("README.md");
    let documented = |key: &str| readme.lines().any(|l| l.starts_with(&format!("| `{key}")));
    for (key, value) in json.as_object().expect("an object") {
        match value.as_object() {
            Some(inner) if !inner.is_empty() => {
                for sub in inner.keys() {
                    assert!(documented(&format!("{key}.{sub}`")), "README lacks `{key}.{sub}`");
                }
            }
            Some(_) => assert!(documented(&format!("{key}.")), "README lacks `{key}.…`"),
            None => assert!(documented(&format!("{key}`")), "README lacks `{key}`"),
        }
    }
}

#[test]
fn unit_condition_starts_only_with_a_server_url() {
    let unit = read("systemd/fleet-agent.service");
    let condition = unit_value(&unit, "ExecCondition");
    // ExecCondition=+/bin/grep -Eq "<ERE with \" escapes>" <config>
    let quoted = condition.strip_prefix("+/bin/grep -Eq \"").expect("+/bin/grep -Eq \"…\"");
    let ere = quoted.rsplit_once("\" ").expect("closing quote").0.replace("\\\"", "\"");
    assert_eq!(format!("'{ere}'"), SERVER_URL_ERE, "the unit and the scripts use one pattern");
    for rel in ["packaging/linux/debian/postinst", "packaging/linux/install.sh", "packaging/macos/scripts/postinstall"]
    {
        assert!(read(rel).contains(&format!("grep -Eq {SERVER_URL_ERE}")), "{rel} uses the same server_url test");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let template = read("packaging/config.template.json");
    let cases = [
        ("template", template.clone(), false),
        ("https", template.replacen('{', "{\n  \"server_url\": \"https://fleet.example.com\",", 1), true),
        ("http, compact", template.replacen('{', "{\"server_url\":\"http://10.0.0.1:8080\",", 1), true),
        ("empty", template.replacen('{', "{\"server_url\": \"\",", 1), false),
    ];
    for (name, text, starts) in cases {
        let config = write_config(dir.path(), "c.json", &text, 0o600);
        let status = Command::new("grep").args(["-Eq", &ere]).arg(&config).status().expect("grep runs");
        assert_eq!(status.success(), starts, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// launchd

#[test]
fn launchd_plist_parses_and_has_every_key() {
    if !have(&["python3"], "plist check") {
        return;
    }
    let paths = paths();
    let label = p(&paths, "FLEET_LABEL");
    let plist = plist_as_json(&repo().join(format!("launchd/{label}.plist"))).expect("plistlib parses it");
    assert_eq!(plist["Label"], label);
    assert!(label.split('.').count() >= 3, "reverse-DNS label");
    let args: Vec<&str> =
        plist["ProgramArguments"].as_array().expect("array").iter().filter_map(Value::as_str).collect();
    let launcher = format!("echo $$ >{} && exec \"$0\" \"$@\"", p(&paths, "MACOS_PID_FILE"));
    assert_eq!(
        args,
        vec!["/bin/sh", "-c", &launcher, p(&paths, "MACOS_BIN"), "run", "--config", p(&paths, "MACOS_CONFIG")]
    );
    assert_eq!(plist["RunAtLoad"], true);
    // Also after the clean exit newsyslog's SIGTERM causes at a log rotation.
    assert_eq!(plist["KeepAlive"], true, "restart after any exit");
    assert!(plist["ThrottleInterval"].as_u64().is_some_and(|s| s >= 10));
    assert_eq!(plist["ProcessType"], "Background");
    assert_eq!(plist["LowPriorityIO"], true);
    assert!(plist["Nice"].as_i64().is_some_and(|n| n > 0));
    assert_eq!(plist["Umask"], 0o077);
    for key in ["StandardOutPath", "StandardErrorPath"] {
        assert_eq!(plist[key], p(&paths, "MACOS_LOG_FILE"), "{key}");
    }

    // The parser is real: a broken copy is rejected.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.plist");
    let text = read(&format!("launchd/{label}.plist")).replacen("</dict>", "", 1);
    std::fs::write(&broken, text).expect("write");
    assert!(plist_as_json(&broken).is_err(), "plistlib accepted a plist missing </dict>");
}

/// The one rotation line of `launchd/newsyslog.conf`, split into its fields.
fn newsyslog_entry() -> Vec<String> {
    let text = read("launchd/newsyslog.conf");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 1, "one entry: {lines:?}");
    lines[0].split_whitespace().map(str::to_string).collect()
}

#[test]
fn newsyslog_entry_rotates_the_plists_log_and_signals_the_launchers_pid() {
    let paths = paths();
    let fields = newsyslog_entry();
    // logfilename owner:group mode count size when flags pid_file sig_num
    assert_eq!(fields.len(), 9, "{fields:?}");
    assert_eq!(fields[0], p(&paths, "MACOS_LOG_FILE"));
    assert_eq!((fields[1].as_str(), fields[2].as_str()), ("root:wheel", "600"), "root only, as the plist's umask");
    let count: u32 = fields[3].parse().expect("count");
    let size_kib: u32 = fields[4].parse().expect("size in KiB");
    assert!((1..=10).contains(&count) && (256..=10240).contains(&size_kib), "bounded: {count} x {size_kib} KiB");
    assert_eq!(fields[5], "*", "by size only");
    assert!(fields[6].contains('Z') && !fields[6].contains('N'), "gzip, and signal the agent: {}", fields[6]);
    assert_eq!(fields[7], p(&paths, "MACOS_PID_FILE"));
    assert_eq!(fields[8], "15", "SIGTERM: a clean exit, then launchd's KeepAlive reopens the log");
    // The .pkg installs it where newsyslog looks, and its uninstall.sh removes it.
    let build = read("packaging/macos/build-pkg.sh");
    assert!(build.contains(r#"install -m 0644 "$repo/launchd/newsyslog.conf" "$payload$MACOS_NEWSYSLOG_CONF""#));
    assert!(p(&paths, "MACOS_NEWSYSLOG_CONF").starts_with("/etc/newsyslog.d/"));
    assert!(p(&paths, "MACOS_NEWSYSLOG_CONF").ends_with(".conf"), "newsyslog reads only *.conf there");
}

#[test]
fn launchd_launcher_writes_the_pid_that_exec_hands_to_the_agent() {
    let paths = paths();
    let plist = read(&format!("launchd/{}.plist", p(&paths, "FLEET_LABEL")));
    let launcher = format!("echo $$ >{} &amp;&amp; exec \"$0\" \"$@\"", p(&paths, "MACOS_PID_FILE"));
    assert!(plist.contains(&format!("<string>{launcher}</string>")), "plist launcher");
    // Run it with a scratch pid file; the program it execs prints its own pid.
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("agent.pid");
    let script = format!("echo $$ >{} && exec \"$0\" \"$@\"", pid_file.display());
    let out = run_ok(Command::new("/bin/sh").args(["-c", &script, "/bin/sh", "-c", "echo $$"]));
    let written = std::fs::read_to_string(&pid_file).expect("pid file written");
    assert_eq!(written.trim(), stdout(&out).trim(), "the pid newsyslog signals is the agent's");
}

// ---------------------------------------------------------------------------------------------
// systemd

#[test]
fn systemd_unit_verifies_with_nothing_on_stderr() {
    if !have(&["systemd-analyze"], "systemd-analyze verify") {
        return;
    }
    let paths = paths();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    if !verify_root(root) {
        return;
    }
    let name = p(&paths, "LINUX_UNIT_NAME");
    std::fs::copy(repo().join("systemd").join(name), root.join(&p(&paths, "LINUX_UNIT")[1..])).expect("copy unit");
    write_mode(&root.join(&p(&paths, "LINUX_BIN")[1..]), "#!/bin/sh\n", 0o755);
    let out = systemd_verify(root, name);
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );

    // The check is not vacuous: an unknown key exits 0 but says so on stderr.
    let unit = read(&format!("systemd/{name}")).replacen("[Service]\n", "[Service]\nNoSuchKey=1\n", 1);
    std::fs::write(root.join(&p(&paths, "LINUX_UNIT")[1..]), unit).expect("write");
    let out = systemd_verify(root, name);
    assert!(stderr(&out).contains("NoSuchKey"), "stderr: {}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Scripts

#[test]
fn scripts_pass_shellcheck_and_parse() {
    for rel in MACOS_SCRIPTS {
        run_ok(Command::new("bash").arg("-n").arg(repo().join(rel)));
    }
    for rel in ["packaging/linux/debian/postinst", "packaging/linux/debian/prerm", "packaging/linux/debian/postrm"] {
        run_ok(Command::new("sh").arg("-n").arg(repo().join(rel)));
    }
    if !have(&["shellcheck"], "shellcheck") {
        return;
    }
    run_ok(Command::new("shellcheck").arg("-x").args(SCRIPTS).current_dir(repo()));
}

#[test]
fn build_pkg_refuses_to_run_off_macos() {
    if cfg!(target_os = "macos") {
        println!("skipped: build-pkg.sh off-macOS refusal: this is macOS");
        return;
    }
    let out = Command::new("bash")
        .arg(repo().join("packaging/macos/build-pkg.sh"))
        .arg("--unsigned")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("runs only on macOS"), "stderr: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "nothing was built: {}", stdout(&out));
    let help = run_ok(Command::new("bash").arg(repo().join("packaging/macos/build-pkg.sh")).arg("--help"));
    assert!(stdout(&help).contains("FLEET_INSTALLER_IDENTITY"));
}

/// `inline_paths` from lib.sh: the shipped copy of `script` with paths.env pasted in.
fn inline(script: &Path, dest: &Path) {
    let lib = repo().join("packaging/lib.sh");
    let env = repo().join("packaging/paths.env");
    run_ok(Command::new("bash").arg("-c").arg(r#". "$1" && inline_paths "$2" "$3" "$4""#).args([
        Path::new("inline"),
        &lib,
        script,
        dest,
        &env,
    ]));
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = std::fs::read_to_string(dest).expect("read");
    assert!(!text.lines().any(|l| l.starts_with(". ") && l.contains("paths.env")), "{} still sources", dest.display());
    assert!(text.contains("  LINUX_CONFIG=\"/etc/fleet-agent/config.json\"\n"));
}

#[test]
fn macos_postinstall_and_uninstall_in_a_scratch_volume() {
    if !root_or_skip("macOS postinstall/uninstall in a scratch volume") {
        return;
    }
    let paths = paths();
    let dir = tempfile::tempdir().expect("tempdir");
    // The installer scripts as build-pkg.sh ships them: paths inlined, alone in a folder.
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).expect("mkdir");
    for name in ["preinstall", "postinstall"] {
        inline(&repo().join("packaging/macos/scripts").join(name), &scripts.join(name));
    }
    let uninstall = dir.path().join("uninstall.sh");
    inline(&repo().join("packaging/macos/uninstall.sh"), &uninstall);
    let under = |volume: &Path, key: &str| volume.join(&p(&paths, key)[1..]);

    // A volume with the payload laid down (the Linux binary stands in: postinstall runs
    // `fleet-agent validate`), once fresh and once with an MDM-preseeded config.
    let template = read("packaging/config.template.json");
    let preseeded = r#"{"server_url":"https://fleet.example.com","api_key":"k","machine_id":"mdm-1"}"#;
    for (name, preseed) in [("fresh", None), ("preseeded", Some(preseeded))] {
        let volume = dir.path().join(name);
        std::fs::create_dir_all(under(&volume, "MACOS_BIN").parent().expect("parent")).expect("mkdir");
        std::fs::copy(bin(), under(&volume, "MACOS_BIN")).expect("copy binary");
        write_mode(&under(&volume, "MACOS_PLIST"), &read("launchd/io.fleetagent.agent.plist"), 0o644);
        write_mode(&under(&volume, "MACOS_NEWSYSLOG_CONF"), &read("launchd/newsyslog.conf"), 0o644);
        write_mode(&under(&volume, "MACOS_PID_FILE"), "4242\n", 0o600);
        write_mode(&under(&volume, "MACOS_SHARE_DIR").join("config.template.json"), &template, 0o644);
        write_mode(
            &under(&volume, "MACOS_SHARE_DIR").join("uninstall.sh"),
            &std::fs::read_to_string(&uninstall).expect("inlined uninstall.sh"),
            0o755,
        );
        if let Some(text) = preseed {
            write_mode(&under(&volume, "MACOS_CONFIG"), text, 0o644);
        }
        let target = s(&volume);
        let pre = run_ok(Command::new(scripts.join("preinstall")).args(["pkg", "/", target]));
        assert!(stdout(&pre).contains("not the boot volume"), "{}", stdout(&pre));
        let post = run_ok(Command::new(scripts.join("postinstall")).args(["pkg", "/", target]));
        let said = stdout(&post);
        assert!(said.contains("config ok"), "{name}: {said}");
        assert!(said.contains("not starting the agent"), "{name}: {said}");
        for key in ["MACOS_SUPPORT_DIR", "MACOS_STATE_DIR", "MACOS_LOG_DIR"] {
            let meta = std::fs::metadata(under(&volume, key)).expect("folder made");
            assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o700, 0, 0), "{name}: {key}");
        }
        let config = under(&volume, "MACOS_CONFIG");
        assert_eq!(mode(&config), 0o600, "{name}: config mode");
        let kept = std::fs::read_to_string(&config).expect("config");
        assert_eq!(kept, preseed.unwrap_or(&template), "{name}: config content");
        assert_eq!(said.contains("no server_url"), preseed.is_none(), "{name}: {said}");

        // Reinstall over it: the config an admin edited is never overwritten.
        std::fs::write(&config, r#"{"machine_id":"edited"}"#).expect("edit");
        run_ok(Command::new(scripts.join("postinstall")).args(["pkg", "/", target]));
        assert_eq!(std::fs::read_to_string(&config).expect("config"), r#"{"machine_id":"edited"}"#);

        // Uninstall (the installed copy, as the README says): binary, plist, log rotation
        // entry, pid file, logs and template go; config, spool and uninstall.sh stay.
        std::fs::write(under(&volume, "MACOS_STATE_DIR").join("00000000000000000001.seg"), "x").expect("spool");
        let installed = under(&volume, "MACOS_SHARE_DIR").join("uninstall.sh");
        let said = stdout(&run_ok(Command::new(&installed).args(["--root", target])));
        for key in ["MACOS_BIN", "MACOS_PLIST", "MACOS_NEWSYSLOG_CONF", "MACOS_PID_FILE", "MACOS_LOG_DIR"] {
            assert!(!under(&volume, key).exists(), "{name}: {key} left after uninstall");
        }
        assert!(config.exists() && under(&volume, "MACOS_STATE_DIR").join("00000000000000000001.seg").exists());
        let share: Vec<_> = std::fs::read_dir(under(&volume, "MACOS_SHARE_DIR")).expect("share kept").collect();
        assert_eq!(share.len(), 1, "{name}: only uninstall.sh is kept: {share:?}");
        assert!(said.contains("uninstall.sh --purge"), "{name}: {said}");
        run_ok(Command::new(&installed).args(["--purge", "--root", target]));
        for key in ["MACOS_SUPPORT_DIR", "MACOS_SHARE_DIR"] {
            assert!(!under(&volume, key).exists(), "{name}: --purge left {key}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Linux: tarball

#[test]
fn tarball_install_then_purge_leaves_nothing() {
    if !root_or_skip("tarball install.sh/uninstall.sh into a scratch root") {
        return;
    }
    let paths = paths();
    let dir = tempfile::tempdir().expect("tempdir");
    let (binary, _) = binary_to_package();
    let out = run_ok(
        Command::new(repo().join("packaging/linux/build-tarball.sh"))
            .arg("--binary")
            .arg(&binary)
            .arg("--out")
            .arg(dir.path()),
    );
    let tarball = PathBuf::from(stdout(&out).lines().last().expect("tarball path").trim());
    run_ok(Command::new("tar").arg("-C").arg(dir.path()).arg("-xzf").arg(&tarball));
    let unpacked = dir.path().join(tarball.file_name().expect("name").to_string_lossy().trim_end_matches(".tar.gz"));

    let root = dir.path().join("root");
    seed_accounts(&root);
    for d in ["usr/local/bin", "usr/local/share", "etc/systemd/system/multi-user.target.wants", "var/lib"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    other_enabled_unit(&root);
    let can_verify = on_path("systemd-analyze") && verify_root(&root);
    let before = snapshot(&root);

    let install = |args: &[&str]| {
        run_ok(Command::new(unpacked.join("install.sh")).args(args).env("DESTDIR", &root).env("PATH", sbin_path()))
    };
    let said = stdout(&install(&[]));
    assert!(said.contains("not started: set server_url"), "{said}");
    let under = |key: &str| root.join(&p(&paths, key)[1..]);
    assert_eq!(mode(&under("LINUX_TARBALL_BIN")), 0o755);
    assert_eq!(mode(&under("LINUX_TARBALL_UNIT")), 0o644);
    let unit = std::fs::read_to_string(under("LINUX_TARBALL_UNIT")).expect("unit");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        format!("{} run --config {}", p(&paths, "LINUX_TARBALL_BIN"), p(&paths, "LINUX_CONFIG"))
    );
    assert!(!unit.contains(&format!("{} ", p(&paths, "LINUX_BIN"))), "the unit still names the .deb binary");
    let user = account(&root, "passwd", p(&paths, "LINUX_USER")).expect("user created");
    assert_eq!((user[5].as_str(), user[6].as_str()), (p(&paths, "LINUX_STATE_DIR"), "/usr/sbin/nologin"));
    let config = std::fs::metadata(under("LINUX_CONFIG")).expect("config");
    assert_eq!((config.mode() & 0o7777, config.uid().to_string()), (0o600, user[2].clone()));
    let link = std::fs::read_link(under("LINUX_WANTS_LINK")).expect("enabled");
    assert_eq!(link, Path::new(p(&paths, "LINUX_TARBALL_UNIT")));
    // Documentation= names the README installed beside it (the .deb's path is not there).
    let doc = unit_value(&unit, "Documentation").strip_prefix("file:").expect("a file: URL");
    assert_eq!(doc, p(&paths, "LINUX_TARBALL_DOC"));
    assert_eq!(mode(&root.join(&doc[1..])), 0o644, "{doc} installed");
    assert_eq!(
        unit_values(&unit, "ExecReload")[0],
        format!("{} validate --config {}", p(&paths, "LINUX_TARBALL_BIN"), p(&paths, "LINUX_CONFIG"))
    );
    if can_verify {
        let out = systemd_verify(&root, p(&paths, "LINUX_UNIT_NAME"));
        assert!(out.status.success() && out.stderr.is_empty(), "verify the installed unit: {}", stderr(&out));
    }

    // Again over an edited config: kept.
    std::fs::write(under("LINUX_CONFIG"), r#"{"server_url":"https://fleet.example.com"}"#).expect("edit");
    let said = stdout(&install(&[]));
    assert!(said.contains("kept the existing config") && !said.contains("not started"), "{said}");

    // The agent ran: state exists. Uninstall keeps config, state, user; --purge removes all.
    std::fs::create_dir_all(under("LINUX_STATE_DIR")).expect("state");
    std::fs::write(under("LINUX_STATE_DIR").join("spool.key"), "k").expect("state file");
    let uninstall = |args: &[&str]| {
        run_ok(
            Command::new(under("LINUX_TARBALL_SHARE_DIR").join("uninstall.sh"))
                .args(args)
                .env("DESTDIR", &root)
                .env("PATH", sbin_path()),
        )
    };
    let said = stdout(&uninstall(&[]));
    assert!(!under("LINUX_TARBALL_BIN").exists() && !under("LINUX_TARBALL_UNIT").exists());
    assert!(!under("LINUX_WANTS_LINK").exists() && !under("LINUX_TARBALL_DOC").exists());
    assert!(under("LINUX_CONFIG").exists() && under("LINUX_STATE_DIR").join("spool.key").exists());
    assert!(account(&root, "passwd", p(&paths, "LINUX_USER")).is_some());
    // The README's purge command still exists after a plain uninstall, and only it is left.
    let share: Vec<_> = std::fs::read_dir(under("LINUX_TARBALL_SHARE_DIR")).expect("share dir kept").collect();
    assert_eq!(share.len(), 1, "only uninstall.sh is kept: {share:?}");
    assert!(said.contains(&format!("{}/uninstall.sh --purge", p(&paths, "LINUX_TARBALL_SHARE_DIR"))), "{said}");
    uninstall(&["--purge"]);
    assert_same_tree(&before, &snapshot(&root), "install.sh then uninstall.sh, then uninstall.sh --purge");

    // The unpacked tarball's copy purges a live install in one go, too.
    install(&[]);
    run_ok(Command::new(unpacked.join("uninstall.sh")).arg("--purge").env("DESTDIR", &root).env("PATH", sbin_path()));
    assert_same_tree(&before, &snapshot(&root), "install.sh then uninstall.sh --purge");
}

// ---------------------------------------------------------------------------------------------
// Linux: .deb

/// The .deb under test: `FLEET_PACKAGING_DEB`, or one built now from the binary to package
/// (uncompressed for the 18 MB debug binary: xz would take longer than every other test).
fn deb_under_test(dir: &Path) -> PathBuf {
    if let Some(deb) = std::env::var_os("FLEET_PACKAGING_DEB") {
        return PathBuf::from(deb);
    }
    let (binary, release) = binary_to_package();
    let out = run_ok(
        Command::new(repo().join("packaging/linux/build-deb.sh"))
            .arg("--binary")
            .arg(&binary)
            .arg("--out")
            .arg(dir)
            .args(["--compression", if release { "xz" } else { "none" }]),
    );
    PathBuf::from(stdout(&out).lines().last().expect("deb path").trim())
}

fn dpkg(root: &Path, args: &[&str], deb: Option<&Path>) -> Output {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
        .args(args)
        .env("PATH", sbin_path())
        .env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(deb) = deb {
        cmd.arg(deb);
    }
    run_ok(&mut cmd)
}

#[test]
fn deb_lists_exactly_the_expected_files() {
    if !have(&["dpkg-deb", "dpkg", "objdump", "readelf"], ".deb contents") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = deb_under_test(dir.path());
    println!("{}: {} bytes", deb.display(), std::fs::metadata(&deb).expect("deb").len());
    let out = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let listed: Vec<(String, String, String)> = stdout(&out)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f[5].to_string(), f[0].to_string(), f[1].to_string())
        })
        .collect();
    let dir_entry = |p: &str| (p.to_string(), "drwxr-xr-x".to_string(), "root/root".to_string());
    let file = |p: &str, m: &str| (p.to_string(), m.to_string(), "root/root".to_string());
    let expected = vec![
        dir_entry("./"),
        dir_entry("./etc/"),
        dir_entry("./etc/fleet-agent/"),
        file("./etc/fleet-agent/config.json", "-rw-------"),
        dir_entry("./usr/"),
        dir_entry("./usr/bin/"),
        file("./usr/bin/fleet-agent", "-rwxr-xr-x"),
        dir_entry("./usr/lib/"),
        dir_entry("./usr/lib/systemd/"),
        dir_entry("./usr/lib/systemd/system/"),
        file("./usr/lib/systemd/system/fleet-agent.service", "-rw-r--r--"),
        dir_entry("./usr/share/"),
        dir_entry("./usr/share/doc/"),
        dir_entry("./usr/share/doc/fleet-agent/"),
        file("./usr/share/doc/fleet-agent/README.md", "-rw-r--r--"),
        file("./usr/share/doc/fleet-agent/copyright", "-rw-r--r--"),
    ];
    assert_eq!(listed, expected);

    let info = run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb).args(["Package", "Depends"]));
    assert!(stdout(&info).contains("Package: fleet-agent"), "{}", stdout(&info));
    // A static binary (what ships, packaging/linux/build-binary.sh) needs no libc; a glibc
    // build (the test binary) needs the libc6 it was linked against.
    let packaged = binary_to_package().0;
    let is_static = !stdout(&run_ok(Command::new("readelf").arg("-l").arg(&packaged))).contains("INTERP");
    let depends = if is_static { "Depends: passwd\n" } else { "Depends: libc6 (>= 2." };
    assert!(stdout(&info).contains(depends), "{}", stdout(&info));
    let control = dir.path().join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).expect("conffiles"),
        "/etc/fleet-agent/config.json\n"
    );
    let files = dir.path().join("files");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&files));
    let copyright = std::fs::read_to_string(files.join("usr/share/doc/fleet-agent/copyright")).expect("copyright");
    for needle in [
        "License: MIT or Apache-2.0",
        "License: MIT\n Permission is hereby granted",
        "/usr/share/common-licenses/Apache-2.0",
    ] {
        assert!(copyright.contains(needle), "copyright lacks {needle:?}:\n{copyright}");
    }
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.join(script)), 0o755, "{script}");
        run_ok(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    if have(&["shellcheck"], "shellcheck of the shipped maintainer scripts") {
        run_ok(Command::new("shellcheck").args(["postinst", "prerm", "postrm"]).current_dir(&control));
    }
}

#[test]
fn deb_install_remove_purge_in_a_throwaway_root() {
    if !have(&["dpkg-deb", "dpkg", "objdump", "useradd"], ".deb install/purge") || !root_or_skip(".deb install/purge") {
        return;
    }
    let paths = paths();
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = deb_under_test(dir.path());
    let root = dir.path().join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc/systemd/system/multi-user.target.wants",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    seed_accounts(&root);
    other_enabled_unit(&root);
    let before = snapshot(&root);
    let under = |key: &str| root.join(&p(&paths, key)[1..]);

    let said = stdout(&dpkg(&root, &["--install"], Some(&deb)));
    assert!(said.contains("enabled, not started"), "{said}");
    assert_eq!(mode(&under("LINUX_BIN")), 0o755);
    assert_eq!(mode(&under("LINUX_UNIT")), 0o644);
    let user = account(&root, "passwd", p(&paths, "LINUX_USER")).expect("postinst made the user");
    assert_eq!((user[5].as_str(), user[6].as_str()), (p(&paths, "LINUX_STATE_DIR"), "/usr/sbin/nologin"));
    let group = account(&root, "group", p(&paths, "LINUX_GROUP")).expect("and its group");
    let config = std::fs::metadata(under("LINUX_CONFIG")).expect("config");
    assert_eq!(
        (config.mode() & 0o7777, config.uid(), config.gid()),
        (0o600, user[2].parse().expect("uid"), group[2].parse().expect("gid"))
    );
    assert_eq!(std::fs::read_link(under("LINUX_WANTS_LINK")).expect("enabled"), Path::new(p(&paths, "LINUX_UNIT")));
    // The installed template validates as the service would run it.
    let out = Command::new(under("LINUX_BIN")).args(["validate", "--config"]).arg(under("LINUX_CONFIG")).output();
    let out = out.expect("the packaged binary runs");
    assert_eq!(stdout(&out).trim(), "ok", "{}", stderr(&out));

    // An admin configures it; reinstalling the same package keeps the edit, owner and mode.
    let edited = r#"{"server_url":"https://fleet.example.com","api_key":"k"}"#;
    std::fs::write(under("LINUX_CONFIG"), edited).expect("edit");
    dpkg(&root, &["--install"], Some(&deb));
    assert_eq!(std::fs::read_to_string(under("LINUX_CONFIG")).expect("config"), edited);
    assert_eq!(mode(&under("LINUX_CONFIG")), 0o600);

    // The agent ran (systemd made the state folder); remove keeps config, state and user.
    std::fs::create_dir_all(under("LINUX_STATE_DIR")).expect("state");
    std::fs::write(under("LINUX_STATE_DIR").join("spool.key"), "k").expect("state file");
    dpkg(&root, &["--remove", "fleet-agent"], None);
    assert!(!under("LINUX_BIN").exists() && !under("LINUX_UNIT").exists());
    assert!(under("LINUX_CONFIG").exists() && under("LINUX_STATE_DIR").join("spool.key").exists());
    assert!(account(&root, "passwd", p(&paths, "LINUX_USER")).is_some());

    // Purge: nothing left but what was there before.
    dpkg(&root, &["--purge", "fleet-agent"], None);
    assert_same_tree(&before, &snapshot(&root), "dpkg --install then --purge");
}
