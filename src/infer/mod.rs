//! Inference stage: model cards, one onnxruntime session per worker thread, decoding of the
//! model's outputs into normalised detections, and the bounded worker pool fed by the cameras.

pub mod card;
pub mod decode;
pub mod features;
pub mod kinds;
pub mod models;
pub mod nanodet;
pub mod nms;
pub mod pool;
pub mod preprocess;
pub mod settings;
pub mod ssd;
pub mod yolo;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use card::{CardError, ModelCard};
use features::FeatureBuffer;
pub use features::FeatureMap;
use settings::ExecutionProvider;

/// Where the setup script puts the onnxruntime library taken from the PyPI wheel.
pub const BUNDLED_ORT_LIBRARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/third_party/onnxruntime/libonnxruntime.so"
);

/// One detected object; `bbox` is [x1, y1, x2, y2] normalised to 0..1 of the frame. `label` is
/// the model's own name for the class; `kind` (from the card's `[kinds]` table) is what scenarios
/// use, so they do not depend on one model's label names.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class_id: u16,
    pub label: Arc<str>,
    pub kind: kinds::ObjectKind,
    pub score: f32,
    pub bbox: [f32; 4],
}

impl Detection {
    /// Bottom-centre of the box: where the object stands on the ground.
    pub fn foot_point(&self) -> [f64; 2] {
        [
            f64::from(self.bbox[0] + self.bbox[2]) / 2.0,
            f64::from(self.bbox[3]),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(
        "onnxruntime library not found at {0}; run ./scripts/setup (it installs the library from the PyPI onnxruntime wheel) or set ORT_DYLIB_PATH to libonnxruntime.so.<version>"
    )]
    RuntimeMissing(PathBuf),
    #[error("cannot load onnxruntime from {path}: {message}")]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("model {model}: {message}")]
    Session { model: String, message: String },
    #[error("model {model}: the card names {what} `{name}`, but the ONNX file has {found:?}")]
    NameMismatch {
        model: String,
        what: &'static str,
        name: String,
        found: Vec<String>,
    },
    #[error("model {model}: frame is {got_w}x{got_h}, the model needs {want_w}x{want_h}")]
    FrameSize {
        model: String,
        got_w: u32,
        got_h: u32,
        want_w: usize,
        want_h: usize,
    },
    #[error("model {model}: inference failed: {message}")]
    Run { model: String, message: String },
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The onnxruntime library to load: the configured path, else ORT_DYLIB_PATH, else the bundled one.
pub fn runtime_library(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(BUNDLED_ORT_LIBRARY))
}

/// Loads onnxruntime once per process (with the CPU provider); later calls reuse it.
pub fn environment(library: &Path) -> Result<&'static Environment, InferError> {
    environment_with(library, ExecutionProvider::Cpu)
}

/// Loads onnxruntime once per process with `provider` as every session's default; the first
/// call decides, later calls reuse it.
pub fn environment_with(
    library: &Path,
    provider: ExecutionProvider,
) -> Result<&'static Environment, InferError> {
    if !library.is_file() {
        return Err(InferError::RuntimeMissing(library.to_owned()));
    }
    let env = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library)
            .map_err(|e| e.to_string())?
            .with_name("gridwatch");
        let builder = match provider {
            ExecutionProvider::Cpu => builder,
            #[cfg(feature = "cuda")]
            ExecutionProvider::Cuda => builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()]),
            #[cfg(feature = "tensorrt")]
            ExecutionProvider::Tensorrt => {
                builder.with_execution_providers([ort::ep::TensorRT::default()
                    .build()
                    .error_on_failure()])
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(format!(
                    "execution provider {other:?} needs gridwatch built with `--features {}`",
                    format!("{other:?}").to_lowercase()
                ));
            }
        };
        builder.build().map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|message| InferError::RuntimeLoad {
        path: library.to_owned(),
        message: message.clone(),
    })
}

/// Where one frame's time went inside the detector.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub preprocess_seconds: f64,
    pub inference_seconds: f64,
    pub postprocess_seconds: f64,
}

impl StageTimes {
    /// Adds another model's times on the same frame.
    pub fn add(&mut self, other: &StageTimes) {
        self.preprocess_seconds += other.preprocess_seconds;
        self.inference_seconds += other.inference_seconds;
        self.postprocess_seconds += other.postprocess_seconds;
    }
}

/// Thresholds applied after the model.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub score: f32,
    pub nms_iou: f32,
}

/// One onnxruntime session with its reused input buffer and decoder scratch space.
pub struct Detector {
    session: Session,
    card: Arc<ModelCard>,
    labels: Vec<Arc<str>>,
    thresholds: Thresholds,
    input: Vec<f32>,
    decoder: Box<dyn decode::OutputDecoder>,
    /// The card's `[features]` output, copied out of each run (absent without the table).
    features: Option<FeatureBuffer>,
    /// Copy the feature map out of each run (a camera without learned states skips the copy).
    keep_features: bool,
}

impl Detector {
    /// Opens a session and checks the ONNX file's input and output names against the card.
    pub fn new(
        env: &Environment,
        card: Arc<ModelCard>,
        intra_op_threads: usize,
        thresholds: Thresholds,
    ) -> Result<Self, InferError> {
        let model = card.id.clone();
        let session_err = |e: &dyn std::fmt::Display| InferError::Session {
            model: model.clone(),
            message: e.to_string(),
        };
        let decoder = decode::decoder_for(&card)?;
        let session = Session::builder(env)
            .map_err(|e| session_err(&e))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| session_err(&e))?
            .with_intra_threads(intra_op_threads)
            .map_err(|e| session_err(&e))?
            .commit_from_file(card.model_path())
            .map_err(|e| session_err(&e))?;
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        if !inputs.contains(&card.input.name) {
            return Err(InferError::NameMismatch {
                model,
                what: "input",
                name: card.input.name.clone(),
                found: inputs,
            });
        }
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let feature_output = card.features.as_ref().map(|f| f.output.as_str());
        for name in card
            .decoder
            .output_names()
            .into_iter()
            .chain(feature_output)
        {
            if !outputs.iter().any(|o| o == name) {
                return Err(InferError::NameMismatch {
                    model,
                    what: "output",
                    name: name.to_owned(),
                    found: outputs,
                });
            }
        }
        let labels = card.load_labels()?;
        let input = vec![0.0; card.input.shape.iter().product()];
        let features = card
            .features
            .clone()
            .map(|spec| FeatureBuffer::new(spec, card.input_size()));
        Ok(Self {
            session,
            card,
            labels,
            thresholds,
            input,
            decoder,
            features,
            keep_features: true,
        })
    }

    /// Whether the next runs copy their feature map out (the default). Without the copy,
    /// [`Detector::features`] offers none: a frame of a camera with no learned state pays for no
    /// transposition of a map nobody reads.
    pub fn keep_features(&mut self, keep: bool) {
        self.keep_features = keep;
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The feature map of the last successful [`Detector::detect`], when the card has a
    /// `[features]` table; the detector's own buffer, overwritten by the next run.
    pub fn features(&self) -> Option<FeatureMap<'_>> {
        self.features.as_ref().and_then(FeatureBuffer::map)
    }

    /// Runs the model on one packed-row RGB frame of exactly the model's input size; detections
    /// go to `out` (cleared first).
    pub fn detect(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        row_stride: usize,
        out: &mut Vec<Detection>,
    ) -> Result<StageTimes, InferError> {
        let started = std::time::Instant::now();
        let (w, h) = self.card.input_size();
        if width as usize != w || height as usize != h || rgb.len() < row_stride * (h - 1) + w * 3 {
            return Err(InferError::FrameSize {
                model: self.card.id.clone(),
                got_w: width,
                got_h: height,
                want_w: w,
                want_h: h,
            });
        }
        self.preprocess(rgb, row_stride);
        let preprocessed = std::time::Instant::now();
        let run_err = |e: &dyn std::fmt::Display| InferError::Run {
            model: self.card.id.clone(),
            message: e.to_string(),
        };
        let tensor = TensorRef::from_array_view((self.card.input.shape, &self.input[..]))
            .map_err(|e| run_err(&e))?;
        let outputs = self
            .session
            .run(ort::inputs![self.card.input.name.as_str() => tensor])
            .map_err(|e| InferError::Run {
                model: self.card.id.clone(),
                message: e.to_string(),
            })?;
        let ctx = decode::DecodeContext {
            model: &self.card.id,
            input_width: w,
            input_height: h,
            labels: &self.labels,
            score_threshold: self.thresholds.score,
            nms_iou: self.thresholds.nms_iou,
        };
        let inferred = std::time::Instant::now();
        self.decoder.decode(&outputs, &ctx, out)?;
        if self.keep_features {
            copy_features(self.features.as_mut(), &outputs, &ctx)?;
        } else if let Some(buffer) = self.features.as_mut() {
            buffer.forget();
        }
        let decoded = std::time::Instant::now();
        Ok(StageTimes {
            preprocess_seconds: (preprocessed - started).as_secs_f64(),
            inference_seconds: (inferred - preprocessed).as_secs_f64(),
            postprocess_seconds: (decoded - inferred).as_secs_f64(),
        })
    }

    /// RGB bytes → normalised floats in the card's layout and colour order, into the reused buffer.
    /// The bare model: one `Session::run` on the current input buffer, outputs discarded. For
    /// measuring what pre/post-processing and the pool add on top (`gridwatch-bench model`).
    pub fn run_model_only(&mut self) -> Result<(), InferError> {
        let model = self.card.id.clone();
        let tensor =
            TensorRef::from_array_view((self.card.input.shape, &self.input[..])).map_err(|e| {
                InferError::Run {
                    model: model.clone(),
                    message: e.to_string(),
                }
            })?;
        self.session
            .run(ort::inputs![self.card.input.name.as_str() => tensor])
            .map(drop)
            .map_err(|e| InferError::Run {
                model,
                message: e.to_string(),
            })
    }

    fn preprocess(&mut self, rgb: &[u8], row_stride: usize) {
        let (w, h) = self.card.input_size();
        preprocess::normalise(&self.card.input, w, h, rgb, row_stride, &mut self.input);
    }
}

/// Copies the `[features]` output of one run into the detector's buffer (HWC).
fn copy_features(
    buffer: Option<&mut FeatureBuffer>,
    outputs: &ort::session::SessionOutputs<'_>,
    ctx: &decode::DecodeContext<'_>,
) -> Result<(), InferError> {
    let Some(buffer) = buffer else {
        return Ok(());
    };
    let (shape, values) = ctx.tensor_with_shape(outputs, &buffer.spec.output)?;
    if buffer.fill(shape, values) {
        Ok(())
    } else {
        Err(ctx.error(
            &buffer.spec.output,
            &format!(
                "shape {shape:?}, the card's [features] implies {:?}",
                buffer.shape
            ),
        ))
    }
}
