//! Reading small kernel files (`/proc`, `/sys`) into a reused buffer: one `open`, a few
//! `read`s and a `close`, no `fstat` and no allocation once the buffer has grown. The lean
//! Linux readers (cpu, memory, processes, network, disk) call this every cycle; their parsers
//! are pure functions of the text.
//!
//! The file is opened with `rustix` (a direct system call on Linux), not `std::fs::File`:
//! musl's `open` follows every `O_CLOEXEC` open with an `fcntl(F_SETFD)` for kernels older
//! than 2.6.23, one wasted system call per file, and the static build ships on musl.

use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Replace `buf` with the content of `path` (lossy UTF-8 is not needed: kernel files are
/// ASCII; invalid bytes make the read fail with `InvalidData`).
pub fn read_into(path: impl AsRef<Path>, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    let file = rustix::fs::open(path.as_ref(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut chunk = [0u8; 4096];
    let mut bytes = std::mem::take(buf).into_bytes();
    let result = loop {
        match rustix::io::read(&file, &mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => break Err(std::io::Error::from(e)),
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => *buf = text,
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.clear();
            // Keep the allocation for the next read.
            *buf = String::from_utf8(bytes).unwrap_or_default();
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reuses_the_buffer() {
        let dir = std::env::temp_dir().join(format!("fleet-procfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
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
}
