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
    /// A compiled backend that this machine cannot run (e.g. no GPU).
    #[error("backend unavailable: {0}")]
    NoDevice(String),
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

/// Checks that the machine can run `kind` (for CUDA: the driver library loads and sees a
/// device), so a missing GPU is a clear error rather than a panic inside the backend.
pub(crate) fn check_device(kind: BackendKind) -> Result<(), UnknownBackend> {
    #[cfg(feature = "cuda")]
    if kind == BackendKind::Cuda {
        use cudarc::driver::{result, sys};
        // SAFETY: loads the driver library once; no CUDA call is made when it is absent.
        if !unsafe { sys::is_culib_present() } {
            return Err(UnknownBackend::NoDevice(
                "the CUDA driver library (libcuda.so) cannot be loaded: no NVIDIA driver is installed, or its folder is missing from LD_LIBRARY_PATH".into(),
            ));
        }
        let count = result::init().and_then(|_| result::device::get_count());
        match count {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                return Err(UnknownBackend::NoDevice(
                    "the CUDA driver sees no device".into(),
                ))
            }
            Err(e) => {
                return Err(UnknownBackend::NoDevice(format!(
                    "the CUDA driver failed to start: {e:?}"
                )))
            }
        }
    }
    let _ = kind;
    Ok(())
}

/// Runs `job` on the backend `kind`, or says why it cannot.
pub fn run_on<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output, UnknownBackend> {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    if kind.is_compiled() {
        check_device(kind)?;
    }
    run_with_strategy::<J, NoCheckpointing>(kind, Precision::F32, job)
}

fn not_compiled(kind: BackendKind) -> UnknownBackend {
    let available: Vec<&str> = BackendKind::compiled()
        .into_iter()
        .map(BackendKind::name)
        .collect();
    UnknownBackend::NotCompiled {
        name: kind.name(),
        available: available.join(", "),
    }
}

/// The float type a job computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats everywhere (FIBER's pre-training precision).
    #[default]
    F32,
    /// bfloat16 everywhere: weights, activations, gradients and optimiser state (CUDA).
    Bf16,
    /// IEEE half precision everywhere (CUDA, wgpu).
    F16,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// Whether `backend` computes in this precision.
    pub fn is_supported_on(self, backend: BackendKind) -> bool {
        match backend {
            BackendKind::Ndarray => self == Precision::F32,
            BackendKind::Wgpu => self != Precision::Bf16,
            BackendKind::Cuda => true,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown precision `{s}`; expected one of f32, bf16, f16"))
    }
}

/// What the autodiff graph keeps for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpointing {
    /// Every activation a backward step needs is kept.
    #[default]
    None,
    /// Burn's balanced activation checkpointing: outputs of memory-bound operations
    /// (element-wise maps, reshapes) are recomputed during the backward pass instead of kept;
    /// compute-bound ones (matrix products) are kept.
    Balanced,
}

impl Checkpointing {
    /// [`Checkpointing::Balanced`] when `enabled` (a command's `--checkpointing` flag), else none.
    pub fn when(enabled: bool) -> Self {
        if enabled {
            Checkpointing::Balanced
        } else {
            Checkpointing::None
        }
    }
}

/// Checks that this binary and machine can run `kind` in `precision`: the backend is compiled
/// in, computes in that precision, and (CUDA) finds a driver and a device. Says why not.
pub fn check_backend(kind: BackendKind, precision: Precision) -> Result<(), String> {
    if !precision.is_supported_on(kind) {
        let supported: Vec<&str> = Precision::ALL
            .into_iter()
            .filter(|p| p.is_supported_on(kind))
            .map(Precision::name)
            .collect();
        return Err(format!(
            "the {kind} backend does not compute in {precision}; it supports {}",
            supported.join(", ")
        ));
    }
    if !kind.is_compiled() {
        return Err(not_compiled(kind).to_string());
    }
    check_device(kind).map_err(|e| e.to_string())
}

/// Runs `job` on backend `kind` computing in `precision`, with `checkpointing`, or says why it
/// cannot ([`check_backend`]).
pub fn run_on_with<J: BackendJob>(
    kind: BackendKind,
    precision: Precision,
    checkpointing: Checkpointing,
    job: J,
) -> Result<J::Output, String> {
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    check_backend(kind, precision)?;
    let result = match checkpointing {
        Checkpointing::None => run_with_strategy::<J, NoCheckpointing>(kind, precision, job),
        Checkpointing::Balanced => {
            run_with_strategy::<J, BalancedCheckpointing>(kind, precision, job)
        }
    };
    result.map_err(|e| e.to_string())
}

/// The one place that names each (backend, float type) pair with checkpoint strategy `C`.
fn run_with_strategy<J, C>(
    kind: BackendKind,
    precision: Precision,
    job: J,
) -> Result<J::Output, UnknownBackend>
where
    J: BackendJob,
    C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy,
{
    #[allow(unused_imports)]
    use burn::backend::Autodiff;
    // Without any backend feature no arm uses the job.
    let _ = &job;
    match (kind, precision) {
        #[cfg(feature = "ndarray")]
        (BackendKind::Ndarray, Precision::F32) => {
            Ok(job.run::<Autodiff<burn::backend::NdArray<f32>, C>>(Default::default()))
        }
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, Precision::F32) => {
            Ok(job.run::<Autodiff<burn::backend::Wgpu, C>>(Default::default()))
        }
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, Precision::F16) => {
            Ok(job.run::<Autodiff<burn::backend::Wgpu<burn::tensor::f16>, C>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::F32) => {
            Ok(job.run::<Autodiff<burn::backend::Cuda, C>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::Bf16) => {
            Ok(job.run::<Autodiff<burn::backend::Cuda<burn::tensor::bf16>, C>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Precision::F16) => {
            Ok(job.run::<Autodiff<burn::backend::Cuda<burn::tensor::f16>, C>>(Default::default()))
        }
        #[allow(unreachable_patterns)]
        (other, _) => Err(not_compiled(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_is_refused_where_the_backend_lacks_it() {
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("f8".parse::<Precision>().is_err());
        let e = run_on_with(
            BackendKind::Ndarray,
            Precision::Bf16,
            Checkpointing::None,
            Name,
        )
        .unwrap_err();
        assert!(
            e.contains("does not compute in bf16; it supports f32"),
            "{e}"
        );
        assert!(!Precision::Bf16.is_supported_on(BackendKind::Wgpu));
        assert!(Precision::F16.is_supported_on(BackendKind::Cuda));
    }

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
