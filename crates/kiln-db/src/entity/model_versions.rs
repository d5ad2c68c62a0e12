//! `model_versions`: Versions of registered models.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub model_id: Uuid,
    pub version: i32,
    pub job_id: Option<Uuid>,
    pub bundle_key: String,
    pub bundle_sha256: String,
    pub dataset_sha256: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub spec: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub metrics: Json,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
