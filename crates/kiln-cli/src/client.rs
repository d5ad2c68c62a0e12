//! A thin HTTP client for the Kiln API: bearer auth, JSON in and out, and API errors
//! turned into one readable line (`forbidden: this action needs ...`).

use anyhow::{Context, anyhow};
use kiln_types::api::ErrorBody;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Resolved;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<kiln_types::Secret>,
}

impl Client {
    pub fn new(resolved: &Resolved) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("kiln-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base: resolved.api_url.clone(), token: resolved.token.clone() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> anyhow::Result<RequestBuilder> {
        let token = self.token.as_ref().map(kiln_types::Secret::expose).ok_or_else(|| {
            anyhow!("no API token: pass --token, set KILN_TOKEN, or add one to your profile")
        })?;
        Ok(self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(token))
    }

    /// Sends a request and decodes a JSON answer, or fails with the API's error.
    pub async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        let res = self.execute(req).await?;
        let url = res.url().to_string();
        res.json().await.with_context(|| format!("unexpected answer from {url}"))
    }

    /// Sends a request; a non-2xx answer becomes an error naming the API's code and message.
    pub async fn execute(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let res = self.transport(req).await?;
        self.check(res).await
    }

    /// Sends a request; only a failure to get any answer is an error.
    pub async fn transport(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        req.send().await.map_err(|err| {
            if err.is_connect() || err.is_timeout() {
                anyhow!("cannot reach the Kiln API at {}: {}", self.base, root_cause(&err))
            } else {
                anyhow!("request to {} failed: {}", self.base, root_cause(&err))
            }
        })
    }

    /// The answer if it is a success, else the API's error as one line.
    pub async fn check(&self, res: Response) -> anyhow::Result<Response> {
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => anyhow!(error_line(&body)),
            Err(_) => anyhow!("the API answered {status}"),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)?).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path)?.json(body)).await
    }
}

/// `code: message`, then what the details add: every offending field of a validation
/// error, or the rest (say, the resources that still use what a delete was refused for) as
/// compact JSON.
pub fn error_line(body: &ErrorBody) -> String {
    let error = &body.error;
    let mut line = format!("{}: {}", error.code, error.message);
    if let Some(fields) = error.details.get("fields").and_then(|f| f.as_object()) {
        let list: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
            .collect();
        if fields.len() > 1 {
            line.push_str(&format!(" ({})", list.join("; ")));
        }
    } else if error.details.as_object().is_some_and(|d| !d.is_empty()) {
        line.push_str(&format!(" (details: {})", error.details));
    }
    line
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
