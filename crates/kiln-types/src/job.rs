//! Job lifecycle states and device requirements, as stored in the `jobs` table.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}; expected one of: {expected}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in the database and used on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// Where a job is in its life. `queued → running → succeeded | failed | cancelled`, and
    /// `running → queued` on a lost lease, a graceful release or a retryable error.
    JobState, "job state", {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobState {
    /// True for the three states a job never leaves on its own.
    pub const fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

string_enum!(
    /// What a job asks of the worker that runs it.
    DeviceRequirement, "device requirement", {
        Any => "any",
        Cuda => "cuda",
        Cpu => "cpu",
    }
);

string_enum!(
    /// What a worker has. A CPU worker never takes a CUDA-only job.
    WorkerDevice, "worker device", {
        Cpu => "cpu",
        Cuda => "cuda",
    }
);

impl WorkerDevice {
    /// The job requirements this worker may run.
    pub const fn accepts(self) -> &'static [DeviceRequirement] {
        match self {
            WorkerDevice::Cpu => &[DeviceRequirement::Any, DeviceRequirement::Cpu],
            WorkerDevice::Cuda => &[DeviceRequirement::Any, DeviceRequirement::Cuda],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_spelling() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), *state);
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn unknown_state_names_the_valid_ones() {
        let err = "done".parse::<JobState>().unwrap_err();
        assert_eq!(err.value, "done");
        assert!(err.to_string().contains("queued running succeeded failed cancelled"));
    }

    #[test]
    fn cpu_worker_never_accepts_cuda_only_jobs() {
        assert!(!WorkerDevice::Cpu.accepts().contains(&DeviceRequirement::Cuda));
        assert!(WorkerDevice::Cuda.accepts().contains(&DeviceRequirement::Any));
        assert!(!WorkerDevice::Cuda.accepts().contains(&DeviceRequirement::Cpu));
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = JobState::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [&JobState::Succeeded, &JobState::Failed, &JobState::Cancelled]);
    }
}
