//! What the SQLite databases share: versioned schema migrations ([`rusqlite_migration`], the
//! version kept in `PRAGMA user_version`). Two migration lists use it: the outbox database's
//! (cases, deliveries and the review console's tables: `gridwatch::cases::outbox::MIGRATIONS`)
//! and the reference dispatch service's (`gridwatch_dispatch_ref::MIGRATIONS`). A crate of its
//! own so that it sits below both and names neither.
//!
//! Rules of a migration list: a shipped step is never edited (a change is a new step at the
//! end), and step 1 of each list brings every schema shipped before versioning (user_version 0,
//! recognised by its tables) to a known one. `tests/it/storage.rs` opens a database
//! of every shipped schema and compares the result with a new database.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use rusqlite_migration::{HookError, HookResult, M, Migrations};

/// What a failed migration reports.
pub use rusqlite_migration::Error;

/// One schema change; a database that has applied it has `user_version` ≥ its position (from 1).
#[derive(Clone, Copy)]
pub struct Step {
    /// Run first, in the migration's transaction.
    pub sql: &'static str,
    /// Run after `sql` in the same transaction: changes that depend on what is there (step 1's
    /// unversioned schemas) or that move data.
    pub hook: Option<fn(&Transaction<'_>) -> rusqlite::Result<()>>,
}

impl Step {
    pub const fn sql(sql: &'static str) -> Self {
        Step { sql, hook: None }
    }

    pub const fn hook(hook: fn(&Transaction<'_>) -> rusqlite::Result<()>) -> Self {
        Step {
            sql: "",
            hook: Some(hook),
        }
    }
}

/// How many times [`migrate`] starts over when another connection migrated the same file first.
const ATTEMPTS: usize = 3;

/// Brings the database to the last step of `steps`, all pending steps in one transaction (a
/// crash or an error leaves the previous version intact). Nothing is locked when the database is
/// up to date (the usual open). The transaction is `BEGIN IMMEDIATE`, and every step checks,
/// inside it, that no other connection applied it meanwhile (`rusqlite_migration` reads the
/// version before the transaction starts): two processes opening one old file wait for each
/// other, and the second finds the work done. A database of a newer version than `steps` is an
/// error (`DatabaseTooFarAhead`): this binary does not know its schema.
pub fn migrate(conn: &mut Connection, steps: &[Step]) -> Result<(), rusqlite_migration::Error> {
    let migrations = Migrations::new(
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let hook = step.hook;
                M::up_with_hook(step.sql, move |tx: &Transaction<'_>| -> HookResult {
                    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                    if version > i as i64 {
                        return Err(HookError::Hook(format!(
                            "step {} was applied by another connection meanwhile (version {version})",
                            i + 1
                        )));
                    }
                    if let Some(hook) = hook {
                        hook(tx)?;
                    }
                    Ok(())
                })
            })
            .collect(),
    );
    if migrations.pending_migrations(conn)? == 0 {
        return Ok(());
    }
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let mut result = Ok(());
    for _ in 0..ATTEMPTS {
        let before = user_version(conn)?;
        result = migrations.to_latest(conn);
        match &result {
            // Another connection moved the version while this one waited: start again from
            // the version it left.
            Err(_) if user_version(conn)? != before => continue,
            _ => break,
        }
    }
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    result
}

/// The database's schema version (`PRAGMA user_version`).
pub fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}
