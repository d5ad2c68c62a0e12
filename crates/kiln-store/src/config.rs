//! Configuration: [`StoreArgs`] (flags and environment variables, see OPERATIONS.md) and
//! [`open`], which the worker, the API and the CLI call to get their store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ErrorKind, Result, StoreError};
use crate::{ArtifactStore, LocalStore, S3Settings, S3Store};

/// The artifact store's settings. Endpoint, region and credentials are not here: they come
/// from the AWS SDK's own variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, profiles, instance roles) through its default chain.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Where artifacts live: `file:///abs/dir` or `s3://bucket/prefix`
    /// [default: file://$XDG_DATA_HOME/kiln/artifacts]
    #[arg(long = "artifact-store", env = "KILN_ARTIFACT_STORE", value_name = "URL")]
    pub artifact_store: Option<String>,

    /// Path-style S3 addressing (`http://host/bucket/key`), for S3-compatible servers
    #[arg(
        long = "s3-force-path-style",
        env = "KILN_S3_FORCE_PATH_STYLE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub s3_force_path_style: bool,

    /// S3 multipart part size in MiB (at least 5)
    #[arg(long = "s3-part-size-mib", env = "KILN_S3_PART_SIZE_MIB", default_value_t = 8)]
    pub s3_part_size_mib: usize,

    /// S3 parts uploading at once per upload; memory per upload is about
    /// (parts in flight + 1) x part size
    #[arg(long = "s3-parts-in-flight", env = "KILN_S3_PARTS_IN_FLIGHT", default_value_t = 4)]
    pub s3_parts_in_flight: usize,

    /// Range size in MiB of downloads to files (one ranged GET each)
    #[arg(long = "s3-range-size-mib", env = "KILN_S3_RANGE_SIZE_MIB", default_value_t = DEFAULT_RANGE_MIB)]
    pub s3_range_size_mib: usize,

    /// Ranges downloading at once per download to a file; memory per download is about
    /// ranges in flight x range size, plus 12 MiB
    #[arg(long = "s3-ranges-in-flight", env = "KILN_S3_RANGES_IN_FLIGHT", default_value_t = DEFAULT_RANGES_IN_FLIGHT)]
    pub s3_ranges_in_flight: usize,

    /// A local (`file://`) store with less free space than this, in MiB, is not ready
    /// (`/readyz` answers 503); 0 turns the check off
    #[arg(long = "store-min-free-mib", env = "KILN_STORE_MIN_FREE_MIB", default_value_t = DEFAULT_MIN_FREE_MIB)]
    pub store_min_free_mib: u64,
}

const DEFAULT_RANGE_MIB: usize = 2;
const DEFAULT_RANGES_IN_FLIGHT: usize = 24;
const DEFAULT_MIN_FREE_MIB: u64 = 100;

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            artifact_store: None,
            s3_force_path_style: false,
            s3_part_size_mib: 8,
            s3_parts_in_flight: 4,
            s3_range_size_mib: DEFAULT_RANGE_MIB,
            s3_ranges_in_flight: DEFAULT_RANGES_IN_FLIGHT,
            store_min_free_mib: DEFAULT_MIN_FREE_MIB,
        }
    }
}

/// A parsed `KILN_ARTIFACT_STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Local(PathBuf),
    S3(S3Location),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl StoreArgs {
    /// Parses the configured location, or the local default.
    pub fn location(&self) -> Result<StoreLocation> {
        match self.artifact_store.as_deref().map(str::trim) {
            None | Some("") => Ok(StoreLocation::Local(default_local_dir()?)),
            Some(url) => StoreLocation::parse(url),
        }
    }
}

impl StoreLocation {
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            StoreError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "KILN_ARTIFACT_STORE={url:?}: {why} (want file:///abs/dir or s3://bucket/prefix)"
                ),
            )
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("a file:// store needs an absolute path"));
            }
            return Ok(StoreLocation::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !bucket_ok {
                return Err(invalid("not a valid S3 bucket name"));
            }
            let mut prefix = prefix.trim_end_matches('/').to_owned();
            if !prefix.is_empty() {
                crate::key::validate_prefix(&prefix).map_err(|err| invalid(err.message()))?;
                prefix.push('/');
            }
            return Ok(StoreLocation::S3(S3Location { bucket: bucket.to_owned(), prefix }));
        }
        Err(invalid("unknown scheme"))
    }
}

/// `$XDG_DATA_HOME/kiln/artifacts`, or `~/.local/share/kiln/artifacts`.
fn default_local_dir() -> Result<PathBuf> {
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local/share"))
        })
        .ok_or_else(|| {
            StoreError::new(
                ErrorKind::InvalidConfig,
                "no KILN_ARTIFACT_STORE, and neither XDG_DATA_HOME nor HOME is set",
            )
        })?;
    Ok(data_home.join(Path::new("kiln/artifacts")))
}

/// Opens the configured store: S3 through the SDK's default chain, or the local directory.
pub async fn open(args: &StoreArgs) -> Result<Arc<dyn ArtifactStore>> {
    match args.location()? {
        StoreLocation::Local(dir) => Ok(Arc::new(
            LocalStore::open(dir)
                .await?
                .with_min_free(args.store_min_free_mib.saturating_mul(1 << 20)),
        )),
        StoreLocation::S3(S3Location { bucket, prefix }) => {
            let mut settings = S3Settings::new(bucket, prefix);
            settings.force_path_style = args.s3_force_path_style;
            settings.part_size = args.s3_part_size_mib.saturating_mul(1 << 20);
            settings.parts_in_flight = args.s3_parts_in_flight;
            settings.range_size = args.s3_range_size_mib.saturating_mul(1 << 20);
            settings.ranges_in_flight = args.s3_ranges_in_flight;
            Ok(Arc::new(S3Store::connect(settings).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    #[test]
    fn locations_parse() {
        assert_eq!(
            StoreLocation::parse("file:///var/lib/kiln").unwrap(),
            StoreLocation::Local(PathBuf::from("/var/lib/kiln"))
        );
        assert_eq!(
            StoreLocation::parse("s3://kiln-artifacts/prod/eu").unwrap(),
            StoreLocation::S3(S3Location {
                bucket: "kiln-artifacts".into(),
                prefix: "prod/eu/".into()
            })
        );
        assert_eq!(
            StoreLocation::parse("s3://kiln-artifacts").unwrap(),
            StoreLocation::S3(S3Location {
                bucket: "kiln-artifacts".into(),
                prefix: String::new()
            })
        );
        for bad in
            ["file://relative/dir", "s3://", "s3://Bad_Bucket/x", "s3://b/../x", "gs://b", "/abs"]
        {
            let err = StoreLocation::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "kiln",
            "--artifact-store",
            "s3://bucket/p",
            "--s3-force-path-style",
        ])
        .unwrap();
        assert_eq!(cli.store.artifact_store.as_deref(), Some("s3://bucket/p"));
        assert!(cli.store.s3_force_path_style);
        let cli = Cli::try_parse_from(["kiln", "--artifact-store", "file:///x"]).unwrap();
        assert!(!cli.store.s3_force_path_style);
        assert_eq!(cli.store.location().unwrap(), StoreLocation::Local("/x".into()));
    }
}
