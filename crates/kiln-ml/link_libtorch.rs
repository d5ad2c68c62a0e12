// Shared by kiln-ml's build script and, through `include!`, by the build script of every
// binary crate that links kiln-ml (kiln-worker, kiln-api, kiln). It makes the linked program
// find libtorch at run time without LD_LIBRARY_PATH, and keeps the CUDA half of libtorch.
//
// Two facts make this necessary:
// - `cargo:rustc-link-arg` printed by a library's build script applies only to that
//   package's own tests, benches, examples and binaries, never to downstream binaries. So
//   kiln-ml hands the libtorch directory on as `links` metadata (`DEP_KILN_ML_LIBTORCH_LIB`)
//   and each binary's build script re-emits the arguments.
// - rustc links with `-Wl,--as-needed`. A program calls into libtorch_cpu only, so the
//   linker drops `libtorch_cuda.so` (and `libtorch.so`, which pulls it in): CUDA is then
//   never initialised and `cuda_if_available()` says "no" even on a GPU machine. We name
//   them again between `--no-as-needed` and `--as-needed`, so they stay in DT_NEEDED.
//
// Usage in a downstream crate (which must depend on kiln-ml directly):
//     // build.rs
//     include!("../kiln-ml/link_libtorch.rs");
//     fn main() { link_libtorch_from_kiln_ml(); }

/// Prints the link arguments for a program that uses the libtorch in `lib_dir`.
#[allow(dead_code)]
fn emit_libtorch_link_args(lib_dir: &str) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    let path = std::path::Path::new(lib_dir);
    let mut keep = Vec::new();
    for name in ["torch_cuda", "torch"] {
        if path.join(format!("lib{name}.so")).exists() {
            keep.push(format!("-l{name}"));
        }
    }
    if !keep.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-L,{lib_dir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed", keep.join(","));
    }
}

/// For a binary crate's build script: re-emits what kiln-ml's build script found.
#[allow(dead_code)]
fn link_libtorch_from_kiln_ml() {
    println!("cargo:rerun-if-env-changed=DEP_KILN_ML_LIBTORCH_LIB");
    let lib_dir = std::env::var("DEP_KILN_ML_LIBTORCH_LIB")
        .expect("DEP_KILN_ML_LIBTORCH_LIB is unset: this crate must depend on kiln-ml directly");
    emit_libtorch_link_args(&lib_dir);
}
