//! `deployments`: Serving deployments.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub model_id: Uuid,
    pub alias: Option<String>,
    pub version_id: Option<Uuid>,
    #[sea_orm(column_type = "JsonBinary")]
    pub batching: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub traffic: Json,
    pub state: String,
    /// m0003: instances may carry fields the model does not take (ignored); otherwise 422.
    pub allow_extra_features: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
