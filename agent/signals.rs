//! Signals for the service loop: SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 collects now.
//!
//! Handlers only set an atomic flag and write a byte to a self-pipe (both async-signal-safe,
//! done by `signal-hook`); the loop sleeps by reading the pipe with a timeout, so a signal
//! wakes it at once and an idle agent makes no wake-ups between cycles.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// The flags set by signal handlers and the pipe that wakes the loop.
pub struct Signals {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    collect_now: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> std::io::Result<Self> {
        let (wake, notify) = UnixStream::pair()?;
        let terminate = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        let collect_now = Arc::new(AtomicBool::new(false));
        for (signal, flag) in [(SIGTERM, &terminate), (SIGINT, &terminate), (SIGHUP, &reload), (SIGUSR1, &collect_now)]
        {
            signal_hook::flag::register(signal, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(signal, notify.try_clone()?)?;
        }
        Ok(Signals { terminate, reload, collect_now, wake })
    }

    /// Sleep up to `timeout`, returning early when a signal arrives.
    pub fn sleep(&mut self, timeout: Duration) {
        if self.pending() {
            return;
        }
        let timeout = timeout.max(Duration::from_millis(1));
        if self.wake.set_read_timeout(Some(timeout)).is_err() {
            std::thread::sleep(timeout);
            return;
        }
        let mut buf = [0u8; 64];
        let _ = self.wake.read(&mut buf);
    }

    fn pending(&self) -> bool {
        self.terminate.load(Ordering::SeqCst)
            || self.reload.load(Ordering::SeqCst)
            || self.collect_now.load(Ordering::SeqCst)
    }

    /// True once SIGTERM or SIGINT has arrived (stays true).
    pub fn terminating(&self) -> bool {
        self.terminate.load(Ordering::SeqCst)
    }

    /// True if SIGHUP arrived since the last call.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    /// True if SIGUSR1 arrived since the last call.
    pub fn take_collect_now(&self) -> bool {
        self.collect_now.swap(false, Ordering::SeqCst)
    }
}
