//! The file store, the receiver's embedded storage backend: append-only JSON Lines per machine,
//! each row sealed under the store key ([`super::seal`]), fsynced before any 200. It implements
//! the storage seam ([`crate::storage`]): [`FileStore`] (the running receiver: [`Storage`] and
//! [`StorageRead`], appends, repair on open) and [`FileReader`] ([`StorageRead`] without a lock:
//! listings, exports, `receive ls/show/verify`, tests). Nothing else opens its files; the
//! forwarding cursor is in [`forward`]'s docs.
//! Byte-level format and test vectors: `docs/receiver-store-sealing.md`.
//!
//! # Layout
//!
//! ```text
//! STORE/                              mode 0700
//!   .lock                             held with an exclusive flock by the running receiver or
//!                                     `receive rekey`; holds its pid (a second one refuses)
//!   <machine dir>/                    mode 0700, one per machine (name: see below)
//!     reports.jsonl                   v1 reports             (mode 0600)
//!     widget-logs.jsonl               v1 widget-log entries  (mode 0600)
//!     records.jsonl                   v2 records and batch commit lines (mode 0600)
//! ```
//!
//! The machine dir name is the `machine_id` with every byte outside `a-z 0-9 - _ .` (and a
//! leading `.`) written as `%XX` (uppercase hex), so `mac-01` is stored in `mac-01/`, `Mac-01`
//! in `%4Dac-01/` and `a b` in `a%20b/`. Upper-case letters are escaped too, so that two ids
//! differing only in case never share a directory on a case-insensitive file system (APFS,
//! the macOS default): no two names this scheme makes are equal under case folding (letters
//! outside escapes are lower case, hex digits inside them upper case, and `%` always starts an
//! escape). Machine ids are 1..=128 bytes without control characters (the receiver answers
//! 400 otherwise, the agent's own limit); an id whose `%XX` form would exceed 200 bytes is
//! stored as `~` + its unpadded lower-case base32 (RFC 4648 alphabet, at most 206 bytes), so a
//! dir name always fits the 255-byte file name limit and maps back to exactly one id.
//!
//! Upgrades: stores written before upper case was escaped named `Mac-01` `Mac-01/` and long ids
//! `~` + base64url. [`FileStore::open`] renames such directories to their current names (logged;
//! a directory whose current name already exists is left alone with an error), and the
//! readers fall back to the old name, so an old store stays readable without a receiver.
//!
//! # Rows
//!
//! One compact JSON object per line, `\n`-terminated. Before sealing (and as stored with
//! `--store-plaintext`) a row is (field order not significant):
//!
//! ```text
//! {"received_at":T,"machine_id":M,"kind":"report","e2ee":B,"report":{machine_id, machine_info, metrics, …}}
//! {"received_at":T,"machine_id":M,"kind":"widget-log","widget":W,"e2ee":B,"log":{timestamp, level, widget_type, message, data}}
//! {"received_at":T,"machine_id":M,"kind":"record","seq":N,"index":I,"widget":W,"record_kind":K,"record":{ts, widget, kind, level, message, data}}
//! {"received_at":T,"machine_id":M,"kind":"batch","seq":N,"records":COUNT,"kid":K,"sent_at":S,"dropped":{count, oldest?, newest?},"digest":D}
//! ```
//!
//! `received_at` is the receiver's clock (RFC 3339 UTC, milliseconds); `e2ee` says whether the
//! body was sealed; `kid` (the transport key id) is absent in plaintext (test) mode. Sealed,
//! `received_at`, `machine_id`, `kind`, `seq`, `index`, `records`, `widget` and
//! `record_kind` stay in clear and the rest is encrypted, bound to the file and line number.
//!
//! # Exactly-once for v2 (`records.jsonl`)
//!
//! A v2 batch is written as ONE `write` of its record lines followed by its `batch` line (the
//! commit mark), then `fsync`, then the 200 goes out. On open, the receiver reads every
//! `records.jsonl`, rebuilds the set of committed `(machine_id, seq)` from the `batch` lines and
//! truncates anything after the last `batch` line (a group torn by a crash; it was never
//! acknowledged, so the sender still holds it and will resend it). So a batch is either stored
//! once with its commit line or not at all, across restarts and `kill -9`. While running, the
//! receiver remembers each file's length after its last good append; if an append fails, the
//! file is cut back before anything else is written (and again before the next append if that
//! undo failed too), so a failed group never sits between two good ones.
//!
//! The commit line's `digest` is [`records_digest`] of the batch's records: lower-case hex
//! SHA-256 of the `records` array as compact JSON, each record's members in the order `ts`,
//! `widget`, `kind`, `level`, `message`, `data`, object members inside `data` sorted by key
//! (bytewise), as [`Record`] serializes (see `docs/v2-protocol.md` for the vector); sealed, like everything but the index fields. A repeated
//! `(machine_id, seq)` with the same digest is a duplicate (answered 200, nothing written);
//! with another digest it is a collision ([`BatchOutcome::Conflict`], answered 409, nothing
//! written): another sender used the same seq for other records, and acknowledging it as a
//! duplicate would make that sender delete records nobody stored. Commit lines written before
//! the digest existed have none: their digest is computed from their record lines when needed.
//! The digests of the last [`RECENT_DIGESTS`] (32) batches of each machine are kept in memory,
//! so the receiver's memory per machine is bounded (a few KB, whatever the store holds); an
//! older repeat reads its commit line back from the file (rare: an agent resends only what it
//! has not had acknowledged, so this is a batch whose answer was lost while 32 later ones of
//! the same machine were stored; it costs one read of that machine's `records.jsonl`).
//!
//! Readers: a batch's records are the `records` (count) lines right before its `batch` line.
//! Record lines not followed by their commit line (the tail of a store no receiver has reopened
//! since a crash) were never acknowledged and are ignored ([`StorageRead::visit`] of [`Stream::Records`]).
//!
//! v1 files get the same one-write-then-fsync treatment; on open a torn last line (no `\n`) is
//! cut off. v1 has no sequence numbers, so a v1 resend after a lost answer is stored again,
//! exactly as the Atlas server does.
//!
//! Writes to one machine's files are serialized by a per-machine mutex, so lines from
//! concurrent requests never interleave; different machines write in parallel.
//!
//! # Keys
//!
//! On open every row's store key id is checked against the keys given: a row under another
//! key, a sealed row without a key, or a plaintext row with one is an error naming the key id
//! and the file, and nothing is changed. `receive rekey` ([`rekey`]) rewrites each file under a
//! new key through a temporary file and a rename, so a crash leaves each file whole under the
//! old or the new key, and a store half-way is read with both keys.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fleet_wire::time::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::seal::{self, RowError, StoreKeys};
use crate::storage::{
    check_machine_id, BatchOutcome, Committed, ReadStats, RowProblem, Storage, StorageRead, StoreError, Stream,
};
use fleet_wire::record::{records_digest, BatchBody, Record};

pub mod forward;

pub use forward::CURSOR_FILE;

/// File of v1 reports.
pub const REPORTS_FILE: &str = "reports.jsonl";
/// File of v1 widget-log entries.
pub const WIDGET_LOGS_FILE: &str = "widget-logs.jsonl";
/// File of v2 records and batch commit lines.
pub const RECORDS_FILE: &str = "records.jsonl";
/// Lock file inside the store directory (not a machine dir: those never start with `.`).
pub const LOCK_FILE: &str = ".lock";
/// Digests of this many most recent batches per machine are kept in memory (a resend of an
/// older batch reads its digest back from the file). Small, so that memory per machine stays
/// a few KB with 10,000 machines or more.
pub const RECENT_DIGESTS: usize = 32;
/// Suffix of the temporary file `rekey` writes beside each file it rewrites.
pub const REKEY_SUFFIX: &str = ".rekey-tmp";

fn io_error<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { doing, path: path.to_path_buf(), source }
}

/// Longest `%XX` form used as a directory name; longer ids use the `~` + base32 form.
const MAX_PERCENT_NAME: usize = 200;

/// The directory name of a machine id (see the module docs): unique under case folding.
pub fn dir_name(machine_id: &str) -> String {
    let percent = percent_name(machine_id, false);
    if percent.len() <= MAX_PERCENT_NAME {
        return percent;
    }
    format!("~{}", base32_lower(machine_id.as_bytes()))
}

/// The name stores written before upper case was escaped used (see "Upgrades").
fn legacy_dir_name(machine_id: &str) -> String {
    let percent = percent_name(machine_id, true);
    if percent.len() <= MAX_PERCENT_NAME {
        return percent;
    }
    use base64::Engine as _;
    format!("~{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(machine_id))
}

fn percent_name(machine_id: &str, plain_upper: bool) -> String {
    let mut out = String::with_capacity(machine_id.len());
    for (i, b) in machine_id.bytes().enumerate() {
        let plain = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || (plain_upper && b.is_ascii_uppercase())
            || b == b'-'
            || b == b'_'
            || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lower case, no padding.
fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_lower_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u64, 0u32);
    for c in text.bytes() {
        let value = BASE32.iter().position(|&a| a == c)? as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The id a `%XX` name spells (not checked for canonical form).
fn percent_decode(dir: &str) -> Option<String> {
    let bytes = dir.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The machine id of a directory name, if it is one [`dir_name`] makes.
pub fn machine_id_of(dir: &str) -> Option<String> {
    let id = match dir.strip_prefix('~') {
        Some(encoded) => String::from_utf8(base32_lower_decode(encoded)?).ok()?,
        None => percent_decode(dir)?,
    };
    (dir_name(&id) == dir).then_some(id)
}

/// The machine id of a directory name the old scheme made (and the current one does not).
fn legacy_machine_id_of(dir: &str) -> Option<String> {
    let id = match dir.strip_prefix('~') {
        Some(encoded) => {
            use base64::Engine as _;
            String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?
        }
        None => percent_decode(dir)?,
    };
    (legacy_dir_name(&id) == dir && dir_name(&id) != dir).then_some(id)
}

/// The directory of `machine_id` in `store`: its current name, or the name an older version
/// gave it if only that exists (a store no receiver of this version has opened yet).
pub fn machine_dir(store: &Path, machine_id: &str) -> PathBuf {
    let current = store.join(dir_name(machine_id));
    if !current.exists() {
        let legacy = store.join(legacy_dir_name(machine_id));
        if legacy.is_dir() {
            return legacy;
        }
    }
    current
}

/// A set of u64 kept as disjoint inclusive ranges: seqs arrive mostly in order, so the seen set
/// of a machine stays a handful of ranges however long it runs.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    ranges: BTreeMap<u64, u64>,
}

impl SeqSet {
    /// True if `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.range(..=seq).next_back().is_some_and(|(_, &end)| seq <= end)
    }

    /// Add `seq`, merging with neighbouring ranges.
    pub fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let mut start = seq;
        let mut end = seq;
        if let Some((&s, &e)) = self.ranges.range(..seq).next_back() {
            if e.checked_add(1) == Some(seq) {
                start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(next) = seq.checked_add(1) {
            if let Some(e) = self.ranges.remove(&next) {
                end = e;
            }
        }
        self.ranges.insert(start, end);
    }

    /// Number of disjoint ranges (memory use).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// Just enough of any stored line to rebuild state and check its key.
#[derive(Deserialize)]
struct LineHead {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    records: Option<u64>,
    #[serde(default)]
    store_kid: Option<String>,
    #[serde(default)]
    sealed: Option<serde::de::IgnoredAny>,
}

/// The three files of a machine dir (the order of the per-file state of the running store).
pub const FILES: [&str; 3] = [REPORTS_FILE, WIDGET_LOGS_FILE, RECORDS_FILE];

struct MachineState {
    dir: PathBuf,
    seen: SeqSet,
    /// Digests of the most recent batches (at most [`RECENT_DIGESTS`]); older ones are read
    /// back from the file.
    recent: BTreeMap<u64, String>,
    /// Length of each of [`FILES`] after the last good append: anything beyond is a failed
    /// append's leftover and is cut before the next write.
    lens: [u64; 3],
    /// Lines in each of [`FILES`] after the last good append (the next row's line number).
    lines: [u64; 3],
}

impl MachineState {
    fn remember(&mut self, seq: u64, digest: String) {
        self.recent.insert(seq, digest);
        while self.recent.len() > RECENT_DIGESTS {
            self.recent.pop_first();
        }
    }

    /// The digest of committed batch `seq` (`None`: not found, the file is unreadable).
    fn digest_of(&self, seq: u64, keys: &StoreKeys) -> Option<String> {
        if let Some(digest) = self.recent.get(&seq) {
            return Some(digest.clone());
        }
        let mut found = None;
        let _ = visit_committed(&self.dir.join(RECORDS_FILE), keys, |seq_of, digest| {
            if seq_of == seq {
                found = Some(digest);
            }
        });
        found
    }
}

/// An open file store, for the running receiver (the [`Storage`] of the file store):
/// per-machine state behind per-machine locks, and the store's lock held for as long as it
/// lives.
pub struct FileStore {
    reader: FileReader,
    machines: Mutex<HashMap<String, Arc<Mutex<MachineState>>>>,
    /// The forwarding cursor, loaded at the first [`StorageRead::forward_pending`]; the mutex
    /// also makes concurrent calls take turns.
    cursor: Mutex<Option<forward::Cursor>>,
    _lock: File,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-write leaves nothing half-updated in memory that matters: the
    // files are the truth and are repaired on open.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io_error("creating directory", path))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(io_error("syncing directory", path))
}

/// Take the store's exclusive lock (non-blocking: one writer at a time) and write our pid
/// into it.
pub fn lock_store(root: &Path) -> Result<File, StoreError> {
    create_dir(root)?;
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("opening the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path).ok().and_then(|text| text.trim().parse().ok());
            return Err(StoreError::Locked { store: root.to_path_buf(), pid });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_error("locking", &path)(e)),
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .and_then(|()| file.sync_data());
    written.map_err(io_error("writing the pid into", &path))?;
    Ok(file)
}

/// Append `bytes` in one write and fsync (and the directory too when the file is new).
///
/// `good_len` is the file's length after the last successful append. A longer file holds the
/// leftover of an append that failed (disk full, I/O error) and whose undo failed too: it is
/// cut off first, so a half-written group can never merge with the next one. On failure the
/// file is cut back again and the error returned (nothing was acknowledged).
fn append_durably(path: &Path, bytes: &[u8], good_len: &mut u64) -> Result<(), StoreError> {
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("opening for append", path))?;
    let len = file.metadata().map_err(io_error("reading metadata of", path))?.len();
    if len > *good_len {
        log::warn!("cutting {} bytes left by a failed append off {}", len - *good_len, path.display());
        file.set_len(*good_len).map_err(io_error("truncating a failed append off", path))?;
    } else if len < *good_len {
        log::warn!("{} is {} bytes shorter than written: changed by someone else", path.display(), *good_len - len);
        *good_len = len;
    }
    let written = file
        .write_all(bytes)
        .map_err(io_error("appending to", path))
        .and_then(|()| file.sync_data().map_err(io_error("syncing", path)));
    if let Err(e) = written {
        if let Err(undo) = file.set_len(*good_len).and_then(|()| file.sync_data()) {
            log::error!("cannot cut {} back to {} bytes after a failed append: {undo}", path.display(), *good_len);
        }
        return Err(e);
    }
    *good_len += bytes.len() as u64;
    match path.parent() {
        Some(dir) if new => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Cut `path` back to `len` bytes and fsync.
fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_error("opening to repair", path))?;
    file.set_len(len).map_err(io_error("truncating torn tail of", path))?;
    file.sync_all().map_err(io_error("syncing", path))
}

/// What [`scan_lines`] found: bytes of complete lines, complete lines, total bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Scanned {
    complete: u64,
    lines: u64,
    total: u64,
}

/// Visit every complete line of `path` (missing file: no lines). `visit` gets each line's
/// bytes (without `\n`), its 0-based number and its end offset, and returns false to stop.
fn scan_lines(path: &Path, visit: impl FnMut(&[u8], u64, u64) -> bool) -> Result<Scanned, StoreError> {
    scan_lines_from(path, 0, 0, None, visit)
}

/// [`scan_lines`] from byte `start` (the start of line `first_line`), reading no further than
/// `until` bytes from the file's start (`None`: to its end). `Scanned::complete` is the end
/// offset of the last complete line read (`start` if none), `Scanned::total` the end of what
/// was looked at.
fn scan_lines_from(
    path: &Path,
    start: u64,
    first_line: u64,
    until: Option<u64>,
    mut visit: impl FnMut(&[u8], u64, u64) -> bool,
) -> Result<Scanned, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Scanned { complete: start, lines: first_line, total: start })
        }
        Err(e) => return Err(io_error("opening", path)(e)),
    };
    let len = file.metadata().map_err(io_error("reading metadata of", path))?.len();
    let total = until.map_or(len, |until| until.min(len)).max(start);
    if start > 0 {
        file.seek(io::SeekFrom::Start(start)).map_err(io_error("seeking in", path))?;
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file.take(total - start));
    let mut line = Vec::new();
    let mut scanned = Scanned { complete: start, lines: first_line, total };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_error("reading", path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        scanned.complete += n as u64;
        let number = scanned.lines;
        scanned.lines += 1;
        if !visit(&line[..n - 1], number, scanned.complete) {
            break;
        }
        if line.capacity() > 1024 * 1024 {
            // One huge report must not pin its buffer for the rest of the file.
            line = Vec::new();
        }
    }
    Ok(scanned)
}

fn now() -> String {
    Timestamp::now().to_rfc3339()
}

/// Check that a stored line's key fits `keys` (see the module docs); `Err` names the problem.
fn check_head(head: &LineHead, keys: &StoreKeys) -> Result<(), RowError> {
    match (&head.sealed, &head.store_kid) {
        (None, _) if !keys.is_plaintext() => Err(RowError::Plaintext),
        (None, _) => Ok(()),
        (Some(_), None) => Err(RowError::Malformed("`store_kid` missing".into())),
        (Some(_), Some(kid)) if keys.is_plaintext() => Err(RowError::NeedKey(kid.clone())),
        (Some(_), Some(kid)) if !keys.has(kid) => Err(RowError::UnknownKey(kid.clone())),
        _ => Ok(()),
    }
}

impl FileStore {
    /// Open (or create) a store for writing: take its lock (failing with
    /// [`StoreError::Locked`] if another receiver holds it), check every row's key (a key
    /// problem changes nothing), rename directories an older version named (see "Upgrades"),
    /// repair torn tails and rebuild the seen `(machine_id, seq)` set and recent digests.
    pub fn open(root: &Path, keys: StoreKeys) -> Result<FileStore, StoreError> {
        let lock_file = lock_store(root)?;
        let reader = FileReader::new(root, keys);
        reader.check_keys()?;
        migrate_legacy_names(root)?;
        let mut machines = HashMap::new();
        for machine_id in reader.machine_ids()? {
            let dir = root.join(dir_name(&machine_id));
            let (seen, recent, lens, lines) = recover_machine(&dir, reader.keys())?;
            machines.insert(machine_id, Arc::new(Mutex::new(MachineState { dir, seen, recent, lens, lines })));
        }
        Ok(FileStore { reader, machines: Mutex::new(machines), cursor: Mutex::new(None), _lock: lock_file })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        self.reader.root()
    }

    /// The good length of `stream`'s file of `machine_id` (`None`: no state yet, the file
    /// is as long as it is): the forwarder reads no further, so a failed append's leftover
    /// is never forwarded.
    fn good_len(&self, machine_id: &str, stream: Stream) -> Option<u64> {
        let state = lock(&self.machines).get(machine_id).map(Arc::clone)?;
        let len = lock(&state).lens[file_index(stream)];
        Some(len)
    }

    fn machine(&self, machine_id: &str) -> Result<Arc<Mutex<MachineState>>, StoreError> {
        check_machine_id(machine_id)?;
        let mut machines = lock(&self.machines);
        if let Some(state) = machines.get(machine_id) {
            return Ok(Arc::clone(state));
        }
        let dir = self.root().join(dir_name(machine_id));
        create_dir(&dir)?;
        sync_dir(self.root())?;
        let state = Arc::new(Mutex::new(MachineState {
            dir,
            seen: SeqSet::default(),
            recent: BTreeMap::new(),
            lens: [0; 3],
            lines: [0; 3],
        }));
        machines.insert(machine_id.to_string(), Arc::clone(&state));
        Ok(state)
    }

    /// Seal `rows` at the next line numbers of `FILES[file]` and append them durably.
    fn append(&self, state: &mut MachineState, file: usize, rows: Vec<Value>) -> Result<(), StoreError> {
        let keys = &self.reader.keys;
        let nonces = if keys.is_plaintext() {
            vec![[0u8; 12]; rows.len()]
        } else {
            seal::nonces(rows.len()).map_err(StoreError::Random)?
        };
        let mut bytes = Vec::new();
        let first = state.lines[file];
        for (i, (row, nonce)) in rows.into_iter().zip(&nonces).enumerate() {
            let Value::Object(row) = row else { continue };
            let stored = keys.seal(FILES[file], first + i as u64, row, nonce);
            serde_json::to_writer(&mut bytes, &stored)
                .map_err(|e| io_error("encoding a row for", &state.dir)(e.into()))?;
            bytes.push(b'\n');
        }
        let count = nonces.len() as u64;
        append_durably(&state.dir.join(FILES[file]), &bytes, &mut state.lens[file])?;
        state.lines[file] += count;
        Ok(())
    }
}

impl Storage for FileStore {
    fn append_report(&self, machine_id: &str, report: &Value, e2ee: bool) -> Result<(), StoreError> {
        let state = self.machine(machine_id)?;
        let mut state = lock(&state);
        let row =
            json!({"received_at": now(), "machine_id": machine_id, "kind": "report", "e2ee": e2ee, "report": report});
        self.append(&mut state, 0, vec![row])
    }

    fn append_widget_logs(&self, machine_id: &str, logs: &[Value], e2ee: bool) -> Result<usize, StoreError> {
        let state = self.machine(machine_id)?;
        let mut state = lock(&state);
        let received_at = now();
        let rows: Vec<Value> = logs
            .iter()
            .map(|log| {
                let widget = log.get("widget_type").and_then(Value::as_str).unwrap_or("");
                json!({"received_at": received_at, "machine_id": machine_id, "kind": "widget-log",
                       "widget": widget, "e2ee": e2ee, "log": log})
            })
            .collect();
        if !rows.is_empty() {
            self.append(&mut state, 1, rows)?;
        }
        Ok(logs.len())
    }

    /// See the module docs, "Exactly-once for v2".
    fn append_batch(&self, batch: &BatchBody, kid: Option<&str>) -> Result<BatchOutcome, StoreError> {
        let machine_id = batch.machine_id.as_str();
        let state = self.machine(machine_id)?;
        let mut state = lock(&state);
        let digest = records_digest(&batch.records);
        if state.seen.contains(batch.seq) {
            return Ok(match state.digest_of(batch.seq, &self.reader.keys) {
                Some(stored) if stored != digest => BatchOutcome::Conflict { stored, offered: digest },
                _ => BatchOutcome::Duplicate,
            });
        }
        let received_at = now();
        let mut rows = Vec::with_capacity(batch.records.len() + 1);
        for (index, record) in batch.records.iter().enumerate() {
            let record = serde_json::to_value(record).unwrap_or(Value::Null);
            let record_kind = record.get("kind").cloned().unwrap_or(Value::Null);
            rows.push(json!({"received_at": received_at, "machine_id": machine_id, "kind": "record",
                "seq": batch.seq, "index": index, "widget": record.get("widget").cloned().unwrap_or(Value::Null),
                "record_kind": record_kind, "record": record}));
        }
        let mut commit = json!({"received_at": received_at, "machine_id": machine_id, "kind": "batch",
            "seq": batch.seq, "records": batch.records.len(), "sent_at": batch.sent_at, "dropped": batch.dropped,
            "digest": digest});
        if let (Some(kid), Value::Object(map)) = (kid, &mut commit) {
            map.insert("kid".into(), Value::from(kid));
        }
        rows.push(commit);
        self.append(&mut state, 2, rows)?;
        state.seen.insert(batch.seq);
        state.remember(batch.seq, digest);
        Ok(BatchOutcome::Stored(batch.records.len()))
    }
}

impl StorageRead for FileStore {
    fn describe(&self) -> String {
        self.reader.describe()
    }

    fn keys(&self) -> &StoreKeys {
        &self.reader.keys
    }

    fn machine_ids(&self) -> Result<Vec<String>, StoreError> {
        self.reader.machine_ids()
    }

    fn visit(
        &self,
        machine_id: &str,
        stream: Stream,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        self.reader.visit(machine_id, stream, visit, problem)
    }

    fn machine_bytes(&self, machine_id: &str) -> Result<u64, StoreError> {
        self.reader.machine_bytes(machine_id)
    }

    fn check_keys(&self) -> Result<(), StoreError> {
        self.reader.check_keys()
    }

    /// Reads each file no further than its last good append (this store holds the lock).
    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, StoreError> {
        let mut cursor = lock(&self.cursor);
        if cursor.is_none() {
            *cursor = Some(forward::Cursor::load(self.root())?);
        }
        let Some(cursor) = cursor.as_mut() else { return Ok(0) };
        forward::forward(&self.reader, cursor, &|id, stream| self.good_len(id, stream), max_rows, push)
    }
}

/// What recovery rebuilt for one machine: committed seqs, recent digests, good file lengths
/// and line counts.
type Recovered = (SeqSet, BTreeMap<u64, String>, [u64; 3], [u64; 3]);

/// Repair one machine dir: its committed seqs, the digests of its latest batches, the good
/// length and line count of each of [`FILES`].
fn recover_machine(dir: &Path, keys: &StoreKeys) -> Result<Recovered, StoreError> {
    let mut lens = [0u64; 3];
    let mut lines = [0u64; 3];
    for (i, name) in FILES[..2].iter().enumerate() {
        let path = dir.join(name);
        let scanned = scan_lines(&path, |_, _, _| true)?;
        if scanned.total > scanned.complete {
            log::warn!("cutting a torn last line ({} bytes) off {}", scanned.total - scanned.complete, path.display());
            truncate(&path, scanned.complete)?;
        }
        lens[i] = scanned.complete;
        lines[i] = scanned.lines;
    }
    let (seen, committed, committed_lines) = recover_records(&dir.join(RECORDS_FILE))?;
    lens[2] = committed;
    lines[2] = committed_lines;
    remove_rekey_leftovers(dir)?;
    let mut recent = BTreeMap::new();
    visit_committed(&dir.join(RECORDS_FILE), keys, |seq, digest| {
        recent.insert(seq, digest);
        while recent.len() > RECENT_DIGESTS {
            recent.pop_first();
        }
    })?;
    Ok((seen, recent, lens, lines))
}

/// Rename machine dirs an older version named (upper case unescaped, `~` + base64url) to
/// their current names. One already under its current name is left alone, with an error.
fn migrate_legacy_names(root: &Path) -> Result<(), StoreError> {
    let mut renamed = false;
    for entry in fs::read_dir(root).map_err(io_error("listing", root))? {
        let entry = entry.map_err(io_error("listing", root))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let Some(machine_id) = legacy_machine_id_of(&name) else { continue };
        if !entry.path().is_dir() {
            continue;
        }
        let to = root.join(dir_name(&machine_id));
        if to.exists() {
            log::error!(
                "{} and {} both hold machine {machine_id:?}; the first (an older version's name) is left as it is",
                entry.path().display(),
                to.display()
            );
            continue;
        }
        fs::rename(entry.path(), &to).map_err(io_error("renaming an old machine directory", &entry.path()))?;
        log::info!("renamed {} to {} (upper case is escaped since issue 11)", entry.path().display(), to.display());
        renamed = true;
    }
    if renamed {
        sync_dir(root)?;
    }
    Ok(())
}

/// Visit every commit row of a `records.jsonl` in order with its seq and digest (computed
/// from its record rows if it has none: written before digests existed). Opens only commit
/// rows, and record rows only for such old commit rows; a row that does not open is skipped.
fn visit_committed(path: &Path, keys: &StoreKeys, mut visit: impl FnMut(u64, String)) -> Result<(), StoreError> {
    let open = |line: &[u8], number: u64| -> Option<Map<String, Value>> {
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(map)) => keys.open(RECORDS_FILE, number, map).ok(),
            _ => None,
        }
    };
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    scan_lines(path, |line, number, _| {
        let Ok(head) = serde_json::from_slice::<LineHead>(line) else { return true };
        match (head.kind.as_deref(), head.seq) {
            (Some("batch"), Some(seq)) => {
                let Some(row) = open(line, number) else {
                    pending.clear();
                    return true;
                };
                let digest = match row.get("digest").and_then(Value::as_str) {
                    Some(digest) => digest.to_string(),
                    None => {
                        let count = head.records.unwrap_or(0) as usize;
                        let records: Vec<Record> = pending[pending.len().saturating_sub(count)..]
                            .iter()
                            .filter_map(|(n, raw)| open(raw, *n))
                            // Through its bytes, with the parser every batch goes through:
                            // `from_value` linked a second copy of the record's deserializer.
                            .filter_map(|row| {
                                let record = serde_json::to_vec(row.get("record")?).ok()?;
                                serde_json::from_slice(&record).ok()
                            })
                            .collect();
                        records_digest(&records)
                    }
                };
                pending.clear();
                visit(seq, digest);
            }
            (Some("record"), _) => pending.push((number, line.to_vec())),
            _ => {}
        }
        true
    })?;
    Ok(())
}

/// Delete the temporary files of a `rekey` that was killed before its rename.
fn remove_rekey_leftovers(dir: &Path) -> Result<(), StoreError> {
    for name in FILES {
        let tmp = dir.join(format!("{name}{REKEY_SUFFIX}"));
        match fs::remove_file(&tmp) {
            Ok(()) => log::warn!("removed {} left by an interrupted rekey", tmp.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing", &tmp)(e)),
        }
    }
    Ok(())
}

/// Rebuild the seen set of a `records.jsonl` and cut everything after its last commit line;
/// the set, the file's new length and its line count.
fn recover_records(path: &Path) -> Result<(SeqSet, u64, u64), StoreError> {
    let mut seen = SeqSet::default();
    let mut committed = 0u64;
    let mut committed_lines = 0u64;
    let scanned = scan_lines(path, |line, number, end| {
        if let Ok(head) = serde_json::from_slice::<LineHead>(line) {
            if head.kind.as_deref() == Some("batch") {
                if let Some(seq) = head.seq {
                    seen.insert(seq);
                    committed = end;
                    committed_lines = number + 1;
                }
            }
        }
        true
    })?;
    if scanned.total > committed {
        log::warn!(
            "cutting {} bytes of an uncommitted batch off {} (it was never acknowledged)",
            scanned.total - committed,
            path.display()
        );
        truncate(path, committed)?;
    }
    Ok((seen, committed, committed_lines))
}

/// True if an opened row is one of `machine_id`'s: its (authenticated) `machine_id` names
/// it, so a sealed row copied into another machine's directory is refused. Plaintext rows of
/// old stores may lack the field.
fn belongs(row: &Map<String, Value>, machine_id: &str, keys: &StoreKeys) -> bool {
    match row.get("machine_id") {
        Some(id) => id.as_str() == Some(machine_id),
        None => keys.is_plaintext(),
    }
}

/// Where a row of a file is, for messages: `PATH line N` (1-based).
pub fn row_location(path: &Path, line: u64) -> String {
    format!("{} line {}", path.display(), line + 1)
}

/// The file a stream is stored in.
pub fn file_of(stream: Stream) -> &'static str {
    match stream {
        Stream::Reports => REPORTS_FILE,
        Stream::WidgetLogs => WIDGET_LOGS_FILE,
        Stream::Records => RECORDS_FILE,
    }
}

/// Index of a stream's file in [`FILES`] (the running store's per-file state).
fn file_index(stream: Stream) -> usize {
    match stream {
        Stream::Reports => 0,
        Stream::WidgetLogs => 1,
        Stream::Records => 2,
    }
}

/// Open one stored line of `file` (line `number`) of `machine_id`: the decrypted row, or why
/// not (a plaintext row naming another machine is [`RowError::Tampered`]).
fn open_line(
    keys: &StoreKeys,
    file: &str,
    number: u64,
    line: &[u8],
    machine_id: &str,
) -> Result<Map<String, Value>, RowError> {
    let row = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => keys.open(file, number, map)?,
        Ok(_) => return Err(RowError::Malformed("not a JSON object".into())),
        Err(e) => return Err(RowError::Malformed(e.to_string())),
    };
    if belongs(&row, machine_id, keys) {
        Ok(row)
    } else {
        // Only possible for plaintext rows: a row of another machine's file.
        Err(RowError::Tampered)
    }
}

/// Reads of a file store with its keys: every read goes through here (the [`StorageRead`]
/// of the file store). Takes no lock and changes nothing, so it works beside a running
/// receiver (appends are whole lines, fsynced); only [`StorageRead::forward_pending`] takes
/// the store's lock, to own the forwarding cursor.
pub struct FileReader {
    root: PathBuf,
    keys: StoreKeys,
}

impl FileReader {
    /// A reader of the store at `root` (it need not exist yet).
    pub fn new(root: &Path, keys: StoreKeys) -> FileReader {
        FileReader { root: root.to_path_buf(), keys }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of one of a machine's [`FILES`].
    fn path(&self, machine_id: &str, file: &str) -> PathBuf {
        machine_dir(&self.root, machine_id).join(file)
    }

    /// Visit every opened row of one of a machine's v1 files in order; `visit` returns false
    /// to stop. Rows that do not open are counted and reported, not visited.
    fn visit_v1(
        &self,
        machine_id: &str,
        file: &str,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        let path = self.path(machine_id, file);
        let mut stats = ReadStats::default();
        let scanned = scan_lines(&path, |line, number, _| {
            match self.open_counted(file, machine_id, (&path, number), line, &mut stats, problem) {
                Some(row) => visit(row),
                None => true,
            }
        })?;
        if scanned.total > scanned.complete {
            stats.torn += 1;
        }
        Ok(stats)
    }

    /// Open one stored line of `file`, counting it in `stats` as good or bad; a bad one is
    /// reported to `problem` with its location (`at`: the file and line number).
    fn open_counted(
        &self,
        file: &str,
        machine_id: &str,
        at: (&Path, u64),
        line: &[u8],
        stats: &mut ReadStats,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Option<Map<String, Value>> {
        let (path, number) = at;
        match open_line(&self.keys, file, number, line, machine_id) {
            Ok(row) => {
                stats.good += 1;
                Some(row)
            }
            Err(e) => {
                stats.bad += 1;
                problem(RowProblem { location: row_location(path, number), problem: e });
                None
            }
        }
    }

    /// Visit the committed rows of a machine's `records.jsonl` in order: each batch's `record`
    /// rows, then its `batch` row. Rows after the last `batch` row are skipped and counted as
    /// torn (see the module docs). Streaming: holds at most one batch in memory.
    fn visit_records(
        &self,
        machine_id: &str,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        let path = self.path(machine_id, RECORDS_FILE);
        // The raw lines of the batch being read (opened once its commit row is seen): memory
        // is bounded by one batch, whatever the store's size.
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut stats = ReadStats::default();
        let mut go_on = true;
        let mut open = |line: &[u8], number: u64, stats: &mut ReadStats| {
            self.open_counted(RECORDS_FILE, machine_id, (&path, number), line, stats, problem)
        };
        let scanned = scan_lines(&path, |line, number, _| {
            let Some(count) = commit_count(line) else {
                pending.push((number, line.to_vec()));
                return true;
            };
            // A batch's records are the rows right before its commit row; anything older in
            // `pending` is the leftover of an append that failed (never acknowledged).
            let leftover = pending.len().saturating_sub(count);
            stats.torn += leftover as u64;
            let batch = open(line, number, &mut stats);
            for (n, raw) in pending.drain(..).skip(leftover) {
                if let Some(row) = open(&raw, n, &mut stats) {
                    go_on = go_on && visit(row);
                }
            }
            if let Some(row) = batch {
                go_on = go_on && visit(row);
            }
            go_on
        })?;
        if go_on {
            stats.torn += pending.len() as u64;
            if scanned.total > scanned.complete {
                stats.torn += 1;
            }
        }
        Ok(stats)
    }
}

/// If `line` is a batch commit line, its record count (the rows right before it).
fn commit_count(line: &[u8]) -> Option<usize> {
    let head = serde_json::from_slice::<LineHead>(line).ok()?;
    (head.kind.as_deref() == Some("batch")).then(|| head.records.unwrap_or(0) as usize)
}

impl StorageRead for FileReader {
    fn describe(&self) -> String {
        format!("store {}", self.root.display())
    }

    fn keys(&self) -> &StoreKeys {
        &self.keys
    }

    /// Every machine id in the store, sorted (empty if the store does not exist yet).
    fn machine_ids(&self) -> Result<Vec<String>, StoreError> {
        let store = &self.root;
        let entries = match fs::read_dir(store) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing", store)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("listing", store))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = machine_id_of(name).or_else(|| legacy_machine_id_of(name)) {
                if entry.path().is_dir() {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn visit(
        &self,
        machine_id: &str,
        stream: Stream,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        match stream {
            Stream::Records => self.visit_records(machine_id, visit, problem),
            Stream::Reports | Stream::WidgetLogs => self.visit_v1(machine_id, file_of(stream), visit, problem),
        }
    }

    /// Bytes on disk of a machine's files.
    fn machine_bytes(&self, machine_id: &str) -> Result<u64, StoreError> {
        let mut bytes = 0;
        for file in FILES {
            let path = self.path(machine_id, file);
            match fs::metadata(&path) {
                Ok(meta) => bytes += meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("reading metadata of", &path)(e)),
            }
        }
        Ok(bytes)
    }

    /// Reads only the clear fields of each line.
    fn check_keys(&self) -> Result<(), StoreError> {
        for machine_id in self.machine_ids()? {
            for file in FILES {
                let path = self.path(&machine_id, file);
                let mut problem = None;
                scan_lines(&path, |line, number, _| {
                    let Ok(head) = serde_json::from_slice::<LineHead>(line) else { return true };
                    match check_head(&head, &self.keys) {
                        Ok(()) => true,
                        Err(e) => {
                            problem = Some((number, e));
                            false
                        }
                    }
                })?;
                if let Some((line, problem)) = problem {
                    let location = row_location(&path, line);
                    return Err(StoreError::Row { location, problem, given: self.keys.kids() });
                }
            }
        }
        Ok(())
    }

    /// Takes the store's lock for the call (a running receiver holds it: forward from there),
    /// so the cursor has one owner. A store that does not exist has nothing to forward.
    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, StoreError> {
        if !self.root.is_dir() {
            return Ok(0);
        }
        let _lock = lock_store(&self.root)?;
        let mut cursor = forward::Cursor::load(&self.root)?;
        forward::forward(self, &mut cursor, &|_, _| None, max_rows, push)
    }
}

/// What `receive rekey` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Files rewritten under the new key.
    pub rewritten: u64,
    /// Files already wholly under the new key (a rerun after an interruption).
    pub already: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Torn last lines dropped (never acknowledged).
    pub torn_dropped: u64,
}

/// Rewrite every file of the store under the first key of `new` (see the module docs).
///
/// `old` opens the rows (old keys; rows already under the new key open with `new`);
/// `from_plaintext` also accepts plaintext rows (sealing a store that was plaintext). First
/// every row of every file is opened: any row that does not open stops everything with an
/// error naming its file, line and key id, and nothing is rewritten. Then each file that holds
/// a row not under the new key is written to `FILE.rekey-tmp`, fsynced, renamed over `FILE`
/// and its directory fsynced: a kill at any point leaves `FILE` whole under the old or the new
/// key. Takes the store's lock, so no receiver may run meanwhile.
pub fn rekey(root: &Path, old: &StoreKeys, new: &StoreKeys, from_plaintext: bool) -> Result<RekeyReport, StoreError> {
    let _lock = lock_store(root)?;
    let Some(new_kid) = new.current_kid().map(str::to_string) else {
        return Err(StoreError::Row {
            location: root.display().to_string(),
            problem: RowError::Malformed("no new key".into()),
            given: Vec::new(),
        });
    };
    let reader = FileReader::new(root, StoreKeys::plaintext());
    let open = |file: &str, number: u64, map: Map<String, Value>| -> Result<Map<String, Value>, RowError> {
        match seal::row_kid(&map) {
            None if map.contains_key(seal::SEALED_FIELD) => Err(RowError::Malformed("`store_kid` missing".into())),
            None if from_plaintext => Ok(map),
            None => Err(RowError::Plaintext),
            Some(kid) if new.has(kid) => new.open(file, number, map),
            Some(_) => old.open(file, number, map),
        }
    };
    let mut given = new.kids();
    given.extend(old.kids());
    let mut to_rewrite = Vec::new();
    let mut report = RekeyReport::default();
    // Pass 1: every row opens, or nothing is rewritten.
    for id in reader.machine_ids()? {
        for file in FILES {
            let path = reader.path(&id, file);
            let mut failure = None;
            let mut stale = false;
            scan_lines(&path, |line, number, _| {
                let map = match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(map)) => map,
                    _ => {
                        failure = Some((number, RowError::Malformed("not a JSON object".into())));
                        return false;
                    }
                };
                stale |= seal::row_kid(&map) != Some(new_kid.as_str());
                match open(file, number, map) {
                    Ok(_) => true,
                    Err(e) => {
                        failure = Some((number, e));
                        false
                    }
                }
            })?;
            if let Some((line, problem)) = failure {
                return Err(StoreError::Row { location: row_location(&path, line), problem, given });
            }
            if stale {
                to_rewrite.push((path, file));
            } else if path.exists() {
                report.already += 1;
            }
        }
    }
    // Pass 2: each stale file through a temporary file and a rename.
    let nonce_batch = 4096;
    for (path, file) in to_rewrite {
        let tmp = PathBuf::from(format!("{}{REKEY_SUFFIX}", path.display()));
        let mut out = std::io::BufWriter::new(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_error("creating", &tmp))?,
        );
        let mut failure: Option<StoreError> = None;
        let mut nonces = Vec::new();
        let scanned = scan_lines(&path, |line, number, _| {
            let result = (|| -> Result<(), StoreError> {
                let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) else {
                    return Err(StoreError::Row {
                        location: row_location(&path, number),
                        problem: RowError::Malformed("changed during rekey".into()),
                        given: Vec::new(),
                    });
                };
                let row = open(file, number, map).map_err(|problem| StoreError::Row {
                    location: row_location(&path, number),
                    problem,
                    given: Vec::new(),
                })?;
                if nonces.is_empty() {
                    nonces = seal::nonces(nonce_batch).map_err(StoreError::Random)?;
                }
                let nonce = nonces.pop().unwrap_or([0u8; 12]);
                let sealed = new.seal(file, number, row, &nonce);
                serde_json::to_writer(&mut out, &sealed).map_err(|e| io_error("writing", &tmp)(e.into()))?;
                out.write_all(b"\n").map_err(io_error("writing", &tmp))
            })();
            match result {
                Ok(()) => {
                    report.rows += 1;
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failure {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if scanned.total > scanned.complete {
            report.torn_dropped += 1;
        }
        let file_handle = out.into_inner().map_err(|e| io_error("writing", &tmp)(e.into_error()))?;
        file_handle.sync_all().map_err(io_error("syncing", &tmp))?;
        drop(file_handle);
        fs::rename(&tmp, &path).map_err(io_error("renaming over", &path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        report.rewritten += 1;
    }
    if report.rewritten > 0 {
        // Rewritten rows keep their line numbers but not their byte offsets.
        forward::Cursor::forget_offsets(root)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_wire::record::Dropped;

    fn plain(root: &Path) -> FileReader {
        FileReader::new(root, StoreKeys::plaintext())
    }

    fn read_records(root: &Path, id: &str) -> Result<Vec<Map<String, Value>>, StoreError> {
        plain(root).read_records(id)
    }

    fn machine_ids(root: &Path) -> Result<Vec<String>, StoreError> {
        plain(root).machine_ids()
    }

    #[test]
    fn dir_names_round_trip() {
        let long_plain = "m".repeat(128);
        let long_odd = "é/".repeat(42);
        for id in ["mac-01", "a b", ".hidden", "..", "x/../y", "münchen", "a%b", "A.b_c", &long_plain, &long_odd] {
            let dir = dir_name(id);
            assert!(!dir.contains('/') && dir != "." && dir != ".." && !dir.starts_with('.'), "{dir}");
            assert!(dir.len() <= 206, "{} bytes", dir.len());
            assert_eq!(machine_id_of(&dir).as_deref(), Some(id));
        }
        assert_eq!(dir_name("mac-01"), "mac-01");
        assert_eq!(dir_name("Mac-01"), "%4Dac-01");
        assert_eq!(dir_name("a b"), "a%20b");
        assert_eq!(machine_id_of("Mac-01"), None, "the old name is not a current one");
        assert_eq!(machine_id_of("a%2x"), None);
        assert_eq!(machine_id_of("a%62"), None, "not canonical: b would be written plain");
    }

    /// Case folding as a case-insensitive file system applies it (ASCII and Unicode).
    fn folded(name: &str) -> String {
        name.to_lowercase()
    }

    #[test]
    fn ids_differing_only_in_case_get_names_apart_under_case_folding() {
        let ids = ["mac-01", "Mac-01", "MAC-01", "mAc-01", "m%41", "mA", "ma", "Ma", "É", "é", "a.B", "a.b"];
        let long = ["x".repeat(128), "X".repeat(128), format!("{}y", "x".repeat(127)), format!("{}Y", "x".repeat(127))];
        let all: Vec<&str> = ids.iter().copied().chain(long.iter().map(String::as_str)).collect();
        let mut names = std::collections::BTreeMap::new();
        for id in &all {
            let name = dir_name(id);
            assert_eq!(machine_id_of(&name).as_deref(), Some(*id));
            if let Some(other) = names.insert(folded(&name).into_bytes(), *id) {
                panic!("{other:?} and {id:?} share the directory {name:?} under case folding");
            }
        }
        assert_ne!(folded(&dir_name("mac-01")).as_bytes(), folded(&dir_name("Mac-01")).as_bytes());
    }

    #[test]
    fn no_two_ids_share_a_name_under_case_folding() {
        // Every id of up to two bytes from a set rich in case pairs and escape look-alikes.
        let alphabet = ["a", "A", "b", "B", "4", "1", "%", ".", "-", "é", "É", "ß", "~"];
        let mut names = std::collections::BTreeMap::new();
        for a in alphabet {
            for b in alphabet.iter().chain([&""]) {
                let id = format!("{a}{b}");
                if let Some(other) = names.insert(folded(&dir_name(&id)), id.clone()) {
                    panic!("{other:?} and {id:?} collide under case folding");
                }
            }
        }
    }

    #[test]
    fn base32_round_trips() {
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0xff; 128]] {
            assert_eq!(base32_lower_decode(&base32_lower(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi", "RFC 4648 vector, lower case, no padding");
    }

    #[test]
    fn stores_of_older_versions_are_renamed_and_stay_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long_id = "L".repeat(128);
        for id in ["Mac-01", long_id.as_str()] {
            let old = dir.path().join(legacy_dir_name(id));
            fs::create_dir_all(&old).expect("mkdir");
            let lines = [
                r#"{"kind":"record","seq":1,"index":0,"record":{"ts":"2026-11-22T13:00:00.000Z","widget":"ping","kind":"log","level":"info","message":"","data":null}}"#,
                r#"{"kind":"batch","seq":1,"records":1}"#,
            ];
            fs::write(old.join(RECORDS_FILE), lines.join("\n") + "\n").expect("write");
            assert_eq!(read_records(dir.path(), id).expect("read").len(), 2, "readable before any receiver ran");
            assert_eq!(machine_ids(dir.path()).expect("ids").iter().filter(|m| m.as_str() == id).count(), 1);
        }
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        for id in ["Mac-01", long_id.as_str()] {
            assert!(dir.path().join(dir_name(id)).is_dir(), "renamed to the current name");
            assert!(!dir.path().join(legacy_dir_name(id)).exists());
            assert_eq!(read_records(dir.path(), id).expect("read").len(), 2);
            let mut again = batch(1, 1);
            again.machine_id = id.to_string();
            assert_eq!(store.append_batch(&again, None).ok(), Some(BatchOutcome::Duplicate), "seq 1 still known");
        }
        assert_eq!(machine_ids(dir.path()).expect("ids"), vec![long_id.clone(), "Mac-01".to_string()]);
    }

    #[test]
    fn mac_01_and_mac_01_in_upper_case_keep_their_own_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        let mut lower = batch(1, 2);
        lower.machine_id = "mac-01".into();
        let mut upper = batch(1, 3);
        upper.machine_id = "Mac-01".into();
        assert_eq!(store.append_batch(&lower, None).ok(), Some(BatchOutcome::Stored(2)));
        assert_eq!(store.append_batch(&upper, None).ok(), Some(BatchOutcome::Stored(3)));
        let names: Vec<Vec<u8>> = fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| folded(&e.file_name().to_string_lossy()).into_bytes())
            .collect();
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1], "distinct even on a case-insensitive file system");
        assert_eq!(read_records(dir.path(), "mac-01").expect("read").len(), 3);
        assert_eq!(read_records(dir.path(), "Mac-01").expect("read").len(), 4);
    }

    #[test]
    fn a_reused_seq_with_other_records_is_a_conflict_and_stores_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        assert_eq!(store.append_batch(&batch(7, 2), None).ok(), Some(BatchOutcome::Stored(2)));
        assert_eq!(store.append_batch(&batch(7, 2), None).ok(), Some(BatchOutcome::Duplicate));
        let mut resent = batch(7, 2);
        resent.sent_at = "2026-11-23T00:00:00Z".into();
        resent.dropped.count = 5;
        assert_eq!(store.append_batch(&resent, None).ok(), Some(BatchOutcome::Duplicate), "records decide");
        let outcome = store.append_batch(&batch(7, 3), None);
        assert!(matches!(outcome, Ok(BatchOutcome::Conflict { .. })), "{outcome:?}");
        let path = dir.path().join("m").join(RECORDS_FILE);
        assert_eq!(fs::read_to_string(&path).expect("read").lines().count(), 3, "nothing written");
        drop(store);
        // After a restart the digest comes back from the commit line.
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("reopen");
        assert!(matches!(store.append_batch(&batch(7, 1), None), Ok(BatchOutcome::Conflict { .. })));
        assert_eq!(store.append_batch(&batch(7, 2), None).ok(), Some(BatchOutcome::Duplicate));
    }

    #[test]
    fn old_commit_lines_and_old_seqs_are_checked_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine = dir.path().join("m");
        fs::create_dir_all(&machine).expect("mkdir");
        let record = serde_json::to_string(&batch(0, 1).records[0]).expect("json");
        // seq 0: an old commit line without a digest; then more batches than are kept in memory.
        let mut text = format!("{{\"kind\":\"record\",\"seq\":0,\"index\":0,\"record\":{record}}}\n");
        text.push_str("{\"kind\":\"batch\",\"seq\":0,\"records\":1}\n");
        let digest = records_digest(&batch(0, 0).records);
        for seq in 1..=RECENT_DIGESTS as u64 + 10 {
            text.push_str(&format!("{{\"kind\":\"batch\",\"seq\":{seq},\"records\":0,\"digest\":\"{digest}\"}}\n"));
        }
        fs::write(machine.join(RECORDS_FILE), text).expect("write");
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        assert_eq!(store.append_batch(&batch(0, 1), None).ok(), Some(BatchOutcome::Duplicate));
        assert!(matches!(store.append_batch(&batch(0, 2), None), Ok(BatchOutcome::Conflict { .. })));
        assert_eq!(store.append_batch(&batch(3, 0), None).ok(), Some(BatchOutcome::Duplicate));
        assert!(matches!(store.append_batch(&batch(3, 1), None), Ok(BatchOutcome::Conflict { .. })));
    }

    #[test]
    fn digests_kept_in_memory_per_machine_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = |store: &FileStore| -> Vec<usize> {
            lock(&store.machines).values().map(|state| lock(state).recent.len()).collect()
        };
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        for seq in 0..200 {
            assert_eq!(store.append_batch(&batch(seq, 1), None).ok(), Some(BatchOutcome::Stored(1)));
        }
        assert_eq!(count(&store), vec![32], "while running: at most 32 digests per machine");
        drop(store);
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("reopen");
        assert_eq!(count(&store), vec![32], "after recovery: at most 32 digests per machine");
        // The oldest seq is beyond the window: answered from the file, duplicate and conflict.
        assert_eq!(store.append_batch(&batch(0, 1), None).ok(), Some(BatchOutcome::Duplicate));
        assert!(matches!(store.append_batch(&batch(0, 2), None), Ok(BatchOutcome::Conflict { .. })));
        assert_eq!(count(&store), vec![32]);
    }

    #[test]
    fn a_second_store_on_one_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        match FileStore::open(dir.path(), StoreKeys::plaintext()) {
            Err(e @ StoreError::Locked { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&dir.path().display().to_string()), "{text}");
                assert!(text.contains(&format!("process {}", std::process::id())), "{text}");
            }
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn seq_set_merges_ranges() {
        let mut set = SeqSet::default();
        for seq in [5, 3, 4, 10, 0, u64::MAX, 6] {
            set.insert(seq);
        }
        for seq in [0, 3, 4, 5, 6, 10, u64::MAX] {
            assert!(set.contains(seq), "{seq}");
        }
        for seq in [1, 2, 7, 9, 11, u64::MAX - 1] {
            assert!(!set.contains(seq), "{seq}");
        }
        assert_eq!(set.ranges(), 4);
        for seq in 0..1000 {
            set.insert(seq);
        }
        assert_eq!(set.ranges(), 2);
    }

    fn batch(seq: u64, records: usize) -> BatchBody {
        let record = Record {
            ts: "2026-11-22T13:00:00.000Z".into(),
            widget: "ping".into(),
            kind: fleet_wire::record::SampleKind::Log,
            level: fleet_wire::record::Level::Info,
            message: String::new(),
            data: Value::Null,
        };
        BatchBody {
            machine_id: "m".into(),
            seq,
            sent_at: "2026-11-22T13:00:00Z".into(),
            records: vec![record; records],
            dropped: Dropped::default(),
        }
    }

    #[test]
    fn leftover_of_a_failed_append_is_cut_before_the_next_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path(), StoreKeys::plaintext()).expect("open");
        assert_eq!(store.append_batch(&batch(1, 2), None).ok(), Some(BatchOutcome::Stored(2)));
        // What a failed append whose undo also failed leaves behind: lines without a commit, torn.
        let path = dir.path().join("m").join(RECORDS_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"{\"kind\":\"record\",\"seq\":2,\"index\":0}\n{\"kind\":\"rec").expect("write");
        assert_eq!(store.append_batch(&batch(2, 1), None).ok(), Some(BatchOutcome::Stored(1)));
        assert_eq!(store.append_batch(&batch(2, 1), None).ok(), Some(BatchOutcome::Duplicate));
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{text}");
    }

    #[test]
    fn readers_skip_uncommitted_lines_anywhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine = dir.path().join("m");
        fs::create_dir_all(&machine).expect("mkdir");
        let lines = [
            r#"{"kind":"record","seq":1,"index":0}"#,
            r#"{"kind":"record","seq":2,"index":0}"#,
            r#"{"kind":"record","seq":2,"index":1}"#,
            r#"{"kind":"batch","seq":2,"records":2}"#,
            r#"{"kind":"record","seq":3,"index":0}"#,
        ];
        fs::write(machine.join(RECORDS_FILE), lines.join("\n") + "\n").expect("write");
        let read = read_records(dir.path(), "m").expect("read");
        let seqs: Vec<u64> = read.iter().filter_map(|l| l.get("seq").and_then(Value::as_u64)).collect();
        assert_eq!(seqs, [2, 2, 2]);
    }

    #[test]
    fn machine_ids_are_checked() {
        assert!(check_machine_id("mac-01").is_ok());
        assert!(check_machine_id("").is_err());
        assert!(check_machine_id(&"x".repeat(128)).is_ok());
        assert!(check_machine_id(&"x".repeat(129)).is_err());
        assert!(check_machine_id("a\nb").is_err());
    }
}
