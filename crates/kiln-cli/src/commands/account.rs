//! `kiln whoami` and `kiln audit`.
//!
//! No API route says who a token belongs to (its id, name or team), so `whoami` reports
//! what the CLI itself knows (URL, profile, config file, the token's public prefix) and
//! finds the role by asking the API what the token may do: three read-only probes whose
//! status codes are part of the contract (API.md), none of which changes anything.

use kiln_types::api::{AuditRecord, Page};
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::args::{Global, OutputFormat};
use crate::client::Client;
use crate::config;
use crate::output::{self, opt};

#[derive(Debug, Serialize)]
struct WhoAmI {
    api_url: String,
    profile: String,
    config_file: Option<String>,
    /// The token's first 12 characters, as `kiln admin tokens list` shows them.
    token_prefix: Option<String>,
    token_source: Option<&'static str>,
    /// `admin`, `maintainer`, `member` or `viewer`; found by probing.
    role: Option<&'static str>,
    /// Admin tokens belong to no team; for a team token the API does not say which.
    team: Option<&'static str>,
}

/// How the API answers a probe: allowed, refused for the role, or a real failure.
async fn allowed(client: &Client, req: reqwest::RequestBuilder) -> anyhow::Result<bool> {
    let res = client.transport(req).await?;
    match res.status() {
        StatusCode::FORBIDDEN => Ok(false),
        // A member may create runs: the empty name is refused only after the role check.
        StatusCode::UNPROCESSABLE_ENTITY => Ok(true),
        s if s.is_success() => Ok(true),
        // 401 and anything unexpected: the API's own error.
        _ => client.check(res).await.map(|_| true),
    }
}

async fn role(client: &Client) -> anyhow::Result<&'static str> {
    // Admin only.
    if allowed(client, client.request(Method::GET, "/v1/admin/queue")?).await? {
        return Ok("admin");
    }
    // Maintainers read their team's audit log.
    if allowed(client, client.request(Method::GET, "/v1/audit?limit=1")?).await? {
        return Ok("maintainer");
    }
    // Members may start runs; an empty name makes the request invalid, so nothing is made.
    let probe = client
        .request(Method::POST, "/v1/runs")?
        .json(&serde_json::json!({ "name": "", "params": {} }));
    if allowed(client, probe).await? {
        return Ok("member");
    }
    Ok("viewer")
}

pub async fn whoami(global: &Global, format: OutputFormat) -> anyhow::Result<()> {
    let resolved = config::resolve(global)?;
    let client = Client::new(&resolved)?;
    let role = match &resolved.token {
        Some(_) => Some(role(&client).await?),
        None => None,
    };
    let me = WhoAmI {
        api_url: resolved.api_url.clone(),
        profile: resolved.profile.clone(),
        config_file: resolved.config_file.as_ref().map(|p| p.display().to_string()),
        token_prefix: resolved.token.as_ref().map(|t| t.expose().chars().take(12).collect()),
        token_source: resolved.token_source,
        role,
        team: match role {
            Some("admin") => Some("none (platform token)"),
            Some(_) => Some("not told by the API"),
            None => None,
        },
    };
    match format {
        OutputFormat::Json => output::print(format, &me, &[], vec![]),
        OutputFormat::Table => {
            outln!("{:<10}{}", "api", me.api_url);
            outln!(
                "{:<10}{} ({})",
                "profile",
                me.profile,
                me.config_file.as_deref().unwrap_or("no config file")
            );
            match &me.token_prefix {
                Some(prefix) => {
                    outln!("{:<10}{prefix}... (from {})", "token", me.token_source.unwrap_or("-"))
                }
                None => {
                    outln!("{:<10}none: pass --token, set KILN_TOKEN or use a profile", "token")
                }
            }
            outln!("{:<10}{}", "role", opt(me.role));
            if let Some(team) = me.team {
                outln!("{:<10}{team}", "team");
            }
        }
    }
    Ok(())
}

pub async fn audit(
    client: &Client,
    limit: u32,
    cursor: Option<String>,
    all: bool,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut cursor = cursor;
    let next = loop {
        let mut path = format!("/v1/audit?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", super::runs::urlencode(c)));
        }
        let page: Page<AuditRecord> = client.get(&path).await?;
        records.extend(page.items);
        match page.next_cursor {
            Some(c) if all => cursor = Some(c),
            other => break other,
        }
    };
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.ts.to_rfc3339(),
                r.actor.clone(),
                r.action.clone(),
                format!("{}/{}", r.resource_type, opt(r.resource_id.as_deref())),
                opt(r.team_id),
            ]
        })
        .collect();
    output::print(format, &records, &["TIME", "ACTOR", "ACTION", "RESOURCE", "TEAM"], rows);
    if let Some(next) = next {
        eprintln!("more records: --cursor {next}");
    }
    Ok(())
}
