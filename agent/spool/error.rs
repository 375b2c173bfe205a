//! The spool's error type. Corruption found while recovering is not an error (it is repaired
//! or quarantined and logged); these are the failures a caller must act on.

use std::fmt;
use std::path::PathBuf;

use super::Cursor;

/// A spool operation that failed. Every variant that touches the file system names the path
/// and what was being done.
#[derive(Debug)]
pub enum SpoolError {
    /// A file-system call failed.
    Io {
        /// What was being done, e.g. `"writing segment"`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A segment has a format version this agent does not know (written by a newer agent?).
    /// The file is left untouched.
    UnknownVersion {
        /// The segment file.
        path: PathBuf,
        /// The version byte found.
        version: u8,
    },
    /// A state file (`state.bin`, `dropped.json`, or a `cursor.json` left by an older release)
    /// has a version this agent does not know.
    UnknownStateVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u64,
    },
    /// Both slots of `state.bin` are damaged: the ack position is unknown. Never guessed (a
    /// wrong guess resends or skips records); the operator decides (see the message).
    StateDamaged {
        /// The state file.
        path: PathBuf,
    },
    /// The state record does not fit its slot (a very long sender error message or URL).
    StateTooLarge {
        /// The state file.
        path: PathBuf,
        /// The payload size.
        bytes: usize,
        /// The most a slot holds.
        max: usize,
    },
    /// A state file could not be understood: the payload of a whole `state.bin` slot, or a file
    /// left by an older release (`cursor.json`, `sender.json`, `inflight.json`) that is read
    /// for its migration into `state.bin`. It is left untouched.
    StateUnreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// `master.key` exists but is not a valid key file. It is left untouched.
    MasterKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the key material).
        problem: String,
    },
    /// Another process holds the spool lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A record's JSON is larger than the spool accepts.
    RecordTooLarge {
        /// Position of the record in the `append` call.
        index: usize,
        /// Its JSON size.
        bytes: usize,
    },
    /// A record could not be serialized.
    Encode {
        /// Position of the record in the `append` call.
        index: usize,
        /// serde's message.
        message: String,
    },
    /// `ack` was given a position past the end of what was written.
    CursorBeyondEnd {
        /// The cursor given.
        cursor: Cursor,
    },
    /// The OS random number generator failed.
    Random(String),
    /// Encryption failed (only if a record exceeds AES-GCM's limits; never in practice).
    Seal,
}

impl SpoolError {
    /// An [`SpoolError::Io`] for `path`. The path is copied only when an error happens (a
    /// segment write every cycle must not allocate to say where it would fail).
    pub(crate) fn io<P: Into<PathBuf>>(action: &'static str, path: P) -> impl FnOnce(std::io::Error) -> SpoolError {
        move |error| SpoolError::Io { action, path: path.into(), error }
    }

    /// True if this is an I/O error with the given kind (e.g. `StorageFull`).
    pub fn is_io_kind(&self, kind: std::io::ErrorKind) -> bool {
        matches!(self, SpoolError::Io { error, .. } if error.kind() == kind)
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io { action, path, error } => write!(f, "{action} {}: {error}", path.display()),
            SpoolError::UnknownVersion { path, version } => write!(
                f,
                "spool segment {} has unknown format version {version} (this agent reads {}); left untouched",
                path.display(),
                super::format::VERSION
            ),
            SpoolError::UnknownStateVersion { path, version } => {
                write!(f, "spool state file {} has unknown version {version}; left untouched", path.display())
            }
            SpoolError::StateDamaged { path } => write!(
                f,
                "both slots of the spool state {} are damaged, so the acknowledged position is unknown; \
                 left untouched. Move it aside to start again from the oldest record still in the spool \
                 (records the server already has are sent again: v2 receivers recognise them, Atlas stores \
                 them twice), or restore it from a backup",
                path.display()
            ),
            SpoolError::StateTooLarge { path, bytes, max } => {
                write!(f, "spool state for {} is {bytes} bytes, more than a slot holds ({max})", path.display())
            }
            SpoolError::StateUnreadable { path, problem } => {
                write!(f, "state file {}: {problem}; left untouched", path.display())
            }
            SpoolError::MasterKey { path, problem } => {
                write!(f, "spool master key {}: {problem}; left untouched", path.display())
            }
            SpoolError::Locked { path } => {
                write!(f, "spool is in use by another process (lock {} is held)", path.display())
            }
            SpoolError::RecordTooLarge { index, bytes } => write!(
                f,
                "record {index} is {bytes} bytes of JSON, more than the spool's limit of {}",
                super::format::MAX_RECORD_BYTES
            ),
            SpoolError::Encode { index, message } => write!(f, "serializing record {index}: {message}"),
            SpoolError::CursorBeyondEnd { cursor } => {
                write!(f, "ack at segment {} record {} is past the end of the spool", cursor.segment, cursor.index)
            }
            SpoolError::Random(why) => write!(f, "OS random number generator failed: {why}"),
            SpoolError::Seal => f.write_str("encrypting a spool record failed"),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpoolError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}
