//! Resharding: move every user whose owner differs between two shard maps, losing nothing.
//!
//! The walk is over where rows *physically are*, not over where the old map says they
//! should be: every database named by either map is scanned for user ids, and a user found
//! on a database that is not its owner under `to` is moved there. Users already on their
//! `to` owner are never touched, so only the users whose shard changes move.
//!
//! For each user that moves, in this order:
//! 1. read the user's rows on the source;
//! 2. copy them to the target in one transaction (idempotent: upsert / insert-if-absent);
//! 3. read them back from the target and check every source row is there;
//! 4. delete exactly the copied rows from the source in one transaction.
//!
//! A crash at any point is safe to re-run: before 2 commits nothing changed; between 2 and
//! 4 the user is on both databases with identical rows, and the re-run finds it on the
//! source again, re-copies (a no-op) and deletes; after 4 the user is only on its owner.
//!
//! What readers see during a reshard (writers of carts and orders must be paused: a cart
//! write routed to the old shard after its user moved would be stranded there until the
//! next run, and a delete could be undone by the copy): a moving user's rows are complete
//! on at least one of the two shards at every instant, and identical when on both, so a
//! reader that tries the `to` owner first and falls back to the `from` owner when the user
//! has no rows there ([`super::ShardSet::read_order_during_reshard`]) always sees the whole
//! cart and every order. Run `reshard` until it reports `users_moved == 0`, then switch the
//! shop to the `to` map.
//!
//! This module never deletes a row before its copy is committed and verified, and never
//! writes to a user's `to` owner anything but that user's rows.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::{ShardPool, contains_all};
use super::{ShardError, ShardMap, ShardSet};

/// Knobs of one reshard run.
#[derive(Debug, Clone)]
pub struct ReshardOptions {
    /// Timeout of every database call (connect, each user's read, copy, verify, delete).
    pub op_timeout: Duration,
    /// User ids fetched per page while scanning a database.
    pub page_size: i64,
    /// Test hook: stop (as if killed) after this many users are fully moved.
    pub stop_after_users: Option<usize>,
    /// Test hook: stop (as if killed) after the copy of this many users (1-based: `Some(1)`
    /// stops right after the first user's copy committed, before its delete).
    pub stop_after_copy_of: Option<usize>,
}

impl Default for ReshardOptions {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_secs(30),
            page_size: 500,
            stop_after_users: None,
            stop_after_copy_of: None,
        }
    }
}

/// What a reshard run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReshardReport {
    /// Distinct (database, user) pairs examined.
    pub users_scanned: u64,
    /// Users whose rows were copied, verified and deleted from a database they do not
    /// belong to.
    pub users_moved: u64,
    /// Rows written on targets (upserts that changed nothing on a re-run count too).
    pub rows_copied: u64,
    /// Rows deleted from sources.
    pub rows_deleted: u64,
    /// Whether a test hook or the cancellation token stopped the run before the end.
    pub stopped_early: bool,
}

async fn timed<T>(
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, ShardError>>,
) -> Result<T, ShardError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ShardError::Timeout(what))?
}

/// Moves every user whose owner under `to` is not the database holding its rows.
///
/// Both maps are validated; a `directory` map loads its directory. Every database named by
/// either map gets the per-user tables if missing. `cancel` stops the run between users
/// (the report then says `stopped_early`); re-running continues where it stopped.
pub async fn reshard(
    from: &ShardMap,
    to: &ShardMap,
    opts: &ReshardOptions,
    cancel: &CancellationToken,
) -> Result<ReshardReport, ShardError> {
    from.validate()?;
    to.validate()?;
    // Every physical database once, keyed by url, `from`'s first.
    let mut urls: Vec<&str> = Vec::new();
    for s in from.shards.iter().chain(&to.shards) {
        if !urls.contains(&s.url.as_str()) {
            urls.push(&s.url);
        }
    }
    let mut pools: HashMap<&str, ShardPool> = HashMap::new();
    for url in &urls {
        let pool = timed(
            "connect",
            opts.op_timeout,
            ShardPool::connect(url, opts.op_timeout),
        )
        .await?;
        timed("create tables", opts.op_timeout, pool.ensure_tables()).await?;
        pools.insert(url, pool);
    }
    let to_router = timed(
        "load router",
        opts.op_timeout,
        ShardSet::router_for(to, opts.op_timeout),
    )
    .await?;

    let mut report = ReshardReport::default();
    let mut copies = 0usize;
    'databases: for source_url in &urls {
        let source = &pools[source_url];
        let mut cursor = i64::MIN;
        loop {
            let page = timed(
                "list users",
                opts.op_timeout,
                source.users_page(cursor, opts.page_size.max(1)),
            )
            .await?;
            let Some(&last) = page.last() else { break };
            for user_id in page {
                if cancel.is_cancelled() {
                    report.stopped_early = true;
                    break 'databases;
                }
                report.users_scanned += 1;
                let owner_url = to.shards[to_router.shard_for(user_id)].url.as_str();
                if owner_url == *source_url {
                    continue;
                }
                let target = &pools[owner_url];
                let rows = timed("read user", opts.op_timeout, source.read_user(user_id)).await?;
                if rows.is_empty() {
                    continue;
                }
                report.rows_copied +=
                    timed("copy user", opts.op_timeout, target.copy_in(&rows)).await?;
                copies += 1;
                if opts.stop_after_copy_of == Some(copies) {
                    report.stopped_early = true;
                    break 'databases;
                }
                let copied =
                    timed("verify user", opts.op_timeout, target.read_user(user_id)).await?;
                contains_all(&copied, &rows)
                    .map_err(|reason| ShardError::Verify { user_id, reason })?;
                report.rows_deleted +=
                    timed("delete user", opts.op_timeout, source.delete_exact(&rows)).await?;
                report.users_moved += 1;
                if opts.stop_after_users == Some(report.users_moved as usize) {
                    report.stopped_early = true;
                    break 'databases;
                }
            }
            match last.checked_add(1) {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    for pool in pools.values() {
        pool.close().await;
    }
    Ok(report)
}
