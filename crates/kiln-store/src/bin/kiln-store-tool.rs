//! A small command-line front end to kiln-store, for the benchmark (`scripts/bench-store.sh`)
//! and for tests that need a separate process (peak memory is per process). It opens the
//! store exactly as Kiln's services do, from `KILN_ARTIFACT_STORE` and the AWS variables,
//! and prints one JSON line per command: what it stored or fetched, how long it took, and
//! the process's peak resident memory (`VmHWM`).

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use clap::{Parser, Subcommand};
use kiln_store::{Key, ObjectInfo, StoreArgs, Team};
use tokio::io::{AsyncRead, ReadBuf};

#[derive(Debug, Parser)]
#[command(about = "Upload and download through kiln-store, reporting time and peak memory")]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Content-addressed upload of a file: hash first, then stream straight to the final key.
    PutFile {
        #[arg(long)]
        team: String,
        path: PathBuf,
    },
    /// Content-addressed upload of a file as an unknown stream (staging key, then copy).
    PutStream {
        #[arg(long)]
        team: String,
        path: PathBuf,
    },
    /// Content-addressed upload of N MiB of generated pseudo-random bytes (no file, no
    /// buffer the size of the upload).
    PutGenerated {
        #[arg(long)]
        team: String,
        #[arg(long)]
        mib: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Downloads an object into a file, verifying content-addressed keys before the rename.
    Get { key: String, dest: PathBuf },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let store = kiln_store::open(&cli.store).await?;
    let rss_before_kib = vm_kib("VmRSS");
    let started = Instant::now();
    let (command, info): (&str, ObjectInfo) = match cli.command {
        Command::PutFile { team, path } => {
            ("put-file", kiln_store::put_file(store.as_ref(), &Team::parse(team)?, &path).await?)
        }
        Command::PutStream { team, path } => {
            let mut file =
                tokio::io::BufReader::with_capacity(1 << 20, tokio::fs::File::open(&path).await?);
            ("put-stream", store.put_stream(&Team::parse(team)?, &mut file).await?)
        }
        Command::PutGenerated { team, mib, seed } => {
            let mut reader = Generated::new(seed, mib << 20);
            ("put-generated", store.put_stream(&Team::parse(team)?, &mut reader).await?)
        }
        Command::Get { key, dest } => {
            ("get", kiln_store::download_to_file(store.as_ref(), &Key::parse(key)?, &dest).await?)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "command": command,
        "key": info.key,
        "sha256": info.sha256,
        "size": info.size,
        "seconds": seconds,
        "mb_per_s": info.size as f64 / 1e6 / seconds,
        "rss_before_kib": rss_before_kib,
        "peak_rss_kib": vm_kib("VmHWM"),
    });
    println!("{line}");
    Ok(())
}

/// A field of `/proc/self/status` in KiB (0 where there is no procfs).
fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// `len` pseudo-random bytes (xorshift64*), produced as they are read.
struct Generated {
    state: u64,
    left: u64,
}

impl Generated {
    fn new(seed: u64, len: u64) -> Self {
        Self { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, left: len }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 { (buf.remaining() as u64).min(self.left) as usize } else { n };
        let state = &mut self.state;
        for word in buf.initialize_unfilled_to(n).chunks_mut(8) {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
        buf.advance(n);
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}
