//! Numbered migrations, plain SQL beside the code that uses it.
//!
//! Landed migrations are never edited: a schema change is a new, higher-numbered file.

use sea_orm_migration::prelude::*;

/// Every migration, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(SqlMigration {
                name: "m0001_initial",
                sql: include_str!("m0001_initial.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0002_serving",
                sql: include_str!("m0002_serving.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0003_integrity",
                sql: include_str!("m0003_integrity.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0004_lifecycle",
                sql: include_str!("m0004_lifecycle.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0005_mlflow_tracking",
                sql: include_str!("m0005_mlflow_tracking.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0006_mlflow_registry",
                sql: include_str!("m0006_mlflow_registry.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0007_batch_predictions",
                sql: include_str!("m0007_batch_predictions.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0008_studies",
                sql: include_str!("m0008_studies.sql"),
            }),
            Box::new(SqlMigration { name: "m0009_ui", sql: include_str!("m0009_ui.sql") }),
            Box::new(SqlMigration {
                name: "m0010_study_wakeups",
                sql: include_str!("m0010_study_wakeups.sql"),
            }),
        ]
    }
}

/// A migration that runs one SQL file in the migration's transaction.
#[derive(Debug)]
struct SqlMigration {
    name: &'static str,
    sql: &'static str,
}

impl MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SqlMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(self.sql).await.map(|_| ())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(format!(
            "{} cannot be reverted: Kiln migrations only move forward",
            self.name
        )))
    }
}
