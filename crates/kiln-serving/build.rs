// kiln-serving links kiln-ml (every engine owns a loaded model): its test binaries need the
// rpath to libtorch that kiln-ml's build found. See crates/kiln-ml/link_libtorch.rs.
include!("../kiln-ml/link_libtorch.rs");

fn main() {
    link_libtorch_from_kiln_ml();
}
