//! Run-time choice among the compute backends compiled in (cargo features `ndarray`, `wgpu`,
//! `cuda`). Model code stays generic over `B: Backend`; this is the one place that names
//! concrete backends.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

/// A compute backend a command can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Burn's ndarray CPU backend (default feature).
    Ndarray,
    /// WebGPU through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// NVIDIA CUDA.
    Cuda,
}

impl BackendKind {
    /// Every backend, compiled or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::Ndarray, BackendKind::Wgpu, BackendKind::Cuda];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend's cargo feature.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this binary can run on.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is unknown or not compiled into this binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownBackend {
    /// Not a backend name at all.
    #[error("unknown backend `{0}`; expected one of ndarray, wgpu, cuda")]
    Unknown(String),
    /// A real backend whose cargo feature was not enabled at build time.
    #[error("backend `{name}` is not compiled into this binary (rebuild with `--features {name}`); available: {available}")]
    NotCompiled {
        /// The backend asked for.
        name: &'static str,
        /// The compiled backends, comma-separated.
        available: String,
    },
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownBackend::Unknown(s.to_string()))
    }
}

/// Work that can run on any autodiff backend; [`run_on`] picks the backend at run time.
/// Inference inside a job uses `B::InnerBackend` (e.g. through `Module::valid`), which also
/// turns dropout off.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` and its default device.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the backend `kind`, or says why it cannot.
pub fn run_on<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output, UnknownBackend> {
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            Ok(job.run::<burn::backend::Autodiff<burn::backend::NdArray<f32>>>(Default::default()))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(Default::default()))
        }
        #[allow(unreachable_patterns)]
        other => {
            let available: Vec<&str> = BackendKind::compiled()
                .into_iter()
                .map(BackendKind::name)
                .collect();
            Err(UnknownBackend::NotCompiled {
                name: other.name(),
                available: available.join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_are_rejected() {
        assert_eq!("CUDA".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
        assert!("tpu"
            .parse::<BackendKind>()
            .unwrap_err()
            .to_string()
            .contains("unknown backend `tpu`"));
    }

    struct Name;
    impl BackendJob for Name {
        type Output = String;
        fn run<B: AutodiffBackend>(self, _device: B::Device) -> String {
            B::name(&Default::default())
        }
    }

    #[test]
    fn uncompiled_backends_say_how_to_get_them() {
        for kind in BackendKind::ALL {
            match run_on(kind, Name) {
                Ok(name) => assert!(kind.is_compiled(), "{kind} ran as {name}"),
                Err(e) => {
                    assert!(!kind.is_compiled());
                    assert!(e.to_string().contains(&format!("--features {kind}")), "{e}");
                }
            }
        }
    }
}
