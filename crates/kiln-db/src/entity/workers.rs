//! `workers`: Registered training workers.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub host: String,
    pub pid: Option<i32>,
    pub device: String,
    pub version: String,
    pub started_at: DateTimeUtc,
    pub last_heartbeat_at: DateTimeUtc,
    pub current_job_id: Option<Uuid>,
    pub stopped_at: Option<DateTimeUtc>,
    /// m0003: how long its leases last; silent for longer, the worker is lost.
    #[sea_orm(column_type = "Double")]
    pub lease_seconds: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
