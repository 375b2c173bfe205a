//! A small bounded pool of PostgreSQL connections shared by the receiver's worker threads.
//!
//! At most `max` connections are open at once; a thread that finds none idle opens one (if
//! fewer than `max` are open) or waits up to [`WAIT`] for one to come back, then fails (the
//! request is answered 503 and the agent keeps its records). A connection that broke (server
//! restarted, network cut) is dropped when it comes back, and one that sat idle longer than
//! [`IDLE_CHECK`] is pinged before it is handed out, so after an outage the next request
//! reconnects. Nothing is shared between receivers but the database itself.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls, Statement};

/// Longest wait for a free connection.
pub const WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the server when connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle longer than this is checked (`SELECT 1`-like ping) before use.
pub const IDLE_CHECK: Duration = Duration::from_secs(15);
/// Every statement of a receiver's session is cancelled after this long (a stuck lock or an
/// overloaded server becomes an error, not a worker blocked forever).
pub const STATEMENT_TIMEOUT: &str = "60s";

/// A connection and the statements prepared on it (each hot query is parsed and planned once
/// per connection, not once per request).
struct Session {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

struct Idle {
    session: Session,
    since: Instant,
}

struct State {
    idle: Vec<Idle>,
    open: usize,
}

/// The pool (see the module docs).
pub struct Pool {
    config: Config,
    max: usize,
    state: Mutex<State>,
    returned: Condvar,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum PoolError {
    /// Connecting (or setting up the session) failed.
    Connect(postgres::Error),
    /// Every connection stayed busy for [`WAIT`].
    Busy {
        /// How many are open.
        open: usize,
    },
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(e) => {
                let text = super::error_text(e);
                f.write_str(&text)?;
                if text.contains("password missing") {
                    f.write_str(" (give the role's password with --store-password-file FILE or FLEET_STORE_PASSWORD)")?;
                }
                Ok(())
            }
            PoolError::Busy { open } => {
                write!(f, "all {open} database connections stayed busy for {} s", WAIT.as_secs())
            }
        }
    }
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is two plain fields, consistent at every point a panic could happen.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// A pool of at most `max` (at least 1) connections made from `config`. Connects lazily.
    pub fn new(mut config: Config, max: usize) -> Pool {
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("fleet-agent receive");
        Pool {
            config,
            max: max.max(1),
            state: Mutex::new(State { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
        }
    }

    /// A connection, for as long as the guard lives.
    pub fn get(&self) -> Result<Conn<'_>, PoolError> {
        let deadline = Instant::now() + WAIT;
        let mut state = lock(&self.state);
        loop {
            if let Some(idle) = state.idle.pop() {
                drop(state);
                let mut session = idle.session;
                if idle.since.elapsed() < IDLE_CHECK || session.client.is_valid(CONNECT_TIMEOUT).is_ok() {
                    return Ok(Conn { pool: self, session: Some(session) });
                }
                // Broken while idle (server restarted): forget it and try again.
                drop(session);
                state = lock(&self.state);
                state.open -= 1;
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(client) => Ok(Conn { pool: self, session: Some(Session { client, prepared: HashMap::new() }) }),
                    Err(e) => {
                        lock(&self.state).open -= 1;
                        self.returned.notify_one();
                        Err(PoolError::Connect(e))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Busy { open: state.open });
            }
            state =
                self.returned.wait_timeout(state, deadline - now).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// A new connection that does not come back to the pool (its owner closes it).
    pub fn take(&self) -> Result<Client, PoolError> {
        self.connect().map_err(PoolError::Connect)
    }

    fn connect(&self) -> Result<Client, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))?;
        Ok(client)
    }

    fn put_back(&self, session: Session) {
        let mut state = lock(&self.state);
        if session.client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(Idle { session, since: Instant::now() });
        }
        drop(state);
        self.returned.notify_one();
    }
}

/// A pooled connection; goes back to the pool when dropped (or is closed if it broke).
pub struct Conn<'a> {
    pool: &'a Pool,
    /// Some from construction until drop.
    session: Option<Session>,
}

impl Conn<'_> {
    fn session(&mut self) -> &mut Session {
        // `discard` takes the session only on the way out: nothing uses the guard after it.
        self.session.as_mut().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }

    /// The client.
    pub fn client(&mut self) -> &mut Client {
        &mut self.session().client
    }

    /// Close this connection instead of returning it to the pool (it broke).
    pub fn discard(&mut self) {
        if self.session.take().is_some() {
            lock(&self.pool.state).open -= 1;
            self.pool.returned.notify_one();
        }
    }

    /// `sql` prepared on this connection (once; later calls reuse it).
    pub fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        let session = self.session();
        if let Some(statement) = session.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = session.client.prepare(sql)?;
        session.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.put_back(session);
        }
    }
}
