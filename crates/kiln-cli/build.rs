// The `kiln` binary itself never links libtorch: it is an HTTP and PostgreSQL client, and
// kiln-ml is only a dev-dependency. The integration tests do link it (they run kiln-api
// and a kiln-worker in process), so they alone get an rpath to libtorch:
// `cargo:rustc-link-arg-tests` reaches test targets only, never the binary.
//
// Cargo hands a crate's `links` metadata (kiln-ml's `DEP_KILN_ML_LIBTORCH_LIB`, see
// crates/kiln-ml/link_libtorch.rs) only to the build scripts of its normal dependents, not
// to dev-dependents. So this script finds the directory the way torch-sys does: with
// `LIBTORCH_USE_PYTORCH` (scripts/env.sh sets it) from the Python on PATH (`python` in a
// virtualenv, else `python3`), else `LIBTORCH_LIB` or `LIBTORCH`, + `/lib`. tests/cli/linking.rs checks
// that the test binary's rpath holds the directory kiln-ml was built against.

use std::process::Command;

const PYTHON_LIBRARY_PATHS: &str =
    "from torch.utils import cpp_extension\nfor p in cpp_extension.library_paths(): print(p)";

fn libtorch_lib() -> Option<String> {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() {
        let root = std::env::var("LIBTORCH_LIB").or_else(|_| std::env::var("LIBTORCH")).ok()?;
        return Some(format!("{root}/lib"));
    }
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let out = Command::new(python).args(["-c", PYTHON_LIBRARY_PATHS]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().next().map(str::to_owned).filter(|_| out.status.success())
}

fn main() {
    for var in ["LIBTORCH_LIB", "LIBTORCH", "LIBTORCH_USE_PYTORCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo:rerun-if-env-changed=PATH");
    match libtorch_lib() {
        Some(dir) => println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{dir}"),
        None => println!(
            "cargo:warning=libtorch's directory not found: the kiln-cli tests will not find \
             libtorch (source scripts/env.sh)"
        ),
    }
}
