//! kiln-ml's integration tests: one binary, one module per feature.
//!
//! They train real models on the example data in `data/` (CPU, 2 threads) and need the
//! libtorch virtualenv of `scripts/env.sh`; the TorchScript test also runs its Python.

mod bundle;
mod data;
mod link;
mod resume;
mod score;
mod support;
mod torchscript;
mod training;
