//! Test support (feature `testing`): a real s3s-fs S3-compatible server on 127.0.0.1 for
//! the tests of this and other crates. s3s-fs checks SigV4 signatures, so clients talk to
//! it exactly as to S3.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{RetryPolicy, S3Settings, S3Store, SecretString, StaticCredentials};

pub const ACCESS_KEY: &str = "kiln-test-access";
pub const SECRET_KEY: &str = "kiln-test-secret-0123456789";
pub const BUCKET: &str = "kiln-test";

/// The s3s-fs binary: `$KILN_S3S_FS` (set by scripts/env.sh), else the cache location
/// `kiln_ensure_s3s` installs to. Missing means the test fails, loudly: run
/// `. scripts/env.sh && kiln_ensure_s3s` (or scripts/test.sh, which does).
pub fn s3s_fs_binary() -> PathBuf {
    let candidates = std::env::var_os("KILN_S3S_FS").map(PathBuf::from).into_iter().chain(
        std::env::var_os("KILN_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("kiln")).or_else(
                    || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")),
                )
            })
            .map(|cache| cache.join("s3s/bin/s3s-fs")),
    );
    let candidates: Vec<PathBuf> = candidates.collect();
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "s3s-fs not found (looked at {candidates:?}). These tests need the real S3-compatible \
             server: run `. scripts/env.sh && kiln_ensure_s3s`, or scripts/test.sh"
        )
    })
}

/// A real s3s-fs on a free port of 127.0.0.1, with one bucket, in a temporary directory.
/// Killed on drop.
#[derive(Debug)]
pub struct S3sServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// s3s-fs's root: buckets are directories; upload state is `.upload*` files here.
    pub root: PathBuf,
    dir: tempfile::TempDir,
}

impl S3sServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(BUCKET)).expect("bucket directory");
        let mut server =
            Self { child: None, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), root, dir };
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("probe a free port")
                .port();
            server.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if server.spawn() {
                return server;
            }
        }
        let log = std::fs::read_to_string(server.dir.path().join("s3s-fs.log")).unwrap_or_default();
        panic!("s3s-fs would not start; its log:\n{log}");
    }

    /// Starts s3s-fs on `self.addr`; false when it exited (the port was taken).
    fn spawn(&mut self) -> bool {
        let binary = s3s_fs_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("s3s-fs.log"))
            .expect("log file");
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &self.addr.port().to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", binary.display()));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().expect("poll s3s-fs").is_some() {
                return false;
            }
            // Generous: a loaded 2-core machine. It starts in milliseconds normally.
            assert!(started.elapsed() < Duration::from_secs(30), "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        while !self.spawn() {
            assert!(started.elapsed() < Duration::from_secs(60), "s3s-fs would not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bucket_dir(&self) -> PathBuf {
        self.root.join(BUCKET)
    }

    /// Stops the server now, as if it crashed; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Settings for this server with the right credentials.
    pub fn settings(&self, prefix: &str) -> S3Settings {
        self.settings_with(prefix, ACCESS_KEY, SECRET_KEY)
    }

    pub fn settings_with(&self, prefix: &str, access: &str, secret: &str) -> S3Settings {
        let mut settings = S3Settings::new(BUCKET, prefix);
        settings.endpoint_url = Some(self.endpoint());
        settings.region = Some("us-east-1".into());
        settings.force_path_style = true;
        settings.credentials = Some(StaticCredentials {
            access_key_id: access.into(),
            secret_access_key: SecretString::new(secret),
        });
        // Quick retries keep failing tests quick; the defaults are exercised where a test
        // says so.
        settings.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(120),
        };
        settings
    }

    pub async fn store(&self, prefix: &str) -> S3Store {
        S3Store::connect(self.settings(prefix)).await.expect("connect")
    }

    /// Every file under the server's root that belongs to an unfinished multipart upload.
    /// s3s-fs 0.14.1 has no ListMultipartUploads; it keeps `.upload-{id}.json` and
    /// `.upload_id-{id}.part-{n}` files in its root until the upload completes or aborts.
    pub fn open_multipart_uploads(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .expect("read s3s-fs root")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(".upload"))
            .collect()
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl S3sServer {
    /// The environment a child process (`kiln-api`, `kiln-worker`) needs to use this server
    /// through `KILN_ARTIFACT_STORE` and the AWS SDK's own variables.
    pub fn child_env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("KILN_ARTIFACT_STORE", format!("s3://{BUCKET}/{prefix}")),
            ("KILN_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
    }
}

/// A small tmpfs mounted for one test: a real file system that fills up and can be
/// remounted read-only, for the store's full-disk tests and those of the API and worker.
/// Mounting needs root (or `CAP_SYS_ADMIN`); without it the test fails and says so, rather
/// than passing without having run. Unmounted (lazily) on drop.
#[derive(Debug)]
pub struct SmallFs {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB.
    pub fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        let size = format!("size={mib}m");
        run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", path.to_str().expect("utf-8 path")])
            .unwrap_or_else(|why| {
                panic!(
                    "mounting a {mib} MiB tmpfs at {} failed: {why}. The full-disk tests need \
                     a real small file system: run them as root (or with CAP_SYS_ADMIN)",
                    path.display()
                )
            });
        Self { path, _dir: dir }
    }

    /// Bytes free for unprivileged writers.
    pub fn free_bytes(&self) -> u64 {
        crate::local::free_bytes(&self.path).expect("statvfs")
    }

    /// Writes a filler file until the file system is full, then gives back `leave` bytes
    /// (rounded down to whole pages, as tmpfs counts them).
    pub fn fill_leaving(&self, leave: u64) {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .expect("filler file");
        let chunk = vec![0xA5u8; 64 << 10];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(err) => panic!("filling {}: {err}", self.path.display()),
            }
        }
        let len = file.metadata().expect("filler size").len();
        file.set_len(len.saturating_sub(leave)).expect("give space back");
        file.sync_all().expect("sync filler");
    }

    /// Removes the filler: the space is free again.
    pub fn free_filler(&self) {
        std::fs::remove_file(self.path.join("filler")).expect("remove filler");
    }

    /// Remounts read-only (`true`) or read-write.
    pub fn set_read_only(&self, read_only: bool) {
        let opts = if read_only { "remount,ro" } else { "remount,rw" };
        run("mount", &["-o", opts, self.path.to_str().expect("utf-8 path")])
            .unwrap_or_else(|why| panic!("remounting {}: {why}", self.path.display()));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.path.to_str().unwrap_or_default()]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|err| err.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}
