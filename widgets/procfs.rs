//! Reading small kernel files (`/proc`, `/sys`) into a reused buffer, two ways:
//!
//! - [`read_into`]: one `open`, a few `read`s and a `close`, no `fstat` and no allocation once
//!   the buffer has grown. For files read rarely (`/proc/cpuinfo`, `/proc/self/mountinfo`,
//!   hourly) and for files whose path changes (`/proc/PID/stat`).
//! - [`ProcFile`] (Linux): a file every cycle reads at the same path (`/proc/stat`,
//!   `/proc/meminfo`, `/proc/net/dev`, …), opened once and read again with `pread` from offset
//!   0 each cycle: no `open` (path walk, `d_revalidate`, `seq_file` set-up) and no `close` per
//!   cycle, which cost more than the read itself (issue 16's profile of the `system` set: `open`
//!   13 % of the agent's CPU, `close` 3 %, the reads 9 %).
//!
//! Why `pread` at offset 0 gives fresh content: every `/proc` file read here is a `seq_file`,
//! which drops what it generated and starts again from its first record when a read asks for
//! offset 0 (`seq_read_iter` in `fs/seq_file.c`); `sysfs` attributes are generated again on a
//! read at offset 0 too. The callers' parsers are pure functions of the text.
//!
//! Files are opened with `rustix` (a direct system call on Linux), not `std::fs::File`:
//! musl's `open` follows every `O_CLOEXEC` open with an `fcntl(F_SETFD)` for kernels older
//! than 2.6.23, one wasted system call per file, and the static build ships on musl.

use std::path::Path;

use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{Mode, OFlags};

/// Bytes asked of one read (a stack buffer, copied into the caller's buffer, which so keeps
/// the size of the content rather than of the reads).
const READ_CHUNK: usize = 4096;

/// Replace `buf` with the content of `path` (lossy UTF-8 is not needed: kernel files are
/// ASCII; invalid bytes make the read fail with `InvalidData`).
pub fn read_into(path: impl AsRef<Path>, buf: &mut String) -> std::io::Result<()> {
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    let result = open(path.as_ref()).and_then(|file| fill(file.as_fd(), &mut bytes, Read::Sequential));
    into_text(bytes, buf, result)
}

/// `open(path, O_RDONLY | O_CLOEXEC)`.
fn open(path: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?)
}

/// How [`fill`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `read` from the file position (a file just opened: position 0).
    Sequential,
    /// `pread` from offset 0, then from the end of what was read, whatever the file position.
    #[cfg(target_os = "linux")]
    FromStart,
}

/// Append the whole of `fd` to `bytes` (empty on entry): read until a read returns 0 bytes, so
/// a file larger than last time is read whole.
fn fill(fd: BorrowedFd<'_>, bytes: &mut Vec<u8>, how: Read) -> std::io::Result<()> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let read = match how {
            Read::Sequential => rustix::io::read(fd, &mut chunk),
            #[cfg(target_os = "linux")]
            Read::FromStart => rustix::io::pread(fd, &mut chunk, bytes.len() as u64),
        };
        match read {
            Ok(0) => return Ok(()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Put `bytes` into `buf` as text when `result` is `Ok` and they are UTF-8; otherwise leave
/// `buf` empty (keeping the allocation for the next read) and return the error (`InvalidData`
/// for bytes that are not UTF-8).
fn into_text(bytes: Vec<u8>, buf: &mut String, result: std::io::Result<()>) -> std::io::Result<()> {
    match String::from_utf8(bytes) {
        Ok(text) => {
            *buf = text;
            if result.is_err() {
                buf.clear();
            }
            result
        }
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.clear();
            // Keep the allocation for the next read.
            *buf = String::from_utf8(bytes).unwrap_or_default();
            result?;
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
        }
    }
}

/// A kernel file read every cycle at a fixed path, kept open between reads: opened (`O_RDONLY
/// | O_CLOEXEC`) at the first [`ProcFile::read_into`], then read again each time with `pread`
/// from offset 0, which makes `/proc` and `sysfs` files generate their content afresh. One
/// descriptor per instance, held until the instance is dropped (a widget holds one per file it
/// reads every cycle; a rebuilt widget closes its files when the old one is dropped).
///
/// Errors and reopening: when reading the kept descriptor fails (any error but `EINTR`, which is
/// retried: e.g. `ENODEV` from a `sysfs` file whose device went away, `ESRCH` from a
/// `/proc/PID/…` file whose process exited), the descriptor is closed and the path opened and
/// read once more; if that open or read fails too, its error is returned, as [`read_into`]
/// returns it (the same `io::Error`, the same `InvalidData` for bytes that are not UTF-8), and
/// nothing is kept: the next read starts with an open. Text that is not UTF-8 is the content's
/// fault, not the descriptor's: it fails the read and the descriptor stays.
///
/// A path replaced or removed while its file is kept (possible for a regular file, not for
/// `/proc` files, which the kernel never replaces) is not noticed: reads go on returning the
/// file that was opened, until reading it fails. Kernel files whose object vanishes fail their
/// reads, which is what the reopen is for.
#[cfg(target_os = "linux")]
pub struct ProcFile {
    path: std::path::PathBuf,
    file: Option<rustix::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl ProcFile {
    /// A reader of `path`; nothing is opened until the first read.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        ProcFile { path: path.into(), file: None }
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace `buf` with the current content of the file (see the type's documentation for
    /// errors and reopening).
    pub fn read_into(&mut self, buf: &mut String) -> std::io::Result<()> {
        let mut bytes = std::mem::take(buf).into_bytes();
        bytes.clear();
        let kept = match &self.file {
            Some(file) => fill(file.as_fd(), &mut bytes, Read::FromStart).is_ok(),
            None => false,
        };
        let result = if kept {
            Ok(())
        } else {
            // Never read, or the kept descriptor failed: close it and open the path once more.
            self.file = None;
            bytes.clear();
            open(&self.path).and_then(|file| {
                fill(file.as_fd(), &mut bytes, Read::FromStart)?;
                self.file = Some(file);
                Ok(())
            })
        };
        into_text(bytes, buf, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test process under the system's temporary directory.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fleet-procfs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn reads_and_reuses_the_buffer() {
        let dir = scratch("plain");
        let path = dir.join("f");
        std::fs::write(&path, "x".repeat(10_000)).expect("write");
        let mut buf = String::new();
        read_into(&path, &mut buf).expect("read");
        assert_eq!(buf.len(), 10_000);
        std::fs::write(&path, "short").expect("write");
        read_into(&path, &mut buf).expect("read");
        assert_eq!(buf, "short");
        let missing = read_into(dir.join("missing"), &mut buf).expect_err("no such file");
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound, "the OS error survives: {missing}");
        std::fs::write(&path, [b'a', 0xff, b'\n']).expect("write");
        let bad = read_into(&path, &mut buf).expect_err("not UTF-8");
        assert_eq!((bad.kind(), buf.as_str()), (std::io::ErrorKind::InvalidData, ""));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    mod kept {
        use std::os::unix::fs::MetadataExt;

        use rustix::fd::AsRawFd;

        use super::super::*;
        use super::scratch;

        /// The descriptor `file` holds, if any.
        fn raw(file: &ProcFile) -> Option<i32> {
            file.file.as_ref().map(|fd| fd.as_raw_fd())
        }

        /// The inode `file` holds open.
        fn inode(file: &ProcFile) -> Option<u64> {
            file.file.as_ref().and_then(|fd| rustix::fs::fstat(fd).ok()).map(|st| st.st_ino)
        }

        #[test]
        fn one_descriptor_reads_the_file_whole_as_it_shrinks_and_grows() {
            let dir = scratch("kept");
            let path = dir.join("f");
            let mut file = ProcFile::new(&path);
            let mut buf = String::new();
            assert_eq!(raw(&file), None, "nothing is opened before the first read");
            let missing = file.read_into(&mut buf).expect_err("no file yet");
            assert_eq!((missing.kind(), raw(&file)), (std::io::ErrorKind::NotFound, None), "{missing}");
            std::fs::write(&path, "x".repeat(10_000)).expect("write");
            file.read_into(&mut buf).expect("read");
            assert_eq!(buf.len(), 10_000);
            let fd = raw(&file);
            assert!(fd.is_some(), "kept after a read");
            // Truncated and rewritten in place (same inode): shorter, then far longer than the
            // buffer has room for (the `/proc/net/dev` of a host gaining interfaces).
            std::fs::write(&path, "short").expect("write");
            file.read_into(&mut buf).expect("read");
            assert_eq!(buf, "short");
            let long: String = (0..2_000).map(|i| format!("line {i}\n")).collect();
            std::fs::write(&path, &long).expect("write");
            file.read_into(&mut buf).expect("read");
            assert_eq!(buf, long, "read whole");
            std::fs::write(&path, "").expect("write");
            file.read_into(&mut buf).expect("read");
            assert_eq!(buf, "");
            assert_eq!(raw(&file), fd, "the same descriptor all along");
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn a_replaced_or_removed_path_keeps_reading_the_file_that_was_opened() {
            let dir = scratch("replaced");
            let path = dir.join("f");
            std::fs::write(&path, "old").expect("write");
            let mut file = ProcFile::new(&path);
            let mut buf = String::new();
            file.read_into(&mut buf).expect("read");
            let opened = inode(&file);
            std::fs::write(dir.join("new"), "new").expect("write");
            std::fs::rename(dir.join("new"), &path).expect("rename over the path");
            file.read_into(&mut buf).expect("read");
            assert_eq!((buf.as_str(), inode(&file)), ("old", opened), "reads succeed: the old file is kept");
            std::fs::remove_file(&path).expect("rm");
            file.read_into(&mut buf).expect("read");
            assert_eq!(buf, "old", "an unlinked file stays readable through its descriptor");
            // A new reader (a rebuilt widget) opens what the path names now.
            std::fs::write(&path, "newest").expect("write");
            let mut fresh = ProcFile::new(&path);
            fresh.read_into(&mut buf).expect("read");
            assert_eq!(buf, "newest");
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn a_failing_descriptor_is_closed_and_the_path_opened_once_more() {
            let dir = scratch("stale");
            let path = dir.join("f");
            std::fs::write(&path, "content").expect("write");
            let mut file = ProcFile::new(&path);
            let mut buf = String::new();
            // A descriptor whose reads fail (`EISDIR`), as a vanished kernel object's do.
            let stale = || Some(open(&dir).expect("open the directory"));
            file.file = stale();
            file.read_into(&mut buf).expect("reopened");
            assert_eq!(buf, "content");
            assert_eq!(inode(&file), std::fs::metadata(&path).ok().map(|m| m.ino()), "the path's file is kept now");
            // The path is gone as well: the reopen's error is returned and nothing is kept.
            file.file = stale();
            std::fs::remove_file(&path).expect("rm");
            let error = file.read_into(&mut buf).expect_err("gone");
            assert_eq!((error.kind(), buf.as_str(), raw(&file)), (std::io::ErrorKind::NotFound, "", None), "{error}");
            // A path whose fresh descriptor fails its read too: that error, nothing kept.
            let error = ProcFile::new(&dir).read_into(&mut buf).expect_err("a directory");
            assert_eq!(error.raw_os_error(), Some(rustix::io::Errno::ISDIR.raw_os_error()), "{error}");
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn text_that_is_not_utf8_fails_with_invalid_data_and_keeps_the_descriptor() {
            let dir = scratch("utf8");
            let path = dir.join("f");
            std::fs::write(&path, [b'a', 0xff, b'\n']).expect("write");
            let mut file = ProcFile::new(&path);
            let mut buf = "stale".to_string();
            let bad = file.read_into(&mut buf).expect_err("not UTF-8");
            assert_eq!((bad.kind(), buf.as_str()), (std::io::ErrorKind::InvalidData, ""));
            let fd = raw(&file);
            assert!(fd.is_some());
            std::fs::write(&path, "fine").expect("write");
            file.read_into(&mut buf).expect("read");
            assert_eq!((buf.as_str(), raw(&file)), ("fine", fd));
            let _ = std::fs::remove_dir_all(&dir);
        }

        /// Every file a widget keeps open answers `pread` from offset 0 with fresh, parseable
        /// content, twice through the same descriptor.
        #[test]
        fn proc_stat_and_meminfo_parse_on_successive_reads_of_one_descriptor() {
            let mut buf = String::new();
            let mut stat = ProcFile::new("/proc/stat");
            stat.read_into(&mut buf).expect("/proc/stat");
            let first = crate::cpu::parse::parse_proc_stat_cpus(&buf).expect("parses");
            let fd = raw(&stat);
            // Some CPU time passes (this thread's own), so the second reading must be newer.
            let spin = std::time::Instant::now();
            while spin.elapsed() < std::time::Duration::from_millis(30) {
                std::hint::spin_loop();
            }
            stat.read_into(&mut buf).expect("/proc/stat again");
            let second = crate::cpu::parse::parse_proc_stat_cpus(&buf).expect("parses again");
            assert_eq!(raw(&stat), fd, "read again through the kept descriptor");
            assert_eq!(first.cores.len(), second.cores.len());
            assert!(second.total.total() > first.total.total(), "fresh content, not the first reading again");
            let mut meminfo = ProcFile::new("/proc/meminfo");
            for _ in 0..2 {
                meminfo.read_into(&mut buf).expect("/proc/meminfo");
                let info = crate::memory::parse::parse_meminfo(&buf).expect("parses");
                assert!(info.total > 0 && info.available <= info.total);
            }
            let mut loadavg = ProcFile::new("/proc/loadavg");
            for _ in 0..2 {
                loadavg.read_into(&mut buf).expect("/proc/loadavg");
                crate::cpu::parse::parse_loadavg(&buf).expect("parses");
            }
            let mut dev = ProcFile::new("/proc/net/dev");
            for _ in 0..2 {
                dev.read_into(&mut buf).expect("/proc/net/dev");
                crate::network::parse::parse_proc_net_dev(&buf).expect("parses");
            }
            let mut diskstats = ProcFile::new("/proc/diskstats");
            for _ in 0..2 {
                diskstats.read_into(&mut buf).expect("/proc/diskstats");
                crate::disk::parse::parse_diskstats(&buf, |_| true).expect("parses");
            }
            for path in crate::network::SOCKSTAT_FILES {
                let mut sockstat = ProcFile::new(path);
                for _ in 0..2 {
                    // `sockstat6` is missing where IPv6 is disabled.
                    if sockstat.read_into(&mut buf).is_ok() {
                        crate::network::parse::parse_sockstat(&buf).expect("parses");
                    }
                }
            }
        }

        /// A kernel file whose object goes away (here the process of `/proc/PID/stat`) fails
        /// its kept read; the reopen fails too, with the error an open gives.
        #[test]
        fn a_vanished_kernel_file_fails_and_is_not_kept() {
            let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
            let mut file = ProcFile::new(format!("/proc/{}/stat", child.id()));
            let mut buf = String::new();
            file.read_into(&mut buf).expect("the process is there");
            assert!(buf.contains("(sleep)"), "{buf}");
            let _ = child.kill();
            let _ = child.wait();
            let error = file.read_into(&mut buf).expect_err("the process is gone");
            assert_eq!((error.kind(), buf.as_str(), raw(&file)), (std::io::ErrorKind::NotFound, "", None), "{error}");
        }

        /// `/proc/net/dev` of a network namespace made for the test gains two interfaces (a
        /// veth pair) and loses them while one descriptor reads it: every read is whole and
        /// current. Needs root (`unshare -n`, `ip`); says so and returns otherwise.
        #[test]
        fn proc_net_dev_is_read_whole_as_interfaces_come_and_go() {
            if !rustix::process::geteuid().is_root() {
                eprintln!("skipped: creating a network namespace needs root");
                return;
            }
            let Ok(mut holder) = std::process::Command::new("unshare").args(["-n", "sleep", "30"]).spawn() else {
                eprintln!("skipped: no unshare");
                return;
            };
            let pid = holder.id();
            let ip = |args: &[&str]| {
                std::process::Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-n", "ip"])
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            // `unshare` is in its new namespace once it runs `sleep`; where none can be made (a
            // container without CAP_SYS_ADMIN) it exits.
            let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let start = std::time::Instant::now();
            while netns(&pid.to_string()) == netns("self") {
                if holder.try_wait().ok().flatten().is_some() || start.elapsed() > std::time::Duration::from_secs(5) {
                    let _ = holder.kill();
                    let _ = holder.wait();
                    eprintln!("skipped: unshare -n made no network namespace");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let mut file = ProcFile::new(format!("/proc/{pid}/net/dev"));
            let mut buf = String::new();
            let interfaces = |file: &mut ProcFile, buf: &mut String| {
                file.read_into(buf).expect("read");
                crate::network::parse::parse_proc_net_dev(buf).expect("parses").interfaces
            };
            assert_eq!(interfaces(&mut file, &mut buf), 1, "a new namespace has `lo` alone:\n{buf}");
            let fd = raw(&file);
            let added = ip(&["link", "add", "fleet0", "type", "veth", "peer", "name", "fleet1"]);
            let grown = interfaces(&mut file, &mut buf);
            let grown_text = buf.clone();
            let removed = ip(&["link", "del", "fleet0"]);
            let shrunk = interfaces(&mut file, &mut buf);
            let _ = holder.kill();
            let _ = holder.wait();
            if !added {
                eprintln!("skipped: no veth interfaces here");
                return;
            }
            assert_eq!(grown, 3, "{grown_text}");
            assert!(grown_text.contains("fleet0:") && grown_text.contains("fleet1:"), "{grown_text}");
            assert!(removed);
            assert_eq!((shrunk, raw(&file)), (1, fd), "{buf}");
        }
    }
}
