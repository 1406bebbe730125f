//! Turning a model's raw outputs into detections: one `OutputDecoder` per output format, chosen
//! from the model card. Each decoder keeps its own scratch buffers across frames.

use std::sync::Arc;

use ort::session::SessionOutputs;

use super::card::{DecoderSpec, ModelCard};
use super::nanodet::{DecodeParams, Level, NanodetDecoder};
use super::{Detection, InferError};

/// What every decoder needs besides the outputs.
pub struct DecodeContext<'a> {
    pub model: &'a str,
    pub input_width: usize,
    pub input_height: usize,
    pub labels: &'a [Arc<str>],
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl DecodeContext<'_> {
    /// The named output as a flat f32 slice.
    pub fn tensor<'o>(
        &self,
        outputs: &'o SessionOutputs<'_>,
        name: &str,
    ) -> Result<&'o [f32], InferError> {
        let value = outputs.get(name).ok_or_else(|| InferError::Run {
            model: self.model.to_owned(),
            message: format!("output `{name}` missing"),
        })?;
        value
            .try_extract_tensor::<f32>()
            .map(|(_, data)| data)
            .map_err(|e| InferError::Run {
                model: self.model.to_owned(),
                message: format!("output `{name}`: {e}"),
            })
    }
}

pub trait OutputDecoder: Send {
    /// Decodes into `out` (cleared first); boxes normalised to 0..1 of the model input.
    fn decode(
        &mut self,
        outputs: &SessionOutputs<'_>,
        ctx: &DecodeContext<'_>,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError>;
}

/// The decoder the card asks for.
pub fn decoder_for(card: &ModelCard) -> Result<Box<dyn OutputDecoder>, InferError> {
    match &card.decoder {
        DecoderSpec::Nanodet {
            strides,
            reg_max,
            score_outputs,
            box_outputs,
        } => Ok(Box::new(Nanodet {
            strides: strides.clone(),
            reg_max: *reg_max,
            score_outputs: score_outputs.clone(),
            box_outputs: box_outputs.clone(),
            inner: NanodetDecoder::default(),
        })),
        DecoderSpec::MediapipeSsd { .. } => Err(InferError::UnsupportedDecoder {
            model: card.id.clone(),
            kind: "mediapipe_ssd",
        }),
    }
}

struct Nanodet {
    strides: Vec<u32>,
    reg_max: usize,
    score_outputs: Vec<String>,
    box_outputs: Vec<String>,
    inner: NanodetDecoder,
}

impl OutputDecoder for Nanodet {
    fn decode(
        &mut self,
        outputs: &SessionOutputs<'_>,
        ctx: &DecodeContext<'_>,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError> {
        // At most a handful of levels: a fixed array avoids a per-frame allocation.
        const MAX_LEVELS: usize = 8;
        let n = self.strides.len().min(MAX_LEVELS);
        let mut levels: [Level<'_>; MAX_LEVELS] = std::array::from_fn(|_| Level {
            stride: 1,
            scores: &[],
            boxes: &[],
        });
        for i in 0..n {
            levels[i] = Level {
                stride: self.strides[i],
                scores: ctx.tensor(outputs, &self.score_outputs[i])?,
                boxes: ctx.tensor(outputs, &self.box_outputs[i])?,
            };
        }
        let params = DecodeParams {
            input_width: ctx.input_width,
            input_height: ctx.input_height,
            num_classes: ctx.labels.len(),
            reg_max: self.reg_max,
            score_threshold: ctx.score_threshold,
            nms_iou: ctx.nms_iou,
        };
        self.inner.decode(&levels[..n], &params, ctx.labels, out);
        Ok(())
    }
}
