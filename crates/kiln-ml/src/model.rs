//! Model architectures and the networks built from them.
//!
//! An [`Architecture`] is the serialisable description recorded in a model bundle; a
//! [`Network`] is the live module on a device. Built-in architectures are tch `nn` modules
//! whose parameters live in a `VarStore` under stable names (`fc0.weight`, `conv1.bias`,
//! ...); a TorchScript module is loaded with `TrainableCModule`, which registers its
//! parameters in the same kind of store, so training, checkpoints and bundles treat all four
//! the same way.

use std::io::Cursor;

use kiln_types::spec::{Activation, JobSpec, ModelSpec, Task};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::error::{MlError, Result};

/// A model's shape, as recorded in `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Architecture {
    Linear {
        inputs: i64,
        outputs: i64,
    },
    Mlp {
        inputs: i64,
        outputs: i64,
        hidden: Vec<i64>,
        activation: Activation,
        dropout: f64,
    },
    Cnn {
        /// `[C, H, W]`.
        input_shape: Vec<i64>,
        outputs: i64,
        channels: Vec<i64>,
        kernel_size: i64,
        dropout: f64,
    },
    /// The scripted module itself travels in the bundle as `model.pt`.
    #[serde(rename = "torchscript")]
    TorchScript {
        input_shape: Vec<i64>,
        outputs: i64,
    },
}

impl Architecture {
    /// The architecture a spec asks for, given the data's per-sample shape and output count.
    pub(crate) fn from_spec(spec: &JobSpec, sample_shape: &[i64], outputs: i64) -> Result<Self> {
        let flat = || -> Result<i64> {
            match sample_shape {
                [inputs] => Ok(*inputs),
                _ => Ok(sample_shape.iter().product()),
            }
        };
        Ok(match &spec.model {
            ModelSpec::Linear => Architecture::Linear { inputs: flat()?, outputs },
            ModelSpec::Mlp { hidden, dropout, activation } => Architecture::Mlp {
                inputs: flat()?,
                outputs,
                hidden: hidden.iter().map(|&h| i64::from(h)).collect(),
                activation: *activation,
                dropout: *dropout,
            },
            ModelSpec::Cnn { channels, kernel_size, dropout } => {
                // `prepare` refused a CNN on anything but images (JobSpec::check_against);
                // only data prepared for another spec gets here.
                if sample_shape.len() != 3 {
                    return Err(MlError::spec(
                        "model.type",
                        format!(
                            "the data was prepared for another model: a cnn takes C×H×W \
                             samples, not {sample_shape:?}"
                        ),
                    ));
                }
                Architecture::Cnn {
                    input_shape: sample_shape.to_vec(),
                    outputs,
                    channels: channels.iter().map(|&c| i64::from(c)).collect(),
                    kernel_size: i64::from(*kernel_size),
                    dropout: *dropout,
                }
            }
            ModelSpec::TorchScript { .. } => {
                Architecture::TorchScript { input_shape: sample_shape.to_vec(), outputs }
            }
        })
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Architecture::Linear { .. } => "linear",
            Architecture::Mlp { .. } => "mlp",
            Architecture::Cnn { .. } => "cnn",
            Architecture::TorchScript { .. } => "torchscript",
        }
    }

    fn input_shape(&self) -> Vec<i64> {
        match self {
            Architecture::Linear { inputs, .. } | Architecture::Mlp { inputs, .. } => vec![*inputs],
            Architecture::Cnn { input_shape, .. }
            | Architecture::TorchScript { input_shape, .. } => input_shape.clone(),
        }
    }

    fn outputs(&self) -> i64 {
        match self {
            Architecture::Linear { outputs, .. }
            | Architecture::Mlp { outputs, .. }
            | Architecture::Cnn { outputs, .. }
            | Architecture::TorchScript { outputs, .. } => *outputs,
        }
    }

    /// True when a forward pass in training mode draws random numbers (dropout).
    fn is_stochastic(&self) -> bool {
        match self {
            Architecture::Linear { .. } => false,
            Architecture::Mlp { dropout, .. } | Architecture::Cnn { dropout, .. } => *dropout > 0.0,
            // A user's module may hold dropout we cannot see.
            Architecture::TorchScript { .. } => true,
        }
    }
}

enum Body {
    Native(nn::SequentialT),
    Script(tch::TrainableCModule),
}

/// A live model on a device.
pub(crate) struct Network {
    pub(crate) vs: nn::VarStore,
    body: Body,
    pub(crate) arch: Architecture,
    task: Task,
    training: bool,
    stochastic: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("arch", &self.arch)
            .field("device", &self.vs.device())
            .finish()
    }
}

fn activate(xs: &Tensor, activation: Activation) -> Tensor {
    match activation {
        Activation::Relu => xs.relu(),
        Activation::Tanh => xs.tanh(),
        Activation::Gelu => xs.gelu("none"),
        Activation::Sigmoid => xs.sigmoid(),
    }
}

impl Network {
    /// Builds `arch` on `device` with freshly initialised weights (from torch's global RNG,
    /// which the caller seeds). `script` holds the TorchScript module for that architecture.
    pub(crate) fn build(
        arch: &Architecture,
        task: Task,
        device: Device,
        script: Option<&[u8]>,
    ) -> Result<Network> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let body = match arch {
            Architecture::Linear { inputs, outputs } => Body::Native(nn::seq_t().add(nn::linear(
                &root / "fc0",
                *inputs,
                *outputs,
                Default::default(),
            ))),
            Architecture::Mlp { inputs, outputs, hidden, activation, dropout } => {
                let mut seq = nn::seq_t();
                let mut width = *inputs;
                for (i, &h) in hidden.iter().enumerate() {
                    seq =
                        seq.add(nn::linear(&root / format!("fc{i}"), width, h, Default::default()));
                    let activation = *activation;
                    seq = seq.add_fn(move |xs| activate(xs, activation));
                    if *dropout > 0.0 {
                        let p = *dropout;
                        seq = seq.add_fn_t(move |xs, train| xs.dropout(p, train));
                    }
                    width = h;
                }
                let last = format!("fc{}", hidden.len());
                Body::Native(seq.add(nn::linear(&root / last, width, *outputs, Default::default())))
            }
            Architecture::Cnn { input_shape, outputs, channels, kernel_size, dropout } => {
                let (mut c, mut h, mut w) = (input_shape[0], input_shape[1], input_shape[2]);
                let mut seq = nn::seq_t();
                let config = nn::ConvConfig { padding: kernel_size / 2, ..Default::default() };
                for (i, &out) in channels.iter().enumerate() {
                    seq = seq.add(nn::conv2d(
                        &root / format!("conv{i}"),
                        c,
                        out,
                        *kernel_size,
                        config,
                    ));
                    seq = seq.add_fn(|xs| xs.relu());
                    if h >= 2 && w >= 2 {
                        seq = seq.add_fn(|xs| xs.max_pool2d_default(2));
                        h /= 2;
                        w /= 2;
                    }
                    c = out;
                }
                seq = seq.add_fn(|xs| xs.flatten(1, -1));
                if *dropout > 0.0 {
                    let p = *dropout;
                    seq = seq.add_fn_t(move |xs, train| xs.dropout(p, train));
                }
                Body::Native(seq.add(nn::linear(
                    &root / "head",
                    c * h * w,
                    *outputs,
                    Default::default(),
                )))
            }
            Architecture::TorchScript { .. } => {
                let bytes = script.ok_or_else(|| {
                    MlError::Script("the TorchScript module's bytes were not provided".into())
                })?;
                let module = tch::TrainableCModule::load_data(&mut Cursor::new(bytes), root)
                    .map_err(|e| {
                        MlError::Script(format!(
                            "cannot load the module: {}",
                            first_line(&e.to_string())
                        ))
                    })?;
                Body::Script(module)
            }
        };
        let stochastic = arch.is_stochastic();
        let mut network =
            Network { vs, body, arch: arch.clone(), task, training: true, stochastic };
        if matches!(network.body, Body::Script(_)) {
            network.check_script_outputs()?;
        }
        Ok(network)
    }

    /// Runs one sample of zeros through a user's module and checks the output shape.
    fn check_script_outputs(&mut self) -> Result<()> {
        if self.vs.trainable_variables().is_empty() {
            return Err(MlError::Script("the module has no trainable parameters".into()));
        }
        let mut shape = vec![2];
        shape.extend(self.arch.input_shape());
        let probe = Tensor::zeros(&shape, (Kind::Float, self.vs.device()));
        self.set_training(false);
        let out = tch::no_grad(|| self.forward(&probe))?;
        self.set_training(true);
        let expected = self.arch.outputs();
        let fits = match self.task {
            Task::Classification => out.size() == [2, expected],
            Task::Regression => out.size() == [2],
        };
        if !fits {
            let wanted = match self.task {
                Task::Classification => format!("[batch, {expected}] (one logit per class)"),
                Task::Regression => "[batch] or [batch, 1]".to_owned(),
            };
            return Err(MlError::Script(format!(
                "for inputs of shape [batch, {}] it returns {:?}; expected {wanted}",
                self.arch.input_shape().iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
                out.size()
            )));
        }
        Ok(())
    }

    pub(crate) fn is_stochastic(&self) -> bool {
        self.stochastic
    }

    pub(crate) fn set_training(&mut self, training: bool) {
        if self.training != training {
            if let Body::Script(module) = &mut self.body {
                if training { module.set_train() } else { module.set_eval() }
            }
            self.training = training;
        }
    }

    /// Logits `[n, classes]`, or standardised values `[n]` for regression.
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let out = match &self.body {
            // Image-shaped samples given to a dense model are flattened first.
            Body::Native(seq) if xs.dim() > 2 && !matches!(self.arch, Architecture::Cnn { .. }) => {
                seq.forward_t(&xs.flatten(1, -1), self.training)
            }
            Body::Native(seq) => seq.forward_t(xs, self.training),
            Body::Script(module) => module.forward_ts(&[xs]).map_err(|e| {
                MlError::Script(format!("forward failed: {}", first_line(&e.to_string())))
            })?,
        };
        Ok(match self.task {
            Task::Regression if out.dim() == 2 && out.size()[1] == 1 => out.squeeze_dim(1),
            _ => out,
        })
    }

    /// Trainable parameters with their names, sorted by name.
    pub(crate) fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Copies `weights` (name → tensor, any device) into the parameters; every parameter must
    /// be present with the same shape.
    pub(crate) fn load_weights(
        &mut self,
        weights: &[(String, Tensor)],
    ) -> std::result::Result<(), String> {
        let params = self.named_parameters();
        if params.len() != weights.len() {
            return Err(format!(
                "{} tensors for a model with {} parameters",
                weights.len(),
                params.len()
            ));
        }
        tch::no_grad(|| {
            for (name, param) in &params {
                let source = weights
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t)
                    .ok_or_else(|| format!("no tensor for parameter `{name}`"))?;
                if source.size() != param.size() {
                    return Err(format!(
                        "parameter `{name}` has shape {:?}, the saved tensor {:?}",
                        param.size(),
                        source.size()
                    ));
                }
                param.shallow_clone().copy_(source);
            }
            Ok(())
        })
    }
}

/// libtorch errors carry a C++ backtrace after the first line.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}
