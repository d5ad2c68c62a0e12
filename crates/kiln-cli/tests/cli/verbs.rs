//! Verbs over routes the API has: runs, whoami, audit, dataset show, deployment update,
//! `--json`, completions.

use serde_json::{Value, json};

use crate::{IRIS, start, team_with_a_model};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_create_list_and_metrics() {
    let env = start().await;
    let t = env.team_tokens("tracking").await;
    let member = Some(t.member.as_str());
    let run = env
        .json(member, &["runs", "create", "notebook", "--param", "lr=0.01", "--param", "opt=adam"])
        .await;
    assert_eq!(run["name"], "notebook");
    assert_eq!(run["status"], "running");
    assert_eq!(run["params"], json!({"lr": 0.01, "opt": "adam"}));
    let id = run["id"].as_str().unwrap().to_owned();

    // Points the way a notebook logs them, straight to the API.
    let points: Vec<Value> = (0..5)
        .flat_map(|step| {
            [
                json!({"name": "loss", "step": step, "value": 1.0 / f64::from(step + 1)}),
                json!({"name": "acc", "step": step, "value": 0.5 + f64::from(step) / 10.0}),
            ]
        })
        .collect();
    let res = reqwest::Client::new()
        .post(format!("{}/v1/runs/{id}/metrics", env.api_url))
        .bearer_auth(&t.member)
        .json(&json!({ "points": points }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let table = env.ok(Some(&t.viewer), &["runs", "metrics", &id]).await;
    assert!(table.contains("acc (5 points)") && table.contains("loss (5 points)"), "{table}");
    assert!(table.contains("STEP  VALUE"), "{table}");
    assert!(table.contains("\n4     0.200000\n"), "loss at step 4: {table}");
    let series = env.json(Some(&t.viewer), &["runs", "metrics", &id, "--name", "acc"]).await;
    assert_eq!(series["series"].as_object().unwrap().len(), 1);
    assert_eq!(series["series"]["acc"][4], json!([4, 0.9]));

    let listed = env.ok(Some(&t.viewer), &["runs", "list"]).await;
    assert!(listed.contains(&id) && listed.contains("notebook"), "{listed}");
    let listed = env.json(Some(&t.viewer), &["runs", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let err = env.fails(Some(&t.viewer), &["runs", "create", "x"]).await;
    assert!(err.contains("forbidden") && err.contains("member"), "{err}");
    let err = env.fails(member, &["runs", "create", "x", "--param", "novalue"]).await;
    assert!(err.contains("`novalue` is not KEY=VALUE"), "{err}");
    let err = env.fails(member, &["runs", "create", ""]).await;
    assert!(err.contains("validation_failed"), "{err}");
    let missing = uuid::Uuid::now_v7().to_string();
    let err = env.fails(member, &["runs", "metrics", &missing]).await;
    assert!(err.contains("not_found"), "{err}");
    let err = env.fails(Some(&t.admin), &["runs", "list"]).await;
    assert!(err.contains("forbidden") && err.contains("team token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_finds_each_role_without_changing_anything() {
    let env = start().await;
    let t = env.team_tokens("who").await;
    for (token, role) in [
        (&t.admin, "admin"),
        (&t.maintainer, "maintainer"),
        (&t.member, "member"),
        (&t.viewer, "viewer"),
    ] {
        let me = env.json(Some(token), &["whoami"]).await;
        assert_eq!(me["role"], role, "{me}");
        assert_eq!(me["api_url"], env.api_url.as_str());
        assert_eq!(me["token_prefix"], &token[..12]);
        assert_eq!(me["profile"], "default");
        let table = env.ok(Some(token), &["whoami"]).await;
        assert!(table.contains(&format!("role      {role}")), "{table}");
        assert!(!table.contains(&token[12..]), "whoami shows only the token's prefix: {table}");
    }
    // The member probe (an invalid run) made no run.
    assert_eq!(env.json(Some(&t.viewer), &["runs", "list"]).await, json!([]));

    let me = env.json(None, &["whoami"]).await;
    assert_eq!(me["role"], Value::Null);
    assert!(env.ok(None, &["whoami"]).await.contains("token     none"));
    let err = env.fails(Some("kiln_not_a_token"), &["whoami"]).await;
    assert!(err.contains("unauthenticated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pages_and_roles() {
    let env = start().await;
    let t = env.team_tokens("audited").await;
    // The team was created and its three tokens issued: audited for its maintainer to see.
    let records = env.json(Some(&t.maintainer), &["audit"]).await;
    let records = records.as_array().unwrap();
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["token.issue", "token.issue", "token.issue", "team.create"]);
    // The admin sees every team's records and the platform's own (team creation, bootstrap).
    let all = env.json(Some(&t.admin), &["audit", "--limit", "500"]).await;
    assert!(all.as_array().unwrap().len() > 3, "{all}");

    let (ok, stdout, stderr) = env.run(Some(&t.maintainer), &["audit", "--limit", "3"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "header and three records: {stdout}");
    assert!(stdout.contains("token.issue") && stdout.contains("token/"), "{stdout}");
    let cursor = stderr.trim().strip_prefix("more records: --cursor ").expect(&stderr).to_owned();
    let rest = env.json(Some(&t.maintainer), &["audit", "--limit", "3", "--cursor", &cursor]).await;
    assert_eq!(rest.as_array().unwrap(), &records[3..], "the next page");
    let every = env.json(Some(&t.maintainer), &["audit", "--limit", "1", "--all"]).await;
    assert_eq!(every.as_array().unwrap(), records, "--all follows the cursor to the end");

    let err = env.fails(Some(&t.member), &["audit"]).await;
    assert!(err.contains("forbidden"), "{err}");
    let err = env.fails(Some(&t.maintainer), &["audit", "--limit", "0"]).await;
    assert!(err.contains("validation_failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_show_and_the_json_flag() {
    let env = start().await;
    let t = env.team_tokens("data").await;
    let uploaded = env.json(Some(&t.member), &["datasets", "upload", IRIS, "--name", "iris"]).await;
    let id = uploaded["id"].as_str().unwrap().to_owned();
    let shown = env.json(Some(&t.viewer), &["datasets", "show", &id]).await;
    assert_eq!(shown, uploaded);
    let long = env.ok(Some(&t.viewer), &["--output", "json", "datasets", "show", &id]).await;
    assert_eq!(serde_json::from_str::<Value>(&long).unwrap(), shown, "--json is --output json");
    let table = env.ok(Some(&t.viewer), &["datasets", "show", &id]).await;
    assert!(table.contains(uploaded["sha256"].as_str().unwrap()), "{table}");
    assert!(table.contains("petal_length"), "the schema is shown: {table}");
    let err =
        env.fails(Some(&t.viewer), &["datasets", "show", &uuid::Uuid::now_v7().to_string()]).await;
    assert!(err.contains("not_found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_update_changes_traffic_and_batching() {
    let env = start().await;
    let (_, maintainer) = team_with_a_model(&env).await;
    let token = Some(maintainer.as_str());
    env.ok(token, &["deployments", "create", "iris", "--model", "iris", "--alias", "production"])
        .await;
    let d = env.json(token, &["deployments", "update", "iris", "--max-batch-size", "8"]).await;
    assert_eq!(d["batching"], json!({"max_batch_size": 8, "max_wait_ms": 2}), "wait kept");
    let d = env
        .json(token, &["deployments", "update", "iris", "--max-wait-ms", "5", "--traffic", "1=100"])
        .await;
    assert_eq!(d["batching"], json!({"max_batch_size": 8, "max_wait_ms": 5}), "size kept");
    assert_eq!(d["traffic"], json!([{"version": 1, "weight": 100}]));
    let table =
        env.ok(token, &["deployments", "update", "iris", "--allow-extra-features", "true"]).await;
    assert!(table.contains("extra features ignored"), "{table}");
    let d = env.json(token, &["deployments", "update", "iris", "--reset-traffic"]).await;
    assert_eq!(d["allow_extra_features"], true);
    assert_eq!(d["traffic"], json!([{"version": 1, "weight": 100}]), "{d}");

    let err = env.fails(token, &["deployments", "update", "iris"]).await;
    assert!(err.contains("nothing to change"), "{err}");
    let err = env.fails(token, &["deployments", "update", "iris", "--max-batch-size", "0"]).await;
    assert!(err.contains("validation_failed") && err.contains("max_batch_size"), "{err}");
    let err = env.fails(token, &["deployments", "update", "iris", "--traffic", "2=10"]).await;
    assert!(err.contains("validation_failed"), "{err}");
    let err = env.fails(token, &["deployments", "update", "nope", "--max-wait-ms", "1"]).await;
    assert!(err.contains("not_found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_cover_the_new_verbs() {
    let env = start().await;
    for shell in ["bash", "zsh", "fish"] {
        let script = env.ok(None, &["completions", shell]).await;
        for verb in ["whoami", "audit", "runs", "download", "update", "metrics"] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_create_uses_api_defaults_and_offers_update_for_an_existing_name() {
    let env = start().await;
    let (_, maintainer) = team_with_a_model(&env).await;
    let token = Some(maintainer.as_str());
    let d = env
        .json(token, &["deployments", "create", "iris", "--model", "iris", "--alias", "production"])
        .await;
    assert_eq!(d["batching"], json!({"max_batch_size": 64, "max_wait_ms": 2}), "API defaults");
    let err = env
        .fails(
            token,
            &["deployments", "create", "iris", "--model", "iris", "--alias", "production"],
        )
        .await;
    assert!(err.contains("already exists") && err.contains("--update"), "{err}");
    let d = env
        .json(
            token,
            &["deployments", "create", "iris", "--model", "iris", "--alias", "production"]
                .into_iter()
                .chain(["--update", "--max-batch-size", "8"])
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(d["batching"], json!({"max_batch_size": 8, "max_wait_ms": 2}), "{d}");
    env.ok(token, &["models", "alias", "iris", "staging", "1"]).await;
    let err = env
        .fails(
            token,
            &["deployments", "create", "iris", "--model", "iris", "--alias", "staging", "--update"],
        )
        .await;
    assert!(err.contains("does not follow alias `staging`"), "{err}");
    env.ok(token, &["deployments", "create", "pinned", "--model", "iris", "--version", "1"]).await;
    let d = env
        .json(
            token,
            &["deployments", "create", "pinned", "--model", "iris", "--version", "1"]
                .into_iter()
                .chain(["--update", "--max-wait-ms", "0"])
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(d["batching"], json!({"max_batch_size": 64, "max_wait_ms": 0}), "{d}");
    assert_eq!(d["traffic"], json!([{"version": 1, "weight": 100}]), "{d}");
    // No sampled rows yet: drift is not judged, and says why.
    let table = env.ok(token, &["deployments", "drift", "iris"]).await;
    assert!(table.contains("insufficient samples"), "{table}");
}
