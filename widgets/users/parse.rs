//! Pure parser of `who` (coreutils on Linux, BSD on macOS), compiled and tested on every OS.

use crate::ParseError;

/// One logged-in session, as psutil's `users()` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// Login name.
    pub name: String,
    /// Terminal (`pts/0`, `console`, `ttys001`).
    pub terminal: String,
    /// Remote host or X display, from the parenthesised comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Login time as naive local ISO-8601 (`2020-02-29T18:43:00`), when `who` prints the year
    /// (coreutils' ISO format); BSD `who` prints `Feb  7 23:32` without one, and the field is
    /// left out rather than guessed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
}

/// Parse `who`: `NAME LINE TIME [(COMMENT)]` per line. Empty output is no session.
pub fn parse_who(text: &str) -> Result<Vec<Session>, ParseError> {
    let mut sessions = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (main, host) = match line.trim_end().strip_suffix(')').and_then(|l| l.rsplit_once('(')) {
            Some((main, host)) => (main, Some(host.trim().to_string()).filter(|h| !h.is_empty())),
            None => (line, None),
        };
        let mut fields = main.split_ascii_whitespace();
        let name = fields.next().ok_or(ParseError::MissingField("name"))?;
        let terminal = fields.next().ok_or(ParseError::MissingField("line"))?;
        let time: Vec<&str> = fields.collect();
        if time.is_empty() {
            return Err(ParseError::MissingField("login time"));
        }
        let started = match time.as_slice() {
            [date, clock, ..] if is_iso_date(date) && is_clock(clock) => Some(format!("{date}T{clock}:00")),
            _ => None,
        };
        sessions.push(Session { name: name.to_string(), terminal: terminal.to_string(), host, started });
    }
    Ok(sessions)
}

fn is_iso_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn is_clock(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 5 && b[2] == b':' && b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        name.starts_with("who").then(|| result_json(parse_who(body)))
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("users", render);
    }

    #[test]
    fn parser_never_panics() {
        check_robust("users", |text| drop(parse_who(text)), render);
    }

    #[test]
    fn coreutils_sessions_have_host_and_iso_start() {
        let sessions = parse_who(&fixture("users", "who--coreutils-centos7.7-serial-and-ssh-jc.txt")).expect("parses");
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[1].host.as_deref(), Some("192.168.71.1"));
        assert_eq!(sessions[1].started.as_deref(), Some("2020-02-29T18:43:00"));
        assert_eq!(sessions[0].host, None);
        let mac = parse_who(&fixture("users", "who--macos10.14.6-console-and-terminals-jc.txt")).expect("parses");
        assert_eq!((mac.len(), mac[0].terminal.as_str(), &mac[0].started), (4, "console", &None));
        assert_eq!(parse_who(""), Ok(vec![]));
        assert_eq!(parse_who("alice\n"), Err(ParseError::MissingField("line")));
    }
}
