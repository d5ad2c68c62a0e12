//! The optional profile file: `$XDG_CONFIG_HOME/kiln/config.toml` (or `--config`), with
//! `[profiles.NAME]` tables holding `api_url` and `token`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use crate::args::Global;

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    api_url: Option<String>,
    token: Option<kiln_types::Secret>,
}

/// Where to reach the API and as whom, after flags, environment and profile.
#[derive(Clone)]
pub struct Resolved {
    pub api_url: String,
    pub token: Option<kiln_types::Secret>,
    /// The profile asked for, and the config file it was read from (none when no file).
    pub profile: String,
    pub config_file: Option<PathBuf>,
    /// Where the token came from: `--token or KILN_TOKEN`, `profile`, or nothing.
    pub token_source: Option<&'static str>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("profile", &self.profile)
            .field("config_file", &self.config_file)
            .finish()
    }
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("kiln").join("config.toml"))
}

pub fn resolve(global: &Global) -> anyhow::Result<Resolved> {
    let explicit = global.config.is_some();
    let path = global.config.clone().or_else(default_path);
    let mut config_file = None;
    let profile = match path {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let file: File = toml::from_str(&text)
                .with_context(|| format!("{} is not a valid Kiln config", path.display()))?;
            config_file = Some(path.clone());
            match file.profiles.get(&global.profile) {
                Some(p) => p.clone(),
                None if global.profile == "default" => Profile::default(),
                None => {
                    anyhow::bail!("profile `{}` not found in {}", global.profile, path.display())
                }
            }
        }
        Some(path) if explicit => anyhow::bail!("config file {} does not exist", path.display()),
        _ => Profile::default(),
    };
    Ok(Resolved {
        api_url: global
            .api_url
            .clone()
            .or(profile.api_url)
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
            .trim_end_matches('/')
            .to_owned(),
        token_source: match (&global.token, &profile.token) {
            (Some(_), _) => Some("--token or KILN_TOKEN"),
            (None, Some(_)) => Some("profile"),
            (None, None) => None,
        },
        token: global.token.clone().or(profile.token),
        profile: global.profile.clone(),
        config_file,
    })
}
