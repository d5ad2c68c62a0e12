//! `jobs`: Training jobs: the queue itself.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub team_id: Uuid,
    pub kind: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub spec: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub inputs: Json,
    pub priority: i32,
    pub state: String,
    pub device: String,
    pub run_after: DateTimeUtc,
    pub attempt: i32,
    pub max_attempts: i32,
    pub lease_epoch: i64,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub heartbeat_at: Option<DateTimeUtc>,
    pub cancel_requested_at: Option<DateTimeUtc>,
    pub checkpoint_key: Option<String>,
    pub checkpoint_epoch: Option<i32>,
    pub resumed_from_epoch: Option<i32>,
    #[sea_orm(column_type = "JsonBinary")]
    pub progress: Option<Json>,
    pub error: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub result: Option<Json>,
    pub ran_on_device: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub trace_context: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
