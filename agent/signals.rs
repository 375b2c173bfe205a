//! Signals for the service loop: SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 collects now.
//!
//! Handlers only set an atomic flag and write a byte to a self-pipe (both async-signal-safe,
//! done by `signal-hook`); the loop sleeps by reading the pipe with a timeout, so a signal
//! wakes it at once and an idle agent makes no wake-ups between cycles.
//!
//! Signal dispositions are process-wide, and so are the handlers: the first
//! [`Signals::install`] registers them, later calls return handles on the same flags. `run`
//! installs them first thing (before the config is read and the spool opened), so a SIGTERM
//! that arrives while the agent starts is kept and stops it cleanly once the loop begins, and
//! a SIGHUP (`systemctl reload` right after a start) never kills it. Only the moments before
//! `main` runs (the dynamic loader) still have the default actions.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// The flags set by signal handlers and the pipe that wakes the loop.
pub struct Signals {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    collect_now: Arc<AtomicBool>,
    wake: UnixStream,
}

/// The handlers of this process, once installed.
static INSTALLED: Mutex<Option<Signals>> = Mutex::new(None);

impl Signals {
    /// Install the handlers, or (when this process already has) return a handle on the same
    /// flags: a signal that arrived before this call is still pending here.
    pub fn install() -> std::io::Result<Self> {
        let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(signals) = installed.as_ref() {
            return signals.handle();
        }
        let (wake, notify) = UnixStream::pair()?;
        let terminate = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        let collect_now = Arc::new(AtomicBool::new(false));
        for (signal, flag) in [(SIGTERM, &terminate), (SIGINT, &terminate), (SIGHUP, &reload), (SIGUSR1, &collect_now)]
        {
            signal_hook::flag::register(signal, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(signal, notify.try_clone()?)?;
        }
        let signals = Signals { terminate, reload, collect_now, wake };
        let handle = signals.handle()?;
        *installed = Some(signals);
        Ok(handle)
    }

    /// Another handle on the same flags and wake-up pipe.
    fn handle(&self) -> std::io::Result<Self> {
        Ok(Signals {
            terminate: Arc::clone(&self.terminate),
            reload: Arc::clone(&self.reload),
            collect_now: Arc::clone(&self.collect_now),
            wake: self.wake.try_clone()?,
        })
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
