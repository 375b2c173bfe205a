//! Reading small kernel files (`/proc`, `/sys`) into a reused buffer: one `open`, a few
//! `read`s and a `close`, no `fstat` and no allocation once the buffer has grown. The lean
//! Linux readers (processes, network, disk) call this every cycle; their parsers are pure
//! functions of the text.

use std::io::Read;
use std::path::Path;

/// Replace `buf` with the content of `path` (lossy UTF-8 is not needed: kernel files are
/// ASCII; invalid bytes make the read fail with `InvalidData`).
pub fn read_into(path: impl AsRef<Path>, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    let mut file = std::fs::File::open(path)?;
    let mut chunk = [0u8; 4096];
    let mut bytes = std::mem::take(buf).into_bytes();
    let result = loop {
        match file.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
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
        assert!(read_into(dir.join("missing"), &mut buf).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
