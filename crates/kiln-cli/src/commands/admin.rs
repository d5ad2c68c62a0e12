//! `kiln admin`: migrations and the first admin token (PostgreSQL directly), teams and
//! tokens (through the API).

use anyhow::{Context, bail};
use kiln_db::repo::{audit, tokens};
use kiln_types::Role;
use kiln_types::api::{CreateTeam, CreateToken, IssuedToken, Page, Team, TokenInfo};
use serde_json::json;

use crate::args::{AdminCommand, DatabaseArg, OutputFormat, TeamsCommand, TokensCommand};
use crate::client::Client;
use crate::output::{self, opt};

async fn connect(db: &DatabaseArg) -> anyhow::Result<kiln_db::Db> {
    let args = kiln_db::DbArgs::new(db.database_url.clone(), 2);
    Ok(kiln_db::connect(&args).await?)
}

pub async fn run(
    cmd: AdminCommand,
    client: impl Fn() -> anyhow::Result<Client>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Migrate(db) => {
            let conn = connect(&db).await?;
            let pending = kiln_db::pending_migrations(&conn).await?;
            kiln_db::migrate(&conn).await.context("migration failed")?;
            match format {
                OutputFormat::Json => outln!("{}", json!({ "applied": pending })),
                OutputFormat::Table if pending.is_empty() => outln!("database is up to date"),
                OutputFormat::Table => {
                    outln!("applied {} migration(s): {}", pending.len(), pending.join(", "))
                }
            }
            Ok(())
        }
        AdminCommand::Bootstrap { db, name, force } => {
            let conn = connect(&db).await?;
            if !kiln_db::pending_migrations(&conn).await?.is_empty() {
                bail!("the database has pending migrations: run `kiln admin migrate` first");
            }
            let existing = tokens::list(&conn, None, 500, None).await?;
            let active_admins = existing
                .items
                .iter()
                .filter(|t| t.role == "admin" && t.revoked_at.is_none())
                .count();
            if active_admins > 0 && !force {
                bail!(
                    "an admin token already exists ({active_admins} active); pass --force to issue another"
                );
            }
            let issued = tokens::issue(&conn, None, Role::Admin, &name, None).await?;
            audit::record(
                &conn,
                audit::AuditEntry {
                    team_id: None,
                    actor_token_id: None,
                    actor: "cli:bootstrap",
                    action: "token.issue",
                    resource_type: "token",
                    resource_id: Some(issued.info.id.to_string()),
                    details: json!({ "name": name, "role": "admin" }),
                },
            )
            .await?;
            match format {
                OutputFormat::Json => outln!(
                    "{}",
                    json!({ "id": issued.info.id, "token": issued.secret, "role": "admin" })
                ),
                OutputFormat::Table => {
                    outln!("{}", issued.secret);
                    eprintln!(
                        "admin token {} issued; it is shown once: store it now",
                        issued.info.id
                    );
                }
            }
            Ok(())
        }
        AdminCommand::Teams(TeamsCommand::Create { name, max_running_jobs }) => {
            let team: Team =
                client()?.post("/v1/teams", &CreateTeam { name, max_running_jobs }).await?;
            let row =
                vec![team.id.to_string(), team.name.clone(), team.max_running_jobs.to_string()];
            output::print(format, &team, &["ID", "NAME", "MAX_RUNNING_JOBS"], vec![row]);
            Ok(())
        }
        AdminCommand::Teams(TeamsCommand::List) => {
            let teams = all_teams(&client()?).await?;
            let rows = teams
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.name.clone(),
                        t.max_running_jobs.to_string(),
                        t.created_at.to_rfc3339(),
                    ]
                })
                .collect();
            output::print(format, &teams, &["ID", "NAME", "MAX_RUNNING_JOBS", "CREATED"], rows);
            Ok(())
        }
        AdminCommand::Tokens(TokensCommand::Create { team, role, name }) => {
            let client = client()?;
            let team = team_by_name(&client, &team).await?;
            let role: Role = role.parse()?;
            let issued: IssuedToken = client
                .post(&format!("/v1/teams/{}/tokens", team.id), &CreateToken { name, role })
                .await?;
            match format {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&issued)?),
                OutputFormat::Table => {
                    outln!("{}", issued.token);
                    eprintln!(
                        "{} token {} for team {} issued; it is shown once",
                        issued.role, issued.id, team.name
                    );
                }
            }
            Ok(())
        }
        AdminCommand::Tokens(TokensCommand::List { team }) => {
            let client = client()?;
            let team = team_by_name(&client, &team).await?;
            let page: Page<TokenInfo> =
                client.get(&format!("/v1/teams/{}/tokens?limit=500", team.id)).await?;
            let rows = page
                .items
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.name.clone(),
                        t.role.clone(),
                        t.prefix.clone(),
                        opt(t.revoked_at.map(|r| r.to_rfc3339())),
                    ]
                })
                .collect();
            output::print(format, &page.items, &["ID", "NAME", "ROLE", "PREFIX", "REVOKED"], rows);
            Ok(())
        }
        AdminCommand::Tokens(TokensCommand::Revoke { id }) => {
            let client = client()?;
            client
                .execute(client.request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"))?)
                .await?;
            match format {
                OutputFormat::Json => outln!("{}", json!({ "revoked": id })),
                OutputFormat::Table => outln!("token {id} revoked"),
            }
            Ok(())
        }
    }
}

/// Every team, following the cursor.
pub async fn all_teams(client: &Client) -> anyhow::Result<Vec<Team>> {
    let mut teams = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/teams?limit=500&cursor={c}"),
            None => "/v1/teams?limit=500".to_owned(),
        };
        let page: Page<Team> = client.get(&path).await?;
        teams.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(teams),
        }
    }
}

async fn team_by_name(client: &Client, name: &str) -> anyhow::Result<Team> {
    all_teams(client)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .with_context(|| format!("no team named `{name}` (see `kiln admin teams list`)"))
}
