//! `users`: the logged-in sessions as Atlas's agent reports them (`metrics.users`, psutil's
//! `users()`): `[{name, terminal, host, started}]`, from `who` (pure parser in [`parse`]).
//! Unknown `host`/`started` are left out. Runs every 60 s by default (a command per run).

pub mod parse;

use serde_json::Value;

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::{no_options, CollectError, Host, Os, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "users",
    summary: "Logged-in sessions: name, terminal, host, start time (from `who`)",
    enabled_by_default: true,
    default_interval_s: Some(60),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(UsersWidget),
};

/// Stateless.
pub struct UsersWidget;

impl Widget for UsersWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        if host.os() == Os::Other {
            return Err(CollectError::Unsupported("no `who` on this OS".to_string()));
        }
        let out = host.run(&["who"], DEFAULT_COMMAND_TIMEOUT)?;
        let sessions =
            parse::parse_who(&out.stdout).map_err(|error| CollectError::Parse { source: "who".to_string(), error })?;
        let data = serde_json::to_value(sessions).unwrap_or(Value::Array(Vec::new()));
        Ok(vec![Sample::metric("users", data)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::fixture;
    use crate::FixtureHost;
    use serde_json::json;

    #[test]
    fn sessions_are_a_list_and_a_missing_who_is_an_error() {
        let host = FixtureHost::new(Os::Linux)
            .with_command("who", &fixture("users", "who--coreutils-centos7.7-serial-and-ssh-jc.txt"));
        let data = &UsersWidget.collect(&host, Timestamp(0)).expect("users")[0].data;
        assert_eq!(
            data[1],
            json!({"name": "kbrazil", "terminal": "pts/0", "host": "192.168.71.1", "started": "2020-02-29T18:43:00"})
        );
        let empty = FixtureHost::new(Os::Linux).with_command("who", "");
        assert_eq!(UsersWidget.collect(&empty, Timestamp(0)).expect("users")[0].data, json!([]));
        assert!(UsersWidget.collect(&FixtureHost::new(Os::Linux), Timestamp(0)).is_err());
    }
}
