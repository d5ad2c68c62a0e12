//! Where tensors live: CUDA when present, CPU otherwise, or an explicit choice.

use kiln_types::DeviceRequirement;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{MlError, Result};

/// The device a job asks for, before it is resolved on a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The first GPU when this process sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The first GPU; an error when there is none.
    Cuda,
}

impl From<DeviceRequirement> for DeviceChoice {
    fn from(requirement: DeviceRequirement) -> Self {
        match requirement {
            DeviceRequirement::Any => DeviceChoice::Auto,
            DeviceRequirement::Cpu => DeviceChoice::Cpu,
            DeviceRequirement::Cuda => DeviceChoice::Cuda,
        }
    }
}

/// A resolved device. Opaque so that callers never need tch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeDevice(pub(crate) Device);

impl ComputeDevice {
    pub const CPU: ComputeDevice = ComputeDevice(Device::Cpu);

    /// `"cpu"` or `"cuda:N"`, as recorded on the job (`ran_on_device`).
    pub fn name(&self) -> String {
        match self.0 {
            Device::Cuda(n) => format!("cuda:{n}"),
            Device::Mps => "mps".to_owned(),
            Device::Vulkan => "vulkan".to_owned(),
            Device::Cpu => "cpu".to_owned(),
        }
    }

    pub fn is_cuda(&self) -> bool {
        self.0.is_cuda()
    }
}

impl DeviceChoice {
    /// The device to use on this machine.
    pub fn resolve(self) -> Result<ComputeDevice> {
        match self {
            DeviceChoice::Cpu => Ok(ComputeDevice::CPU),
            DeviceChoice::Auto => Ok(ComputeDevice(Device::cuda_if_available())),
            DeviceChoice::Cuda if cuda_available() => Ok(ComputeDevice(Device::Cuda(0))),
            DeviceChoice::Cuda => Err(MlError::CudaUnavailable),
        }
    }
}

/// True when libtorch sees at least one CUDA device.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// How many CUDA devices libtorch sees.
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

/// Sets libtorch's intra-op thread count for the whole process (a worker calls this once).
pub fn set_num_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads.max(1)).unwrap_or(i32::MAX));
}

/// libtorch's intra-op thread count.
pub fn num_threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1)
}
