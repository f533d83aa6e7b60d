//! The event history: every event the daemon sees, in a SQLite database,
//! indexed by time, port, executable and pid so that "what listened on
//! 8080 last Tuesday, and which binary was it?" is an index lookup over a
//! month of events. Rows older than the retention are deleted while the
//! daemon runs.
//!
//! The daemon writes through a dedicated thread (SQLite calls block), in
//! one transaction per batch of events.

use crate::metrics::{Metrics, OutputLabels};
use anyhow::Context;
use rusqlite::{params_from_iter, Connection, OpenFlags};
use sockfilter_model::{Event, EventKind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where `sockfilter history` looks without `--db`.
pub const DEFAULT_PATH: &str = "/var/lib/sockfilter/history.db";

/// Events waiting for the writer thread before new ones are dropped (and
/// counted).
const QUEUE: usize = 64 * 1024;
/// How often rows past the retention are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    pid INTEGER,
    comm TEXT,
    exe TEXT,
    local_port INTEGER NOT NULL,
    remote_port INTEGER,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(time_us);
CREATE INDEX IF NOT EXISTS events_local_port ON events(local_port, time_us);
CREATE INDEX IF NOT EXISTS events_remote_port ON events(remote_port, time_us);
CREATE INDEX IF NOT EXISTS events_exe ON events(exe, time_us);
CREATE INDEX IF NOT EXISTS events_pid ON events(pid, time_us);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, time_us);
";

/// Microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The `kind` of a row that records events the kernel dropped (the
/// contract's `{"event":"lost","count":N}`), so that a gap in the history
/// shows in `sockfilter history`.
pub const LOST_KIND: &str = "lost";

/// One row to insert.
struct Row {
    time_us: i64,
    kind: &'static str,
    pid: Option<u32>,
    comm: Option<String>,
    exe: Option<String>,
    local_port: u16,
    remote_port: Option<u16>,
    json: String,
}

impl Row {
    /// The row of a lost record: no process, no ports (0, the column being
    /// NOT NULL), so only its kind and time select it.
    fn lost(time: SystemTime, json: &str) -> Row {
        Row {
            time_us: micros(time),
            kind: LOST_KIND,
            pid: None,
            comm: None,
            exe: None,
            local_port: 0,
            remote_port: None,
            json: json.to_string(),
        }
    }
}

enum Message {
    Row(Row),
    /// Delete expired rows now (SIGHUP), with this retention.
    Retention(Duration),
}

/// The writing side, owned by the daemon's loop.
pub struct HistoryWriter {
    path: PathBuf,
    tx: Option<SyncSender<Message>>,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: Metrics,
    label: OutputLabels,
    dropped_reported: Instant,
}

fn open(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display()))?;
    }
    // SQLite would create the database (and its -wal and -shm files, which
    // take the database's mode) world-readable under the usual umask.
    crate::private_file::prepare(path)
        .with_context(|| format!("creating the history database {}", path.display()))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        crate::private_file::restrict_existing(Path::new(&side))
            .with_context(|| format!("restricting {}", Path::new(&side).display()))?;
    }
    let db = Connection::open(path)
        .with_context(|| format!("opening the history database {}", path.display()))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(SCHEMA)
        .with_context(|| format!("creating the tables of {}", path.display()))?;
    Ok(db)
}

/// Deletes rows older than `retention`; returns how many.
fn expire(db: &Connection, retention: Duration) -> rusqlite::Result<usize> {
    let cutoff = micros(SystemTime::now()) - retention.as_micros() as i64;
    db.execute("DELETE FROM events WHERE time_us < ?1", [cutoff])
}

impl HistoryWriter {
    /// Opens (creating) the database, deletes expired rows and starts the
    /// writer thread.
    pub fn open(path: &Path, retention: Duration, metrics: &Metrics) -> anyhow::Result<Self> {
        let db = open(path)?;
        expire(&db, retention).context("deleting expired history")?;
        let (tx, rx) = sync_channel(QUEUE);
        let label = Metrics::output("history");
        metrics.init_output("history");
        let thread_metrics = metrics.clone();
        let thread_label = label.clone();
        let thread = std::thread::Builder::new()
            .name("sockfilter-history".into())
            .spawn(move || write_loop(db, rx, retention, thread_metrics, thread_label))?;
        Ok(HistoryWriter {
            path: path.to_owned(),
            tx: Some(tx),
            thread: Some(thread),
            metrics: metrics.clone(),
            label,
            dropped_reported: Instant::now() - Duration::from_secs(60),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one event (`json`: its contract JSON with `host`).
    pub fn record(&mut self, e: &Event, json: &str) {
        let owner = e.owner.as_ref();
        let row = Row {
            time_us: micros(e.time),
            kind: e.kind.as_str(),
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.clone()),
            exe: owner.and_then(|o| o.exe.clone()),
            local_port: e.local.port,
            remote_port: e.remote.map(|r| r.port),
            json: json.to_string(),
        };
        self.queue(row);
    }

    fn queue(&mut self, row: Row) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Message::Row(row)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let dropped = self.metrics.output_dropped.get_or_create(&self.label);
                dropped.inc();
                if self.dropped_reported.elapsed() >= Duration::from_secs(10) {
                    self.dropped_reported = Instant::now();
                    eprintln!(
                        "sockfilter: history database {} cannot keep up: events not recorded, {} so far",
                        self.path.display(),
                        dropped.get()
                    );
                }
            }
        }
    }

    /// Queues the record of `json` (the contract's lost record, with
    /// `host` and `time`): events the kernel dropped at `time`.
    pub fn record_lost(&mut self, time: SystemTime, json: &str) {
        self.queue(Row::lost(time, json));
    }

    /// Deletes expired rows now, with a (possibly new) retention.
    pub fn expire_now(&self, retention: Duration) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Retention(retention));
        }
    }
}

impl Drop for HistoryWriter {
    /// Writes what is queued, then closes the database.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(
    mut db: Connection,
    rx: Receiver<Message>,
    mut retention: Duration,
    metrics: Metrics,
    label: OutputLabels,
) {
    let mut last_expire = Instant::now();
    let mut batch = Vec::with_capacity(1024);
    loop {
        let first = match rx.recv_timeout(RETENTION_EVERY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.extend(first);
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut expire_asked = false;
        let rows: Vec<Row> = batch
            .drain(..)
            .filter_map(|m| match m {
                Message::Row(r) => Some(r),
                Message::Retention(r) => {
                    retention = r;
                    expire_asked = true;
                    None
                }
            })
            .collect();
        if let Err(e) = insert(&mut db, &rows) {
            metrics
                .output_errors
                .get_or_create(&label)
                .inc_by(rows.len() as u64);
            eprintln!(
                "sockfilter: history: {} events not recorded: {e}",
                rows.len()
            );
        }
        if expire_asked || last_expire.elapsed() >= RETENTION_EVERY {
            last_expire = Instant::now();
            if let Err(e) = expire(&db, retention) {
                eprintln!("sockfilter: history: deleting expired rows: {e}");
            }
        }
    }
}

fn insert(db: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tx = db.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO events (time_us, kind, pid, comm, exe, local_port, remote_port, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in rows {
            stmt.execute(rusqlite::params![
                r.time_us,
                r.kind,
                r.pid,
                r.comm,
                r.exe,
                r.local_port,
                r.remote_port,
                r.json
            ])?;
        }
    }
    tx.commit()
}

/// What `sockfilter history` asks for; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Events at or after this time.
    pub since: Option<SystemTime>,
    /// Events before this time.
    pub until: Option<SystemTime>,
    /// Only these kinds.
    pub kinds: Vec<EventKind>,
    /// Local or remote port.
    pub port: Option<u16>,
    /// Process id.
    pub pid: Option<u32>,
    /// Executable path.
    pub exe: Option<String>,
    /// Command name.
    pub comm: Option<String>,
}

/// The SELECT for `q` and its arguments.
fn select(q: &Query) -> (String, Vec<rusqlite::types::Value>) {
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    // `?N` placeholders, numbered as the arguments are pushed.
    let mut arg = |template: &str, v: rusqlite::types::Value| {
        args.push(v);
        template.replace('?', &format!("?{}", args.len()))
    };
    let mut clauses: Vec<String> = Vec::new();
    if let Some(t) = q.since {
        clauses.push(arg("time_us >= ?", micros(t).into()));
    }
    if let Some(t) = q.until {
        clauses.push(arg("time_us < ?", micros(t).into()));
    }
    let mut filters: Vec<String> = Vec::new();
    if let Some(p) = q.port {
        // Two indexed lookups (SQLite's OR optimisation), not a scan.
        filters.push(arg(
            "(local_port = ? OR remote_port = ?)",
            i64::from(p).into(),
        ));
    }
    if let Some(pid) = q.pid {
        filters.push(arg("pid = ?", i64::from(pid).into()));
    }
    if let Some(exe) = &q.exe {
        filters.push(arg("exe = ?", exe.clone().into()));
    }
    if let Some(comm) = &q.comm {
        filters.push(arg("comm = ?", comm.clone().into()));
    }
    if !q.kinds.is_empty() {
        let list: Vec<String> = q
            .kinds
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        filters.push(format!("kind IN ({})", list.join(",")));
    }
    // Lost records pass every filter but time: the events they stand for
    // may have been of any port, process or kind.
    if !filters.is_empty() {
        clauses.push(format!(
            "(kind = '{LOST_KIND}' OR ({}))",
            filters.join(" AND ")
        ));
    }
    let sql = format!(
        "SELECT json FROM events{} ORDER BY time_us, id",
        if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        }
    );
    (sql, args)
}

/// Reads the events matching `q`, oldest first, as their stored JSON
/// (the contract with `host`), calling `each` for every one.
pub fn query(db_path: &Path, q: &Query, mut each: impl FnMut(&str)) -> anyhow::Result<()> {
    let db = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening the history database {}", db_path.display()))?;
    let (sql, args) = select(q);
    let mut stmt = db
        .prepare(&sql)
        .with_context(|| format!("{}: not a sockfilter history database", db_path.display()))?;
    let mut rows = stmt.query(params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        let json: String = row.get(0)?;
        each(&json);
    }
    Ok(())
}

/// `--since`/`--until`: RFC 3339, or a duration back from now (`90m`, `2h`, `7d`).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} reaches before the epoch")),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-30T08:00:00Z) nor a duration back from now (90m, 2h, 7d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for a query, one line per step.
    fn plan(q: &Query) -> String {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(SCHEMA).unwrap();
        let (sql, args) = select(q);
        let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn port_exe_and_pid_queries_use_indexes_not_a_scan() {
        let port = plan(&Query {
            port: Some(8080),
            since: Some(SystemTime::now()),
            ..Default::default()
        });
        assert!(
            port.contains("events_local_port") && port.contains("events_remote_port"),
            "{port}"
        );
        let exe = plan(&Query {
            exe: Some("/usr/sbin/sshd".into()),
            ..Default::default()
        });
        assert!(exe.contains("USING INDEX events_exe"), "{exe}");
        let pid = plan(&Query {
            pid: Some(1),
            ..Default::default()
        });
        assert!(pid.contains("USING INDEX events_pid"), "{pid}");
        let since = plan(&Query {
            since: Some(SystemTime::now()),
            ..Default::default()
        });
        assert!(since.contains("USING INDEX events_time"), "{since}");
        for p in [port, exe, pid, since] {
            assert!(!p.contains("SCAN events"), "{p}");
        }
    }

    fn event(port: u16, secs: u64) -> Event {
        let v = serde_json::json!({"event":"listen","time":"2026-01-01T00:00:00.000000Z",
            "verdict":"allow","pid":7,"uid":0,"comm":"x","exe":"/usr/bin/x","cgroup":null,
            "proto":"tcp","family":"ipv4","local":{"ip":"127.0.0.1","port":port},"remote":null,
            "socket":1,"existing":false,"rule":null});
        let mut e = Event::from_json(&v).unwrap();
        e.time = UNIX_EPOCH + Duration::from_secs(secs);
        e
    }

    /// A gap the kernel left (its lost record) is a row of the history, and
    /// every query over its time shows it whatever else it filters on: the
    /// dropped events may have been the ones asked for.
    #[test]
    fn kernel_losses_are_rows_that_every_query_over_their_time_shows() {
        let dir =
            std::env::temp_dir().join(format!("sockfilter-history-lost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = dir.join("history.db");
        let mut w =
            HistoryWriter::open(&db, Duration::from_secs(1 << 40), &Metrics::new()).unwrap();
        let before = event(8080, 1_000);
        w.record(&before, r#"{"event":"listen","n":1}"#);
        w.record_lost(
            UNIX_EPOCH + Duration::from_secs(2_000),
            r#"{"event":"lost","count":5,"host":"h"}"#,
        );
        let after = event(9090, 3_000);
        w.record(&after, r#"{"event":"listen","n":2}"#);
        drop(w); // writes the batch
        let rows = |q: Query| {
            let mut out = Vec::new();
            query(&db, &q, |j| out.push(j.to_string())).unwrap();
            out
        };
        let lost = r#"{"event":"lost","count":5,"host":"h"}"#;
        assert_eq!(
            rows(Query::default()),
            [
                r#"{"event":"listen","n":1}"#,
                lost,
                r#"{"event":"listen","n":2}"#
            ]
        );
        assert_eq!(
            rows(Query {
                port: Some(8080),
                exe: Some("/usr/bin/x".into()),
                kinds: vec![EventKind::Listen],
                ..Default::default()
            }),
            [r#"{"event":"listen","n":1}"#, lost]
        );
        assert_eq!(
            rows(Query {
                pid: Some(1),
                ..Default::default()
            }),
            [lost],
            "no event of pid 1, but the gap where one may have been"
        );
        assert!(
            rows(Query {
                since: Some(UNIX_EPOCH + Duration::from_secs(2_500)),
                ..Default::default()
            })
            .iter()
            .all(|r| r != lost),
            "the time filter applies to lost rows"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn times_are_rfc3339_or_durations_back() {
        let t = parse_time("2026-11-30T08:00:00Z").unwrap();
        assert_eq!(micros(t), 1_796_025_600_000_000);
        let two_hours = parse_time("2h").unwrap();
        let back = SystemTime::now().duration_since(two_hours).unwrap();
        assert!(back >= Duration::from_secs(7200) && back < Duration::from_secs(7260));
        assert!(parse_time("yesterday").is_err());
    }
}
