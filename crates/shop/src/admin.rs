//! Granting and revoking the admin role (`scaleout shop admin grant|revoke USER --db URL`).
//!
//! Admin is the `is_admin` column of `users`, and this explicit command against the
//! database is the only thing that sets it: signup never does, whatever the name, and no
//! token claim is trusted for it (writes re-read the column). A grant takes effect on the
//! caller's next write, on every instance, with no restart and no new token.

use std::sync::Arc;

use serde::Serialize;

use crate::config::ShopConfig;
use crate::db::Db;
use crate::error::ShopError;
use crate::metrics::Metrics;
use crate::write_tx;

/// The outcome of one grant or revoke (printed as a JSON line by the binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleChange {
    /// The user.
    pub username: String,
    /// `users.id`.
    pub user_id: i64,
    /// Whether the user is an admin now.
    pub is_admin: bool,
    /// Whether this call changed anything.
    pub changed: bool,
}

/// Sets `username`'s admin role on the database of `cfg` (`db`; migrated first, so a
/// fresh database works). An unknown user is an error naming it.
pub async fn set_admin(
    cfg: &ShopConfig,
    username: &str,
    admin: bool,
) -> Result<RoleChange, ShopError> {
    let db = Db::connect(cfg, Arc::new(Metrics::default())).await?;
    set_admin_on(&db, username, admin).await
}

/// [`set_admin`] on an open database.
pub async fn set_admin_on(db: &Db, username: &str, admin: bool) -> Result<RoleChange, ShopError> {
    let before: Option<(i64, bool)> = write_tx!(db, tx => {
        let row: Option<(i64, bool)> =
            sqlx::query_as("SELECT id, is_admin FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((id, _)) = row {
            sqlx::query("UPDATE users SET is_admin = $1 WHERE id = $2")
                .bind(admin)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        row
    });
    let (user_id, was) = before.ok_or_else(|| {
        ShopError::Config(format!(
            "user: no user named `{username}` (they must sign up first)"
        ))
    })?;
    Ok(RoleChange {
        username: username.to_string(),
        user_id,
        is_admin: admin,
        changed: was != admin,
    })
}
