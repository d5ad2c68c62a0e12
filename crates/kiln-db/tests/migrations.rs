//! Migrations against a real PostgreSQL: they apply, are idempotent, and the entities match.

use kiln_db::entity::{jobs, teams};
use kiln_db::testing::fresh_database;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set, Statement};

#[tokio::test]
async fn migrations_are_idempotent_and_leave_nothing_pending() {
    let test = fresh_database(4).await.unwrap();
    // A second and a concurrent third run change nothing and do not fail.
    let (a, b) = tokio::join!(kiln_db::migrate(&test.db), kiln_db::migrate(&test.db));
    a.unwrap();
    b.unwrap();
    assert!(kiln_db::pending_migrations(&test.db).await.unwrap().is_empty());
}

#[tokio::test]
async fn entities_read_and_write_the_migrated_tables() {
    let test = fresh_database(4).await.unwrap();
    let team = teams::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        name: Set("vision".into()),
        max_running_jobs: Set(2),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(&test.db)
    .await
    .unwrap();
    let job_id = uuid::Uuid::now_v7();
    test.db
        .execute(Statement::from_sql_and_values(
            test.db.get_database_backend(),
            "INSERT INTO jobs (id, team_id, spec) VALUES ($1, $2, '{\"x\": 1}')",
            [job_id.into(), team.id.into()],
        ))
        .await
        .unwrap();
    let job = jobs::Entity::find_by_id(job_id).one(&test.db).await.unwrap().unwrap();
    assert_eq!(job.state, "queued");
    assert_eq!(job.team_id, team.id);
    assert_eq!(job.spec, serde_json::json!({"x": 1}));
    assert_eq!(job.lease_epoch, 0);
}

#[tokio::test]
async fn schema_rejects_impossible_rows() {
    let test = fresh_database(4).await.unwrap();
    let backend = test.db.get_database_backend();
    // A team name that is not a slug.
    let bad_team = test
        .db
        .execute(Statement::from_string(
            backend,
            "INSERT INTO teams (id, name) VALUES (gen_random_uuid(), 'Not A Slug')",
        ))
        .await;
    assert!(bad_team.is_err());
    // An admin token bound to a team, and a team token without one.
    let bad_token = test
        .db
        .execute(Statement::from_string(
            backend,
            "INSERT INTO api_tokens (id, team_id, name, role, token_hash, prefix) \
             VALUES (gen_random_uuid(), NULL, 't', 'member', '\\x00', 'kiln_')",
        ))
        .await;
    assert!(bad_token.is_err());
}
