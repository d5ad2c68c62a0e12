//! Named tensors to and from safetensors bytes (float32/float64/int64), on the CPU.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Device, Kind, Tensor};

use crate::error::{MlError, Result};

/// Serialises tensors (any device) as safetensors; names must be unique.
pub(crate) fn to_safetensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let tensor = tensor.to_device(Device::Cpu).contiguous();
        let (dtype, kind) = match tensor.kind() {
            Kind::Double => (Dtype::F64, Kind::Double),
            Kind::Int64 => (Dtype::I64, Kind::Int64),
            _ => (Dtype::F32, Kind::Float),
        };
        let tensor = tensor.to_kind(kind);
        let bytes_per = match dtype {
            Dtype::F32 => 4,
            _ => 8,
        };
        let mut data = vec![0u8; tensor.numel() * bytes_per];
        tensor.f_copy_data_u8(&mut data, tensor.numel())?;
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype, shape, data));
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| MlError::corrupt("tensor", format!("{e:?}")))
        })
        .collect::<Result<_>>()?;
    safetensors::tensor::serialize(views, &None::<HashMap<String, String>>)
        .map_err(|e| MlError::corrupt("tensor", format!("{e:?}")))
}

/// Reads safetensors bytes into CPU tensors, sorted by name.
pub(crate) fn from_safetensors(bytes: &[u8], what: &'static str) -> Result<Vec<(String, Tensor)>> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| MlError::corrupt(what, format!("{e:?}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            other => {
                return Err(MlError::corrupt(
                    what,
                    format!("unsupported dtype {other:?} for `{name}`"),
                ));
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        out.push((name, tensor));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
