// kiln-api links kiln-ml (schema inference, serving): its binaries and tests need the
// rpath to libtorch that kiln-ml's build found. See crates/kiln-ml/link_libtorch.rs.
include!("../kiln-ml/link_libtorch.rs");

fn main() {
    link_libtorch_from_kiln_ml();
}
