//! What the artifact store holds that PostgreSQL still refers to: the reference side of
//! `kiln artifacts gc`.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, FromQueryResult, Statement};

use super::RepoError;

#[derive(Debug, FromQueryResult)]
struct KeyRow {
    key: String,
}

/// Every artifact key a row refers to: dataset blobs, jobs' latest checkpoints and model
/// bundles, registered model versions' bundles, batch predictions' output parts.
pub async fn referenced_keys(db: &impl ConnectionTrait) -> Result<HashSet<String>, RepoError> {
    let rows = KeyRow::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT storage_key AS key FROM datasets \
         UNION SELECT checkpoint_key FROM jobs WHERE checkpoint_key IS NOT NULL \
         UNION SELECT result->>'model_bundle' FROM jobs WHERE result->>'model_bundle' IS NOT NULL \
         UNION SELECT bundle_key FROM model_versions \
         UNION SELECT p->>'key' FROM batch_predictions, jsonb_array_elements(parts) p",
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.key).collect())
}
