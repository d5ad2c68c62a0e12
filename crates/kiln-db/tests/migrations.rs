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

#[tokio::test]
async fn duplicate_metric_points_are_folded_to_the_latest_by_the_migration_that_makes_them_unique()
{
    use kiln_db::testing::{admin_url, replace_database};
    use sea_orm_migration::MigratorTrait;

    // A database migrated up to just before m0003, holding the duplicates an older Kiln
    // wrote when a resumed job re-reported its epochs.
    let name = format!("kiln_test_{}", uuid::Uuid::new_v4().simple());
    let server = sea_orm::Database::connect(admin_url()).await.unwrap();
    let backend = server.get_database_backend();
    server
        .execute(Statement::from_string(backend, format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let db = sea_orm::Database::connect(replace_database(&admin_url(), &name)).await.unwrap();
    let before = kiln_db::Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m0003_integrity")
        .expect("m0003_integrity is registered");
    kiln_db::Migrator::up(&db, Some(before as u32)).await.unwrap();
    let sql = |s: &str| Statement::from_string(backend, s.to_owned());
    db.execute(sql("INSERT INTO metrics (run_id, name, step, value, ts) VALUES \
           ('00000000-0000-0000-0000-000000000001', 'loss', 1, 1.0, now() - interval '2 minutes'), \
           ('00000000-0000-0000-0000-000000000001', 'loss', 2, 2.0, now() - interval '2 minutes'), \
           ('00000000-0000-0000-0000-000000000001', 'loss', 2, 2.5, now() - interval '1 minute'), \
           ('00000000-0000-0000-0000-000000000001', 'loss', 3, 3.0, now() - interval '2 minutes'), \
           ('00000000-0000-0000-0000-000000000001', 'loss', 3, 3.5, now() - interval '1 minute'), \
           ('00000000-0000-0000-0000-000000000001', 'loss', 3, 3.9, now() - interval '1 minute'), \
           ('00000000-0000-0000-0000-000000000001', 'acc', 2, 0.5, now() - interval '2 minutes'), \
           ('00000000-0000-0000-0000-000000000002', 'loss', 2, 9.0, now() - interval '2 minutes')"))
        .await
        .unwrap();

    kiln_db::migrate(&db).await.unwrap();
    let rows = db
        .query_all(sql(
            "SELECT run_id::text AS run, name, step, value FROM metrics ORDER BY 1, 2, 3",
        ))
        .await
        .unwrap();
    let rows: Vec<(String, String, i64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<String>("", "run").unwrap()[35..].to_owned(),
                r.try_get("", "name").unwrap(),
                r.try_get("", "step").unwrap(),
                r.try_get("", "value").unwrap(),
            )
        })
        .collect();
    let expect = |run: &str, name: &str, step: i64, value: f64| {
        (run.to_owned(), name.to_owned(), step, value)
    };
    assert_eq!(
        rows,
        vec![
            expect("1", "acc", 2, 0.5),
            expect("1", "loss", 1, 1.0),
            expect("1", "loss", 2, 2.5),
            expect("1", "loss", 3, 3.9), // same timestamp: the later insert
            expect("2", "loss", 2, 9.0),
        ]
    );
    // From now on the key is unique.
    let again = db
        .execute(sql("INSERT INTO metrics (run_id, name, step, value) \
             VALUES ('00000000-0000-0000-0000-000000000001', 'loss', 1, 7.0)"))
        .await;
    assert!(again.is_err(), "a second row for one point is refused");
    db.close().await.unwrap();
    server
        .execute(Statement::from_string(backend, format!("DROP DATABASE {name} WITH (FORCE)")))
        .await
        .unwrap();
}
