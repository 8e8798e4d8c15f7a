//! The trust hub's PostgreSQL store: each site's events exactly as the school sent them, where
//! its chain stands, and the first break seen. The only SQL of the hub. Several hubs may run on
//! one database: a site's events are taken under a lock on its row, and migrations under an
//! advisory lock, so two at once never interleave.

use jiff::Timestamp;
use tokio_postgres::NoTls;

use super::chain::{Arrival, Event, Head, Walk, arrive};

/// The schema, one migration per entry, applied in order; its position + 1 is its version.
/// Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: sites, and their events as sent.
    r#"
CREATE TABLE sites (
    name         text PRIMARY KEY,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    head_seq     bigint NOT NULL DEFAULT 0,
    head_hash    text NOT NULL,
    break_seq    bigint,
    break_reason text
);
CREATE TABLE events (
    site      text NOT NULL REFERENCES sites (name),
    seq       bigint NOT NULL,
    at        text NOT NULL,
    kind      text NOT NULL,
    detail    text NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL,
    received  timestamptz NOT NULL,
    PRIMARY KEY (site, seq)
);
"#,
];

/// The schema version this build migrates to.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The advisory lock key migrations hold ("aupgate" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x0061_7570_6761_7465;

/// What can go wrong at the hub's store: one line, naming the fix where there is one.
#[derive(Debug, thiserror::Error)]
pub enum HubStoreError {
    /// The connection string does not parse.
    #[error(
        "hub.database {0:?}: not a PostgreSQL connection string (fix: e.g. \"host=/run/postgresql dbname=aupgate user=aupgate\")"
    )]
    Config(String),
    /// PostgreSQL refused or failed.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// No connection could be had.
    #[error("PostgreSQL: no connection: {0} (fix: check hub.database, and that PostgreSQL runs)")]
    Pool(String),
    /// The database was migrated by a newer build.
    #[error(
        "the hub database is at schema {have}, newer than this build's {latest} (fix: upgrade aupgate on this hub)"
    )]
    Newer {
        /// Its version.
        have: u32,
        /// Ours.
        latest: u32,
    },
}

impl From<tokio_postgres::Error> for HubStoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message (with its detail) rather than "db error".
        match e.as_db_error() {
            Some(db) => Self::Postgres(format!("{}: {}", db.code().code(), db.message())),
            None => Self::Postgres(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for HubStoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Pool(e.to_string())
    }
}

/// What one batch of a site's events did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The site's head after it: the seq the school may forget up to.
    pub head: i64,
    /// Events taken.
    pub taken: u64,
    /// Events the hub already held, unchanged.
    pub resent: u64,
    /// The site's first break, if it has one (recorded once, kept).
    pub broken: Option<String>,
}

/// A site as `hub sites` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Its name (its certificate's CN).
    pub name: String,
    /// The last event taken in order.
    pub head_seq: i64,
    /// When the school recorded it.
    pub head_at: Option<Timestamp>,
    /// Its hash.
    pub head_hash: String,
    /// Events held.
    pub events: i64,
    /// When it last sent anything.
    pub last_seen: Timestamp,
    /// Where its chain first broke, if it did.
    pub broken: Option<String>,
}

/// New events' fields, column by column, for one INSERT of them all.
#[derive(Default)]
struct Columns<'a> {
    seq: Vec<i64>,
    at: Vec<&'a str>,
    kind: Vec<&'a str>,
    detail: Vec<&'a str>,
    prev_hash: Vec<&'a str>,
    hash: Vec<&'a str>,
}

/// The hub's database.
#[derive(Clone)]
pub struct HubStore {
    pool: deadpool_postgres::Pool,
}

impl std::fmt::Debug for HubStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStore").finish_non_exhaustive()
    }
}

/// An event from a row of `SELECT seq, at, kind, detail, prev_hash, hash`.
fn event_of(r: &tokio_postgres::Row) -> Event {
    Event {
        seq: r.get(0),
        at: r.get(1),
        kind: r.get(2),
        detail: r.get(3),
        prev_hash: r.get(4),
        hash: r.get(5),
    }
}

fn ts(t: Timestamp) -> std::time::SystemTime {
    std::time::SystemTime::from(t)
}

impl HubStore {
    /// A pool of up to `size` connections to `conninfo` (a libpq connection string); nothing
    /// is connected yet.
    ///
    /// # Errors
    /// The string does not parse.
    pub fn new(conninfo: &str, size: usize) -> Result<Self, HubStoreError> {
        let config: tokio_postgres::Config = conninfo
            .parse()
            .map_err(|_| HubStoreError::Config(conninfo.to_owned()))?;
        let manager = deadpool_postgres::Manager::from_config(
            config,
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| HubStoreError::Pool(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Brings the schema to [`LATEST`]; returns the version it was at. Each migration is one
    /// transaction under an advisory lock, so hubs starting together migrate once.
    ///
    /// # Errors
    /// PostgreSQL failed, or the schema is newer than this build's.
    pub async fn migrate(&self) -> Result<u32, HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS hub_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let have: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM hub_schema", &[])
            .await?
            .get(0);
        let have = u32::try_from(have).unwrap_or(0);
        if have > LATEST {
            return Err(HubStoreError::Newer { have, latest: LATEST });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            tx.batch_execute(sql).await?;
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute("INSERT INTO hub_schema (version) VALUES ($1)", &[&version])
                .await?;
        }
        tx.commit().await?;
        Ok(have)
    }

    /// The schema version the database is at (0 before any migration).
    ///
    /// # Errors
    /// PostgreSQL failed.
    pub async fn version(&self) -> Result<u32, HubStoreError> {
        let client = self.pool.get().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('hub_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let v: i32 = client
            .query_one("SELECT coalesce(max(version), 0) FROM hub_schema", &[])
            .await?
            .get(0);
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// Takes a batch of `site`'s events, in seq order, in one transaction under a lock on the
    /// site's row. Each new event is kept exactly as sent, whether or not it links; the first
    /// that does not is recorded as the site's break. An event the hub holds already is
    /// compared with what it holds: the same is a harmless resend, another is a break.
    ///
    /// # Errors
    /// PostgreSQL failed (nothing of the batch is kept).
    pub async fn ingest(&self, site: &str, events: &[Event], now: Timestamp) -> Result<Ingested, HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO sites (name, first_seen, last_seen, head_hash) VALUES ($1, $2, $2, $3) ON CONFLICT (name) DO NOTHING",
            &[&site, &ts(now), &crate::store::GENESIS],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT head_seq, head_hash, break_reason FROM sites WHERE name = $1 FOR UPDATE",
                &[&site],
            )
            .await?;
        let mut head = Head {
            seq: row.get(0),
            hash: row.get(1),
        };
        let mut broken: Option<String> = row.get(2);
        let was_broken = broken.is_some();
        let mut break_seq: Option<i64> = None;
        let mut sorted: Vec<&Event> = events.iter().collect();
        sorted.sort_by_key(|e| e.seq);
        let (resends, fresh): (Vec<&Event>, Vec<&Event>) = sorted.into_iter().partition(|e| e.seq <= head.seq);
        // Resends: compared with what is held, all in one query.
        let mut resent = 0u64;
        if !resends.is_empty() {
            let seqs: Vec<i64> = resends.iter().map(|e| e.seq).collect();
            let held: std::collections::HashMap<i64, Event> = tx
                .query(
                    "SELECT seq, at, kind, detail, prev_hash, hash FROM events WHERE site = $1 AND seq = ANY($2)",
                    &[&site, &seqs],
                )
                .await?
                .iter()
                .map(|r| {
                    let e = event_of(r);
                    (e.seq, e)
                })
                .collect();
            for e in resends {
                match held.get(&e.seq) {
                    Some(h) if h != e && broken.is_none() => {
                        broken = Some(format!(
                            "event {}: sent again with other content than the hub holds",
                            e.seq
                        ));
                        break_seq = Some(e.seq);
                    }
                    // The same, or from before the hub's copy of the chain starts.
                    _ => resent += 1,
                }
            }
        }
        // New events: checked in order against the head as it moves, then all kept in one
        // INSERT (one statement per batch, not one per event).
        let mut columns = Columns::default();
        let mut taken = 0u64;
        for e in &fresh {
            match arrive(&head, e) {
                // The same seq twice in one batch: the first is kept.
                Arrival::Resent => {
                    resent += 1;
                    continue;
                }
                Arrival::Broken(why) if broken.is_none() => {
                    broken = Some(why);
                    break_seq = Some(e.seq);
                }
                Arrival::Broken(_) | Arrival::Next => {}
            }
            taken += 1;
            head = Head {
                seq: e.seq,
                hash: e.hash.clone(),
            };
            columns.seq.push(e.seq);
            columns.at.push(&e.at);
            columns.kind.push(&e.kind);
            columns.detail.push(&e.detail);
            columns.prev_hash.push(&e.prev_hash);
            columns.hash.push(&e.hash);
        }
        if taken > 0 {
            tx.execute(
                "INSERT INTO events (site, seq, at, kind, detail, prev_hash, hash, received)
                 SELECT $1, u.seq, u.at, u.kind, u.detail, u.prev_hash, u.hash, $8
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                      AS u (seq, at, kind, detail, prev_hash, hash)",
                &[
                    &site,
                    &columns.seq,
                    &columns.at,
                    &columns.kind,
                    &columns.detail,
                    &columns.prev_hash,
                    &columns.hash,
                    &ts(now),
                ],
            )
            .await?;
        }
        tx.execute(
            "UPDATE sites SET head_seq = $2, head_hash = $3, last_seen = $4 WHERE name = $1",
            &[&site, &head.seq, &head.hash, &ts(now)],
        )
        .await?;
        if !was_broken && let (Some(seq), Some(why)) = (break_seq, &broken) {
            tx.execute(
                "UPDATE sites SET break_seq = $2, break_reason = $3 WHERE name = $1",
                &[&site, &seq, why],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ingested {
            head: head.seq,
            taken,
            resent,
            broken,
        })
    }

    /// Every site, by name.
    ///
    /// # Errors
    /// PostgreSQL failed.
    pub async fn sites(&self) -> Result<Vec<Site>, HubStoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT s.name, s.head_seq, s.head_hash, (SELECT count(*) FROM events e WHERE e.site = s.name), s.last_seen, s.break_reason,
                        (SELECT e.at FROM events e WHERE e.site = s.name AND e.seq = s.head_seq)
                 FROM sites s ORDER BY s.name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let last: std::time::SystemTime = r.get(4);
                Ok(Site {
                    name: r.get(0),
                    head_seq: r.get(1),
                    head_hash: r.get(2),
                    events: r.get(3),
                    last_seen: Timestamp::try_from(last).map_err(|e| HubStoreError::Postgres(e.to_string()))?,
                    broken: r.get(5),
                    head_at: r.get::<_, Option<String>>(6).and_then(|at| at.parse().ok()),
                })
            })
            .collect()
    }

    /// Reads `site`'s events back, as a stream in seq order, and checks its chain: (events,
    /// head), or the first break.
    ///
    /// # Errors
    /// PostgreSQL failed.
    pub async fn verify(&self, site: &str) -> Result<Result<(u64, Head), String>, HubStoreError> {
        use futures_util::StreamExt as _;
        let client = self.pool.get().await?;
        let rows = client
            .query_raw(
                "SELECT seq, at, kind, detail, prev_hash, hash FROM events WHERE site = $1 ORDER BY seq",
                [site],
            )
            .await?;
        let mut rows = std::pin::pin!(rows);
        let mut walk = Walk::default();
        while let Some(r) = rows.next().await {
            if let Err(why) = walk.step(event_of(&r?)) {
                return Ok(Err(why));
            }
        }
        Ok(Ok(walk.end()))
    }
}
