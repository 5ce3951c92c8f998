//! The training tasks, one module each. A task has two faces: a [`StageTask`] (how a loader
//! batch becomes a loss, for the stage loop) and a [`JobTask`] (what the job reads from the data
//! folder for its stage, how it trains, and what it evaluates). A new task is a new module
//! here and a line in the job (`job.rs`).
//!
//! [`StageTask`]: crate::stage::StageTask

use burn::tensor::backend::AutodiffBackend;
use fiber_data::Problems;

use crate::error::TrainError;
use crate::input::StageData;
use crate::report::Report;
use crate::stages::Stage;
use crate::workspace::{FromStart, StartModel, Workspace};

pub mod caption;
pub mod downstream;
pub mod fine;
pub mod nlvr2;
pub mod pretrain;
pub mod queue;
pub mod retrieval;
pub mod vqa;

pub use caption::CaptionStage;
pub use downstream::{DetectStage, GroundStage};
pub use fine::FineStage;
pub use nlvr2::Nlvr2Stage;
pub use pretrain::PretrainStage;
pub use retrieval::{RetrievalItcStage, RetrievalItmStage};
pub use vqa::VqaStage;

/// A stage as the job runs it: the data it reads, how it trains from a FIBER model, and the
/// report sections it evaluates on the held-out data.
pub trait JobTask {
    /// The stage.
    const STAGE: Stage;
    /// Training and held-out data read from the data folder.
    type Data: StageData;
    /// The model the stage trains from.
    type Start<B: AutodiffBackend>: FromStart<B>;
    /// What training produces (the model, and whatever evaluation needs with it).
    type Trained<B: AutodiffBackend>;

    /// Trains the stage from `start` (or resumes it).
    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        start: Self::Start<B>,
        data: &Self::Data,
        device: &B::Device,
    ) -> Result<Self::Trained<B>, TrainError>;

    /// Evaluates the trained model on the held-out data into its sections of `report`.
    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &Self::Trained<B>,
        data: &Self::Data,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError>;
}

/// Runs task `T`'s stage alone: reads its data, trains from `start` and evaluates; returns the
/// evaluation's wall time in seconds (only node 0 of a run over several machines evaluates).
pub fn run_alone<B: AutodiffBackend, T: JobTask>(
    ws: &mut Workspace<'_>,
    start: StartModel<B>,
    report: &mut Report,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let mut problems = Problems::default();
    let data = T::Data::read(&ws.config.data_source(), &mut problems)?;
    ws.warn(&problems, T::Data::READS)?;
    let trained = T::train(
        ws,
        T::Start::<B>::from_start(start, T::STAGE)?,
        &data,
        device,
    )?;
    let start = std::time::Instant::now();
    if ws.writes() {
        T::evaluate(ws, &trained, &data, report, device)?;
    }
    Ok(start.elapsed().as_secs_f64())
}
