//! Kiln's black-box end-to-end tests live in `e2e/`: they start the real `kiln-api`,
//! `kiln-worker` and `kiln` binaries (built by `cargo test --workspace`) against a fresh
//! PostgreSQL database and a real S3-compatible server, and talk to them as a user would.
//! This library is empty on purpose.
