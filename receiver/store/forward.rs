//! The file store's forwarding cursor ([`StorageRead::forward_pending`]): how far each
//! machine's files have been handed to the forwarder (`--forward-otlp`).
//!
//! # The cursor file
//!
//! `STORE/.forward-otlp.json` (mode 0600; never a machine dir, those never start with `.`):
//!
//! ```text
//! {"version":1,"positions":{"<machine_id>":{"records":{"line":L,"offset":B},"widget-logs":{…},"reports":{…}}}}
//! ```
//!
//! `line` is the number of lines of that file already forwarded (the next line's 0-based
//! number, which its AAD binds), `offset` the byte offset where that line starts (a hint:
//! `null` after `receive rekey` rewrote the file, then the lines are counted again from the
//! start). A missing machine or stream is at line 0. `records` positions always sit right
//! after a batch commit line. The file is replaced atomically (write `.forward-otlp.json.tmp`,
//! fsync, rename over, fsync the directory), so a crash leaves the old or the new cursor,
//! whole. A cursor that does not parse is an error naming it (delete it to forward the whole
//! store again); a position beyond its file's end (the file was replaced by hand) is logged
//! and moved to the end.
//!
//! # What is forwarded
//!
//! Per machine (in id order) and stream ([`Stream::ALL`] order): committed v2 batches (each
//! batch's `record` rows then its `batch` row; record lines not followed by their commit line
//! are never handed out), v1 widget-log rows and v1 report rows, decrypted. The running store
//! reads each file no further than its last good append, so a failed append's leftover (cut
//! before the next write) is never forwarded. Rows that do not open (tampered, wrong key) are
//! skipped with a warning naming them (`receive verify` lists them) and the cursor moves past
//! them: one bad row must not stop forwarding for ever.
//!
//! # At-least-once
//!
//! The cursor is written only after `push` returned Ok; if `push` fails, or the process dies
//! between `push` and the rename, the same rows are handed out again. Nothing is ever skipped.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    commit_count, file_of, io_error, open_line, row_location, scan_lines, scan_lines_from, sync_dir, FileReader,
    RECORDS_FILE,
};
use crate::storage::{Committed, StorageRead, StoreError, Stream};

/// The cursor file, in the store directory.
pub const CURSOR_FILE: &str = ".forward-otlp.json";
/// The version written in the cursor file.
const CURSOR_VERSION: u64 = 1;

/// How far one file has been forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    /// Lines forwarded (the next line's number).
    line: u64,
    /// Byte offset of the next line (`None`: unknown, count lines from the start).
    offset: Option<u64>,
}

/// The forwarding cursor of a store (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    version: u64,
    positions: BTreeMap<String, BTreeMap<String, Position>>,
}

fn cursor_path(root: &Path) -> PathBuf {
    root.join(CURSOR_FILE)
}

impl Cursor {
    /// The cursor of the store at `root` (none yet: everything is pending).
    pub(crate) fn load(root: &Path) -> Result<Cursor, StoreError> {
        let path = cursor_path(root);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Cursor { version: CURSOR_VERSION, positions: BTreeMap::new() })
            }
            Err(e) => return Err(io_error("reading the forwarding cursor", &path)(e)),
        };
        match serde_json::from_slice::<Cursor>(&text) {
            Ok(cursor) if cursor.version == CURSOR_VERSION => Ok(cursor),
            Ok(cursor) => {
                Err(bad_cursor(&path, &format!("version {} (this build reads {CURSOR_VERSION})", cursor.version)))
            }
            Err(e) => Err(bad_cursor(&path, &e.to_string())),
        }
    }

    /// Forget every byte offset, keeping line numbers (after `rekey` rewrote files).
    pub(crate) fn forget_offsets(root: &Path) -> Result<(), StoreError> {
        if !cursor_path(root).exists() {
            return Ok(());
        }
        let mut cursor = Cursor::load(root)?;
        for streams in cursor.positions.values_mut() {
            for position in streams.values_mut() {
                position.offset = None;
            }
        }
        cursor.save(root)
    }

    fn get(&self, machine_id: &str, stream: Stream) -> Position {
        self.positions.get(machine_id).and_then(|s| s.get(stream.name())).copied().unwrap_or_default()
    }

    fn set(&mut self, machine_id: &str, stream: Stream, position: Position) {
        self.positions.entry(machine_id.to_string()).or_default().insert(stream.name().to_string(), position);
    }

    /// Replace the cursor file atomically and durably.
    fn save(&self, root: &Path) -> Result<(), StoreError> {
        let path = cursor_path(root);
        let tmp = root.join(format!("{CURSOR_FILE}.tmp"));
        let bytes =
            serde_json::to_vec(self).map_err(|e| io_error("encoding the forwarding cursor", &path)(e.into()))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error("creating", &tmp))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io_error("writing", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_error("renaming over", &path))?;
        sync_dir(root)
    }
}

fn bad_cursor(path: &Path, why: &str) -> StoreError {
    StoreError::Io {
        doing: "reading the forwarding cursor (delete it to forward the whole store again)",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, why.to_string()),
    }
}

/// Where line `position.line` of `path` starts: the offset hint if it is a line start within
/// the file, else found by counting lines. A file with fewer lines than the cursor says (it
/// was replaced) puts the position at its end, with a warning.
fn resolve(path: &Path, position: Position) -> Result<Position, StoreError> {
    if position.line == 0 {
        return Ok(Position { line: 0, offset: Some(0) });
    }
    if let Some(offset) = position.offset {
        if offset > 0 && ends_a_line(path, offset)? {
            return Ok(position);
        }
    }
    let mut found = None;
    let scanned = scan_lines(path, |_, number, end| {
        if number + 1 == position.line {
            found = Some(end);
            return false;
        }
        true
    })?;
    match found {
        Some(offset) => Ok(Position { line: position.line, offset: Some(offset) }),
        None => {
            log::warn!(
                "{} has {} lines but {} were forwarded: it was replaced; forwarding goes on from its end",
                path.display(),
                scanned.lines,
                position.line
            );
            Ok(Position { line: scanned.lines, offset: Some(scanned.complete) })
        }
    }
}

/// True if byte `offset - 1` of `path` is a `\n`.
fn ends_a_line(path: &Path, offset: u64) -> Result<bool, StoreError> {
    use std::io::{Read, Seek};
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error("opening", path)(e)),
    };
    let mut byte = [0u8; 1];
    let read = file.seek(io::SeekFrom::Start(offset - 1)).and_then(|_| file.read(&mut byte));
    Ok(matches!(read, Ok(1)) && byte[0] == b'\n')
}

/// What one file gave: its decrypted rows, where the cursor goes, lines looked at.
struct Taken {
    rows: Vec<Map<String, Value>>,
    to: Position,
    lines: usize,
}

/// Read the rows of `stream` of `machine_id` after `from`, no further than `until` bytes,
/// about `budget` lines (whole batches for records).
fn take(
    reader: &FileReader,
    machine_id: &str,
    stream: Stream,
    from: Position,
    until: Option<u64>,
    budget: usize,
) -> Result<Taken, StoreError> {
    let file = file_of(stream);
    let path = reader.path(machine_id, file);
    let from = resolve(&path, from)?;
    let keys = &reader.keys;
    let mut taken = Taken { rows: Vec::new(), to: from, lines: 0 };
    let open = |line: &[u8], number: u64, rows: &mut Vec<Map<String, Value>>| match open_line(
        keys, file, number, line, machine_id,
    ) {
        Ok(row) => rows.push(row),
        Err(e) => log::warn!("not forwarding {}: {e}", row_location(&path, number)),
    };
    let start = from.offset.unwrap_or(0);
    if file == RECORDS_FILE {
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        scan_lines_from(&path, start, from.line, until, |line, number, end| {
            let Some(count) = commit_count(line) else {
                pending.push((number, line.to_vec()));
                return true;
            };
            let leftover = pending.len().saturating_sub(count);
            for (n, raw) in pending.drain(..).skip(leftover) {
                open(&raw, n, &mut taken.rows);
            }
            open(line, number, &mut taken.rows);
            taken.lines += count + 1 + leftover;
            taken.to = Position { line: number + 1, offset: Some(end) };
            taken.lines < budget
        })?;
    } else {
        scan_lines_from(&path, start, from.line, until, |line, number, end| {
            open(line, number, &mut taken.rows);
            taken.lines += 1;
            taken.to = Position { line: number + 1, offset: Some(end) };
            taken.lines < budget
        })?;
    }
    Ok(taken)
}

/// One round of [`StorageRead::forward_pending`] for the file store. `until` gives the good
/// length of a machine's stream file (`None`: read to the end of the file).
pub(crate) fn forward(
    reader: &FileReader,
    cursor: &mut Cursor,
    until: &dyn Fn(&str, Stream) -> Option<u64>,
    max_rows: usize,
    push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
) -> Result<usize, StoreError> {
    let budget = max_rows.max(1);
    loop {
        let mut next = cursor.clone();
        let mut units = Vec::new();
        let mut lines = 0;
        'machines: for machine_id in reader.machine_ids()? {
            for stream in Stream::ALL {
                if lines >= budget {
                    break 'machines;
                }
                let from = cursor.get(&machine_id, stream);
                let limit = until(&machine_id, stream);
                let at = from.offset.or((from.line == 0).then_some(0));
                if limit.is_some_and(|limit| at.is_some_and(|at| at >= limit)) {
                    // Nothing new since the last good append: no file opened.
                    continue;
                }
                let taken = take(reader, &machine_id, stream, from, limit, budget - lines)?;
                lines += taken.lines;
                if taken.to.line != from.line {
                    next.set(&machine_id, stream, taken.to);
                }
                if !taken.rows.is_empty() {
                    units.push(Committed { machine_id: machine_id.clone(), stream, rows: taken.rows });
                }
            }
        }
        if next == *cursor {
            return Ok(0);
        }
        let rows = units.iter().map(|u| u.rows.len()).sum();
        if !units.is_empty() {
            push(&units).map_err(|why| StoreError::Forward { store: reader.describe(), why })?;
        }
        next.save(reader.root())?;
        *cursor = next;
        if rows > 0 {
            return Ok(rows);
        }
        // Only rows that do not open were passed: go on to the next ones.
    }
}
