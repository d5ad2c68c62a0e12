//! Finds libtorch through torch-sys (`DEP_TCH_LIBTORCH_LIB`, torch-sys declares
//! `links = "tch"`), links kiln-ml's own tests and benches with an rpath to it and with
//! libtorch_cuda kept, and hands the directory on to downstream binaries as
//! `DEP_KILN_ML_LIBTORCH_LIB` (see link_libtorch.rs). Also records the git commit for model
//! lineage.

include!("link_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=link_libtorch.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib_dir) => {
            println!("cargo:libtorch_lib={lib_dir}");
            println!("cargo:rustc-env=KILN_LIBTORCH_LIB={lib_dir}");
            emit_libtorch_link_args(&lib_dir);
        }
        // torch-sys prints the directory on Linux and macOS only; elsewhere, nothing to add.
        Err(_) => println!("cargo:warning=torch-sys did not report libtorch's directory"),
    }
    println!("cargo:rerun-if-env-changed=KILN_GIT_COMMIT");
    let commit = std::env::var("KILN_GIT_COMMIT").ok().or_else(git_commit);
    println!("cargo:rustc-env=KILN_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}

/// `git rev-parse HEAD`, when building from a checkout.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
