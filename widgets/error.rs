//! Errors of the widgets crate: one for parsers, one for collection.

use std::fmt;

use crate::host::HostError;

/// A command output or file could not be understood. Parsers return this for empty, truncated,
/// garbage or foreign-locale input; they never panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The input was empty (or only a header).
    Empty,
    /// A required field was not found; names the field.
    MissingField(&'static str),
    /// A field was present but its value was not understood.
    BadValue {
        /// The field whose value is bad.
        field: &'static str,
        /// The offending text (truncated to 64 bytes).
        value: String,
    },
    /// The input's shape was not recognised at all; says what was expected.
    Unrecognised(&'static str),
}

impl ParseError {
    /// A `BadValue` for `field`, keeping at most 64 bytes of the offending text.
    pub fn bad_value(field: &'static str, value: &str) -> Self {
        let mut end = value.len().min(64);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        ParseError::BadValue { field, value: value[..end].to_string() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty input"),
            ParseError::MissingField(field) => write!(f, "missing field `{field}`"),
            ParseError::BadValue { field, value } => write!(f, "bad value for `{field}`: {value:?}"),
            ParseError::Unrecognised(expected) => write!(f, "unrecognised output, expected {expected}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A widget's `collect` failed.
#[derive(Debug)]
pub enum CollectError {
    /// The widget does not apply on this machine (no battery, no WiFi). Not an error: the
    /// agent notes it once at info level and stops asking.
    Unsupported(String),
    /// Reading the machine failed (file, command, socket).
    Host(HostError),
    /// What the machine said could not be parsed; `source` names the command or file.
    Parse {
        /// The command line or file path that produced the output.
        source: String,
        /// What was wrong with it.
        error: ParseError,
    },
    /// Anything else, described.
    Other(String),
}

impl CollectError {
    /// True for [`CollectError::Unsupported`], which callers must not log as an error.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, CollectError::Unsupported(_))
    }
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::Unsupported(why) => write!(f, "not supported here: {why}"),
            CollectError::Host(e) => write!(f, "{e}"),
            CollectError::Parse { source, error } => write!(f, "parsing output of {source}: {error}"),
            CollectError::Other(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for CollectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CollectError::Host(e) => Some(e),
            CollectError::Parse { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<HostError> for CollectError {
    fn from(e: HostError) -> Self {
        CollectError::Host(e)
    }
}
