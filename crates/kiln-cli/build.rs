// The `kiln` binary itself never links libtorch: it is an HTTP and PostgreSQL client, and
// kiln-ml is only a dev-dependency. The integration tests do link it (they run kiln-api
// and a kiln-worker in process), so they alone get the rpath to libtorch that kiln-ml's
// build found (see crates/kiln-ml/link_libtorch.rs for why a downstream crate must repeat
// it). `cargo:rustc-link-arg-tests` reaches test targets only, never the binary.
//
// Cargo passes a dev-dependency's `links` metadata (`DEP_KILN_ML_LIBTORCH_LIB`) to this
// script only when test targets are part of the build; a plain `cargo build -p kiln-cli`
// runs it without, and there is then nothing to emit.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_KILN_ML_LIBTORCH_LIB");
    if let Ok(lib_dir) = std::env::var("DEP_KILN_ML_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{lib_dir}");
    }
}
