// kiln-worker links kiln-ml (libtorch): re-emit its rpath and keep-CUDA link arguments.
include!("../kiln-ml/link_libtorch.rs");
fn main() {
    link_libtorch_from_kiln_ml();
}
