//! `kiln datasets download`: the bytes of `GET /v1/datasets/{id}/content`, streamed to a
//! hidden file next to the destination, checked against the dataset's size and sha256, then
//! renamed into place. A failed, interrupted (Ctrl-C) or corrupt download leaves nothing
//! behind, and never a half-written file under the destination's name.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use kiln_types::api::Dataset;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::args::OutputFormat;
use crate::client::Client;

/// The file extension a dataset's format is saved with.
fn extension(format: &str) -> &str {
    match format {
        "torchscript" => "pt",
        other => other,
    }
}

/// Removes the partial file unless [`Partial::keep`] was called.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub async fn dataset(
    client: &Client,
    id: Uuid,
    dest: Option<PathBuf>,
    force: bool,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let meta: Dataset = client.get(&format!("/v1/datasets/{id}")).await?;
    let dest = dest.unwrap_or_else(|| {
        PathBuf::from(format!("{}-v{}.{}", meta.name, meta.version, extension(&meta.format)))
    });
    let to_stdout = dest.as_os_str() == "-";
    if !to_stdout && dest.exists() && !force {
        bail!("{} exists; pass --force to replace it", dest.display());
    }
    let res =
        client.execute(client.request(Method::GET, &format!("/v1/datasets/{id}/content"))?).await?;
    let total = res.content_length().unwrap_or(meta.size_bytes.max(0) as u64);
    let progress = crate::output::byte_progress(total, format == OutputFormat::Table && !to_stdout);

    if to_stdout {
        let copied = copy(res, &mut tokio::io::stdout(), &progress).await;
        if let Err(err) = &copied {
            // `| head`: a closed pipe ends kiln quietly, as everywhere else.
            let closed = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if closed {
                std::process::exit(0);
            }
        }
        let (size, sha256) = copied?;
        check(&meta, size, &sha256)?;
        return Ok(());
    }

    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest.file_name().context("the destination names no file")?;
    let partial = Partial {
        path: dir.join(format!(".{}.kiln-partial-{}", file_name.to_string_lossy(), Uuid::new_v4())),
        kept: false,
    };
    let mut file = tokio::fs::File::create(&partial.path)
        .await
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    let result = tokio::select! {
        copied = copy(res, &mut file, &progress) => copied,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    progress.finish_and_clear();
    let (size, sha256) = result.with_context(|| format!("downloading dataset {id}"))?;
    check(&meta, size, &sha256)?;
    file.sync_all().await.context("flushing the download")?;
    drop(file);
    place(&partial.path, &dest, force)?;
    partial.keep();
    match format {
        OutputFormat::Json => outln!(
            "{}",
            json!({ "id": id, "path": dest.display().to_string(), "size_bytes": size,
                    "sha256": sha256 })
        ),
        OutputFormat::Table => outln!(
            "{} v{} ({size} bytes, sha256 verified) written to {}",
            meta.name,
            meta.version,
            dest.display()
        ),
    }
    Ok(())
}

/// Streams the body into `out`, hashing as it goes: (bytes, sha256 hex).
async fn copy(
    res: reqwest::Response,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the connection broke off")?;
        hasher.update(&chunk);
        out.write_all(&chunk).await.context("writing the download")?;
        size += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    out.flush().await.context("writing the download")?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// The bytes are the dataset's: its size and sha256.
fn check(meta: &Dataset, size: u64, sha256: &str) -> anyhow::Result<()> {
    if size != meta.size_bytes as u64 {
        bail!("the download has {size} bytes, the dataset {}: incomplete", meta.size_bytes);
    }
    if meta.sha256 != sha256 {
        bail!("the download's sha256 {sha256} is not the dataset's {}", meta.sha256);
    }
    Ok(())
}

/// Renames the finished file into place; without `force`, never over an existing file.
fn place(partial: &Path, dest: &Path, force: bool) -> anyhow::Result<()> {
    if force {
        std::fs::rename(partial, dest)
    } else {
        // A hard link fails if `dest` appeared meanwhile; then the partial goes.
        std::fs::hard_link(partial, dest).and_then(|()| std::fs::remove_file(partial))
    }
    .with_context(|| format!("cannot write {}", dest.display()))
}
