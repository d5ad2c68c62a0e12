//! SGD (with momentum), Adam and AdamW over plain tensors, with state we can checkpoint.
//!
//! tch's `nn::Optimizer` wraps libtorch's C++ optimisers, whose moment buffers cannot be read
//! or restored through tch; a resumed job must continue with exactly the moments it stopped
//! with, so kiln-ml keeps them itself. The update rules are PyTorch's (`torch.optim.SGD`,
//! `Adam` with L2 weight decay, `AdamW` with decoupled decay); each step is a handful of
//! in-place tensor ops per parameter, about what the C++ optimisers do.

use kiln_types::spec::{Hyperparameters, Optimizer as Kind};
use tch::Tensor;

/// An optimiser over named parameters.
#[derive(Debug)]
pub(crate) struct Optimizer {
    kind: Kind,
    /// `(name, parameter)` sorted by name; shallow clones sharing the model's storage.
    params: Vec<(String, Tensor)>,
    /// Adam: first moments; SGD: momentum buffers. Same order as `params`.
    first: Vec<Tensor>,
    /// Adam: second moments.
    second: Vec<Tensor>,
    /// Updates taken so far (Adam's bias correction; SGD's first momentum step).
    pub(crate) steps: u64,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    betas: [f64; 2],
    eps: f64,
}

impl Optimizer {
    pub(crate) fn new(hp: &Hyperparameters, params: Vec<(String, Tensor)>) -> Optimizer {
        let needs_second = matches!(hp.optimizer, Kind::Adam | Kind::Adamw);
        let needs_first = needs_second || hp.momentum > 0.0;
        let zeros = |on: bool| -> Vec<Tensor> {
            if on {
                params.iter().map(|(_, p)| p.zeros_like().detach()).collect()
            } else {
                Vec::new()
            }
        };
        Optimizer {
            kind: hp.optimizer,
            first: zeros(needs_first),
            second: zeros(needs_second),
            params,
            steps: 0,
            lr: hp.learning_rate,
            weight_decay: hp.weight_decay,
            momentum: hp.momentum,
            betas: hp.betas,
            eps: hp.eps,
        }
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Scales the gradients so their global L2 norm is at most `max_norm` (as PyTorch's
    /// `clip_grad_norm_`, without a host synchronisation).
    pub(crate) fn clip_grad_norm(&self, max_norm: f64) {
        tch::no_grad(|| {
            let grads: Vec<Tensor> =
                self.params.iter().map(|(_, p)| p.grad()).filter(Tensor::defined).collect();
            if grads.is_empty() {
                return;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            let total = Tensor::stack(&norms, 0).norm();
            let coef = (total + 1e-6).reciprocal().g_mul_scalar(max_norm).clamp_max(1.0);
            for mut g in grads {
                let _ = g.g_mul_(&coef);
            }
        });
    }

    /// One update from the current gradients, which it then zeroes for the next backward
    /// pass (one op per parameter, fewer than a separate `zero_grad`).
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        let _guard = tch::no_grad_guard();
        let (lr, wd) = (self.lr, self.weight_decay);
        match self.kind {
            Kind::Sgd => {
                for (i, (_, p)) in self.params.iter_mut().enumerate() {
                    let mut grad = p.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let mut d = if wd > 0.0 { &grad + &*p * wd } else { grad.shallow_clone() };
                    if self.momentum > 0.0 {
                        let buf = &mut self.first[i];
                        if self.steps == 1 {
                            buf.copy_(&d);
                        } else {
                            let _ = buf.g_mul_scalar_(self.momentum);
                            let _ = buf.g_add_(&d);
                        }
                        d = buf.shallow_clone();
                    }
                    let _ = p.g_sub_(&(d * lr));
                    let _ = grad.zero_();
                }
            }
            Kind::Adam | Kind::Adamw => {
                let [b1, b2] = self.betas;
                let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
                let bias1 = 1.0 - b1.powi(t);
                let bias2 = 1.0 - b2.powi(t);
                // p -= lr/bias1 * m / (sqrt(v)/sqrt(bias2) + eps), written as
                // p += m / (sqrt(v) * a + b) with a = -bias1/(lr sqrt(bias2)), b = -bias1 eps/lr.
                let a = -bias1 / (lr * bias2.sqrt());
                let b = -bias1 * self.eps / lr;
                for (i, (_, p)) in self.params.iter_mut().enumerate() {
                    let mut grad = p.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let g = match self.kind {
                        Kind::Adam if wd > 0.0 => &grad + &*p * wd,
                        Kind::Adamw if wd > 0.0 => {
                            let _ = p.g_mul_scalar_(1.0 - lr * wd);
                            grad.shallow_clone()
                        }
                        _ => grad.shallow_clone(),
                    };
                    let _ = self.first[i].lerp_(&g, 1.0 - b1);
                    let v = &mut self.second[i];
                    let _ = v.g_mul_scalar_(b2);
                    let _ = v.addcmul_(&(&g * (1.0 - b2)), &g);
                    let mut denom = v.sqrt();
                    let _ = denom.g_mul_scalar_(a);
                    let _ = denom.g_add_scalar_(b);
                    let _ = p.addcdiv_(&self.first[i], &denom);
                    let _ = grad.zero_();
                }
            }
        }
    }

    /// The state tensors, named `<buffer>/<parameter>`, for a checkpoint.
    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (buffers, prefix) in [(&self.first, "first"), (&self.second, "second")] {
            for ((name, _), t) in self.params.iter().zip(buffers.iter()) {
                out.push((format!("{prefix}/{name}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Restores the tensors of [`Optimizer::state`] and the step count.
    pub(crate) fn restore(&mut self, state: &[(String, Tensor)], steps: u64) -> Result<(), String> {
        for (buffers, prefix) in [(&mut self.first, "first"), (&mut self.second, "second")] {
            for ((name, _), t) in self.params.iter().zip(buffers.iter_mut()) {
                let key = format!("{prefix}/{name}");
                let saved = state
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, t)| t)
                    .ok_or_else(|| format!("optimiser state `{key}` is missing"))?;
                if saved.size() != t.size() {
                    return Err(format!("optimiser state `{key}` has the wrong shape"));
                }
                tch::no_grad(|| t.copy_(saved));
            }
        }
        self.steps = steps;
        Ok(())
    }
}
