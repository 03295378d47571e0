//! The storage engine boundary: everything the gateway asks of storage, and nothing about
//! how an engine does it.
//!
//! An [`Engine`] opens tenants; a [`Tenant`] executes commands and batches (committing each
//! with its change-log rows under a gapless seq), answers queries with `as_of_seq`, reads the
//! change log for replay, publishes committed groups in seq order, and takes the snapshot a
//! subscription starts from. SQLite ([`crate::sqlite`]) is the first engine; another plugs in
//! by implementing these two traits, with the gateway unchanged. The rules every engine shares
//! (validation, authorization, the diff that becomes an event) are outside any engine:
//! [`crate::entity`], [`crate::access`], [`crate::events`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use pm_core::{TenantId, UserId};
use pm_proto::v1;
use tokio::sync::broadcast;

use crate::error::Result;
use crate::events::{CommittedEvent, EventFilter, StoredEvent};

/// Where tenants live.
#[async_trait]
pub trait Engine: Send + Sync + Debug {
    /// Opens the tenant (creating and migrating it if needed) or returns it if open. Holding
    /// the returned `Arc` keeps it open; idle tenants beyond the engine's bound are closed.
    async fn open(&self, id: &TenantId) -> Result<Arc<dyn Tenant>>;

    /// Figures for operators (`/metrics`), read when asked.
    fn figures(&self) -> EngineFigures;

    /// Brings the open tenants to newly configured migrations while serving (SIGHUP); closed
    /// ones are migrated when next opened.
    async fn migrate_online(&self) -> Result<RolloutReport>;

    /// Closes every tenant nobody uses, letting its work in flight finish and leaving its
    /// storage tidy (SQLite: the WAL checkpointed into the database and truncated). Called at
    /// shutdown once the connections have ended; returns how many were closed.
    async fn close_idle(&self) -> usize;
}

/// One open tenant.
#[async_trait]
pub trait Tenant: Send + Sync + Debug {
    /// Its id.
    fn id(&self) -> &TenantId;

    /// The latest committed change number this node knows of: its own commits, and on an
    /// engine that nodes share, the later ones [`Tenant::observe_head`] was told of.
    fn head_seq(&self) -> u64;

    /// Records that the change log reaches at least `seq`: a commit another node made, as the
    /// cluster's relay delivered it. [`Tenant::head_seq`] never goes back.
    fn observe_head(&self, seq: u64);

    /// Applies one command as `actor`; answers after it is committed.
    async fn execute(&self, actor: &UserId, command: v1::Command) -> Result<v1::CommandResult>;

    /// Applies a batch as `actor`; atomic batches commit all or nothing.
    async fn batch(&self, actor: &UserId, batch: v1::Batch) -> Result<v1::BatchResult>;

    /// Runs a query as `actor`; the answer carries the `as_of_seq` its rows reflect.
    async fn query(&self, actor: &UserId, query: v1::Query) -> Result<v1::QueryResult>;

    /// Up to `limit` logged events with `after < seq <= until`, in seq order: `RESYNC_REQUIRED`
    /// if events after `after` are no longer retained, `INVALID_ARGUMENT` if `after` is past
    /// the head.
    async fn read_events(
        &self,
        after: u64,
        until: Option<u64>,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>>;

    /// The oldest change still in the log (`None`: the log is empty).
    async fn oldest_seq(&self) -> Result<Option<u64>>;

    /// Committed events as they happen, one slice per committed group, in seq order. A
    /// receiver that lags behind gets `RecvError::Lagged` and catches up with
    /// [`Tenant::read_events`].
    fn subscribe_commits(&self) -> broadcast::Receiver<Arc<[CommittedEvent]>>;

    /// The live projects `user` is a member of, the head seq they are as of and the oldest
    /// retained seq, all from one snapshot: where a subscription starts.
    async fn subscription_snapshot(&self, user: &UserId) -> Result<SubscriptionSnapshot>;

    /// Records who a user says they are (their token's claims, on Hello and RefreshToken),
    /// for `ListUsers` and the names queries show. Writes only when it changed.
    async fn remember_user(&self, profile: &UserProfile) -> Result<()>;
}

/// A user as their token describes them: see [`Tenant::remember_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    /// The token's `sub`.
    pub id: UserId,
    /// The `name` claim, at most [`UserProfile::MAX_NAME_CHARS`] characters (empty: none).
    pub name: String,
    /// The `email` claim, if it looks like one.
    pub email: Option<String>,
}

impl UserProfile {
    /// Longest name kept; a longer one is cut.
    pub const MAX_NAME_CHARS: usize = 200;
    /// Longest email kept; a longer one, or one without an `@`, is left out.
    pub const MAX_EMAIL_BYTES: usize = 320;

    /// A profile from token claims, tidied: control characters dropped, the name cut to its
    /// limit, an email that does not look like one left out (a token's claims are not
    /// validated by its issuer for us).
    pub fn from_claims(id: UserId, name: Option<&str>, email: Option<&str>) -> UserProfile {
        let name: String = name
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(Self::MAX_NAME_CHARS)
            .collect();
        let email = email.map(str::trim).filter(|e| {
            (3..=Self::MAX_EMAIL_BYTES).contains(&e.len())
                && e.contains('@')
                && !e.chars().any(|c| c.is_control() || c.is_whitespace())
        });
        UserProfile {
            id,
            name: name.trim().to_owned(),
            email: email.map(str::to_owned),
        }
    }
}

/// The profiles a tenant knows to be stored, so that a reconnect with the same claims writes
/// nothing. Kept as fingerprints: 8 bytes each rather than their text, since every user who
/// connects has one (measured: 0.2 KiB more per idle connection with the text, at one user
/// per connection). Two profiles sharing a fingerprint (odds about 2^-64 per pair) would only
/// leave a name change unrecorded until the set starts over. Bounded: forgotten when full (a
/// forgotten profile costs one no-op write). Loaded from the database on first use.
#[derive(Debug, Default)]
pub(crate) struct KnownProfiles(tokio::sync::Mutex<Option<KnownUsers>>);

/// Fingerprints of stored profiles ([`fingerprint`]).
pub(crate) type KnownUsers = std::collections::HashSet<u64>;

impl KnownProfiles {
    /// Profiles kept before the set starts over; also how many a first use loads.
    pub(crate) const LIMIT: usize = 10_000;

    /// Stores `profile` with `write` unless it is known to be stored already; `load` reads
    /// up to [`KnownProfiles::LIMIT`] stored fingerprints, the first time. The lock is held
    /// across the write: one profile write at a time per tenant, and a reconnect storm after
    /// a restart reads the table once instead of writing once per user.
    pub(crate) async fn remember<L, W>(
        &self,
        profile: &UserProfile,
        load: impl FnOnce() -> L,
        write: impl FnOnce() -> W,
    ) -> Result<()>
    where
        L: std::future::Future<Output = Result<KnownUsers>>,
        W: std::future::Future<Output = Result<()>>,
    {
        let print = fingerprint(profile.id.as_str(), &profile.name, profile.email.as_deref());
        let mut known = self.0.lock().await;
        if known.is_none() {
            *known = Some(load().await?);
        }
        let known = known.as_mut().expect("loaded above");
        if known.contains(&print) {
            return Ok(());
        }
        write().await?;
        if known.len() >= Self::LIMIT {
            known.clear();
        }
        known.insert(print);
        Ok(())
    }
}

/// A profile's fingerprint for [`KnownUsers`]: SipHash with fixed keys, the same in every
/// process.
pub(crate) fn fingerprint(id: &str, name: &str, email: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (id, name, email).hash(&mut hasher);
    hasher.finish()
}

/// Where a subscription starts: see [`Tenant::subscription_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSnapshot {
    /// `(project id, role)` of every live project the user is a member of.
    pub memberships: Vec<(String, pm_core::kinds::Role)>,
    /// Every deleted project the user is a member of: the membership stays, and the project
    /// is the user's again once restored.
    pub deleted: Vec<String>,
    /// The head seq the memberships are as of.
    pub head: u64,
    /// The oldest retained seq (`None`: the log is empty).
    pub oldest: Option<u64>,
}

/// What an engine tells operators.
#[derive(Debug, Clone, Default)]
pub struct EngineFigures {
    /// Tenants open now.
    pub open_tenants: u64,
    /// Write transactions committed by the open tenants.
    pub committed_groups: u64,
    /// Commands and batches committed by the open tenants.
    pub committed_jobs: u64,
    /// Change-log events deleted by retention in the open tenants.
    pub pruned_events: u64,
    /// Write groups that failed on the storage (a full disk, an I/O error), since start.
    pub storage_faults: u64,
    /// Open tenants whose storage fails now: writes are refused until it recovers.
    pub degraded_tenants: u64,
    /// Tenants taken out of service because their database is damaged.
    pub quarantined_tenants: u64,
    /// Schema migrations and rollouts.
    pub schema: SchemaStatus,
}

/// A tenant's schema version before and after a migration step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaChange {
    /// The newest applied migration before (0: a new database).
    pub from: i64,
    /// The newest applied migration after.
    pub to: i64,
}

impl SchemaChange {
    /// Whether any migration was applied.
    pub fn changed(&self) -> bool {
        self.to != self.from
    }
}

/// Figures of the schema rollouts of an engine, for metrics and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The newest migration tenants are brought to.
    pub target_version: i64,
    /// Whether an online rollout is running.
    pub rollout_running: bool,
    /// Tenants migrated to a newer schema while serving (rollouts and opens).
    pub applied: u64,
    /// Tenant migrations that failed and were rolled back.
    pub failed: u64,
    /// Open tenants the running rollout has not reached yet.
    pub open_pending: u64,
    /// Tenants on disk, not open, below the target; migrated when next opened.
    pub closed_pending: u64,
    /// The last failure, for operators: tenant, migration version and error.
    pub last_failure: Option<String>,
}

/// What one online rollout did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutReport {
    /// The newest migration of the directory.
    pub target_version: i64,
    /// Open tenants brought to the target (or found there), in rollout order.
    pub migrated: Vec<(String, SchemaChange)>,
    /// The tenant whose migration failed (rolled back, still serving), and why. The rollout
    /// stops there.
    pub failed: Option<(String, String)>,
    /// Open tenants not attempted because the rollout stopped.
    pub skipped: Vec<String>,
    /// Tenants on disk, not open, still below the target (migrated when next opened).
    pub closed_pending: u64,
}
